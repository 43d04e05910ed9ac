"""A tabular benchmark of real QLoRA runs: every config of a grid (lora_r, lora_alpha,
learning_rate and the batch size by default; lora_dropout too with --lora-dropout) trained
and evaluated with the project's own trial code on a fixed model, dataset and step budget,
with --seeds K training seeds per config, and its learning curve: the held-out loss after
the --curve-steps and at the end, and the training time taken to reach each. The table
makes samplers and early stopping comparable in seconds (benchmarks/efficiency.py replays
it: one seed's row per trial, scored on each config's mean over its seeds), and its
exhaustive front of the means is the ceiling.

    python benchmarks/tabular_grid.py --seeds 3 --out benchmarks/results/tabular_pydoc_alpaca_cpu.json

Each process is a warm runner, as a worker's slot is: it loads the model and tokenizes the
data once, then trains a fresh adapter per config (objectives' train_adapter). Rows are
appended to OUT.partial.jsonl as they finish, so a stopped run resumes (with the same
options); seeds are added to a table the same way, its rows written to OUT.partial.jsonl and
--seeds raised. Build a table on a quiet machine: train_time_s measures whatever else runs. The
table replays as a study's trials with `trial: {kind: tabular, table: OUT}`."""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from machine import describe

AXES = {  # the grid: hyperparameter -> its default values (None: fixed, not an axis)
    "lora_r": [4, 16, 64],
    "lora_alpha": [4, 16, 64],
    "learning_rate": [float(x) for x in np.geomspace(1e-5, 1e-2, 6)],
    "per_device_train_batch_size": [2, 4],
    "lora_dropout": None,
}
FIXED_HYPERPARAMETERS = {"lora_dropout": 0.05, "target_modules": "all-linear", "optim": "paged_adamw_8bit"}

_base: Any = None  # the process's loaded base (objectives' Base)


def base_config(args: argparse.Namespace) -> dict:
    from autotune.objectives import resolve_cache_dir

    n_eval = args.eval_examples
    return {
        "cache_dir": resolve_cache_dir(),
        "rungs": [s for s in args.curve_steps if s < args.max_steps],
        "model": args.model,
        "dataset": {
            "path": args.dataset,
            "max_samples": args.train_examples + n_eval,
            "max_length": args.max_length,
            "eval_fraction": n_eval / (args.train_examples + n_eval),
        },
        "training": {
            "max_steps": args.max_steps,
            "activation_checkpointing": False,
            "per_device_eval_batch_size": n_eval,
        },
    }


def _numbers(kind: type) -> Callable[[str], list]:
    return lambda text: [kind(x) for x in text.split(",")]


def _trial_config(base: dict, point: dict[str, float], seed: int) -> Any:
    from autotune.objectives import TrialConfig

    hyperparameters = {**FIXED_HYPERPARAMETERS, **point}
    return TrialConfig.model_validate(
        {**base, "hyperparameters": hyperparameters, "training": {**base["training"], "seed": seed}}
    )


def _load_base(base: dict, threads: int) -> None:
    import torch

    from autotune.objectives._train import load_base

    global _base
    torch.set_num_threads(threads)
    any_point = {name: values[0] for name, values in AXES.items() if values}
    _base = load_base(_trial_config(base, any_point, 0))


def _run(task: tuple[dict, dict[str, float], int]) -> dict:
    from autotune.objectives._train import train_adapter

    base, point, seed = task
    started = time.perf_counter()
    row: dict[str, Any] = {**point, "seed": seed}
    try:
        result = train_adapter(_base, _trial_config(base, point, seed))
        row |= {
            **result["metrics"],
            "eval_loss_before": result["info"]["eval_loss_before"],
            "learning_curve": result["info"]["learning_curve"],
        }
    except Exception as exc:  # a failing config is a row too
        row["error"] = str(exc).splitlines()[0]
    row["wall_s"] = time.perf_counter() - started
    return row


def _key(row: dict, axes: dict) -> tuple:
    return (*(row[name] for name in axes), row["seed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m", help="a model reference, as in a spec")
    parser.add_argument("--dataset", default="builtin:pydoc-topics", help="a dataset path, as in a spec")
    parser.add_argument("--train-examples", type=int, default=240)
    parser.add_argument("--eval-examples", type=int, default=24, help="the held-out examples")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per example")
    parser.add_argument("--max-steps", type=int, default=27)
    parser.add_argument(
        "--curve-steps", type=_numbers(int), default=[3, 9], help="steps before the last to evaluate at"
    )
    for name, values in AXES.items():
        kind = int if name in ("lora_r", "lora_alpha", "per_device_train_batch_size") else float
        option = "--" + name.replace("_", "-").replace("per-device-train-", "")
        parser.add_argument(option, dest=name, type=_numbers(kind), default=values, help="comma-separated values")
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per config: --seed, --seed + 1, ...")
    parser.add_argument("--seed", type=int, default=42, help="the first training seed")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    axes = {name: getattr(args, name) for name in AXES if getattr(args, name)}
    grid = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    seeds = list(range(args.seed, args.seed + args.seeds))
    tasks = [(point, seed) for point in grid for seed in seeds]

    partial = args.out.with_suffix(".partial.jsonl")
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            row = json.loads(line)
            done[_key(row, axes)] = row
    to_do = [(point, seed) for point, seed in tasks if (*point.values(), seed) not in done]
    threads = max(1, (os.cpu_count() or 1) // args.processes)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    base = base_config(args)
    print(f"{len(done)} runs done, {len(to_do)} to go", flush=True)

    pool = multiprocessing.get_context("fork").Pool(args.processes, _load_base, (base, threads))
    with pool, partial.open("a") as sink:
        runs = pool.imap_unordered(_run, [(base, point, seed) for point, seed in to_do])
        for i, row in enumerate(runs, 1):
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            done[_key(row, axes)] = row
            point = " ".join(f"{name}={row[name]:.3g}" for name in axes)
            print(
                f"[{i}/{len(to_do)}] {point} seed={row['seed']} eval_loss={row.get('eval_loss', float('nan')):.4f} "
                f"({row['wall_s']:.0f} s)",
                flush=True,
            )
    from importlib.metadata import version

    table = {
        "made_by": "benchmarks/tabular_grid.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": describe(),
        "processes": args.processes,
        "versions": {lib: version(lib) for lib in ("torch", "transformers", "peft", "trl", "bitsandbytes")},
        "config": {
            **base,
            "hyperparameters": {k: v for k, v in FIXED_HYPERPARAMETERS.items() if k not in axes},
            "quantization": "nf4",
        },
        "grid": axes,
        "seeds": seeds,
        "curve_steps": [*base["rungs"], args.max_steps],
        "rows": [done[(*point.values(), seed)] for point in grid for seed in seeds],
    }
    args.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
