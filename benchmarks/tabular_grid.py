"""A tabular benchmark of real QLoRA runs: every config of a grid (lora_r and lora_alpha in
powers of two from 4 to 256, learning rates log-spaced over 1e-5..1e-2) trained and
evaluated with the project's own trial code (autotune.objectives.run_trial) on a fixed
model, dataset and step budget. The table makes samplers comparable in seconds
(benchmarks/sample_efficiency.py replays it), and its exhaustive front is the ceiling.

    python benchmarks/tabular_grid.py --out benchmarks/results/tabular_smollm2_cpu.json

Rows are appended to OUT.partial.jsonl as they finish, so a stopped run resumes."""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RANKS = [4, 8, 16, 32, 64, 128, 256]
ALPHAS = [4, 8, 16, 32, 64, 128, 256]
LEARNING_RATES = [float(x) for x in np.geomspace(1e-5, 1e-2, 6)]


def base_config(max_steps: int) -> dict:
    return {
        "model": "smollm2-135m",
        "dataset": {"path": "builtin:pydoc-topics", "max_samples": 48, "max_length": 64, "eval_fraction": 0.25},
        "training": {"max_steps": max_steps, "activation_checkpointing": False, "per_device_eval_batch_size": 24},
    }


def _run(args: tuple[dict, tuple[int, int, float]]) -> dict:
    from autotune.objectives import TrialConfig, run_trial

    base, (r, alpha, lr) = args
    hp = {
        "lora_r": r,
        "lora_alpha": alpha,
        "learning_rate": lr,
        "lora_dropout": 0.05,
        "target_modules": "all-linear",
        "optim": "paged_adamw_8bit",
        "per_device_train_batch_size": 4,
    }
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
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    partial = args.out.with_suffix(".partial.jsonl")
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            row = json.loads(line)
            done[(row["lora_r"], row["lora_alpha"], row["learning_rate"])] = row
    grid = [c for c in itertools.product(RANKS, ALPHAS, LEARNING_RATES) if c not in done]
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // args.processes))
    base = base_config(args.max_steps)
    print(f"{len(done)} configs done, {len(grid)} to go", flush=True)
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool, partial.open("a") as sink:
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

    table = {
        "made_by": "benchmarks/tabular_grid.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU",
        "versions": {lib: version(lib) for lib in ("torch", "transformers", "peft", "trl", "bitsandbytes")},
        "config": {**base, "optim": "paged_adamw_8bit", "per_device_train_batch_size": 4, "quantization": "nf4"},
        "grid": {"lora_r": RANKS, "lora_alpha": ALPHAS, "learning_rate": LEARNING_RATES},
        "rows": sorted(done.values(), key=lambda r: (r["lora_r"], r["lora_alpha"], r["learning_rate"])),
    }
    args.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
