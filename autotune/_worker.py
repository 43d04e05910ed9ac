"""The worker: ask the study for a trial, hand it to a free slot, run it there, tell the
study; until the study's budget, --n-trials, --timeout or a signal.

One thread asks (autotune._ask) and hands trials to the slots (autotune._slots), one
thread per slot runs its trial in the slot's warm runner and tells the study
(autotune._tell), and the main thread only waits, so that a signal is handled at once."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console

from ._adapters import Adapters
from ._ask import Asker, work_left
from ._progress import WorkerProgress
from ._runner import Runner
from ._samplers import build_sampler, sees_the_search
from ._slots import Slot, SlotLoop, ask_and_hand_out
from ._study import check_inputs, load_study
from ._tell import Teller
from .objectives import resolve_cache_dir
from .storage import (
    AskLock,
    Retry,
    is_database_error,
    is_transient,
    never_ran,
    resolve_storage_url,
    stopped,
    storage_error,
    succeeded,
)


@dataclass
class WorkerResult:
    completed: int
    stopped: int  # by early stopping
    failed: int
    interrupted: bool
    budget_reached: bool


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
        return WorkerResult(0, 0, 0, True, False)
    budget = spec.budget
    if not work_left(study.get_trials(deepcopy=False), budget):
        console.print(f"study {name!r} has used its budget of {budget}; nothing to do")
        return WorkerResult(0, 0, 0, False, True)
    seed = _worker_seed(spec.sampler.seed)
    study.sampler = sees_the_search(build_sampler(spec.sampler, budget.n_trials, seed))
    progress = WorkerProgress(console, spec.metric_names)
    retry = Retry(url, progress.note)
    teller = Teller(study, spec, retry, progress)
    asker = Asker(study, spec, AskLock(url, name), retry, teller, seed)
    loop = SlotLoop(asker, teller, Adapters.of(spec), cache_dir, stop)
    slots = [Slot(gpu, Runner(gpu, spec.worker.trials_per_runner)) for gpu in gpus or [None]]
    asking = threading.Thread(target=ask_and_hand_out, args=(loop, slots, n_trials, timeout), daemon=True)
    try:
        with progress:
            asking.start()
            while asking.is_alive():
                asking.join(0.2)  # the main thread only waits: a signal is handled at once
    finally:
        for slot in slots:
            slot.runner.close()
        loop.asker.lock.close()
    if loop.errors:
        error = loop.errors[0]
        if is_database_error(error):
            raise storage_error(url, error) from error
        raise error
    mine = [t for t in teller.finished if not never_ran(t)]
    completed = sum(1 for t in mine if succeeded(t))
    stopped_early = sum(1 for t in mine if stopped(t))
    try:
        budget_reached = not work_left(study.get_trials(deepcopy=False), budget)
    except Exception as exc:  # only for the summary line: the trials are recorded
        if not is_transient(exc):
            raise storage_error(url, exc) from exc
        budget_reached = False
    failed = len(mine) - completed - stopped_early
    return WorkerResult(completed, stopped_early, failed, stop.is_set(), budget_reached)
