"""Multi-objective early stopping: asynchronous successive halving whose promotions rank the
trials at a rung by non-dominated sorting, crowding distance breaking ties within a front
(MOASHA, Schmucker et al. 2021). Optuna's pruners take one objective only.

A trial measures its objectives at rungs (min_steps x reduction_factor^k steps, below the
step budget) and records them in the study's storage (user attr `rungs`), so that workers on
any machine rank against the same records. At each rung it goes on if it is among the best
1/reduction_factor of the trials that reached that rung so far, itself included, or while the
rung has not shown that it keeps the front (`rung_keeps_front`); otherwise it stops, and is
told PRUNED with its last rung's values (`stopped_values`), which the sampler sees as a
COMPLETE trial's (autotune._samplers.sees_the_search). The worker and the early-stopping
benchmarks take a trial through its rungs with `reach_rung`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._spec import EarlyStopping
from .storage import Rung, is_feasible, non_domination_rank, read_record, recorded, to_loss, write_record

if TYPE_CHECKING:
    import optuna

# The completed trials a rung needs before it may stop any: on tables where an early rung
# ranks the final front poorly, stopping from the first trials on capped the front
# (README, Efficiency across landscapes).
GUARD_EVIDENCE = 5


def rung_steps(early_stopping: EarlyStopping, max_steps: int) -> list[int]:
    steps, step = [], early_stopping.min_steps
    while step < max_steps:
        steps.append(step)
        step *= early_stopping.reduction_factor
    return steps


def at_rung(measured: dict[str, float], step: int, max_steps: int) -> dict[str, float]:
    """A trial's metrics at a rung, as estimates of the whole run's: the held-out loss and the
    memory as measured, the training time extrapolated to all `max_steps` steps. Trials at
    one rung rank the same on the time to the rung or its extrapolation; what differs is what
    the sampler learns from a stopped trial: the time a full run of its config would take,
    not the short time it ran (which would make stopped configs look cheap)."""
    return {**measured, "train_time_s": measured["train_time_s"] * max_steps / step}


def _crowding_distance(losses: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance of each point within its front; the extremes get inf."""
    n, m = losses.shape
    distance = np.zeros(n)
    if n <= 2:
        return np.full(n, math.inf)
    for j in range(m):
        order = np.argsort(losses[:, j], kind="stable")
        span = losses[order[-1], j] - losses[order[0], j]
        distance[order[0]] = distance[order[-1]] = math.inf
        if span > 0:
            distance[order[1:-1]] += (losses[order[2:], j] - losses[order[:-2], j]) / span
    return distance


def promotion_keys(losses: np.ndarray) -> list[tuple[int, float]]:
    """Each point's place in the ranking, lower first: its non-dominated front, then minus its
    crowding distance within the front."""
    fronts = non_domination_rank(losses)
    distance = np.zeros(len(losses))
    for front in np.unique(fronts):
        members = np.flatnonzero(fronts == front)
        distance[members] = _crowding_distance(losses[members])
    return [(int(f), -float(d)) for f, d in zip(fronts, distance, strict=True)]


def goes_on(
    values: Sequence[float], others: Sequence[Sequence[float]], directions: Sequence[str], reduction_factor: int
) -> bool:
    """Whether a trial with `values` at a rung is among the best max(1, n // reduction_factor)
    of the n trials there (`others` and itself), ties in its favour, as in Optuna's
    SuccessiveHalvingPruner."""
    if not all(math.isfinite(v) for v in values):
        return False
    finite = [o for o in others if all(math.isfinite(v) for v in o)]
    losses = np.array([to_loss(v, directions) for v in [values, *finite]])
    keys = promotion_keys(losses)
    kept = max(1, (1 + len(others)) // reduction_factor)  # a diverged trial counts, ranked last
    return keys[0] <= sorted(keys)[min(kept, len(keys)) - 1]


def values_at(trials: Sequence[optuna.trial.FrozenTrial], step: int, but: int) -> list[list[float]]:
    """The values recorded at rung `step` by every trial but trial number `but` (every trial,
    at every rung: single fields, not whole records)."""
    rungs = (rung for t in trials if t.number != but for rung in recorded(t, "rungs") or ())
    return [rung["values"] for rung in rungs if rung["step"] == step]


def rung_records(
    trials: Sequence[optuna.trial.FrozenTrial], step: int
) -> list[tuple[optuna.trial.FrozenTrial, list[float]]]:
    """Each trial that recorded rung `step`, with the values it recorded there."""
    return [(t, rung["values"]) for t in trials for rung in recorded(t, "rungs") or () if rung["step"] == step]


def completed_front(
    reached: Sequence[tuple[optuna.trial.FrozenTrial, list[float]]], directions: Sequence[str]
) -> list[tuple[optuna.trial.FrozenTrial, list[float]]] | None:
    """Of the records at a rung (`rung_records`), those of the trials on the Pareto front of the
    feasible completed ones; None while fewer than GUARD_EVIDENCE completed trials reached it."""
    completed = [(t, values) for t, values in reached if is_feasible(t)]
    if len(completed) < GUARD_EVIDENCE:
        return None
    front = non_domination_rank(np.array([to_loss(t.values, directions) for t, _ in completed])) == 0
    return [record for record, on_front in zip(completed, front, strict=True) if on_front]


def rung_keeps_front(
    trials: Sequence[optuna.trial.FrozenTrial], step: int, directions: Sequence[str], reduction_factor: int
) -> bool:
    """Whether rung `step` would have let the Pareto front of the feasible completed trials
    that reached it go on: at least GUARD_EVIDENCE of them, and each on their front among the
    best there, ranked against the values every trial recorded at the rung."""
    reached = rung_records(trials, step)
    front = completed_front(reached, directions)
    return front is not None and all(
        goes_on(values, [v for other, v in reached if other.number != t.number], directions, reduction_factor)
        for t, values in front
    )


def record_rung(trial: optuna.Trial, step: int, values: list[float]) -> None:
    """Record the trial's `values` at rung `step` in the study, after its earlier rungs."""
    # Earlier rungs only: a re-queued trial carries its lost run's rungs, a retry this one.
    earlier = [r for r in read_record(trial).rungs or () if r.step < step]
    write_record(trial, rungs=[*earlier, Rung(step=step, values=values)])


def reach_rung(
    study: optuna.Study,
    trial: optuna.Trial,
    step: int,
    values: list[float],
    directions: Sequence[str],
    reduction_factor: int,
) -> bool:
    """Record the trial's `values` at rung `step` in the study, and say whether it goes on:
    among the best against the values the other trials recorded there, or at a rung that has
    not shown it keeps the completed trials' front."""
    record_rung(trial, step, values)
    trials = study.get_trials(deepcopy=False)
    if goes_on(values, values_at(trials, step, but=trial.number), directions, reduction_factor):
        return True
    return not rung_keeps_front(trials, step, directions, reduction_factor)
