"""Real parts, small: a tiny Llama model and BPE tokenizer built in-process and saved to a
folder (loaded through the real from_pretrained path, 4-bit included), small datasets,
real SQLite files and the PostgreSQL server named by $AUTOTUNE_TEST_POSTGRES_URL."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
import yaml

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tiny_model(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    lines = [f"Question {i}: what is {i} plus {i}? Answer: {2 * i}. The quick brown fox jumps." for i in range(400)]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(lines, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    # Seeded: unseeded, the weights depended on which tests had drawn from torch's generator
    # before (in the same xdist worker), and whether 40 steps learn an answer with them.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def trial_config(model: Path, dataset: Any, training: dict[str, Any] | None = None, **hyperparameters: Any) -> Any:
    """A trial of the tiny model, as a worker builds one: small LoRA, adamw_torch, batch 4."""
    from autotune.objectives import DatasetSpec, Hyperparameters, ModelSpec, TrainingSpec, TrialConfig

    hp = {
        "lora_r": 4,
        "lora_alpha": 8,
        "learning_rate": 1e-3,
        "lora_dropout": 0.0,
        "target_modules": "all-linear",
        "optim": "adamw_torch",
        "per_device_train_batch_size": 4,
    }
    return TrialConfig(
        model=ModelSpec(name_or_path=str(model)),
        dataset=dataset if isinstance(dataset, DatasetSpec) else DatasetSpec(path=str(dataset), max_length=64),
        training=TrainingSpec(**{"max_steps": 2, **(training or {})}),
        hyperparameters=Hyperparameters(**{**hp, **hyperparameters}),
        cache_dir=str(model.parent / "cache"),
    )


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def alpaca_rows(n: int = 40) -> list[dict[str, str]]:
    return [{"instruction": f"What is {i} plus {i}?", "input": "", "output": f"{2 * i}"} for i in range(n)]


@pytest.fixture
def dataset_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "data.jsonl", alpaca_rows())


def small_spec(model: Path, dataset: Path, **overrides: Any) -> dict[str, Any]:
    """A spec whose trials take a few seconds on a CPU with real 4-bit QLoRA."""
    spec: dict[str, Any] = {
        "model": str(model),
        "dataset": {"path": str(dataset), "max_length": 64},
        "search_space": {
            "lora_r": {"low": 2, "high": 8, "log": True},
            "lora_alpha": {"choices": [4, 8, 16]},
            "learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
            "per_device_train_batch_size": 4,
        },
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": 4},
        "training": {"max_steps": 2},
    }
    spec.update(overrides)
    return spec


TABLE_GRID = {"lora_r": [4, 16], "lora_alpha": [8, 32], "learning_rate": [1e-4, 1e-3]}
TABLE_FAILED_POINT = (16, 32, 1e-3)


def write_table(path: Path, seeds: int = 1) -> Path:
    """A 2x2x2 tabular benchmark, as benchmarks/tabular_grid.py writes one; every point's
    metrics differ, one point failed, and each learning curve has a point at step 1 of 3.
    With `seeds`, each point has a row per training seed (42, 43, ...), its held-out loss
    0.01 higher with each."""
    rows = []
    for i, (r, alpha, lr) in enumerate(itertools.product(*TABLE_GRID.values())):
        for seed in range(42, 42 + seeds):
            row: dict[str, Any] = {"lora_r": r, "lora_alpha": alpha, "learning_rate": lr, "seed": seed}
            if (r, alpha, lr) == TABLE_FAILED_POINT:
                row["error"] = "CUDA out of memory."
            else:
                loss = 3.0 - 0.1 * i + 0.01 * (seed - 42)
                row |= {
                    "eval_loss": loss,
                    "perplexity": math.exp(loss),
                    "train_loss": loss + 0.5,
                    "train_time_s": 10.0 + i,
                    "wall_s": 12.0 + i,  # 1 s for each held-out evaluation
                    "peak_mem_gb": 1.0 + 0.01 * r,
                    "tokens_per_s": 100.0 - i,
                    "eval_loss_before": 3.5,
                    "learning_curve": [
                        {"step": 1, "eval_loss": loss + 0.02 * i, "train_time_s": (10.0 + i) / 3},
                        {"step": 3, "eval_loss": loss, "train_time_s": 10.0 + i},
                    ],
                }
            rows.append(row)
    path.write_text(json.dumps({"grid": TABLE_GRID, "curve_steps": [1, 3], "rows": rows}))
    return path


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies.db'}"


@pytest.fixture
def postgres_url() -> Any:
    """A fresh PostgreSQL database for one test, dropped after it."""
    import sqlalchemy

    base = os.environ.get("AUTOTUNE_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("AUTOTUNE_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against")
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    name = f"autotune_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        pytest.skip(f"PostgreSQL at AUTOTUNE_TEST_POSTGRES_URL is unreachable: {exc.orig}")
    url = sqlalchemy.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _png_is_not_blank(path: Path) -> bool:
    data = path.read_bytes()
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        if kind == b"IDAT":
            chunks.append(data[at + 8 : at + 8 + length])
        at += 12 + length
    raw = zlib.decompress(b"".join(chunks))
    return len(set(raw)) > 50 and sum(1 for b in raw[::7] if b != 0xFF) > len(raw) // 7 // 50


def open_in_chromium(page: Path, tmp_path: Path) -> Path:
    """Open `page` in a real headless Chromium: no console error, and a screenshot that is
    not blank (returned). Skipped where Debian's chromium is not installed."""
    from autotune.dashboards import CHROMIUM_FLAGS

    browser = "/usr/bin/chromium"
    if not Path(browser).exists():
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    shot = tmp_path / "page.png"
    done = subprocess.run(
        [
            browser,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1200,1000",
            "--virtual-time-budget=5000",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    assert _png_is_not_blank(shot)
    return shot


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first: xdist hands tests out in collection order, and a slow test
    drawn last keeps one worker busy while the other idles."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
