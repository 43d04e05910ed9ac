"""Generate completions for held-out prompts with the model as it is (the trial's adapter
attached), greedy and batched with left padding, and score them with the spec's metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._config import GenerationSpec, MetricSpec
from ._errors import TrialInputError
from ._metrics import MetricFunction, compute_metrics, load_function

if TYPE_CHECKING:
    from datasets import Dataset


@dataclass(frozen=True)
class Prompts:
    """The held-out examples a trial's completions are generated for."""

    input_ids: list[list[int]]  # the prompt's tokens as trl tokenized them for training
    prompts: list[str]
    references: list[str]  # the held-out completions


def held_out_prompts(held_out: Dataset, tokenizer: Any, num_examples: int) -> Prompts:
    """The first `num_examples` held-out examples' prompts and references."""
    if "prompt" not in held_out.column_names:
        raise TrialInputError(
            "generation metrics need prompts and completions; the dataset's layout has none (text only)"
        )
    if num_examples > len(held_out):
        raise TrialInputError(
            f"generation.num_examples ({num_examples}) is above the held-out split's {len(held_out)} examples; "
            "lower it, or raise dataset.eval_fraction"
        )
    rows = held_out.select(range(num_examples))
    input_ids, prompts, references = [], [], []
    for row in rows:
        # The prompt is what trl masked out of the loss: the tokens before the first label.
        n_prompt = next((i for i, label in enumerate(row["labels"]) if label != -100), len(row["labels"]))
        ids = row["input_ids"][:n_prompt]
        input_ids.append(ids)
        prompt, completion = row["prompt"], row["completion"]
        prompts.append(prompt if isinstance(prompt, str) else tokenizer.decode(ids))
        if isinstance(completion, str):
            references.append(completion.removesuffix(tokenizer.eos_token or ""))
        else:  # conversational: the assistant's message
            references.append(completion[-1]["content"])
    return Prompts(input_ids, prompts, references)


def generate(model: Any, tokenizer: Any, input_ids: list[list[int]], max_new_tokens: int, batch_size: int) -> list[str]:
    """Greedy completions of each prompt (special tokens dropped), in batches padded on the left."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    completions = []
    try:
        with torch.no_grad():
            for start in range(0, len(input_ids), batch_size):
                batch = input_ids[start : start + batch_size]
                width = max(len(ids) for ids in batch)
                ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch], device=device)
                mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=device)
                out = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=pad,
                    use_cache=True,  # training turns the cache off (gradient checkpointing)
                )
                completions += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    finally:
        model.train(was_training)
    return completions


class Generation:
    """What a trial measures at each evaluation: its metrics on completions of the same prompts."""

    def __init__(self, metrics: list[MetricSpec], spec: GenerationSpec, held_out: Dataset, tokenizer: Any) -> None:
        self.metrics: list[tuple[MetricSpec, MetricFunction]] = [(m, load_function(m)) for m in metrics]
        self.spec, self.tokenizer = spec, tokenizer
        self.prompts = held_out_prompts(held_out, tokenizer, spec.num_examples)

    def measure(self, model: Any, batch_size: int) -> dict[str, float]:
        """The metrics, and eval_time_s: the seconds generating and scoring took."""
        started = time.perf_counter()
        p = self.prompts
        predictions = generate(model, self.tokenizer, p.input_ids, self.spec.max_new_tokens, batch_size)
        values = compute_metrics(self.metrics, predictions, p.references, p.prompts)
        return {**values, "eval_time_s": time.perf_counter() - started}
