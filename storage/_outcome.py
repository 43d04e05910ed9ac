"""What became of a trial, and how trials compare: defined once for the worker's asks and
budget, `study show`, reports and export.

A trial whose config failed may be COMPLETE (told to the sampler as infeasible, with penalty
values): it records `failure_reason` and has no real metrics. A verification re-run
(`autotune verify`) trains a config of the search again with a new seed: it measures that
config's seed spread and is no point of the search (no budget, not on the front, not shown
to the sampler)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._trial_record import read_record, recorded

if TYPE_CHECKING:
    import optuna


def succeeded(trial: optuna.trial.FrozenTrial) -> bool:
    """Trained and measured: its values are real metrics."""
    from optuna.trial import TrialState

    return trial.state == TrialState.COMPLETE and recorded(trial, "failure_reason") is None


def stopped(trial: optuna.trial.FrozenTrial) -> bool:
    """Ended early by early stopping: PRUNED, with the step it reached and its last rung's values."""
    from optuna.trial import TrialState

    return trial.state == TrialState.PRUNED and recorded(trial, "stopped_values") is not None


def is_rerun(trial: optuna.trial.FrozenTrial | optuna.Trial) -> bool:
    return recorded(trial, "verifies") is not None


def searched(trial: optuna.trial.FrozenTrial) -> bool:
    """Succeeded, as a point of the search (not a verification re-run)."""
    return succeeded(trial) and not is_rerun(trial)


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """A point of the search that succeeded within every constraint of the spec."""
    return searched(trial) and all(c <= 0 for c in trial.constraints.values())


def tried(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished, with its config tried: it succeeded, was stopped early, or its config failed.
    An interrupted trial, a surplus one and a lost worker's one (re-queued) were not."""
    from optuna.trial import TrialState

    if trial.state == TrialState.COMPLETE or stopped(trial):
        return True
    return trial.state == TrialState.FAIL and recorded(trial, "failure_kind") == "config"


def under_way(trial: optuna.trial.FrozenTrial) -> bool:
    """Tried, running or queued."""
    from optuna.trial import TrialState

    return tried(trial) or trial.state in (TrialState.RUNNING, TrialState.WAITING)


def spent_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial of the search that was tried: what the study's budget counts."""
    return tried(trial) and not is_rerun(trial)


def never_ran(trial: optuna.trial.FrozenTrial) -> bool:
    """Asked but never started: beyond the budget (`surplus`, asks racing without a lock), a
    config already in flight or done (`duplicate`, asked again), or `abandoned`."""
    return recorded(trial, "failure_kind") in ("surplus", "duplicate", "abandoned")


def counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Used the budget, or will: a trial of the search under way."""
    return under_way(trial) and not is_rerun(trial)


def budget_used(trials: Iterable[optuna.trial.FrozenTrial]) -> int:
    """The trials the study's budget counts: of the search, under way or tried."""
    return sum(1 for t in trials if counts_toward_budget(t))


def device_hours_spent(trials: Iterable[optuna.trial.FrozenTrial]) -> float:
    """The device time the trials of the search took, in hours: what a budget in GPU-hours
    counts (every trial that ran on a slot, stopped and failed ones included; re-runs not)."""
    return sum(recorded(t, "device_time_s") or 0.0 for t in trials if not is_rerun(t)) / 3600


def train_time_spent_s(trial: optuna.trial.FrozenTrial) -> float:
    """The training time a trial took (what a user pays for it): a stopped trial's to the rung
    it stopped at; none for a trial that did not train."""
    record = read_record(trial)
    if stopped(trial):
        return float(record.rung_train_time_s or 0.0)
    return float((record.metrics or {}).get("train_time_s", 0.0)) if succeeded(trial) else 0.0


def train_time_saved_s(trial: optuna.trial.FrozenTrial) -> float:
    """What stopping a trial early saved: the time its whole run would have taken (its
    recorded train_time_s, extrapolated from the rung) less the time it took."""
    if not stopped(trial):
        return 0.0
    whole_run = float((read_record(trial).metrics or {})["train_time_s"])
    return max(0.0, whole_run - train_time_spent_s(trial))


def loss_sign(direction: str) -> float:
    """1 for an objective minimised, -1 for one maximised: value * sign is a loss."""
    return 1.0 if direction == "minimize" else -1.0


def to_loss(values: Sequence[float], directions: Sequence[str]) -> np.ndarray:
    """Values as losses: maximised objectives negated."""
    return np.array([v * loss_sign(d) for v, d in zip(values, directions, strict=True)], dtype=float)


def non_domination_rank(losses: np.ndarray) -> np.ndarray:
    """Each row's non-dominated front, 0 the Pareto front (Optuna's fast non-dominated sort)."""
    from optuna.study._multi_objective import _fast_non_domination_rank

    return _fast_non_domination_rank(np.asarray(losses, dtype=float))
