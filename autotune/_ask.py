"""Asking the study for a trial: under the study's ask lock, so that no two asks race
anywhere and the trial's params are stored before anyone asks again; within the budget,
counted across all workers; never a config already in flight or tried (storage.under_way),
unless the search space seems exhausted. The study's trials are read once per ask attempt
(once more without an exclusive lock, after the sampler)."""

from __future__ import annotations

import os
import socket
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._runner import TrialFailed
from ._spec import Budget, StudySpec
from ._tell import Teller
from .objectives import Hyperparameters
from .storage import (
    AskLock,
    Retry,
    beat,
    budget_used,
    device_hours_spent,
    fail_dead_trials,
    is_rerun,
    under_way,
    write_record,
)

if TYPE_CHECKING:
    import threading

    import optuna

# Asks in a row that may return a config already in flight or done before the worker takes
# one anyway (a small discrete space can be exhausted).
MAX_DUPLICATE_ASKS = 5


def work_left(trials: list[optuna.trial.FrozenTrial], budget: Budget) -> bool:
    """Queued re-runs (their cost is not the budget's), or budget left: device hours, and
    trials beyond those queued (enqueued configs the trial count already counts)."""
    from optuna.trial import TrialState

    waiting = [t for t in trials if t.state == TrialState.WAITING]
    if any(is_rerun(t) for t in waiting):
        return True
    if budget.gpu_hours is not None and device_hours_spent(trials) >= budget.gpu_hours:
        return False
    return bool(waiting) or not _trials_used(trials, budget)


def _trials_used(trials: Iterable[optuna.trial.FrozenTrial], budget: Budget) -> bool:
    return budget.n_trials is not None and budget_used(trials) >= budget.n_trials


@dataclass
class Asker:
    study: optuna.Study
    spec: StudySpec
    lock: AskLock
    retry: Retry
    teller: Teller  # tells the asks that will not run
    sampler_seed: int | None

    def ask(self) -> tuple[optuna.Trial, Hyperparameters] | None:
        """A new trial and its hyperparameters, or None when the budget is used."""
        self.retry(self.lock.acquire)
        try:
            for attempt in range(1, MAX_DUPLICATE_ASKS + 1):
                asked = self.retry(self._ask_once)
                if asked is None:
                    return None
                trial, hyperparameters, before = asked
                if attempt == MAX_DUPLICATE_ASKS or not self._duplicate(trial, before):
                    return trial, hyperparameters
                self.teller.failed(trial, TrialFailed("duplicate: this config is in flight or done", "duplicate"))
            return None
        finally:
            self.lock.release()

    def _ask_once(self) -> tuple[optuna.Trial, Hyperparameters, list[optuna.trial.FrozenTrial]] | None:
        """A new trial, its hyperparameters and the trials before it; None when the budget is used."""
        trials = fail_dead_trials(self.study, self.spec.worker.grace_period_s)
        budget = self.spec.budget
        if not work_left(trials, budget):
            return None
        with warnings.catch_warnings():  # "Heartbeat ... supposed to be used with Study.optimize": we beat it
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = self.study.ask()
        beat(trial)  # at once: a worker that dies now leaves a trial that will be seen as stale
        # Taken up (not abandoned), and by whom.
        write_record(trial, worker=f"{socket.gethostname()}:{os.getpid()}", sampler_seed=self.sampler_seed)
        hyperparameters = self.spec.search_space.suggest(trial)
        if not self.lock.exclusive:  # workers may have asked at the same moment: read what they asked
            trials = self.study.get_trials(deepcopy=False)
        if not is_rerun(trial) and _trials_used((t for t in trials if t.number < trial.number), budget):
            self.teller.failed(trial, TrialFailed("surplus: other workers used the budget first", "surplus"))
            return None
        return trial, hyperparameters, trials

    def _duplicate(self, trial: optuna.Trial, before: list[optuna.trial.FrozenTrial]) -> bool:
        """A config of the search that is in flight or tried already (a re-run repeats one on
        purpose)."""
        if not self.spec.search_space.searched() or is_rerun(trial):
            return False
        return any(t.number != trial.number and t.params == trial.params and under_way(t) for t in before)

    def wait_for_work(self, stop: threading.Event) -> bool:
        """The budget counts trials in flight, some of which may belong to dead workers. Wait
        for the running trials to end; True when a dead worker's trial was failed by its
        missed heartbeats and queued again, so that there is work left."""
        from optuna.trial import TrialState

        while not stop.is_set():
            trials = self.retry(lambda: fail_dead_trials(self.study, self.spec.worker.grace_period_s))
            if work_left(trials, self.spec.budget):
                return True
            if not any(t.state == TrialState.RUNNING for t in trials):
                return False
            stop.wait(self.spec.worker.heartbeat_interval_s)
        return False
