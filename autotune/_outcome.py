"""What became of a trial, defined once for the worker's budget, `study show`, reports and
export. A trial whose config failed may be COMPLETE (told to the sampler as infeasible,
with penalty values): it records `failure_reason` and has no real metrics. A verification
re-run (`autotune verify`) trains a config of the search again with a new seed: it measures
that config's seed spread and is no point of the search (no budget, not on the front, not
shown to the sampler)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna


def succeeded(trial: optuna.trial.FrozenTrial) -> bool:
    """Trained and measured: its values are real metrics."""
    from optuna.trial import TrialState

    return trial.state == TrialState.COMPLETE and "failure_reason" not in trial.user_attrs


# User attrs of a trial stopped early (autotune._early_stopping).
STOPPED_AT = "stopped_at_step"  # the rung it stopped at
STOPPED_VALUES = "stopped_values"  # its last rung's objective values: what the sampler is shown
RUNG_TRAIN_TIME = "rung_train_time_s"  # the training time it took, to that rung


def stopped(trial: optuna.trial.FrozenTrial) -> bool:
    """Ended early by early stopping: PRUNED, with the step it reached and its last rung's values."""
    from optuna.trial import TrialState

    return trial.state == TrialState.PRUNED and STOPPED_VALUES in trial.user_attrs


# User attrs of a verification re-run.
VERIFIES = "verifies"  # the number of the trial whose config it trains again
SEED = "seed"  # a trial's training seed: a re-run's is set when it is queued, others record theirs


def is_rerun(trial: optuna.trial.FrozenTrial | optuna.Trial) -> bool:
    return VERIFIES in trial.user_attrs


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
    return trial.state == TrialState.FAIL and trial.user_attrs.get("failure_kind") == "config"


def under_way(trial: optuna.trial.FrozenTrial) -> bool:
    """Tried, running or queued."""
    from optuna.trial import TrialState

    return tried(trial) or trial.state in (TrialState.RUNNING, TrialState.WAITING)


def used_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """A trial of the search that was tried: what the study's budget counts."""
    return tried(trial) and not is_rerun(trial)


ABANDONED = "abandoned"  # asked, but its worker lost the storage before it started the trial


def never_ran(trial: optuna.trial.FrozenTrial) -> bool:
    """Asked but never started: beyond the budget (`surplus`, asks racing without a lock), a
    config already in flight or done (`duplicate`, asked again), or `abandoned`."""
    return trial.user_attrs.get("failure_kind") in ("surplus", "duplicate", ABANDONED)


def counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Used the budget, or will: a trial of the search under way."""
    return under_way(trial) and not is_rerun(trial)


def train_time_spent_s(trial: optuna.trial.FrozenTrial) -> float:
    """The training time a trial took (what a user pays for it): a stopped trial's to the rung
    it stopped at; none for a trial that did not train."""
    if stopped(trial):
        return float(trial.user_attrs[RUNG_TRAIN_TIME])
    return float(trial.user_attrs.get("metrics", {}).get("train_time_s", 0.0)) if succeeded(trial) else 0.0


def train_time_saved_s(trial: optuna.trial.FrozenTrial) -> float:
    """What stopping a trial early saved: the time its whole run would have taken (its
    recorded train_time_s, extrapolated from the rung) less the time it took."""
    if not stopped(trial):
        return 0.0
    return max(0.0, float(trial.user_attrs["metrics"]["train_time_s"]) - train_time_spent_s(trial))
