"""Keeping a study live while workers come and go: retrying an operation through transient
storage errors, beating a running trial's heartbeat, and failing the trials of dead
workers (missed heartbeats, whose configs Optuna queues again) and abandoned asks."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from ._open import is_transient, storage_error
from ._trial_record import record_attrs, recorded

if TYPE_CHECKING:
    import optuna

MAX_STORAGE_RETRIES = 8
_T = TypeVar("_T")


@dataclass(frozen=True)
class Retry:
    """Runs an operation again after a transient storage error (a lost connection, a
    deadlock, a locked SQLite file), waiting 1, 2, 4 ... 60 s, and says so through `note`;
    the count starts afresh on every call."""

    url: str
    note: Callable[[str], None]

    def __call__(self, operation: Callable[[], _T], *, forever: bool = False) -> _T:
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
                self.note(f"{storage_error(self.url, exc)}; retrying in {wait:.0f} s ({failures}{limit})")
                time.sleep(wait)


def _heartbeat_interval(trial: optuna.Trial) -> int | None:
    storage = trial.storage
    return storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None


def beat(trial: optuna.Trial) -> None:
    if _heartbeat_interval(trial) is not None:
        trial.storage.record_heartbeat(trial._trial_id)  # Optuna has no public handle for a trial's id


@contextmanager
def heartbeat(trial: optuna.Trial, retry: Retry) -> Iterator[None]:
    """Beat the trial's heartbeat while it runs (Optuna beats only under study.optimize), so
    that a dead worker's trial is recognised and queued again. A transient storage error
    misses one beat, not the rest."""
    interval = _heartbeat_interval(trial)
    if interval is None:
        yield
        return
    done = threading.Event()

    def beat_until_done() -> None:
        while True:
            try:
                beat(trial)
            except Exception as exc:
                if not is_transient(exc):
                    retry.note(f"trial {trial.number}: heartbeat stopped: {storage_error(retry.url, exc)}")
                    return
            if done.wait(interval):
                return

    thread = threading.Thread(target=beat_until_done, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the RUNNING trials whose heartbeats stopped (Optuna queues their configs again)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def fail_dead_trials(study: optuna.Study, grace_period_s: float) -> list[optuna.trial.FrozenTrial]:
    """Fail the RUNNING trials of dead workers (missed heartbeats), whose configs Optuna
    queues again, and abandoned asks; the study's trials after that, read once."""
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    abandoned = {t.number for t in trials if _abandoned(t, grace_period_s)}
    for trial in trials:
        if trial.number in abandoned:
            _fail_abandoned(study, trial)
    return [t for t in trials if t.number not in abandoned]


def _abandoned(trial: optuna.trial.FrozenTrial, grace_period_s: float) -> bool:
    """A RUNNING trial that no worker took up within the grace period (the asking worker
    records `worker` right after the first heartbeat): its worker lost the storage between
    creating it in `study.ask()` and that heartbeat. Optuna never finds a trial with no
    heartbeat stale, and the budget would count it for ever, leaving every worker waiting."""
    from optuna.trial import TrialState

    started = trial.datetime_start
    if trial.state != TrialState.RUNNING or started is None or recorded(trial, "worker") is not None:
        return False
    return (datetime.now() - started).total_seconds() >= grace_period_s  # Optuna stores local time


def _fail_abandoned(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    from optuna.trial import TrialState

    reason = "abandoned: asked, but its worker lost the storage before starting it"
    for key, value in record_attrs(failure_kind="abandoned", failure_reason=reason).items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)  # no worker holds it: no optuna.Trial
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
