"""What one trial needs: the model, the data, the training settings and the sampled
hyperparameters. Everything here is plain data (pydantic, JSON round-trip), so a trial can
be written to a file, run in a child process and repeated from what the database holds."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Metric name -> the direction in which it improves.
METRICS: dict[str, Literal["minimize", "maximize"]] = {
    "eval_loss": "minimize",
    "perplexity": "minimize",
    "train_loss": "minimize",
    "train_time_s": "minimize",
    "peak_mem_gb": "minimize",
    "tokens_per_s": "maximize",
}


# The built-in generation metrics (objectives._metrics): scores in [0, 1], higher is better.
GENERATION_METRICS = ("exact_match", "rouge_l", "json_valid")


def perplexity(eval_loss: float) -> float:
    """exp(held-out loss), capped where a diverged run would overflow it."""
    return math.exp(min(eval_loss, 700.0))


DatasetFormat = Literal["auto", "text", "alpaca", "dolly", "chat", "prompt_completion"]
Optimizer = Literal["paged_adamw_8bit", "paged_adamw_32bit", "adamw_torch"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """A hub id, a local HF folder, a local .gguf file, or the bundled demo model."""

    name_or_path: str = Field(min_length=1)
    trust_remote_code: bool = False

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"name_or_path": value} if isinstance(value, str) else value


class DatasetSpec(_Strict):
    path: str = Field(min_length=1)  # local JSON/JSONL/CSV/Parquet file, or a hub dataset id
    format: DatasetFormat = "auto"
    # The layout's field name -> the column that holds it, e.g. {output: answer}.
    columns: dict[str, str] = {}
    name: str | None = None  # hub dataset config
    split: str = "train"
    eval_fraction: float = Field(0.1, gt=0, lt=1)
    split_seed: int = 0
    max_samples: int | None = Field(None, ge=2)
    max_length: int = Field(512, ge=8)
    too_long: Literal["truncate", "drop"] = "truncate"


class TrainingSpec(_Strict):
    # QLoRA practice for a short tuning run; a spec holds only its overrides.
    max_steps: int | None = Field(60, ge=1)  # null -> train num_train_epochs
    num_train_epochs: float = Field(1.0, gt=0)
    gradient_accumulation_steps: int = Field(1, ge=1)
    per_device_eval_batch_size: int = Field(8, ge=1)
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = Field(0.03, ge=0)  # below 1: a fraction of the steps (transformers)
    quantization: Literal["nf4", "none"] = "nf4"  # nf4: 4-bit NF4 with double quantisation
    # auto: bfloat16 where the device computes it natively (most CUDA GPUs since Ampere, CPUs
    # with AVX512-BF16 or AMX), float16 on older GPUs, float32 on other CPUs, where bfloat16
    # is emulated and ~50x slower. The trial records the dtype it used.
    compute_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    activation_checkpointing: bool = True  # gradient checkpointing (its transformers 5 name)
    seed: int = 42
    # Passed as is to trl's SFTConfig, for what the spec does not name.
    trainer_overrides: dict[str, Any] = {}


class MetricSpec(_Strict):
    """A metric of the completions the trained model generates for held-out prompts: a
    built-in one (GENERATION_METRICS), or the user's function, `file.py:name` or `module:name`,
    called as fn(predictions=..., references=..., prompts=...) and returning a float or a
    dict of named floats (recorded as `name.key`)."""

    name: str = Field(pattern=r"^[A-Za-z_]\w*$")
    function: str | None = None  # None: the built-in metric of that name
    direction: Literal["minimize", "maximize"] | None = None  # a built-in's: maximize

    @model_validator(mode="after")
    def _check(self) -> MetricSpec:
        choices = ", ".join(GENERATION_METRICS)
        if self.function is None:
            if self.name not in GENERATION_METRICS:
                raise ValueError(
                    f"no built-in metric {self.name!r}; choose from {choices}, or give your own with function: FILE.py:NAME"
                )
            if self.direction is None:
                object.__setattr__(self, "direction", "maximize")
            return self
        if self.name in METRICS or self.name in GENERATION_METRICS:
            raise ValueError(
                f"{self.name!r} is the name of a built-in metric; give your function's metric another name"
            )
        module, _, function = self.function.rpartition(":")
        if not module or not function.isidentifier():
            raise ValueError(
                f"function {self.function!r} should read like 'my_evals.py:score' or 'my_package.evals:score'"
            )
        if self.direction is None:
            raise ValueError(
                f"metric {self.name!r}: give its direction, minimize or maximize (where its value improves)"
            )
        return self


class GenerationSpec(_Strict):
    """Greedy decoding of the first `num_examples` held-out prompts (the split is seeded, so
    every trial sees the same ones), batched by training.per_device_eval_batch_size."""

    max_new_tokens: int = Field(64, ge=1)
    num_examples: int = Field(50, ge=1)


class Hyperparameters(_Strict):
    """The values one trial trains with: sampled from the search space or fixed there."""

    lora_r: int = Field(ge=1)
    lora_alpha: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    lora_dropout: float = Field(ge=0, lt=1)
    target_modules: str | list[str]
    optim: Optimizer
    per_device_train_batch_size: int = Field(ge=1)


class TrialConfig(_Strict):
    model: ModelSpec
    dataset: DatasetSpec
    training: TrainingSpec
    hyperparameters: Hyperparameters
    cache_dir: str  # where converted (GGUF) models are kept: objectives.resolve_cache_dir()
    # Steps (before the last) after which the held-out loss is measured: the learning curve,
    # and the rungs at which early stopping may end the trial.
    rungs: list[int] = []
    # Where to save the trained adapter (peft's save_pretrained: adapter_config.json and
    # safetensors, in the dtype it trained in), when it trained to the end; None: not saved.
    adapter_dir: str | None = None
    # Measured at every evaluation (the rungs too) on completions generated for held-out prompts.
    metrics: list[MetricSpec] = []
    generation: GenerationSpec = GenerationSpec()
