"""A tabular benchmark of real QLoRA runs: every config of a grid (lora_r and lora_alpha in
powers of two from 4 to 256, learning rates log-spaced over 1e-5..1e-2) trained and
evaluated with the project's own trial code (autotune.objectives.run_trial) on a fixed
model, dataset and step budget. The table makes samplers comparable in seconds
(benchmarks/sample_efficiency.py replays it), and its exhaustive front is the ceiling.

    python benchmarks/tabular_grid.py --out benchmarks/results/tabular_smollm2_cpu.json

Rows are appended to OUT.partial.jsonl as they finish, so a stopped run resumes (with the
same options). The table replays as a study's trials with `trial: {kind: tabular, table: OUT}`."""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RANKS = [4, 8, 16, 32, 64, 128, 256]
ALPHAS = [4, 8, 16, 32, 64, 128, 256]
LEARNING_RATES = [float(x) for x in np.geomspace(1e-5, 1e-2, 6)]
FIXED_HYPERPARAMETERS = {
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "optim": "paged_adamw_8bit",
    "per_device_train_batch_size": 4,
}


def base_config(model: str, dataset: str, max_steps: int) -> dict:
    from autotune.objectives import resolve_cache_dir

    return {
        "cache_dir": resolve_cache_dir(),
        "model": model,
        "dataset": {"path": dataset, "max_samples": 48, "max_length": 64, "eval_fraction": 0.25},
        "training": {"max_steps": max_steps, "activation_checkpointing": False, "per_device_eval_batch_size": 24},
    }


def _numbers(kind: type) -> Callable[[str], list]:
    return lambda text: [kind(x) for x in text.split(",")]


def _run(args: tuple[dict, tuple[int, int, float]]) -> dict:
    from autotune.objectives import TrialConfig, run_trial

    base, (r, alpha, lr) = args
    hp = {"lora_r": r, "lora_alpha": alpha, "learning_rate": lr, **FIXED_HYPERPARAMETERS}
    started = time.perf_counter()
    try:
        result = run_trial(TrialConfig.model_validate({**base, "hyperparameters": hp}))
        row = {
            "lora_r": r,
            "lora_alpha": alpha,
            "learning_rate": lr,
            **result["metrics"],
            "eval_loss_before": result["info"]["eval_loss_before"],
        }
    except Exception as exc:  # a failing config is a row too
        row = {"lora_r": r, "lora_alpha": alpha, "learning_rate": lr, "error": str(exc).splitlines()[0]}
    row["wall_s"] = time.perf_counter() - started
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m", help="a model reference, as in a spec")
    parser.add_argument("--dataset", default="builtin:pydoc-topics", help="a dataset path, as in a spec")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--lora-r", type=_numbers(int), default=RANKS, help="comma-separated grid values")
    parser.add_argument("--lora-alpha", type=_numbers(int), default=ALPHAS)
    parser.add_argument("--learning-rate", type=_numbers(float), default=LEARNING_RATES)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    axes = {"lora_r": args.lora_r, "lora_alpha": args.lora_alpha, "learning_rate": args.learning_rate}
    partial = args.out.with_suffix(".partial.jsonl")
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            row = json.loads(line)
            done[(row["lora_r"], row["lora_alpha"], row["learning_rate"])] = row
    points = list(itertools.product(*axes.values()))
    grid = [c for c in points if c not in done]
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.processes))
    base = base_config(args.model, args.dataset, args.max_steps)
    print(f"{len(done)} configs done, {len(grid)} to go", flush=True)
    # Each config runs in a fresh process, as a worker's trials do: a process that trained
    # keeps some memory, so a reused one would report a peak that grows config by config.
    # Forked once the libraries are imported, so that they are imported once.
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401
    import trl  # noqa: F401

    pool = multiprocessing.get_context("fork").Pool(args.processes, maxtasksperchild=1)
    with pool, partial.open("a") as sink:
        for i, row in enumerate(pool.imap_unordered(_run, [(base, c) for c in grid]), 1):
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            done[(row["lora_r"], row["lora_alpha"], row["learning_rate"])] = row
            print(
                f"[{i}/{len(grid)}] r={row['lora_r']} alpha={row['lora_alpha']} lr={row['learning_rate']:.1e} "
                f"eval_loss={row.get('eval_loss', float('nan')):.4f} ({row['wall_s']:.0f} s)",
                flush=True,
            )
    from importlib.metadata import version

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    table = {
        "made_by": "benchmarks/tabular_grid.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {device}",
        "versions": {lib: version(lib) for lib in ("torch", "transformers", "peft", "trl", "bitsandbytes")},
        "config": {**base, "hyperparameters": FIXED_HYPERPARAMETERS, "quantization": "nf4"},
        "grid": axes,
        "rows": [done[point] for point in points],
    }
    args.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
