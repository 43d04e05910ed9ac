"""One trial: attach a fresh LoRA adapter to the loaded (4-bit NF4 by default) base model,
train it with trl's SFTTrainer on the train split, evaluate it on the held-out split, and
take it off again. The base (model, tokenizer, tokenized data and the base model's held-out
loss) is loaded once by `load_base`: a warm runner keeps it from one trial to the next."""

from __future__ import annotations

import gc
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import TrialConfig, perplexity
from ._data import Splits, limit_lengths, load_examples, split_examples
from ._errors import MetricError
from ._generation import Generation
from ._model import load_model, native_compute_dtype
from ._translate import bnb_kwargs, lora_kwargs, sft_kwargs

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

_LIBRARIES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def base_key(config: TrialConfig) -> str:
    """What the base depends on: trials with the same key can share one loaded base."""
    training = config.training
    shared = (training.quantization, training.compute_dtype, training.per_device_eval_batch_size, config.cache_dir)
    return f"{config.model.model_dump_json()}|{config.dataset.model_dump_json()}|{shared}"


@dataclass
class Base:
    """What a runner keeps between trials; nothing in it changes during a trial."""

    key: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    data: Splits  # tokenized by trl, lengths limited as the spec says
    compute_dtype: str  # resolved: never "auto"
    on_gpu: bool
    eval_loss_before: float  # the base model's held-out loss: does fine-tuning help?


def _resolved(config: TrialConfig, on_gpu: bool) -> TrialConfig:
    if config.training.compute_dtype != "auto":
        return config
    training = config.training.model_copy(update={"compute_dtype": native_compute_dtype(on_gpu)})
    return config.model_copy(update={"training": training})


def _trainer(
    config: TrialConfig,
    model: Any,
    tokenizer: Any,
    train: Dataset,
    held_out: Dataset | None,
    output_dir: str,
    **overrides: Any,
) -> Any:
    import torch
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    sft = sft_kwargs(config, output_dir, use_cpu=not torch.cuda.is_available()) | overrides
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**sft),
        train_dataset=train,
        eval_dataset=held_out,
        processing_class=tokenizer,
        peft_config=LoraConfig(**lora_kwargs(config.hyperparameters)),
    )
    if config.training.compute_dtype == "float32":
        # trl keeps a quantized model's adapter weights in bfloat16 (the QLoRA paper's choice);
        # where the compute is float32 (a CPU without native bf16) that only slows every step.
        for param in trainer.model.parameters():
            if param.requires_grad:
                param.data = param.data.float()
    return trainer


OnRung = Callable[[int, dict[str, float]], bool]  # (step, metrics so far) -> go on?


def _rungs(
    steps: Sequence[int], on_gpu: bool, on_rung: OnRung | None, generation: Generation | None, batch_size: int
) -> Any:
    """A trainer callback that evaluates the held-out loss (and the generation metrics) after
    each of `steps`, records it with the metrics so far (training time taken to reach the
    step, evaluation left out), and ends training where `on_rung` says so."""
    import torch
    from transformers import TrainerCallback

    class Rungs(TrainerCallback):
        def __init__(self) -> None:
            self.curve: list[dict[str, float]] = []
            self.eval_s = 0.0  # evaluation time spent inside trainer.train()
            self.step_ended: float | None = None  # set when this callback asked for an evaluation
            self.stopped_at: dict[str, float] | None = None  # the metrics of the rung that ended training

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step in steps and state.global_step < state.max_steps:  # the last: after train()
                if on_gpu:
                    torch.cuda.synchronize()
                self.step_ended = time.perf_counter()
                control.should_evaluate = True

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
            if self.step_ended is None:  # the evaluation after training: not ours
                return
            train_time_s = self.step_ended - self.started - self.eval_s
            losses = [log["loss"] for log in state.log_history if "loss" in log]
            measured = _metrics(metrics["eval_loss"], sum(losses) / max(1, len(losses)), train_time_s, on_gpu, state)
            generated = generation.measure(kwargs["model"], batch_size) if generation is not None else {}
            measured |= generated
            self.curve.append(
                {
                    "step": state.global_step,
                    "eval_loss": metrics["eval_loss"],
                    "train_time_s": train_time_s,
                    **generated,
                }
            )
            if on_rung is not None and not on_rung(state.global_step, measured):
                self.stopped_at = {"step": state.global_step, **measured}
                control.should_training_stop = True
            self.eval_s += time.perf_counter() - self.step_ended
            self.step_ended = None

    return Rungs()


def _take_off_adapter(trainer: Any) -> PreTrainedModel:
    """The base model as it was before the trainer wrapped it: LoRA layers removed, the
    input-gradient hook and gradient checkpointing that training turned on turned off."""
    model = trainer.model.unload()
    if getattr(model, "_require_grads_hook", None) is not None:
        model.disable_input_require_grads()
    if model.is_gradient_checkpointing:
        model.gradient_checkpointing_disable()
    for attribute in ("peft_config", "_hf_peft_config_loaded"):
        if attribute in vars(model):
            delattr(model, attribute)
    return model


def load_base(config: TrialConfig) -> Base:
    """Load the model and tokenizer, let trl tokenize the examples once (untruncated, so
    that over-long ones are counted on the real token ids), limit their lengths, split them,
    and measure the base model's held-out loss (a fresh LoRA adapter is a no-op)."""
    import torch
    from transformers import set_seed

    on_gpu = torch.cuda.is_available()
    key = base_key(config)  # as asked ("auto"), so that the next trial's config matches it
    config = _resolved(config, on_gpu)
    set_seed(config.training.seed)
    model, tokenizer = load_model(
        config.model, config.cache_dir, bnb_kwargs(config.training), config.training.compute_dtype, on_gpu
    )
    examples, layout = load_examples(config.dataset)
    with tempfile.TemporaryDirectory(prefix="autotune-base-") as output_dir:
        trainer = _trainer(config, model, tokenizer, examples, None, output_dir, max_length=None)
        limited, n_too_long = limit_lengths(trainer.train_dataset, config.dataset)
        data = split_examples(limited, config.dataset, layout, n_too_long)
        eval_loss_before = trainer.evaluate(eval_dataset=data.eval)["eval_loss"]
        model = _take_off_adapter(trainer)
    return Base(key, model, tokenizer, data, config.training.compute_dtype, on_gpu, eval_loss_before)


def _reset_peak_host_mem() -> None:
    # Linux resets the process's peak resident set (VmHWM) on this write; ru_maxrss never resets.
    if _CLEAR_REFS.exists():
        _CLEAR_REFS.write_text("5")


def _peak_host_mem_gb() -> float:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _metrics(eval_loss: float, train_loss: float, train_time_s: float, on_gpu: bool, state: Any) -> dict[str, float]:
    """The metrics named in objectives.METRICS, as measured so far (the generation metrics apart)."""
    import torch

    n_tokens = max((log.get("num_tokens", 0.0) for log in state.log_history), default=0.0)
    return {
        "eval_loss": eval_loss,
        "perplexity": perplexity(eval_loss),
        "train_loss": train_loss,
        "train_time_s": train_time_s,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else _peak_host_mem_gb(),
        "tokens_per_s": n_tokens / train_time_s,
    }


def train_adapter(base: Base, config: TrialConfig, on_rung: OnRung | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration on a loaded base, and leave the base as it was.
    Returns {"metrics": {...}, "info": {...}}: the metrics named in objectives.METRICS (and
    the config's generation metrics with eval_time_s), and what is needed to repeat the run.
    With `config.rungs`, the held-out loss (and the generation metrics) is also measured
    after each of those steps (info["learning_curve"], ending with the final evaluation),
    and `on_rung` may end training there: then the metrics are the rung's and
    info["stopped_at_step"] says which."""
    import torch
    from transformers import set_seed

    config = config.model_copy(
        update={"training": config.training.model_copy(update={"compute_dtype": base.compute_dtype})}
    )
    # Everything random in a trial (the adapter's initialisation, dropout, data order) starts
    # from the trial's seed, as it would in a fresh process.
    set_seed(config.training.seed)
    setup_started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="autotune-trial-") as output_dir:
        trainer = _trainer(config, base.model, base.tokenizer, base.data.train, base.data.eval, output_dir)
        generation = (
            Generation(config.metrics, config.generation, base.data.eval, base.tokenizer) if config.metrics else None
        )
        batch_size = config.training.per_device_eval_batch_size
        rungs = _rungs(config.rungs, base.on_gpu, on_rung, generation, batch_size)
        trainer.add_callback(rungs)
        setup_s = time.perf_counter() - setup_started
        gc.collect()  # what an earlier trial that failed in a metric function left in cycles, too
        if base.on_gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        else:
            _reset_peak_host_mem()
        start = time.perf_counter()
        try:
            train_output = trainer.train()
            if base.on_gpu:
                torch.cuda.synchronize()
            train_ended = time.perf_counter()
            train_time_s = train_ended - start - rungs.eval_s
            if rungs.stopped_at is None:
                eval_loss = trainer.evaluate()["eval_loss"]
                metrics = _metrics(eval_loss, train_output.training_loss, train_time_s, base.on_gpu, trainer.state)
                generated = generation.measure(trainer.model, batch_size) if generation is not None else {}
                metrics |= generated
                curve = [
                    *rungs.curve,
                    {
                        "step": trainer.state.global_step,
                        "eval_loss": eval_loss,
                        "train_time_s": train_time_s,
                        **generated,
                    },
                ]
            else:
                metrics = {m: v for m, v in rungs.stopped_at.items() if m != "step"}
                curve = rungs.curve
        except MetricError:  # the user's function failed, not training: the base is sound
            base.model = _take_off_adapter(trainer)
            raise
        eval_s = time.perf_counter() - train_ended + rungs.eval_s
        n_tokens = max((log.get("num_tokens", 0.0) for log in trainer.state.log_history), default=0.0)
        if config.adapter_dir is not None and rungs.stopped_at is None:
            trainer.model.save_pretrained(config.adapter_dir)
        base.model = _take_off_adapter(trainer)
    del trainer
    gc.collect()
    if base.on_gpu:
        torch.cuda.empty_cache()
    teardown_s = time.perf_counter() - start - train_time_s - eval_s
    info = {
        "seed": config.training.seed,
        "compute_dtype": base.compute_dtype,
        "eval_loss_before": base.eval_loss_before,
        "device": torch.cuda.get_device_name() if base.on_gpu else f"cpu ({platform.machine()})",
        "peak_mem_kind": "gpu_allocated" if base.on_gpu else "host_rss",
        "versions": {"python": sys.version.split()[0], **{lib: version(lib) for lib in _LIBRARIES}},
        "data": base.data.report(),
        "n_train_tokens": n_tokens,
        "lora_config": lora_kwargs(config.hyperparameters),
        "sft_config": {k: v for k, v in sft_kwargs(config, "", use_cpu=not base.on_gpu).items() if k != "output_dir"},
        "quantization_config": bnb_kwargs(config.training),
        # Where the trial's time went beyond training (load_base_s: where it loaded the base).
        "timings": {"setup_s": setup_s, "train_s": train_time_s, "eval_s": eval_s, "teardown_s": teardown_s},
    }
    if config.rungs:
        info["learning_curve"] = curve
    if rungs.stopped_at is not None:
        info["stopped_at_step"] = int(rungs.stopped_at["step"])
    return {"metrics": metrics, "info": info}


def run_trial(config: TrialConfig) -> dict[str, Any]:
    """Load the base and train one configuration on it: a trial in a fresh process."""
    return train_adapter(load_base(config), config)
