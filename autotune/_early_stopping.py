"""Multi-objective early stopping: asynchronous successive halving whose promotions rank the
trials at a rung by non-dominated sorting, crowding distance breaking ties within a front
(MOASHA, Schmucker et al. 2021), with a cut that widens to keep the completed trials' front
and every (rungs + 1)-th trial let through every rung but the last. Optuna's pruners take one
objective only.

A trial measures its objectives at rungs (min_steps x reduction_factor^k steps, below the
step budget) and records them in the study's storage (user attr `rungs`), so that workers on
any machine rank against the same records. At each rung it goes on if its place among the
trials that reached the rung so far, itself included, is within the cut (`rung_cut`): the best
1/reduction_factor, widened to the worst place of a trial on the completed trials' front,
every place while too few trials have completed. Every (rungs + 1)-th trial goes on past
every rung but the last (Hyperband's bracket that never stops, up to the last rung, where the
rungs rank the final front best and the cut judges it like any other; with one rung, through
it), so that configs an early rung would stop reach the rung that can judge them, and complete
and widen the cut where it misplaces them. A stopped trial is told PRUNED with its last
rung's values (`stopped_values`), which the sampler sees as a COMPLETE trial's
(autotune._samplers.sees_the_search). The worker and the early-stopping benchmarks take a
trial through its rungs with `reach_rung`."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ._spec import EarlyStopping
from .storage import Rung, is_feasible, non_domination_rank, read_record, recorded, to_loss, write_record

if TYPE_CHECKING:
    import optuna

# The completed trials a rung needs before it may stop any: on tables where an early rung
# ranks the final front poorly, stopping from the first trials on capped the front; until
# then the rung cannot tell where the front's trials place there (README, Efficiency across
# landscapes).
MIN_COMPLETED = 5


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


def rung_records(
    trials: Sequence[optuna.trial.FrozenTrial], step: int
) -> list[tuple[optuna.trial.FrozenTrial, list[float]]]:
    """Each trial that recorded rung `step`, with the values it recorded there."""
    return [(t, rung["values"]) for t in trials for rung in recorded(t, "rungs") or () if rung["step"] == step]


def rung_places(
    reached: Sequence[tuple[optuna.trial.FrozenTrial, list[float]]], directions: Sequence[str]
) -> dict[int, int]:
    """Each trial's place (0 the best) among the records at a rung (`rung_records`), by
    `promotion_keys`; trials with equal keys share the better place, as ties go in Optuna's
    SuccessiveHalvingPruner (crowding distance breaks ties of equal values in trial order); a
    trial whose values are not finite (it diverged) has none."""
    finite = [(t, values) for t, values in reached if all(math.isfinite(v) for v in values)]
    if not finite:
        return {}
    keys = promotion_keys(np.array([to_loss(values, directions) for _, values in finite]))
    ordered = sorted(keys)
    return {t.number: bisect.bisect_left(ordered, key) for (t, _), key in zip(finite, keys, strict=True)}


def completed_front(
    reached: Sequence[tuple[optuna.trial.FrozenTrial, list[float]]], directions: Sequence[str]
) -> list[tuple[optuna.trial.FrozenTrial, list[float]]] | None:
    """Of the records at a rung (`rung_records`), those of the trials on the Pareto front of the
    feasible completed ones; None while fewer than MIN_COMPLETED completed trials reached it."""
    completed = [(t, values) for t, values in reached if is_feasible(t)]
    if len(completed) < MIN_COMPLETED:
        return None
    front = non_domination_rank(np.array([to_loss(t.values, directions) for t, _ in completed])) == 0
    return [record for record, on_front in zip(completed, front, strict=True) if on_front]


def rung_cut(
    reached: Sequence[tuple[optuna.trial.FrozenTrial, list[float]]],
    places: dict[int, int],
    directions: Sequence[str],
    reduction_factor: int,
) -> int:
    """How many places at a rung go on: the best max(1, n // reduction_factor) of the n trials
    there (a diverged trial counts, placed last), widened to the worst place of a trial on the
    completed trials' front, so that a rung that ranks the front poorly (a config that starts
    slowly and ends best) keeps as many as it takes to keep it; every place while fewer than
    MIN_COMPLETED completed trials reached the rung."""
    front = completed_front(reached, directions)
    if front is None:
        return len(reached)
    worst_front_place = max(places.get(t.number, len(reached)) for t, _ in front)
    return max(1, len(reached) // reduction_factor, worst_front_place + 1)


def within_cut(
    trials: Sequence[optuna.trial.FrozenTrial], number: int, step: int, directions: Sequence[str], reduction_factor: int
) -> bool:
    """Whether trial `number` is placed within rung `step`'s cut (`rung_cut`), ranked against
    the values every trial recorded there; a trial that diverged there is not."""
    reached = rung_records(trials, step)
    places = rung_places(reached, directions)
    return number in places and places[number] < rung_cut(reached, places, directions, reduction_factor)


def never_stopped(trial_number: int, rungs: int) -> bool:
    """Whether the trial is one of every (rungs + 1)-th, which go on past every rung but the
    last (`reach_rung`)."""
    return trial_number % (rungs + 1) == rungs


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
    rungs: int,
    last: bool,
) -> bool:
    """Record the trial's `values` at rung `step` (one of `rungs`; `last`: the last of them) in
    the study, and say whether it goes on: one of the trials that are never stopped
    (`never_stopped`) at a rung before the last (or at the only one), or placed within the
    rung's cut (`within_cut`). A diverged trial stops."""
    record_rung(trial, step, values)
    if not all(math.isfinite(v) for v in values):
        return False
    if never_stopped(trial.number, rungs) and (not last or rungs == 1):
        return True
    return within_cut(study.get_trials(deepcopy=False), trial.number, step, directions, reduction_factor)
