"""How long a worker holds a study's ask lock per ask, as the study grows.

    python benchmarks/ask_lock.py [--trials 50 1000] [--asks 20] [--postgres URL] [--label before]
                                  [--out benchmarks/results/ask_lock.json]

For each storage (a SQLite file in a temp dir; PostgreSQL at `--postgres`, skipped when
unreachable) and each size N: a study of ZDT1 (trial kind zdt1, sampler tpe) is created
with `autotune study create`, prefilled with N COMPLETE trials at random points (through
`study.add_trials`), then one in-process worker (`autotune.run_worker`) runs K more. The
ask lock (`autotune.storage.AskLock`) and the TPESampler's methods are timed at class
level: hold_ms runs from acquire returning to release being called; sampler_ms is the
time inside TPESampler (outermost calls only) while the lock is held. Medians and IQR
over the K asks. Prints a table and writes JSON with the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import optuna
import rich.console
import sqlalchemy
import yaml
from machine import describe

import autotune
from autotune.cli import main as cli
from autotune.objectives import synthetic_metrics
from autotune.storage import AskLock, record_attrs

SAMPLER_METHODS = (
    "infer_relative_search_space",
    "sample_relative",
    "sample_independent",
    "before_trial",
    "after_trial",
)


class Recorder:
    """Per ask: the lock's hold time and the sampler's time within it (seconds)."""

    def __init__(self) -> None:
        self.holds: list[float] = []
        self.samplers: list[float] = []
        self._held_since: float | None = None
        self._sampler = 0.0
        self._depth = 0

    @contextlib.contextmanager
    def patched(self) -> Iterator[Recorder]:
        acquire, release = AskLock.acquire, AskLock.release

        def timed_acquire(lock: AskLock) -> None:
            acquire(lock)
            self._held_since, self._sampler = time.perf_counter(), 0.0

        def timed_release(lock: AskLock) -> None:
            if self._held_since is not None:  # close() releases too, holding nothing
                self.holds.append(time.perf_counter() - self._held_since)
                self.samplers.append(self._sampler)
                self._held_since = None
            release(lock)

        def timed(method: Callable[..., Any]) -> Callable[..., Any]:
            def wrapper(sampler: Any, *args: Any, **kwargs: Any) -> Any:
                self._depth += 1
                started = time.perf_counter()
                try:
                    return method(sampler, *args, **kwargs)
                finally:
                    self._depth -= 1
                    if self._depth == 0 and self._held_since is not None:  # outermost call, under the lock
                        self._sampler += time.perf_counter() - started

            return wrapper

        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(AskLock, "acquire", timed_acquire))
            stack.enter_context(mock.patch.object(AskLock, "release", timed_release))
            for name in SAMPLER_METHODS:
                method = getattr(optuna.samplers.TPESampler, name)
                stack.enter_context(mock.patch.object(optuna.samplers.TPESampler, name, timed(method)))
            yield self


def prefill(study: optuna.Study, spec: autotune.StudySpec, n: int) -> None:
    """Add `n` COMPLETE trials at random points of the spec's search space."""
    scratch = optuna.create_study(directions=spec.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    trials = []
    for _ in range(n):
        trial = scratch.ask()
        spec.search_space.suggest(trial)
        metrics = synthetic_metrics(spec.trial.kind, spec.search_space.unit_point(trial.params))
        values = [metrics[m] for m in spec.metric_names]
        user_attrs = record_attrs(metrics=metrics, worker="prefill:0")
        trials.append(
            optuna.trial.create_trial(
                params=trial.params, distributions=trial.distributions, values=values, user_attrs=user_attrs
            )
        )
    study.add_trials(trials)


def _stats(prefix: str, seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    q1, median, q3 = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else ms * 3
    return {f"{prefix}_median": round(median, 2), f"{prefix}_q1": round(q1, 2), f"{prefix}_q3": round(q3, 2)}


def measure(url: str, storage: str, n: int, asks: int, folder: Path) -> dict[str, Any]:
    name = f"ask-lock-{uuid.uuid4().hex[:8]}"
    spec_path = folder / f"{name}.yaml"
    raw = {"trial": {"kind": "zdt1"}, "sampler": {"name": "tpe", "seed": 0}, "budget": {"n_trials": n + asks}}
    spec_path.write_text(yaml.safe_dump(raw))
    with contextlib.redirect_stdout(io.StringIO()):  # its one line of summary
        code = cli(["study", "create", name, "--config", str(spec_path), "--storage", url])
    if code != 0:
        raise RuntimeError(f"could not create study {name} in {storage}")
    study = optuna.load_study(study_name=name, storage=url)
    started = time.perf_counter()
    prefill(study, autotune.load_spec(spec_path), n)
    prefill_s = time.perf_counter() - started
    with Recorder().patched() as recorder:
        result = autotune.run_worker(name, url, n_trials=asks, console=rich.console.Console(file=io.StringIO()))
    optuna.delete_study(study_name=name, storage=url)
    row: dict[str, Any] = {"storage": storage, "trials": n, "asks": len(recorder.holds), "completed": result.completed}
    row |= _stats("hold_ms", recorder.holds) | _stats("sampler_ms", recorder.samplers)
    row |= _stats("hold_minus_sampler_ms", [h - s for h, s in zip(recorder.holds, recorder.samplers, strict=True)])
    return row | {"prefill_s": round(prefill_s, 1)}


def _reachable(url: str) -> str | None:
    """None when the server answers, else why not."""
    try:
        with sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool).connect():
            return None
    except Exception as exc:  # any failure means: skip it
        return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, nargs="+", default=[50, 1000], help="study sizes N (prefilled trials)")
    parser.add_argument("--asks", type=int, default=20, help="asks K measured per size")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1/test", help="a PostgreSQL URL")
    parser.add_argument("--label", default="", help="free text stored in the JSON (e.g. before, after)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ask_lock.json"))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        storages = [("sqlite", f"sqlite:///{tmp}/ask_lock.db")]
        why = _reachable(args.postgres)
        if why is None:
            storages.append(("postgresql", args.postgres))
        else:
            print(f"PostgreSQL skipped: {why}")
        for storage, url in storages:
            for n in args.trials:
                rows.append(measure(url, storage, n, args.asks, Path(tmp)))
    machine = describe()
    print(f"machine: {machine}" + (f"; label: {args.label}" if args.label else ""))
    metrics = ["hold_ms", "sampler_ms", "hold_minus_sampler_ms"]
    print("| storage | trials | asks | " + " | ".join(f"{m} median (IQR)" for m in metrics) + " |")
    print("|" + "---|" * (3 + len(metrics)))
    for r in rows:
        cells = [f"{r[m + '_median']:.1f} ({r[m + '_q1']:.1f}-{r[m + '_q3']:.1f})" for m in metrics]
        print(f"| {r['storage']} | {r['trials']} | {r['asks']} | " + " | ".join(cells) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"label": args.label, "machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
