"""A tabular benchmark of real QLoRA runs: every config of a grid (lora_r, lora_alpha,
learning_rate and the batch size) trained and evaluated with the project's own trial code
on a fixed model, dataset and step budget, with its learning curve: the held-out loss after
1/9, 1/3 and all of the steps (--curve-steps), and the training time taken to reach each.
The table makes samplers and early stopping comparable in seconds
(benchmarks/sample_efficiency.py replays it), and its exhaustive front is the ceiling.

    python benchmarks/tabular_grid.py --out benchmarks/results/tabular_smollm2_curves_cpu.json

Each process is a warm runner, as a worker's slot is: it loads the model and tokenizes the
data once, then trains a fresh adapter per config (objectives' train_adapter). First it
measures the seed noise: one config (--noise-config) trained with --noise-seeds seeds.
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
from typing import Any

import numpy as np

AXES = {  # the grid: hyperparameter -> its values
    "lora_r": [4, 16, 64],
    "lora_alpha": [4, 16, 64],
    "learning_rate": [float(x) for x in np.geomspace(1e-5, 1e-2, 6)],
    "per_device_train_batch_size": [2, 4],
}
FIXED_HYPERPARAMETERS = {"lora_dropout": 0.05, "target_modules": "all-linear", "optim": "paged_adamw_8bit"}
NOISE_CONFIG = "16,16,1.6e-3,2"  # a config near the middle of the grid, in AXES order

_base: Any = None  # the process's loaded base (objectives' Base)


def base_config(model: str, dataset: str, max_steps: int, curve_steps: list[int]) -> dict:
    from autotune.objectives import resolve_cache_dir

    return {
        "cache_dir": resolve_cache_dir(),
        "rungs": [s for s in curve_steps if s < max_steps],
        "model": model,
        "dataset": {"path": dataset, "max_samples": 264, "max_length": 64, "eval_fraction": 1 / 11},
        "training": {"max_steps": max_steps, "activation_checkpointing": False, "per_device_eval_batch_size": 24},
    }


def _numbers(kind: type) -> Callable[[str], list]:
    return lambda text: [kind(x) for x in text.split(",")]


def _trial_config(base: dict, point: dict[str, float], seed: int) -> Any:
    from autotune.objectives import TrialConfig

    hyperparameters = {**point, **FIXED_HYPERPARAMETERS}
    return TrialConfig.model_validate(
        {**base, "hyperparameters": hyperparameters, "training": {**base["training"], "seed": seed}}
    )


def _load_base(base: dict, threads: int) -> None:
    import torch

    from autotune.objectives._train import load_base

    global _base
    torch.set_num_threads(threads)
    any_point = {name: values[0] for name, values in AXES.items()}
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
    parser.add_argument("--max-steps", type=int, default=27)
    parser.add_argument(
        "--curve-steps", type=_numbers(int), default=[3, 9], help="steps before the last to evaluate at"
    )
    for name, values in AXES.items():
        kind = int if name != "learning_rate" else float
        option = "--" + name.replace("_", "-").replace("per-device-train-", "")
        parser.add_argument(option, dest=name, type=_numbers(kind), default=values, help="comma-separated values")
    parser.add_argument("--noise-config", type=_numbers(float), default=NOISE_CONFIG, help="in grid axis order")
    parser.add_argument("--noise-seeds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="the training seed of the grid's runs")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    axes = {name: getattr(args, name) for name in AXES}
    noise_point = {name: type(axes[name][0])(v) for name, v in zip(axes, args.noise_config, strict=True)}
    grid = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    tasks = [(noise_point, seed) for seed in range(1, args.noise_seeds + 1)] + [(p, args.seed) for p in grid]

    partial = args.out.with_suffix(".partial.jsonl")
    done = {}
    if partial.exists():
        for line in partial.read_text().splitlines():
            row = json.loads(line)
            done[_key(row, axes)] = row
    to_do = [(point, seed) for point, seed in tasks if (*point.values(), seed) not in done]
    threads = max(1, (os.cpu_count() or 1) // args.processes)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    base = base_config(args.model, args.dataset, args.max_steps, args.curve_steps)
    print(f"{len(done)} runs done, {len(to_do)} to go", flush=True)
    import torch

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

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    table = {
        "made_by": "benchmarks/tabular_grid.py",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {device}",
        "processes": args.processes,
        "versions": {lib: version(lib) for lib in ("torch", "transformers", "peft", "trl", "bitsandbytes")},
        "config": {**base, "hyperparameters": FIXED_HYPERPARAMETERS, "quantization": "nf4"},
        "grid": axes,
        "curve_steps": [*base["rungs"], args.max_steps],
        "rows": [done[(*point.values(), args.seed)] for point in grid],
        "seed_noise": [done[(*noise_point.values(), seed)] for seed in range(1, args.noise_seeds + 1)],
    }
    args.out.write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
