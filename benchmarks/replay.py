"""A table of real QLoRA runs (benchmarks/tabular_grid.py) replayed as a tuning run pays for
it: a trial trains its config (the nearest grid point) on one of the table's seeds, drawn
per trial, step by step to the learning curve's points; the steps and the training seconds
it ran are charged to the run; a trial that ran to the end puts its config on the run's
front. The front is scored on each config's mean over its seeds (the table's `means`), so
a method is not rewarded for finding a lucky draw.

Objectives: eval_loss and train_time_s, both minimised and scaled (`table_scale`): train
time to [0, 1] over the grid, eval_loss from 0 at the best config's mean to 1 at the base
model's loss before fine-tuning, so that a config no better than no fine-tuning adds
nothing to the hypervolume (reference point 1.1 in both).

Every method, ours and the peers (benchmarks/peers.py), runs against this one class."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autotune import Range, SearchSpace, StudySpec
from autotune.dashboards import hypervolume
from autotune.objectives import Table
from autotune.storage import non_domination_rank

REFERENCE = 1.1  # the hypervolume's reference point, in both scaled objectives
MAX_TRIALS = 300  # a bound on any run: a method that stops most trials at the first rung could start thousands


@dataclass(frozen=True)
class Axis:
    low: float
    high: float
    log: bool  # the grid is log-spaced (every value > 0)
    integer: bool


def default_spec(max_steps: int) -> StudySpec:
    """What a QLoRA spec with this step budget and no sampler or early_stopping key gets."""
    return StudySpec.model_validate(
        {
            "model": "any",
            "dataset": {"path": "any.jsonl"},
            "budget": {"n_trials": 50},
            "training": {"max_steps": max_steps},
        }
    )


def table_scale(table: Table) -> Any:
    """(eval_loss, train_time_s) -> the scaled objectives, from the seed means."""
    measured = [row for row in table.means.values() if "error" not in row]
    low = np.array([min(r["eval_loss"] for r in measured), min(r["train_time_s"] for r in measured)])
    high = np.array([measured[0]["eval_loss_before"], max(r["train_time_s"] for r in measured)])
    return lambda eval_loss, train_time_s: (np.array([eval_loss, train_time_s]) - low) / (high - low)


class ScoredTable:
    """A table, scored: each config's scaled seed mean (a failed config at the reference
    point), the true front's hypervolume, and the search space's axes. With `evaluation`, a
    trial also pays for each held-out evaluation it runs (at every curve point it reaches):
    the row's seconds outside training (`wall_s` less `train_time_s`, the curve points'
    evaluations with the run's setup) shared over its curve points."""

    def __init__(self, table: Table, evaluation: bool = False) -> None:
        self.table, self.evaluation = table, evaluation
        self.scale = table_scale(table)
        self.mean_points = {
            point: np.array([REFERENCE, REFERENCE])
            if "error" in row
            else self.scale(row["eval_loss"], row["train_time_s"])
            for point, row in table.means.items()
        }
        self.true_hypervolume = hypervolume(list(self.mean_points.values()), REFERENCE)
        points = [p for p, scaled in self.mean_points.items() if np.all(scaled < REFERENCE)]  # add hypervolume
        ranks = non_domination_rank(np.array([self.mean_points[p] for p in points]))
        self.front = {p for p, rank in zip(points, ranks, strict=True) if rank == 0}  # the true front's configs
        integer = {"lora_r", "lora_alpha", "per_device_train_batch_size"}
        self.axes = {  # the searched axes: those with more than one value
            name: Axis(min(values), max(values), min(values) > 0, name in integer)
            for name, values in table.grid.items()
            if len(values) > 1
        }
        self.fixed = {name: values[0] for name, values in table.grid.items() if len(values) == 1}
        self.max_steps = table.curve_steps[-1]
        self.curve_steps = table.curve_steps  # where a trial can report; the last: the whole run

    def evaluation_s(self, row: dict[str, Any]) -> float:
        """What one held-out evaluation of `row`'s run is charged."""
        return (row["wall_s"] - row["train_time_s"]) / len(self.curve_steps) if self.evaluation else 0.0

    def search_space(self) -> SearchSpace:
        """autotune's search space spanning the searched axes (log ranges where log-spaced)."""
        return SearchSpace(**{name: Range(low=a.low, high=a.high, log=a.log) for name, a in self.axes.items()})


@dataclass
class History:
    """After each charge: the compute spent so far and the hypervolume ratio held."""

    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    hypervolume: list[float] = field(default_factory=list)
    trials: int = 0
    stopped: int = 0

    def at_seconds(self, budget: float) -> float:
        """The hypervolume ratio held when `budget` seconds were spent (0 before any trial)."""
        held = [hv for hv, s in zip(self.hypervolume, self.seconds, strict=True) if s <= budget]
        return held[-1] if held else 0.0

    def first_reaching(self, target: float) -> tuple[float, float]:
        """The (steps, seconds) spent when the run first held `target` (to rounding: the whole
        front's hypervolume, summed in another order, can differ in the last digits); inf where never."""
        for hv, steps, seconds in zip(self.hypervolume, self.steps, self.seconds, strict=True):
            if hv >= target - 1e-9:
                return float(steps), seconds
        return math.inf, math.inf


class Replay:
    """One tuning run against a table, until `budget_s` training seconds are spent or
    `max_trials` trials started."""

    def __init__(self, problem: ScoredTable, seed: int, budget_s: float, max_trials: int = MAX_TRIALS) -> None:
        self.problem, self.seed, self.budget_s, self.max_trials = problem, seed, budget_s, max_trials
        self.axes, self.max_steps, self.curve_steps = problem.axes, problem.max_steps, problem.curve_steps
        self.history = History()
        self.trials: list[ReplayTrial] = []
        self._front: list[np.ndarray] = []
        self._steps, self._seconds = 0, 0.0

    @property
    def done(self) -> bool:
        """The budget is spent: start no more trials."""
        return self._seconds >= self.budget_s or self.history.trials >= self.max_trials

    def trial(self, params: dict[str, Any]) -> ReplayTrial:
        """A new trial of `params` (snapped to the nearest grid point), on a drawn seed."""
        self.history.trials += 1
        table = self.problem.table
        point = table.nearest({**params, **self.problem.fixed})
        self.trials.append(ReplayTrial(self, point, table.draw(point, f"{self.seed}:{self.history.trials}")))
        return self.trials[-1]

    def _charge(self, steps: int, seconds: float, finished: tuple[float, ...] | None = None) -> None:
        """Charge a trial's compute; `finished`: the grid point of a trial that ran to the end,
        whose config goes on the run's front."""
        self._steps += steps
        self._seconds += seconds
        history = self.history
        if finished is not None:  # only then does the front change
            self._front.append(self.problem.mean_points[finished])
            history.hypervolume.append(hypervolume(self._front, REFERENCE) / self.problem.true_hypervolume)
        else:
            history.hypervolume.append(history.hypervolume[-1] if history.hypervolume else 0.0)
        history.steps.append(self._steps)
        history.seconds.append(self._seconds)

    def spending(self, until_s: float) -> dict[str, float]:
        """Where the seconds charged up to `until_s` went, as shares of them: trials
        that ran to the end a config the run had not run to the end before (`completed_new`),
        trials that ran a config to the end again (`completed_again`: its mean was scored
        already, so they add nothing to the front), trials stopped early (`stopped`), and of
        all these the trials early stopping never stops (`never_stopped`); and how many
        distinct configs the run had tried by then (`configs_tried`). A trial counts by how it
        ended: the runs take one trial at a time, so only the last one can be cut by `until_s`."""
        seconds = dict.fromkeys(("completed_new", "completed_again", "stopped", "never_stopped"), 0.0)
        completed, tried = set(), set()
        for trial in self.trials:
            if not trial.charges or self.history.seconds[trial.charges[0][0]] > until_s:
                continue
            paid = sum(s for at, s in trial.charges if self.history.seconds[at] <= until_s)
            tried.add(trial.point)
            if trial.step == self.max_steps:
                seconds["completed_again" if trial.point in completed else "completed_new"] += paid
                completed.add(trial.point)
            else:
                seconds["stopped"] += paid
            seconds["never_stopped"] += paid if trial.never_stopped else 0.0
        total = sum(seconds[k] for k in ("completed_new", "completed_again", "stopped")) or 1.0
        return {**{k: v / total for k, v in seconds.items()}, "configs_tried": float(len(tried))}


class ReplayTrial:
    def __init__(self, replay: Replay, point: tuple[float, ...], row: dict[str, Any]) -> None:
        self.replay, self.point, self.row = replay, point, row
        self.step, self._seconds = 0, 0.0
        self.failed = "error" in row
        self.charges: list[tuple[int, float]] = []  # (the history's index, the seconds) of each charge
        self.never_stopped = False  # early stopping lets it past every rung (but the last, as shipped)

    def run_to(self, step: int) -> tuple[float, float] | None:
        """Train on to `step` (one of curve_steps): (eval_loss, train_time_s since the start)
        there, raw; the steps and seconds since the last call are charged to the run. None:
        the config failed (its first report charges nothing: it failed at once)."""
        if self.failed:
            self._charge(0, 0.0)
            return None
        point = next(p for p in self.row["learning_curve"] if p["step"] == step)
        finished = self.point if step == self.replay.max_steps else None
        evaluation_s = self.replay.problem.evaluation_s(self.row)
        self._charge(step - self.step, point["train_time_s"] - self._seconds + evaluation_s, finished)
        self.step, self._seconds = step, point["train_time_s"]
        return point["eval_loss"], point["train_time_s"]

    def _charge(self, steps: int, seconds: float, finished: tuple[float, ...] | None = None) -> None:
        self.replay._charge(steps, seconds, finished)
        self.charges.append((len(self.replay.history.seconds) - 1, seconds))

    def stop(self) -> None:
        """Stopped early: charged for what it ran, never on the front."""
        self.replay.history.stopped += 1

    def scaled(self, measured: tuple[float, float] | None, step: int) -> list[float]:
        """Values to tell a sampler: scaled, the time extrapolated to the whole run (as
        autotune's early stopping does); a failed config the reference point."""
        if measured is None:
            return [REFERENCE, REFERENCE]
        loss, seconds = measured
        return [float(v) for v in self.replay.problem.scale(loss, seconds * self.replay.max_steps / step)]
