"""Telling the study how a trial ended: its metrics (COMPLETE), its last rung (PRUNED, stopped
early), or why it failed. A failed config is told as an infeasible trial with the worst
values seen, so that the sampler learns to avoid its region (Optuna's samplers ignore a
FAIL). Every write is retried until it lands: a finished trial is never thrown away."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._early_stopping import at_rung
from ._progress import WorkerProgress
from ._runner import TrialFailed
from ._spec import StudySpec
from .storage import Retry, loss_sign, never_ran, succeeded, write_record

if TYPE_CHECKING:
    import optuna

# The constraint every trial sets: 1 when its config failed (OOM, a time limit, an error).
CONFIG_FAILED = "config_failed"
TellState = Literal["COMPLETE", "PRUNED", "FAIL"]  # the optuna.trial.TrialState told


@dataclass
class Teller:
    study: optuna.Study
    spec: StudySpec
    retry: Retry
    progress: WorkerProgress
    finished: list[optuna.trial.FrozenTrial] = field(default_factory=list)  # told by this worker

    def result(self, trial: optuna.Trial, result: dict[str, Any]) -> None:
        """A runner's answer: {"metrics", "info"}, stopped early where info says so."""
        if "stopped_at_step" in result["info"]:
            self._stopped(trial, result)
        else:
            self._complete(trial, result)

    def _complete(self, trial: optuna.Trial, result: dict[str, Any]) -> None:
        metrics = result["metrics"]
        values = [float(metrics[m]) for m in self.spec.metric_names]
        bad = [m for m, v in zip(self.spec.metric_names, values, strict=True) if not math.isfinite(v)]
        if bad:
            self.failed(trial, TrialFailed(f"{', '.join(bad)} is not finite: training diverged", "config"))
            return
        self._record_and_tell(trial, lambda: self._record(trial, metrics, result["info"]), values, "COMPLETE")

    def _stopped(self, trial: optuna.Trial, result: dict[str, Any]) -> None:
        """Stopped early: PRUNED, with its rung's metrics (the time extrapolated to the whole
        run) and the values the sampler is shown (autotune._early_stopping)."""
        info = result["info"]
        assert self.spec.training.max_steps is not None
        metrics = at_rung(result["metrics"], info["stopped_at_step"], self.spec.training.max_steps)
        values = [float(metrics[m]) for m in self.spec.metric_names]
        if not all(math.isfinite(v) for v in values):
            self.failed(trial, TrialFailed("the held-out loss is not finite: training diverged", "config"))
            return
        took = result["metrics"]["train_time_s"]

        def record() -> None:
            self._record(trial, metrics, info, stopped_values=values, rung_train_time_s=took)

        self._record_and_tell(trial, record, None, "PRUNED")

    def _record(self, trial: optuna.Trial, metrics: dict[str, float], info: dict[str, Any], **stop: Any) -> None:
        """A trial that trained: its metrics, its info (and where it stopped) and its
        constraints (none failed)."""
        write_record(trial, metrics=metrics, **info, **stop)
        trial.set_constraint(CONFIG_FAILED, 0.0)
        for constraint in self.spec.constraints:
            trial.set_constraint(str(constraint), constraint.violation(metrics))

    def failed(self, trial: optuna.Trial, failure: TrialFailed, device_time_s: float | None = None) -> None:
        """Record why (and the device time it took, where it ran); a failed config is told
        with the penalty, once a trial has succeeded."""
        penalty = self.retry(self._penalty) if failure.kind == "config" else None

        def record() -> None:
            extra = {"log_tail": failure.log_tail} if failure.log_tail else {}
            extra |= {"device_time_s": device_time_s} if device_time_s is not None else {}
            write_record(trial, failure_kind=failure.kind, failure_reason=failure.reason, **extra)
            if penalty is not None:
                trial.set_constraint(CONFIG_FAILED, 1.0)
                for constraint in self.spec.constraints:  # every trial carries the same constraints
                    trial.set_constraint(str(constraint), 1.0)

        self._record_and_tell(trial, record, penalty, "COMPLETE" if penalty is not None else "FAIL")

    def _penalty(self) -> list[float] | None:
        """The worst value of each objective among the successful trials, or None before any."""
        done = [t.values for t in self.study.get_trials(deepcopy=False) if succeeded(t)]
        if not done:
            return None
        columns = list(zip(*done, strict=True))
        return [
            loss_sign(d) * max(loss_sign(d) * v for v in c) for c, d in zip(columns, self.spec.directions, strict=True)
        ]

    def _record_and_tell(
        self, trial: optuna.Trial, record: Callable[[], None], values: list[float] | None, state: TellState
    ) -> None:
        import optuna

        try:
            self.retry(record, forever=True)
            told = optuna.trial.TrialState[state]
            frozen = self.retry(
                lambda: self.study.tell(trial, values=values, state=told, skip_if_finished=True), forever=True
            )
        except optuna.exceptions.UpdateFinishedTrialError:
            # Its heartbeats were missed (a paused worker): another worker failed it and queued it again.
            self.progress.note(
                f"trial {trial.number} was finished by another worker (missed heartbeats); result dropped"
            )
            return
        self.finished.append(frozen)
        if not never_ran(frozen):
            self.progress.finished(frozen)
