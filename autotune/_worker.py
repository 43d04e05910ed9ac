"""The worker: ask the study for a trial, hand it to a free slot, run it there, tell the
study; until the study's budget, --n-trials, --timeout or a signal.

One thread asks (under the study's ask lock, so no two asks race anywhere), one thread per
slot runs and tells, and the main thread only waits, so that a signal is handled at once."""

from __future__ import annotations

import functools
import math
import os
import queue
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console

from ._early_stopping import RUNGS, at_rung, goes_on, rung_steps, values_at
from ._outcome import (
    ABANDONED,
    RUNG_TRAIN_TIME,
    SEED,
    STOPPED_AT,
    STOPPED_VALUES,
    counts_toward_budget,
    is_rerun,
    never_ran,
    succeeded,
)
from ._progress import WorkerProgress
from ._runner import Runner, TrialFailed
from ._samplers import build_sampler, sees_the_search
from ._spec import QLoRATrial, StudySpec, TabularTrial, TestFunctionTrial
from ._study import check_inputs, load_study
from .objectives import METRICS, TrialConfig, TrialInputError, load_table, resolve_cache_dir, synthetic_metrics
from .storage import AskLock, is_database_error, is_transient, resolve_storage_url, storage_error

if TYPE_CHECKING:
    import optuna

# The constraint every trial sets: 1 when its config failed (OOM, a time limit, an error).
CONFIG_FAILED = "config_failed"
MAX_STORAGE_RETRIES = 8
# Asks in a row that may return a config already in flight or done before the worker takes
# one anyway (a small discrete space can be exhausted).
MAX_DUPLICATE_ASKS = 5
_T = TypeVar("_T")


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


@dataclass
class Slot:
    gpu: str | None
    runner: Runner


@dataclass
class _Worker:
    """What the asking thread and the slot threads share."""

    study: optuna.Study
    spec: StudySpec
    url: str
    cache_dir: str
    seed: int | None
    progress: WorkerProgress
    ask_lock: AskLock
    stop: threading.Event = field(default_factory=threading.Event)
    finished: list[optuna.trial.FrozenTrial] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def retry(self, operation: Callable[[], _T], *, forever: bool = False) -> _T:
        """`operation` again after a transient storage error (a lost connection, a deadlock, a
        locked SQLite file), waiting 1, 2, 4 ... 60 s; the count starts afresh on every call."""
        failures = 0
        while True:
            try:
                return operation()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if failures >= MAX_STORAGE_RETRIES and not forever:
                    raise storage_error(self.url, exc) from exc
                wait = min(60.0, 2.0**failures)
                failures += 1
                limit = "" if forever else f"/{MAX_STORAGE_RETRIES}"
                self.progress.note(f"{storage_error(self.url, exc)}; retrying in {wait:.0f} s ({failures}{limit})")
                time.sleep(wait)


@contextmanager
def _stop_on_signals(stop: threading.Event, console: Console) -> Iterator[None]:
    """First SIGINT/SIGTERM: fail the running trials cleanly and stop; second: exit now."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            os._exit(128 + signum)
        stop.set()
        message = f"{signal.Signals(signum).name}: stopping after failing the running trial (again to exit now)"
        console.print(message, highlight=False, soft_wrap=True)

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
    per GPU at a time, each in that GPU's warm runner process; without, one at a time.

    Example:
        >>> autotune.run_worker("lora-sweep", gpus=["0", "1"])  # doctest: +SKIP
    """
    console = console or Console()
    stop = threading.Event()
    # From the start: a signal while the worker still sets up stops it as cleanly as later.
    with _stop_on_signals(stop, console):
        return _run_worker(name, storage, n_trials, timeout, gpus, console, stop)


def _run_worker(
    name: str,
    storage: str | None,
    n_trials: int | None,
    timeout: float | None,
    gpus: Sequence[str] | None,
    console: Console,
    stop: threading.Event,
) -> WorkerResult:
    url = resolve_storage_url(storage)
    cache_dir = resolve_cache_dir()
    _, spec = load_study(name, url)
    check_inputs(spec)  # before any trial: this machine has what the trials read
    study, _ = load_study(name, url, heartbeat=(spec.worker.heartbeat_interval_s, spec.worker.grace_period_s))
    if stop.is_set():
        return WorkerResult(0, 0, True, False)
    budget = spec.budget.n_trials
    if not work_left(study, budget):
        console.print(f"study {name!r} has used its budget of {budget} trials; nothing to do")
        return WorkerResult(0, 0, False, True)
    seed = _worker_seed(spec.sampler.seed)
    study.sampler = sees_the_search(build_sampler(spec.sampler, budget, seed))
    slots = [Slot(gpu, Runner(gpu, spec.worker.trials_per_runner)) for gpu in gpus or [None]]
    progress = WorkerProgress(console, spec.metric_names)
    worker = _Worker(study, spec, url, cache_dir, seed, progress, AskLock(url, name), stop)
    loop = threading.Thread(target=_ask_and_hand_out, args=(worker, slots, n_trials, timeout), daemon=True)
    try:
        with worker.progress:
            loop.start()
            while loop.is_alive():
                loop.join(0.2)  # the main thread only waits: a signal is handled at once
    finally:
        for slot in slots:
            slot.runner.close()
        worker.ask_lock.close()
    if worker.errors:
        error = worker.errors[0]
        if is_database_error(error):
            raise storage_error(url, error) from error
        raise error
    mine = [t for t in worker.finished if not never_ran(t)]
    completed = sum(1 for t in mine if succeeded(t))
    try:
        budget_reached = not work_left(study, budget)
    except Exception as exc:  # only for the summary line: the trials are recorded
        if not is_transient(exc):
            raise storage_error(url, exc) from exc
        budget_reached = False
    return WorkerResult(completed, len(mine) - completed, worker.stop.is_set(), budget_reached)


def _ask_and_hand_out(worker: _Worker, slots: list[Slot], n_trials: int | None, timeout: float | None) -> None:
    """Ask for a trial whenever a slot is free and start it there; then wait for the slots."""
    free: queue.Queue[Slot] = queue.Queue()
    for slot in slots:
        free.put(slot)
    started_at, started, running = time.monotonic(), 0, []
    try:
        while not worker.stop.is_set():
            if n_trials is not None and started >= n_trials:
                break
            if timeout is not None and time.monotonic() - started_at >= timeout:
                break
            try:
                slot = free.get(timeout=0.2)
            except queue.Empty:
                continue
            if worker.stop.is_set():  # set while this thread waited for the slot
                break
            asked = _ask(worker)
            if asked is None:
                free.put(slot)
                if _wait_for_work(worker):
                    continue
                break
            started += 1
            thread = threading.Thread(target=_run_on_slot, args=(worker, slot, *asked, free), daemon=True)
            thread.start()
            running.append(thread)
    except BaseException as exc:
        worker.errors.append(exc)
        worker.stop.set()
    for thread in running:
        thread.join()


def _ask(worker: _Worker) -> tuple[optuna.Trial, Any] | None:
    """A new trial and its hyperparameters, or None when the budget is used. Under the
    study's ask lock, so that the trial's params are stored before anyone asks again."""
    study, spec = worker.study, worker.spec

    def ask_once() -> tuple[optuna.Trial, Any] | None:
        _fail_stale_trials(study, spec.worker.grace_period_s)
        if not work_left(study, spec.budget.n_trials):
            return None
        with warnings.catch_warnings():  # "Heartbeat ... supposed to be used with Study.optimize": we beat it
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = study.ask()
        _beat(trial)  # at once: a worker that dies now leaves a trial that will be seen as stale
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # taken up: not abandoned
        trial.set_user_attr("sampler_seed", worker.seed)
        if not is_rerun(trial) and budget_used(study, before=trial.number) >= spec.budget.n_trials:
            # Without a lock (a gRPC proxy) workers may ask at the same moment near the end.
            _tell_failed(worker, trial, TrialFailed("surplus: other workers used the budget first", "surplus"))
            return None
        return trial, spec.search_space.suggest(trial)

    worker.retry(worker.ask_lock.acquire)
    try:
        for attempt in range(1, MAX_DUPLICATE_ASKS + 1):
            asked = worker.retry(ask_once)
            if asked is None or not spec.search_space.searched() or is_rerun(asked[0]):
                return asked  # a re-run repeats a config on purpose
            if not _tried_already(study, asked[0]):
                return asked
            if attempt == MAX_DUPLICATE_ASKS:
                return asked  # the search space seems exhausted: run the copy
            _tell_failed(worker, asked[0], TrialFailed("duplicate: this config is in flight or done", "duplicate"))
    finally:
        worker.ask_lock.release()


def _tried_already(study: optuna.Study, trial: optuna.Trial) -> bool:
    from optuna.trial import TrialState

    others = study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED))
    return any(t.number != trial.number and t.params == trial.params for t in others)


def _fail_stale_trials(study: optuna.Study, grace_period_s: float) -> None:
    """Fail the RUNNING trials of dead workers (missed heartbeats), whose configs are queued
    again, and abandoned asks."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    _fail_abandoned_asks(study, grace_period_s)


def _fail_abandoned_asks(study: optuna.Study, grace_period_s: float) -> None:
    """Fail, as never run, a RUNNING trial that no worker took up within the grace period (the
    asking worker records `worker` right after the first heartbeat): its worker lost the
    storage between creating it in `study.ask()` and that heartbeat. Optuna never finds a trial with no heartbeat stale,
    and the budget would count it for ever, leaving every worker waiting on it."""
    from optuna.trial import TrialState

    now = datetime.now()  # Optuna stores datetime_start in local time
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start
        if "worker" in trial.user_attrs or started is None or (now - started).total_seconds() < grace_period_s:
            continue
        study._storage.set_trial_user_attr(trial._trial_id, "failure_kind", ABANDONED)
        study._storage.set_trial_user_attr(
            trial._trial_id, "failure_reason", "abandoned: asked, but its worker lost the storage before starting it"
        )
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)


def _wait_for_work(worker: _Worker) -> bool:
    """The budget counts trials in flight, some of which may belong to dead workers. Wait
    for the running trials to end; True when a dead worker's trial was failed by its missed
    heartbeats and queued again, so that there is work left."""
    from optuna.trial import TrialState

    study, spec = worker.study, worker.spec
    while not worker.stop.is_set():
        worker.retry(lambda: _fail_stale_trials(study, spec.worker.grace_period_s))
        if worker.retry(lambda: work_left(study, spec.budget.n_trials)):
            return True
        if not worker.retry(lambda: study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
            return False
        worker.stop.wait(spec.worker.heartbeat_interval_s)
    return False


def _run_on_slot(
    worker: _Worker, slot: Slot, trial: optuna.Trial, hyperparameters: Any, free: queue.Queue[Slot]
) -> None:
    try:
        try:
            with _heartbeat(worker, trial):
                result = _run(worker, slot, trial, hyperparameters)
        except TrialFailed as exc:
            _tell_failed(worker, trial, exc)
            if exc.kind == "input":
                raise TrialInputError(exc.reason) from None
        else:
            if STOPPED_AT in result["info"]:
                _tell_stopped(worker, trial, result)
            else:
                _tell_complete(worker, trial, result)
    except BaseException as exc:
        worker.errors.append(exc)
        worker.stop.set()
    finally:
        free.put(slot)


def _run(worker: _Worker, slot: Slot, trial: optuna.Trial, hyperparameters: Any) -> dict[str, Any]:
    spec = worker.spec
    worker.progress.started(trial.number, trial.params, slot.gpu)
    on_rung = functools.partial(_at_rung, worker, trial, [])
    if not isinstance(spec.trial, QLoRATrial):
        return _run_fast(worker, trial, hyperparameters.model_dump(), on_rung)
    config = TrialConfig(
        model=spec.model,
        dataset=spec.dataset,
        training=spec.training.model_copy(update={"seed": _seed(spec, trial)}),
        hyperparameters=hyperparameters,
        cache_dir=worker.cache_dir,
        rungs=_rungs(spec, trial),
    )
    worker.retry(lambda: trial.set_user_attr("config", config.model_dump(mode="json")))
    return slot.runner.run(config, stop=worker.stop, time_limit_s=spec.trial.timeout_s, on_rung=on_rung)


def _seed(spec: StudySpec, trial: optuna.Trial) -> int:
    """The training seed: the spec's, or the new one a verification re-run was queued with."""
    return int(trial.user_attrs.get(SEED, spec.training.seed))


def _rungs(spec: StudySpec, trial: optuna.Trial) -> list[int]:
    """The steps at which early stopping may end the trial; none for a re-run, which measures
    its config's whole run."""
    if spec.early_stopping is None or spec.training.max_steps is None or is_rerun(trial):
        return []
    return rung_steps(spec.early_stopping, spec.training.max_steps)


def _at_rung(worker: _Worker, trial: optuna.Trial, reached: list[dict[str, Any]], step: int, measured: dict) -> bool:
    """Record the trial's values at rung `step` (its `reached` so far) in the study, and
    whether it goes on against the values other trials recorded there."""
    spec = worker.spec
    assert spec.early_stopping is not None and spec.training.max_steps is not None
    metrics = at_rung(measured, step, spec.training.max_steps)
    values = [float(metrics[m]) for m in spec.metric_names]
    reached.append({"step": step, "values": values})
    worker.retry(lambda: trial.set_user_attr(RUNGS, reached))
    trials = worker.retry(lambda: worker.study.get_trials(deepcopy=False))
    others = values_at(trials, step, but=trial.number)
    return goes_on(values, others, spec.directions, spec.early_stopping.reduction_factor)


def _heartbeat_interval(trial: optuna.Trial) -> int | None:
    storage = trial.storage
    return storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None


def _beat(trial: optuna.Trial) -> None:
    if _heartbeat_interval(trial) is not None:
        trial.storage.record_heartbeat(trial._trial_id)  # Optuna has no public handle for a trial's id


@contextmanager
def _heartbeat(worker: _Worker, trial: optuna.Trial) -> Iterator[None]:
    """Beat the trial's heartbeat while it runs (Optuna beats only under study.optimize), so
    that a dead worker's trial is recognised and queued again. A transient storage error
    misses one beat, not the rest."""
    interval = _heartbeat_interval(trial)
    if interval is None:
        yield
        return
    done = threading.Event()

    def beat() -> None:
        while True:
            try:
                _beat(trial)
            except Exception as exc:
                if not is_transient(exc):
                    worker.progress.note(f"trial {trial.number}: heartbeat stopped: {storage_error(worker.url, exc)}")
                    return
            if done.wait(interval):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _run_fast(
    worker: _Worker, trial: optuna.Trial, hyperparameters: dict[str, Any], on_rung: Callable[[int, dict], bool]
) -> dict[str, Any]:
    """A test function or a table lookup of the hyperparameters, in the worker; `trial.delay_s`
    long for the whole run, stopping at the rungs as a training run would."""
    spec = worker.spec
    limit = spec.trial.timeout_s
    max_steps = spec.training.max_steps or 1
    done = 0
    for step in [*_rungs(spec, trial), max_steps]:
        wait = spec.trial.delay_s * (step - done) / max_steps
        if limit is not None:
            wait = max(0.0, min(wait, limit - spec.trial.delay_s * done / max_steps))
        if worker.stop.wait(wait):
            raise TrialFailed("interrupted: the worker was asked to stop", "interrupted")
        if limit is not None and spec.trial.delay_s * step / max_steps > limit:
            raise TrialFailed(f"timed out: over the trial time limit of {limit:g} s", "config")
        done = step
        result = _fast_result(spec, trial, hyperparameters, step, max_steps)
        if step < max_steps and not on_rung(step, result["metrics"]):
            return {**result, "info": {**result["info"], STOPPED_AT: step}}
    return result


def _fast_result(
    spec: StudySpec, trial: optuna.Trial, hyperparameters: dict[str, Any], step: int, max_steps: int
) -> dict[str, Any]:
    """The metrics after `step` of `max_steps`: a test function at that fidelity, or the table's
    learning curve at that step (the table records held-out loss and time along the curve;
    the other metrics are the whole run's), from one of the table's seeds, drawn by the
    trial's seed and number."""
    seed = _seed(spec, trial)
    if isinstance(spec.trial, TestFunctionTrial):
        x = spec.search_space.unit_point(trial.params)
        metrics = synthetic_metrics(spec.trial.kind, x, step / max_steps, noise=spec.trial.noise, seed=seed)
        return {"metrics": metrics, "info": {SEED: seed}}
    assert isinstance(spec.trial, TabularTrial)
    table = load_table(spec.trial.table)
    point = table.nearest(hyperparameters)
    row = table.draw(point, f"{seed}:{trial.number}")
    if "error" in row:
        raise TrialFailed(f"failed when the table was made: {row['error']}", "config")
    metrics = {m: row[m] for m in METRICS}
    if step < max_steps:
        curve = next(p for p in row["learning_curve"] if p["step"] == step)
        metrics |= {
            "eval_loss": curve["eval_loss"],
            "perplexity": math.exp(curve["eval_loss"]),
            "train_time_s": curve["train_time_s"],
        }
    grid_point = dict(zip(table.grid, point, strict=True))
    return {"metrics": metrics, "info": {"grid_point": grid_point, "table_seed": row.get("seed")}}


def _penalty(study: optuna.Study, spec: StudySpec) -> list[float] | None:
    """The worst value of each objective among the successful trials, or None before any."""
    done = [t.values for t in study.get_trials(deepcopy=False) if succeeded(t)]
    if not done:
        return None
    columns = list(zip(*done, strict=True))
    return [max(c) if d == "minimize" else min(c) for c, d in zip(columns, spec.directions, strict=True)]


def _finished_elsewhere(worker: _Worker, trial: optuna.Trial, exc: Exception) -> bool:
    """True (and said) where `exc` is a write to a trial that is finished already: one whose
    heartbeats were missed (a paused worker), failed and queued again by another worker."""
    import optuna

    if not isinstance(exc, optuna.exceptions.UpdateFinishedTrialError):
        return False
    worker.progress.note(f"trial {trial.number} was finished by another worker (missed heartbeats); result dropped")
    return True


def _tell_complete(worker: _Worker, trial: optuna.Trial, result: dict[str, Any]) -> None:
    import optuna

    spec, metrics = worker.spec, result["metrics"]
    values = [float(metrics[m]) for m in spec.metric_names]
    bad = [m for m, v in zip(spec.metric_names, values, strict=True) if not math.isfinite(v)]
    if bad:
        _tell_failed(worker, trial, TrialFailed(f"{', '.join(bad)} is not finite: training diverged", "config"))
        return

    record = functools.partial(_record_result, spec, trial, metrics, result["info"])
    _record_and_tell(worker, trial, record, values, optuna.trial.TrialState.COMPLETE)


def _record_result(spec: StudySpec, trial: optuna.Trial, metrics: dict[str, float], info: dict[str, Any]) -> None:
    """A trial that trained: its metrics, its info and its constraints (none failed)."""
    trial.set_user_attr("metrics", metrics)
    for key, value in info.items():
        trial.set_user_attr(key, value)
    trial.set_constraint(CONFIG_FAILED, 0.0)
    for constraint in spec.constraints:
        trial.set_constraint(str(constraint), constraint.violation(metrics))


def _tell_stopped(worker: _Worker, trial: optuna.Trial, result: dict[str, Any]) -> None:
    """A trial stopped early: PRUNED, with its rung's metrics (the time extrapolated to the
    whole run) and the values the sampler is shown (autotune._early_stopping)."""
    import optuna

    spec, info = worker.spec, result["info"]
    assert spec.training.max_steps is not None
    metrics = at_rung(result["metrics"], info[STOPPED_AT], spec.training.max_steps)
    values = [float(metrics[m]) for m in spec.metric_names]
    if not all(math.isfinite(v) for v in values):
        _tell_failed(worker, trial, TrialFailed("the held-out loss is not finite: training diverged", "config"))
        return

    took = {STOPPED_VALUES: values, RUNG_TRAIN_TIME: result["metrics"]["train_time_s"]}
    record = functools.partial(_record_result, spec, trial, metrics, {**info, **took})

    _record_and_tell(worker, trial, record, None, optuna.trial.TrialState.PRUNED)


def _tell_failed(worker: _Worker, trial: optuna.Trial, failure: TrialFailed) -> None:
    """Record why; a failed config is told as an infeasible trial with the worst values seen,
    so that the sampler learns to avoid the region (Optuna's samplers ignore a FAIL)."""
    import optuna

    penalty = worker.retry(lambda: _penalty(worker.study, worker.spec)) if failure.kind == "config" else None

    def record() -> None:
        trial.set_user_attr("failure_kind", failure.kind)
        trial.set_user_attr("failure_reason", failure.reason)
        if failure.log_tail:
            trial.set_user_attr("log_tail", failure.log_tail)
        if penalty is not None:
            trial.set_constraint(CONFIG_FAILED, 1.0)
            for constraint in worker.spec.constraints:  # every trial carries the same constraints
                trial.set_constraint(str(constraint), 1.0)

    state = optuna.trial.TrialState.COMPLETE if penalty is not None else optuna.trial.TrialState.FAIL
    _record_and_tell(worker, trial, record, penalty, state)


def _record_and_tell(
    worker: _Worker,
    trial: optuna.Trial,
    record: Callable[[], None],
    values: list[float] | None,
    state: optuna.trial.TrialState,
) -> None:
    """Write the trial's attributes and tell the study, each retried until it lands: a
    finished trial is never thrown away."""
    try:
        worker.retry(record, forever=True)
        frozen = worker.retry(
            lambda: worker.study.tell(trial, values=values, state=state, skip_if_finished=True), forever=True
        )
    except Exception as exc:
        if _finished_elsewhere(worker, trial, exc):
            return
        raise
    worker.finished.append(frozen)
    if not never_ran(frozen):
        worker.progress.finished(frozen)
