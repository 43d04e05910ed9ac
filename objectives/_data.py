"""Datasets: read a local file, a hub dataset or the bundled demo corpus, recognise its
layout, turn it into trl's text or prompt/completion form, and split it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import DatasetSpec
from ._errors import TrialInputError

if TYPE_CHECKING:
    from datasets import Dataset

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
    from datasets.exceptions import DatasetGenerationError

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
    # datasets logs the parser's error before raising its own: one line (ours) is enough.
    quiet = logging.getLogger("datasets")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return load_dataset(builder, data_files=str(path.resolve()), split="train")
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, DatasetGenerationError) and exc.__cause__ else exc
        raise TrialInputError(f"cannot read dataset file {spec.path}: {str(cause).splitlines()[0]}") from exc
    finally:
        quiet.setLevel(level)


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


@dataclass(frozen=True)
class Splits:
    train: Dataset
    eval: Dataset
    layout: str
    n_too_long: int = 0  # examples over max_length: dropped or truncated, as the spec says

    def report(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "n_train": len(self.train),
            "n_eval": len(self.eval),
            "n_too_long": self.n_too_long,
        }


def limit_lengths(tokenized: Dataset, spec: DatasetSpec) -> tuple[Dataset, int]:
    """Examples tokenized by trl (`input_ids`, `labels`), with those longer than max_length
    dropped or truncated as the spec says, and how many there were. An example left with no
    label to learn (a prompt that fills max_length) is dropped, as trl drops it."""
    lengths = [len(ids) for ids in tokenized["input_ids"]]
    too_long = sum(n > spec.max_length for n in lengths)
    if spec.too_long == "drop":
        limited = tokenized.select([i for i, n in enumerate(lengths) if n <= spec.max_length])
    else:
        limited = tokenized.map(lambda ex: {k: ex[k][: spec.max_length] for k in ("input_ids", "labels")})
    return limited.filter(lambda ex: any(label != -100 for label in ex["labels"])), too_long


def held_out_size(n_examples: int, spec: DatasetSpec) -> int:
    """How many of `n_examples` the held-out split takes."""
    return max(1, round(n_examples * spec.eval_fraction))


def split_examples(data: Dataset, spec: DatasetSpec, layout: str, n_too_long: int) -> Splits:
    """A deterministic seeded train/held-out split."""
    if len(data) < 2:
        if spec.too_long == "drop":
            why = "were dropped"
            mend = "raise dataset.max_length or set dataset.too_long: truncate"
        else:
            why = "were cut there, most to no token to learn (a prompt that fills max_length), and dropped"
            mend = "raise dataset.max_length"
        raise TrialInputError(
            f"dataset {spec.path}: {n_too_long} examples are longer than max_length {spec.max_length} tokens "
            f"and {why}, leaving {len(data)}, too few to split; {mend}"
        )
    n_eval = held_out_size(len(data), spec)
    parts = data.train_test_split(test_size=n_eval, seed=spec.split_seed, shuffle=True)
    return Splits(parts["train"], parts["test"], layout, n_too_long)
