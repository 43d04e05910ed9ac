"""What became of a trial, defined once for the worker's budget, `study show`, reports and
export. A trial whose config failed may be COMPLETE (told to the sampler as infeasible,
with penalty values): it records `failure_reason` and has no real metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna


def succeeded(trial: optuna.trial.FrozenTrial) -> bool:
    """Trained and measured: its values are real metrics."""
    from optuna.trial import TrialState

    return trial.state == TrialState.COMPLETE and "failure_reason" not in trial.user_attrs


def is_feasible(trial: optuna.trial.FrozenTrial) -> bool:
    """Succeeded, and within every constraint of the spec."""
    return succeeded(trial) and all(c <= 0 for c in trial.constraints.values())


def used_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished and counted: it succeeded, or its config failed (the config was tried).
    An interrupted trial, a surplus one and a lost worker's one (re-queued) are not."""
    from optuna.trial import TrialState

    if trial.state == TrialState.COMPLETE:
        return True
    return trial.state == TrialState.FAIL and trial.user_attrs.get("failure_kind") == "config"


def never_ran(trial: optuna.trial.FrozenTrial) -> bool:
    """Asked but never started: beyond the budget (`surplus`, asks racing without a lock), or
    a config already in flight or done (`duplicate`, asked again)."""
    return trial.user_attrs.get("failure_kind") in ("surplus", "duplicate")


def counts_toward_budget(trial: optuna.trial.FrozenTrial) -> bool:
    """Used the budget, or will: under way, or queued."""
    from optuna.trial import TrialState

    return used_budget(trial) or trial.state in (TrialState.RUNNING, TrialState.WAITING)
