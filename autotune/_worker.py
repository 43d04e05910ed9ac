"""The worker loop: take a trial from the study, run it in a child process (one per GPU),
record its objective values; until the study's budget, --n-trials, --timeout or a signal."""

from __future__ import annotations

import math
import os
import queue
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rich.console import Console

from ._progress import WorkerProgress
from ._samplers import build_sampler
from ._spec import StudySpec
from ._study import load_study
from ._trial_process import TrialFailed, run_trial_process
from .objectives import TrialConfig

if TYPE_CHECKING:
    import optuna


@dataclass
class WorkerResult:
    completed: int
    failed: int
    interrupted: bool
    budget_reached: bool


def counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished trials count, and those under way or queued. Failures count only when the
    config itself failed: an interrupted trial frees its slot (a stale one is re-queued)."""
    from optuna.trial import TrialState

    if trial.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING):
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("failure_kind") == "config"


def budget_used(study: optuna.Study, before: int | None = None) -> int:
    trials = study.get_trials(deepcopy=False)
    return sum(1 for t in trials if (before is None or t.number < before) and counts_toward_budget(t))


@contextmanager
def _stop_on_signals(stop: threading.Event, progress: WorkerProgress) -> Iterator[None]:
    """First SIGINT/SIGTERM: fail the running trial cleanly and stop; second: exit now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()
        progress.note(f"{signal.Signals(signum).name}: stopping after failing the running trial (again to exit now)")

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _worker_seed(seed: int | None) -> int | None:
    import numpy as np

    # Workers sharing one seed would propose the same points: mix in the process id.
    return None if seed is None else int(np.random.SeedSequence([seed, os.getpid()]).generate_state(1)[0])


def run_worker(
    name: str,
    storage: str | None = None,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    gpus: Sequence[str] | None = None,
    console: Console | None = None,
) -> WorkerResult:
    """Run trials of study `name` until its budget is used (counted across all workers),
    or this worker's `n_trials`/`timeout`, or SIGINT/SIGTERM. With `gpus`, one trial runs
    per GPU at a time, pinned by CUDA_VISIBLE_DEVICES; without, one trial at a time.

    Example:
        >>> autotune.run_worker("lora-sweep", gpus=["0", "1"])  # doctest: +SKIP
    """
    import optuna

    study, spec = load_study(name, storage, heartbeat=True)
    console = console or Console()
    slots: queue.Queue[str | None] = queue.Queue()
    for gpu in gpus or [None]:
        slots.put(gpu)
    budget = spec.budget.n_trials
    if budget_used(study) >= budget:
        console.print(f"study {name!r} has used its budget of {budget} trials; nothing to do")
        return WorkerResult(0, 0, False, True)
    seed = _worker_seed(spec.sampler.seed)
    study.sampler = build_sampler(spec.sampler, budget, seed)
    stop = threading.Event()
    progress = WorkerProgress(console, spec.metric_names)
    mine: list[optuna.trial.FrozenTrial] = []

    def objective(trial: optuna.Trial) -> list[float]:
        try:
            return _run(trial, study, spec, slots, stop, progress, seed)
        except TrialFailed as exc:
            trial.set_user_attr("failure_kind", exc.kind)
            trial.set_user_attr("failure_reason", exc.reason)
            if exc.log_tail:
                trial.set_user_attr("log_tail", exc.log_tail)
            raise

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.user_attrs.get("failure_kind") != "surplus":
            mine.append(trial)
            progress.finished(trial)
        if stop.is_set() or budget_used(study) >= budget:
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with progress, _stop_on_signals(stop, progress):
        study.optimize(
            objective,
            n_trials=n_trials,
            timeout=timeout,
            n_jobs=slots.qsize(),
            catch=(TrialFailed,),
            callbacks=[after_trial],
            gc_after_trial=False,
        )
    completed = sum(1 for t in mine if t.state.name == "COMPLETE")
    return WorkerResult(completed, len(mine) - completed, stop.is_set(), budget_used(study) >= budget)


def _run(
    trial: optuna.Trial,
    study: optuna.Study,
    spec: StudySpec,
    slots: queue.Queue[str | None],
    stop: threading.Event,
    progress: WorkerProgress,
    seed: int | None,
) -> list[float]:
    if stop.is_set():
        raise TrialFailed("interrupted: the worker was asked to stop", "interrupted")
    # Workers that asked at the same moment near the end: the later numbers step back.
    if budget_used(study, before=trial.number) >= spec.budget.n_trials:
        raise TrialFailed("surplus: other workers used the budget first", "surplus")
    hyperparameters = spec.search_space.suggest(trial)
    config = TrialConfig(
        model=spec.model, dataset=spec.dataset, training=spec.training, hyperparameters=hyperparameters
    )
    trial.set_user_attr("config", config.model_dump(mode="json"))
    trial.set_user_attr("sampler_seed", seed)
    gpu = slots.get()
    try:
        progress.started(trial.number, trial.params, gpu)
        result = run_trial_process(config, gpu=gpu, stop=stop)
    finally:
        slots.put(gpu)
    metrics = result["metrics"]
    trial.set_user_attr("metrics", metrics)
    for key, value in result["info"].items():
        trial.set_user_attr(key, value)
    for constraint in spec.constraints:
        trial.set_constraint(str(constraint), constraint.violation(metrics))
    values = [float(metrics[m]) for m in spec.metric_names]
    bad = [m for m, v in zip(spec.metric_names, values, strict=True) if not math.isfinite(v)]
    if bad:
        raise TrialFailed(f"{', '.join(bad)} is not finite: training diverged", "config")
    return values
