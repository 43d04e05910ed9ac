"""Datasets: every layout and file format, detection, splits, over-long examples."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from autotune.objectives import DEMO_CORPUS, DatasetSpec, TrialInputError, load_examples
from autotune.objectives._data import split_examples

from conftest import trial_config, write_jsonl

ROWS = {
    "text": [{"text": f"Line number {i} of a plain corpus."} for i in range(12)],
    "alpaca": [
        {"instruction": f"Add {i} and {i}.", "input": "" if i % 2 else f"{i}+{i}", "output": f"{2 * i}"}
        for i in range(12)
    ],
    "dolly": [
        {"instruction": f"Say {i}.", "context": "numbers", "response": f"{i}", "category": "x"} for i in range(12)
    ],
    "chat": [
        {"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}"}]}
        for i in range(12)
    ],
    "prompt_completion": [{"prompt": f"Say {i}: ", "completion": f"{i}"} for i in range(12)],
}


@pytest.mark.parametrize("layout", list(ROWS))
def test_each_layout_is_detected_and_shaped_for_trl(tmp_path, layout):
    data, detected = load_examples(DatasetSpec(path=str(write_jsonl(tmp_path / "d.jsonl", ROWS[layout]))))
    assert detected == layout
    example = data[0]
    if layout == "text":
        assert set(data.column_names) == {"text"}
    elif layout == "chat":
        assert example["prompt"][0]["role"] == "user" and example["completion"][0]["role"] == "assistant"
    else:
        assert set(data.column_names) == {"prompt", "completion"}
    if layout == "alpaca":
        prompts = data["prompt"]
        assert all(p.startswith("### Instruction:\n") and p.endswith("### Response:") for p in prompts)
        assert all(c.startswith("\n") for c in data["completion"])
        assert any("### Input:\n" in p for p in prompts) and not all("### Input:\n" in p for p in prompts)
    if layout == "dolly":
        assert "### Input:\nnumbers" in example["prompt"]


def _write(path: Path, rows: list[dict]) -> Path:
    if path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    elif path.name.endswith(".list.json"):
        path.write_text(json.dumps(rows))
    else:
        write_jsonl(path, rows)
    return path


@pytest.mark.parametrize("name", ["d.jsonl", "d.list.json", "d.csv", "d.parquet"])
def test_each_file_format(tmp_path, name):
    data, layout = load_examples(DatasetSpec(path=str(_write(tmp_path / name, ROWS["prompt_completion"]))))
    assert layout == "prompt_completion" and len(data) == 12


def test_columns_map_other_names(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(4)]
    spec = DatasetSpec(
        path=str(write_jsonl(tmp_path / "d.jsonl", rows)), columns={"prompt": "question", "completion": "answer"}
    )
    data, layout = load_examples(spec)
    assert layout == "prompt_completion" and set(data["completion"]) == {"a0", "a1", "a2", "a3"}


def test_undetectable_layout_asks_for_format(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    with pytest.raises(TrialInputError, match="set dataset.format to one of"):
        load_examples(DatasetSpec(path=str(path)))


def test_named_format_with_missing_column(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ROWS["alpaca"])
    with pytest.raises(TrialInputError, match="lacks column"):
        load_examples(DatasetSpec(path=str(path), format="chat"))


def test_max_samples_and_seeded_split_are_deterministic(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i}"} for i in range(50)])
    spec = DatasetSpec(path=str(path), max_samples=20, eval_fraction=0.25, split_seed=7)

    def split(spec):
        return split_examples(load_examples(spec)[0], spec, "text", 0)

    first, again = split(spec), split(spec)
    assert (len(first.train), len(first.eval)) == (15, 5)
    assert first.eval["text"] == again.eval["text"]
    other = split(spec.model_copy(update={"split_seed": 8}))
    assert other.eval["text"] != first.eval["text"]


def _base(tiny_model, spec: DatasetSpec):
    """The trial's base: the data tokenized by trl, with lengths limited."""
    from autotune.objectives import load_base

    return load_base(trial_config(tiny_model, spec, {"max_steps": 1, "quantization": "none"})).data


def _chat(i: int, words: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": "yes " * words}]}


@pytest.mark.parametrize(
    ("long_row", "short_row"),
    [({"text": "very long " * 50}, {"text": "short"}), (_chat(0, 60), _chat(0, 1))],
    ids=["text", "chat"],
)
def test_too_long_examples_are_dropped_and_counted(tmp_path, tiny_model, long_row, short_row):
    rows = [short_row] * 10 + [long_row] * 3
    spec = DatasetSpec(path=str(write_jsonl(tmp_path / "d.jsonl", rows)), max_length=32, too_long="drop")
    dropped = _base(tiny_model, spec)
    assert dropped.n_too_long == 3 and len(dropped.train) + len(dropped.eval) == 10
    assert max(len(ids) for ids in [*dropped.train["input_ids"], *dropped.eval["input_ids"]]) <= 32
    kept = _base(tiny_model, spec.model_copy(update={"too_long": "truncate"}))
    assert kept.n_too_long == 3 and len(kept.train) + len(kept.eval) == 13
    assert max(len(ids) for ids in [*kept.train["input_ids"], *kept.eval["input_ids"]]) == 32


def test_every_example_too_long_is_one_clear_error(tmp_path, tiny_model):
    rows = [{"text": "very long " * 50}] * 5
    spec = DatasetSpec(path=str(write_jsonl(tmp_path / "d.jsonl", rows)), max_length=16, too_long="drop")
    with pytest.raises(TrialInputError, match="raise dataset.max_length or set dataset.too_long: truncate"):
        _base(tiny_model, spec)


def test_demo_corpus_is_python_reference_as_instructions():
    data, layout = load_examples(DatasetSpec(path=DEMO_CORPUS, max_length=128))
    assert layout == "alpaca" and len(data) > 79
    assert all(p.startswith("### Instruction:\nExplain the Python topic") for p in data["prompt"][:20])
    assert max(len(c) for c in data["completion"]) <= 128 * 2.5 + 1  # + the leading newline
