"""Pure translators from a trial config to the keyword arguments of the library configs
(BitsAndBytesConfig, peft's LoraConfig, trl's SFTConfig). They return plain dicts, so the
same values are stored with the trial, exported, and passed to the libraries."""

from __future__ import annotations

from typing import Any

from ._config import Hyperparameters, TrainingSpec, TrialConfig


def bnb_kwargs(training: TrainingSpec) -> dict[str, Any] | None:
    """BitsAndBytesConfig kwargs for 4-bit NF4 with double quantisation, or None."""
    if training.quantization == "none":
        return None
    return {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": training.compute_dtype,
    }


def lora_kwargs(hp: Hyperparameters) -> dict[str, Any]:
    """peft LoraConfig kwargs."""
    return {
        "r": hp.lora_r,
        "lora_alpha": hp.lora_alpha,
        "lora_dropout": hp.lora_dropout,
        "target_modules": hp.target_modules,
        "bias": "none",
        "task_type": "CAUSAL_LM",
    }


def sft_kwargs(config: TrialConfig, output_dir: str, use_cpu: bool) -> dict[str, Any]:
    """trl SFTConfig kwargs; `trainer_overrides` from the spec win."""
    training, hp = config.training, config.hyperparameters
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "learning_rate": hp.learning_rate,
        "optim": hp.optim,
        "per_device_train_batch_size": hp.per_device_train_batch_size,
        "per_device_eval_batch_size": training.per_device_eval_batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation_steps,
        "max_steps": training.max_steps if training.max_steps is not None else -1,
        "num_train_epochs": training.num_train_epochs,
        "lr_scheduler_type": training.lr_scheduler_type,
        "warmup_steps": training.warmup_steps,
        "activation_checkpointing": training.activation_checkpointing,
        "bf16": training.compute_dtype == "bfloat16",
        "fp16": training.compute_dtype == "float16",
        "max_length": config.dataset.max_length,
        "seed": training.seed,
        "data_seed": training.seed,
        "logging_steps": 1,
        "eval_strategy": "no",
        "save_strategy": "no",
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": use_cpu,
    }
    kwargs.update(training.trainer_overrides)
    return kwargs
