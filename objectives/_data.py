"""Datasets: read a local file, a hub dataset or the bundled demo corpus, recognise its
layout, turn it into trl's text or prompt/completion form, and split it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import DatasetSpec
from ._errors import TrialInputError

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

DEMO_CORPUS = "builtin:pydoc-topics"
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
# Layout -> (required fields, optional fields), in the order they are searched for.
LAYOUTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "chat": (("messages",), ()),
    "prompt_completion": (("prompt", "completion"), ()),
    "alpaca": (("instruction", "output"), ("input",)),
    "dolly": (("instruction", "response"), ("context",)),
    "text": (("text",), ()),
}
_LAYOUT_NAMES = ", ".join(LAYOUTS)


def _prompt(instruction: str, context: str | None) -> str:
    # The Alpaca template, the common practice for instruction data. The prompt ends on
    # "Response:" and the completion starts with the newline: BPE tokenizers merge "\n"
    # with what follows, and trl needs the prompt's tokens to be a prefix of the whole.
    if context:
        return f"### Instruction:\n{instruction}\n\n### Input:\n{context}\n\n### Response:"
    return f"### Instruction:\n{instruction}\n\n### Response:"


def _to_trl(layout: str, row: dict[str, Any]) -> dict[str, Any]:
    if layout == "text":
        return {"text": row["text"]}
    if layout == "prompt_completion":
        return {"prompt": row["prompt"], "completion": row["completion"]}
    if layout == "alpaca":
        return {"prompt": _prompt(row["instruction"], row.get("input")), "completion": "\n" + row["output"]}
    if layout == "dolly":
        return {"prompt": _prompt(row["instruction"], row.get("context")), "completion": "\n" + row["response"]}
    messages = row["messages"]
    if len(messages) > 1 and messages[-1]["role"] == "assistant":
        return {"prompt": messages[:-1], "completion": messages[-1:]}
    return {"messages": messages}


def _demo_records(chunk_chars: int) -> list[dict[str, str]]:
    """The Python language reference topics that ship with every Python, as
    instruction/response pairs, each topic cut into chunks of at most `chunk_chars`."""
    from pydoc_data.topics import topics

    records = []
    for name in sorted(topics):
        text = topics[name].strip()
        parts = [text[i : i + chunk_chars] for i in range(0, len(text), chunk_chars)]
        for k, part in enumerate(parts):
            suffix = f" (part {k + 1} of {len(parts)})" if len(parts) > 1 else ""
            records.append({"instruction": f"Explain the Python topic '{name}'{suffix}.", "output": part})
    return records


def _read(spec: DatasetSpec) -> Dataset:
    from datasets import Dataset, disable_progress_bars, load_dataset

    disable_progress_bars()  # per-step bars for a few hundred rows are noise in a worker's log

    if spec.path == DEMO_CORPUS:
        # About 3.5 characters a token: chunks leave room for the prompt within max_length.
        return Dataset.from_list(_demo_records(chunk_chars=int(spec.max_length * 2.5)))
    path = Path(spec.path)
    builder = _FILE_BUILDERS.get(path.suffix.lower())
    if not path.exists():
        if builder is not None or spec.path.startswith((".", "/", "~")):
            raise TrialInputError(f"dataset file {spec.path} does not exist; fix dataset.path")
        try:
            return load_dataset(spec.path, spec.name, split=spec.split)
        except Exception as exc:  # the hub raises many types; the message says which
            raise TrialInputError(f"cannot load hub dataset {spec.path!r}: {exc}") from exc
    if builder is None:
        raise TrialInputError(f"dataset file {spec.path} has an unsupported type; use .json, .jsonl, .csv or .parquet")
    if path.stat().st_size == 0:
        raise TrialInputError(f"dataset file {spec.path} is empty")
    try:
        return load_dataset(builder, data_files=str(path.resolve()), split="train")
    except Exception as exc:
        raise TrialInputError(f"cannot read dataset file {spec.path}: {exc}") from exc


def detect_layout(columns: list[str], spec: DatasetSpec) -> str:
    """The layout named in the spec, or the first whose fields the columns hold."""
    present = set(columns)
    if spec.format != "auto":
        missing = [f for f in LAYOUTS[spec.format][0] if f not in present]
        if missing:
            raise TrialInputError(
                f"dataset {spec.path} lacks column(s) {', '.join(missing)} needed by format "
                f"{spec.format}; its columns are {', '.join(columns)} (map names with dataset.columns)"
            )
        return spec.format
    for layout, (required, _) in LAYOUTS.items():
        if all(f in present for f in required):
            return layout
    raise TrialInputError(
        f"cannot tell the layout of dataset {spec.path} from its columns ({', '.join(columns)}); "
        f"set dataset.format to one of {_LAYOUT_NAMES}, and dataset.columns to map column names"
    )


def load_examples(spec: DatasetSpec) -> tuple[Dataset, str]:
    """The examples in trl's form (text, or prompt/completion, plain or conversational),
    shuffled and cut to max_samples, with the layout they were read as."""
    data = _read(spec)
    missing = [src for src in spec.columns.values() if src not in data.column_names]
    if missing:
        raise TrialInputError(
            f"dataset {spec.path} has no column(s) {', '.join(missing)} named in dataset.columns; "
            f"its columns are {', '.join(data.column_names)}"
        )
    data = data.rename_columns({src: field for field, src in spec.columns.items() if src != field})
    if len(data) == 0:
        raise TrialInputError(f"dataset {spec.path} has no examples")
    layout = detect_layout(data.column_names, spec)
    data = data.shuffle(seed=spec.split_seed)
    if spec.max_samples is not None:
        data = data.select(range(min(spec.max_samples, len(data))))
    data = data.map(lambda row: _to_trl(layout, row), remove_columns=data.column_names)
    return data, layout


def _n_tokens(example: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> int:
    if "text" in example and example["text"] is not None:
        return len(tokenizer(example["text"])["input_ids"])
    if "messages" in example and example["messages"] is not None:
        return len(tokenizer.apply_chat_template(example["messages"], tokenize=True))
    if isinstance(example["prompt"], list):
        ids = tokenizer.apply_chat_template(example["prompt"] + example["completion"], tokenize=True)
        return len(ids)
    return len(tokenizer(example["prompt"] + example["completion"])["input_ids"])


@dataclass(frozen=True)
class Splits:
    train: Dataset
    eval: Dataset
    layout: str
    n_too_long: int  # examples over max_length: dropped or truncated, as the spec says

    def report(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "n_train": len(self.train),
            "n_eval": len(self.eval),
            "n_too_long": self.n_too_long,
        }


def build_splits(spec: DatasetSpec, tokenizer: PreTrainedTokenizerBase) -> Splits:
    """Deterministic seeded train/held-out split, after over-long examples are handled."""
    data, layout = load_examples(spec)
    lengths = [_n_tokens(example, tokenizer) for example in data]
    too_long = [i for i, n in enumerate(lengths) if n > spec.max_length]
    if spec.too_long == "drop" and too_long:
        drop = set(too_long)
        data = data.select([i for i in range(len(data)) if i not in drop])
    if len(data) < 2:
        raise TrialInputError(
            f"dataset {spec.path}: {len(too_long)} of {len(lengths)} examples are longer than "
            f"max_length {spec.max_length} tokens and were dropped, leaving too few to split; "
            f"raise dataset.max_length or set dataset.too_long: truncate"
        )
    n_eval = max(1, round(len(data) * spec.eval_fraction))
    parts = data.train_test_split(test_size=n_eval, seed=spec.split_seed, shuffle=True)
    return Splits(parts["train"], parts["test"], layout, len(too_long))
