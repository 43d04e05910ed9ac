"""One trial: load the model (4-bit NF4 by default), attach LoRA, train with trl's
SFTTrainer on the train split, evaluate on the held-out split, return the metrics."""

from __future__ import annotations

import math
import platform
import resource
import sys
import tempfile
import time
from importlib.metadata import version
from typing import Any

from ._config import TrialConfig
from ._data import build_splits
from ._model import load_model
from ._translate import bnb_kwargs, lora_kwargs, sft_kwargs

_LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate")


def _peak_host_mem_gb() -> float:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kib / 2**20


def run_trial(config: TrialConfig) -> dict[str, Any]:
    """Train and evaluate one configuration. Returns {"metrics": {...}, "info": {...}}:
    the metrics named in objectives.METRICS, and what is needed to repeat the run."""
    import torch
    from peft import LoraConfig
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    on_gpu = torch.cuda.is_available()
    set_seed(config.training.seed)
    quantization = bnb_kwargs(config.training)
    model, tokenizer = load_model(config.model, quantization, config.training.compute_dtype, on_gpu)
    splits = build_splits(config.dataset, tokenizer)
    lora = lora_kwargs(config.hyperparameters)
    with tempfile.TemporaryDirectory(prefix="autotune-trial-") as output_dir:
        sft = sft_kwargs(config, output_dir, use_cpu=not on_gpu)
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**sft),
            train_dataset=splits.train,
            eval_dataset=splits.eval,
            processing_class=tokenizer,
            peft_config=LoraConfig(**lora),
        )
        # The base model's held-out loss (LoRA starts as a no-op): does fine-tuning help?
        eval_loss_before = trainer.evaluate()["eval_loss"]
        if on_gpu:
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_output = trainer.train()
        if on_gpu:
            torch.cuda.synchronize()
        train_time_s = time.perf_counter() - start
        eval_loss = trainer.evaluate()["eval_loss"]
    n_tokens = max((log.get("num_tokens", 0.0) for log in trainer.state.log_history), default=0.0)
    peak_mem_gb = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else _peak_host_mem_gb()
    metrics = {
        "eval_loss": eval_loss,
        "perplexity": math.exp(min(eval_loss, 700.0)),
        "train_loss": train_output.training_loss,
        "train_time_s": train_time_s,
        "peak_mem_gb": peak_mem_gb,
        "tokens_per_s": n_tokens / train_time_s,
    }
    info = {
        "seed": config.training.seed,
        "eval_loss_before": eval_loss_before,
        "device": torch.cuda.get_device_name() if on_gpu else f"cpu ({platform.machine()})",
        "peak_mem_kind": "gpu_allocated" if on_gpu else "host_rss",
        "versions": {"python": sys.version.split()[0], **{lib: version(lib) for lib in _LIBRARIES}},
        "data": splits.report(),
        "n_train_tokens": n_tokens,
        "lora_config": lora,
        "sft_config": {k: v for k, v in sft.items() if k != "output_dir"},
        "quantization_config": quantization,
    }
    return {"metrics": metrics, "info": info}
