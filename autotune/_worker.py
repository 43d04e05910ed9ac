"""The worker loop: take a trial from the study, run it in a child process (one per GPU),
record its objective values; until the study's budget, --n-trials, --timeout or a signal."""

from __future__ import annotations

import math
import os
import queue
import signal
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ._outcome import counts_toward_budget, succeeded
from ._progress import WorkerProgress
from ._samplers import build_sampler
from ._spec import QLoRATrial, StudySpec, TabularTrial
from ._study import check_inputs, load_study
from ._trial_process import TrialFailed, run_trial_process
from .objectives import METRICS, TrialConfig, load_table, resolve_cache_dir, synthetic_metrics
from .storage import is_transient, resolve_storage_url, storage_error

if TYPE_CHECKING:
    import optuna


# The constraint every trial sets: 1 when its config failed (OOM, a time limit, an error).
CONFIG_FAILED = "config_failed"
MAX_STORAGE_RETRIES = 8


@dataclass
class WorkerResult:
    completed: int
    failed: int
    interrupted: bool
    budget_reached: bool


def budget_used(study: optuna.Study, before: int | None = None) -> int:
    trials = study.get_trials(deepcopy=False)
    return sum(1 for t in trials if (before is None or t.number < before) and counts_toward_budget(t))


def work_left(study: optuna.Study, budget: int) -> bool:
    """Budget left, or queued trials (enqueued configs, re-runs) that it already counts."""
    from optuna.trial import TrialState

    queued = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return bool(queued) or budget_used(study) < budget


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

    url = resolve_storage_url(storage)
    _, spec = load_study(name, url)
    check_inputs(spec)  # before any trial: this machine has what the trials read
    study, _ = load_study(name, url, heartbeat=(spec.worker.heartbeat_interval_s, spec.worker.grace_period_s))
    console = console or Console()
    slots: queue.Queue[str | None] = queue.Queue()
    for gpu in gpus or [None]:
        slots.put(gpu)
    budget = spec.budget.n_trials
    if not work_left(study, budget):
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
            penalty = _penalty(study, spec) if exc.kind == "config" else None
            if penalty is None:
                raise
            # Told as an infeasible trial with the worst values seen, so the sampler learns
            # to avoid the region (a FAIL is ignored by Optuna's samplers).
            trial.set_constraint(CONFIG_FAILED, 1.0)
            for constraint in spec.constraints:  # every trial carries the same constraints
                trial.set_constraint(str(constraint), 1.0)
            return penalty

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.user_attrs.get("failure_kind") != "surplus":
            mine.append(trial)
            progress.finished(trial)
        if stop.is_set() or not work_left(study, budget):
            study.stop()

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    started, retries = time.monotonic(), 0
    with progress, _stop_on_signals(stop, progress):
        while True:
            left = None if n_trials is None else n_trials - len(mine)
            remaining = None if timeout is None else timeout - (time.monotonic() - started)
            if (left is not None and left <= 0) or (remaining is not None and remaining <= 0) or stop.is_set():
                break
            try:
                study.optimize(
                    objective,
                    n_trials=left,
                    timeout=remaining,
                    n_jobs=slots.qsize(),
                    catch=(TrialFailed,),
                    callbacks=[after_trial],
                    gc_after_trial=False,
                )
                if not _recovered_lost_trials(study, spec, stop):
                    break
            except Exception as exc:
                # A lost connection or a deadlock: wait and go on. The write that failed is
                # not repeated; a trial it left RUNNING is failed by the heartbeat and re-queued.
                if not is_transient(exc) or retries >= MAX_STORAGE_RETRIES:
                    raise storage_error(url, exc) from exc
                wait = min(60.0, 2.0**retries)
                retries += 1
                progress.note(f"{storage_error(url, exc)}; retrying in {wait:.0f} s ({retries}/{MAX_STORAGE_RETRIES})")
                time.sleep(wait)
    completed = sum(1 for t in mine if succeeded(t))
    try:
        budget_reached = not work_left(study, budget)
    except Exception as exc:  # only for the summary line: the trials are recorded
        if not is_transient(exc):
            raise storage_error(url, exc) from exc
        budget_reached = False
    return WorkerResult(completed, len(mine) - completed, stop.is_set(), budget_reached)


def _recovered_lost_trials(study: optuna.Study, spec: StudySpec, stop: threading.Event) -> bool:
    """The budget counts trials in flight, some of which may belong to dead workers. Before
    exiting, wait for the running trials to end; True when a dead worker's trial was failed
    by its missed heartbeats and queued again, so that there is work left."""
    import optuna

    while not stop.is_set():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        if work_left(study, spec.budget.n_trials):
            return True
        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            return False
        stop.wait(spec.worker.heartbeat_interval_s)
    return False


def _penalty(study: optuna.Study, spec: StudySpec) -> list[float] | None:
    """The worst value of each objective among the successful trials, or None before any."""

    done = [t.values for t in study.get_trials(deepcopy=False) if succeeded(t)]
    if not done:
        return None
    columns = list(zip(*done, strict=True))
    return [max(c) if d == "minimize" else min(c) for c, d in zip(columns, spec.directions, strict=True)]


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
    trial.set_user_attr("sampler_seed", seed)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    gpu = slots.get()
    try:
        progress.started(trial.number, trial.params, gpu)
        if isinstance(spec.trial, QLoRATrial):
            config = TrialConfig(
                model=spec.model,
                dataset=spec.dataset,
                training=spec.training,
                hyperparameters=hyperparameters,
                cache_dir=resolve_cache_dir(),
            )
            trial.set_user_attr("config", config.model_dump(mode="json"))
            result = run_trial_process(config, gpu=gpu, stop=stop, time_limit_s=spec.trial.timeout_s)
        else:
            result = _run_fast(spec, trial.params, hyperparameters.model_dump(), stop)
    finally:
        slots.put(gpu)
    metrics = result["metrics"]
    trial.set_user_attr("metrics", metrics)
    for key, value in result["info"].items():
        trial.set_user_attr(key, value)
    trial.set_constraint(CONFIG_FAILED, 0.0)
    for constraint in spec.constraints:
        trial.set_constraint(str(constraint), constraint.violation(metrics))
    values = [float(metrics[m]) for m in spec.metric_names]
    bad = [m for m, v in zip(spec.metric_names, values, strict=True) if not math.isfinite(v)]
    if bad:
        raise TrialFailed(f"{', '.join(bad)} is not finite: training diverged", "config")
    return values


def _run_fast(
    spec: StudySpec, params: dict[str, object], hyperparameters: dict[str, Any], stop: threading.Event
) -> dict[str, dict[str, Any]]:
    """A test function or a table lookup of the hyperparameters, in the worker; `trial.delay_s` long."""
    limit = spec.trial.timeout_s
    if stop.wait(spec.trial.delay_s if limit is None else min(limit, spec.trial.delay_s)):
        raise TrialFailed("interrupted: the worker was asked to stop", "interrupted")
    if limit is not None and spec.trial.delay_s > limit:
        raise TrialFailed(f"timed out: over the trial time limit of {spec.trial.timeout_s:g} s", "config")
    if not isinstance(spec.trial, TabularTrial):
        return {"metrics": synthetic_metrics(spec.trial.kind, spec.search_space.unit_point(params)), "info": {}}
    table = load_table(spec.trial.table)
    point = table.nearest(hyperparameters)
    row = table.rows[point]
    if "error" in row:
        raise TrialFailed(f"failed when the table was made: {row['error']}", "config")
    return {"metrics": {m: row[m] for m in METRICS}, "info": {"grid_point": dict(zip(table.grid, point, strict=True))}}
