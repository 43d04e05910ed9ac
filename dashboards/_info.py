"""Compute first, draw later: the numbers behind a report (trials, Pareto fronts,
normalised hypervolume history, importances), for a study and its baseline."""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ..storage import (
    is_feasible,
    is_rerun,
    loss_sign,
    never_ran,
    non_domination_rank,
    read_record,
    recorded,
    searched,
    spent_budget,
    stopped,
    succeeded,
    to_loss,
    train_time_saved_s,
    train_time_spent_s,
)

if TYPE_CHECKING:
    import optuna


@dataclass
class TrialPoint:
    number: int
    params: dict[str, Any]
    metrics: dict[str, float]  # the objectives, by name, and the spec's own metrics recorded
    feasible: bool


@dataclass
class Verified:
    """A config of the search trained again with new seeds (`autotune verify`): its objectives
    over those re-runs. Its first run is left out: it was picked for its values, which are
    therefore biased in its favour (the winner's curse)."""

    trials: list[int]  # the re-runs
    seeds: list[int]
    mean: dict[str, float]
    std: dict[str, float]  # the sample standard deviation over the seeds


@dataclass
class SeedSpread:
    """One objective's signal against its noise: how far one config's values move with the
    seed (pooled over the verified configs) against how far apart the front's configs are."""

    metric: str
    seed_sd: float  # the root mean square of the verified configs' standard deviations
    front_sd: float | None  # the standard deviation over the front's configs (None for one)
    signal_to_noise: float | None  # front_sd / seed_sd
    configs: int  # verified configs pooled


@dataclass
class Verification:
    """What `autotune verify` found in a study."""

    verified: dict[int, Verified] = field(default_factory=dict)  # trial number -> its re-runs
    seed_spread: list[SeedSpread] = field(default_factory=list)  # per objective, once a config is verified
    # A verified config on the front -> the other front configs that match it within the seed
    # spread in every objective (verified means where there are): its place may be luck.
    within_seed_spread_of: dict[int, list[int]] = field(default_factory=dict)
    reruns_pending: int = 0  # re-runs queued or running


@dataclass
class StudyPoints:
    name: str
    sampler: str
    trials: list[TrialPoint]  # trials of the search that succeeded, by number
    pareto: list[TrialPoint]  # feasible, non-dominated
    budget_trials: list[int]  # the numbers of the finished trials that used the budget, in order
    failures: dict[str, int]  # failure reason -> count
    train_time_s: list[float]  # the training time each budget trial took
    stopped: int = 0  # trials stopped early
    train_time_saved_s: float = 0.0  # by stopping them
    verification: Verification = field(default_factory=Verification)
    # Device type -> (its time factor, QLoRA trials it ran): the times are in the seconds of
    # the device with factor 1 (autotune._devices).
    devices: dict[str, tuple[float, int]] = field(default_factory=dict)
    # The names the spec's own metrics (its `metrics:`) that are no objective were recorded
    # under (a function's dict: name.key): shown, and verified, beside the objectives.
    measured: list[str] = field(default_factory=list)


@dataclass
class ReportInfo:
    metric_names: list[str]
    directions: list[str]
    study: StudyPoints
    baseline: StudyPoints | None
    # Objectives are mapped to [0, 1] with these (low, high) bounds: the ideal and nadir
    # of the two studies' joint Pareto front, so that hypervolumes compare.
    bounds: list[tuple[float, float]]
    reference_point: float  # in the normalised space, the same for every objective
    hypervolume: dict[str, list[float]]  # study name -> value after each trial number
    trials_to_reach_baseline: int | None  # trials the study needed to reach the baseline's final value
    importances: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # study -> metric -> param

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def pareto_front(points: list[TrialPoint], metric_names: list[str], directions: list[str]) -> list[TrialPoint]:
    """The feasible points no other feasible point dominates."""
    feasible = [p for p in points if p.feasible]
    if not feasible:
        return []
    ranks = non_domination_rank(np.array([to_loss([p.metrics[m] for m in metric_names], directions) for p in feasible]))
    return [p for p, rank in zip(feasible, ranks, strict=True) if rank == 0]


def collect(
    study: optuna.Study,
    metric_names: list[str],
    directions: list[str],
    sampler: str,
    trials: list[optuna.trial.FrozenTrial] | None = None,
    metrics: Sequence[str] = (),
) -> StudyPoints:
    """The study's points; from `trials` where the caller has read them already. `metrics`:
    the names in the spec's `metrics:`, carried beside the objectives."""
    all_trials = study.get_trials(deepcopy=False) if trials is None else trials
    measured = measured_names(all_trials, metric_names, metrics)
    points = [
        TrialPoint(t.number, dict(t.params), _values(t, metric_names, measured), is_feasible(t))
        for t in all_trials
        if searched(t)
    ]
    failures = Counter(
        read_record(t).failure_reason or "no reason recorded: a lost worker's trial, failed by the heartbeat"
        for t in all_trials
        if t.state.is_finished() and not succeeded(t) and not never_ran(t) and not stopped(t) and not is_rerun(t)
    )
    front = pareto_front(points, metric_names, directions)
    budget = [t for t in all_trials if spent_budget(t)]
    verified = verified_configs(all_trials, metric_names, measured)
    spread = seed_spread(front, verified, metric_names)
    verification = Verification(
        verified,
        spread,
        within_seed_spread(front, verified, spread, metric_names, directions),
        sum(1 for t in all_trials if is_rerun(t) and not t.state.is_finished()),
    )
    return StudyPoints(
        study.study_name,
        sampler,
        points,
        front,
        [t.number for t in budget],
        dict(failures),
        [train_time_spent_s(t) for t in budget],
        sum(1 for t in budget if stopped(t)),
        sum(train_time_saved_s(t) for t in budget),
        verification,
        _devices(all_trials),
        measured,
    )


def measured_names(
    trials: list[optuna.trial.FrozenTrial], objectives: Sequence[str], metrics: Sequence[str]
) -> list[str]:
    """The names under which the trials recorded the spec's own `metrics` (a function that
    returns a dict: name.key), the objectives apart."""
    names = {
        name
        for t in trials
        if succeeded(t)
        for name in recorded(t, "metrics") or {}
        if name not in objectives and any(name == m or name.startswith(m + ".") for m in metrics)
    }
    return sorted(names)


def _values(trial: optuna.trial.FrozenTrial, objectives: Sequence[str], measured: Sequence[str]) -> dict[str, float]:
    """The trial's objectives, then those of `measured` it recorded."""
    recorded_metrics = recorded(trial, "metrics") or {}
    return dict(zip(objectives, trial.values, strict=True)) | {
        m: recorded_metrics[m] for m in measured if m in recorded_metrics
    }


def _devices(trials: list[optuna.trial.FrozenTrial]) -> dict[str, tuple[float, int]]:
    used: dict[str, tuple[float, int]] = {}
    for t in trials:
        device, factor = recorded(t, "device_type"), recorded(t, "device_factor")
        if device is not None and factor is not None:
            used[device] = (factor, used.get(device, (factor, 0))[1] + 1)
    return used


def verified_configs(
    trials: list[optuna.trial.FrozenTrial], metric_names: list[str], measured: Sequence[str] = ()
) -> dict[int, Verified]:
    """The configs with at least two re-runs that succeeded, by the number of their first
    trial: the mean and spread of their objectives, and of the `measured` metrics."""
    reruns: dict[int, list[optuna.trial.FrozenTrial]] = defaultdict(list)
    for trial in trials:
        if is_rerun(trial) and succeeded(trial):
            reruns[read_record(trial).verifies].append(trial)
    verified = {}
    for number, runs in sorted(reruns.items()):
        if len(runs) < 2:
            continue
        recorded_values = [_values(t, metric_names, measured) for t in runs]
        names = [m for m in [*metric_names, *measured] if any(m in v for v in recorded_values)]
        values = np.array([[v.get(m, np.nan) for m in names] for v in recorded_values])
        # where the seeds all gave one value its spread is 0, not the rounding of the mean
        with warnings.catch_warnings():  # a metric that only some re-runs recorded: numpy warns of the nans
            warnings.simplefilter("ignore", RuntimeWarning)
            std = np.where(
                np.nanmax(values, axis=0) > np.nanmin(values, axis=0), np.nanstd(values, axis=0, ddof=1), 0.0
            )
            mean = np.nanmean(values, axis=0)
        verified[number] = Verified(
            trials=[t.number for t in runs],
            seeds=[read_record(t).seed for t in runs],
            mean=dict(zip(names, mean.tolist(), strict=True)),
            std=dict(zip(names, std.tolist(), strict=True)),
        )
    return verified


def seed_spread(front: list[TrialPoint], verified: dict[int, Verified], metric_names: list[str]) -> list[SeedSpread]:
    """Per objective, the seed spread against the spread between the front's configs (as
    found); none before a config is verified."""
    if not verified:
        return []
    spreads = []
    for m in metric_names:
        seed_sd = float(np.sqrt(np.mean([v.std[m] ** 2 for v in verified.values()])))
        values = [p.metrics[m] for p in front]
        front_sd = float(np.std(values, ddof=1)) if len(values) >= 2 else None
        ratio = front_sd / seed_sd if front_sd is not None and seed_sd > 0 else None
        spreads.append(SeedSpread(m, seed_sd, front_sd, ratio, len(verified)))
    return spreads


def within_seed_spread(
    front: list[TrialPoint],
    verified: dict[int, Verified],
    spreads: list[SeedSpread],
    metric_names: list[str],
    directions: list[str],
) -> dict[int, list[int]]:
    """For each verified config on the front, the other front configs that it beats in no
    objective by more than the seed spread."""
    seed_sd = np.array([s.seed_sd for s in spreads])

    def loss(point: TrialPoint) -> np.ndarray:
        values = verified[point.number].mean if point.number in verified else point.metrics
        return to_loss([values[m] for m in metric_names], directions)

    matched = {}
    for config in (p for p in front if p.number in verified):
        advantages = {other.number: loss(other) - loss(config) for other in front if other is not config}
        matched[config.number] = [n for n, a in advantages.items() if np.all(a <= seed_sd)]
    return matched


def succeeded_study(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of `study` holding only the trials of the search that succeeded, for
    Optuna's importances and plots, which read every COMPLETE trial."""
    import optuna

    copy = optuna.create_study(directions=study.directions)
    copy.add_trials([t for t in study.get_trials(deepcopy=False) if searched(t)])
    return copy


def bounds_over(
    studies: list[StudyPoints], metric_names: list[str], directions: list[str]
) -> list[tuple[float, float]]:
    """Per objective, the ideal and nadir of the Pareto front of all studies together (the
    usual normalisation: a diverged outlier does not squash the scale). Where the front is
    one point, the range over all feasible trials."""
    feasible = [p for s in studies for p in s.trials if p.feasible]
    front = pareto_front(feasible, metric_names, directions)
    bounds = []
    for m in metric_names:
        low, high = min((p.metrics[m] for p in front), default=0.0), max((p.metrics[m] for p in front), default=1.0)
        if high <= low:
            values = [p.metrics[m] for p in feasible] or [0.0]
            low, high = min(values), max(values)
        bounds.append((low, high if high > low else low + 1.0))
    return bounds


def normalise(
    point: TrialPoint, metric_names: list[str], directions: list[str], bounds: list[tuple[float, float]]
) -> np.ndarray:
    """0 is the best value seen, 1 the worst, for every objective."""
    out = []
    for m, d, (low, high) in zip(metric_names, directions, bounds, strict=True):
        scaled = (point.metrics[m] - low) / (high - low)
        out.append(scaled if d == "minimize" else 1.0 - scaled)
    return np.array(out)


def hypervolume(points: list[np.ndarray], reference_point: float) -> float:
    from optuna._hypervolume import compute_hypervolume

    inside = [p for p in points if np.all(p < reference_point)]
    if not inside:
        return 0.0
    return float(compute_hypervolume(np.array(inside), np.full(len(inside[0]), reference_point)))


def hypervolume_history(
    study: StudyPoints,
    metric_names: list[str],
    directions: list[str],
    bounds: list[tuple[float, float]],
    reference_point: float,
) -> list[float]:
    """The hypervolume of the feasible trials after each trial that used the budget."""
    by_number = {p.number: p for p in study.trials if p.feasible}
    history, seen = [], []
    for number in study.budget_trials:
        if number in by_number:
            seen.append(normalise(by_number[number], metric_names, directions, bounds))
        history.append(hypervolume(seen, reference_point) if seen else 0.0)
    return history


def _importances(study: optuna.Study, metric_names: list[str], directions: list[str]) -> dict[str, dict[str, float]]:
    """Optuna's default evaluator (PED-ANOVA) per objective, each read as a loss."""
    import optuna

    study = succeeded_study(study)
    complete = study.get_trials(deepcopy=False)
    tuned = sorted({name for t in complete for name, dist in t.distributions.items() if not dist.single()})
    if len(complete) < 2 or not tuned:
        return {}
    result = {}
    for i, (metric, direction) in enumerate(zip(metric_names, directions, strict=True)):
        sign = loss_sign(direction)
        with warnings.catch_warnings():  # it warns that it ranks for low values: we pass losses
            warnings.simplefilter("ignore", UserWarning)
            values = optuna.importance.get_param_importances(
                study, target=lambda t, i=i, sign=sign: sign * t.values[i], params=tuned
            )
        result[metric] = {k: float(v) for k, v in values.items()}
    return result


def build_report_info(
    study: optuna.Study,
    sampler: str,
    metric_names: list[str],
    directions: list[str],
    baseline: tuple[optuna.Study, str] | None = None,
    reference_point: float = 1.1,
    metrics: Sequence[str] = (),
) -> ReportInfo:
    """Everything a report shows, for `study` and optionally `baseline` (a study and its
    sampler's name), whose objectives must be the same; `metrics` as in collect."""
    points = collect(study, metric_names, directions, sampler, metrics=metrics)
    base = collect(baseline[0], metric_names, directions, baseline[1], metrics=metrics) if baseline else None
    studies = [points] + ([base] if base else [])
    bounds = bounds_over(studies, metric_names, directions)
    history = {s.name: hypervolume_history(s, metric_names, directions, bounds, reference_point) for s in studies}
    reach = None
    if base is not None and history[base.name]:
        target = history[base.name][-1]
        reach = next((n + 1 for n, hv in enumerate(history[points.name]) if hv >= target and target > 0), None)
    importances = {study.study_name: _importances(study, metric_names, directions)}
    if baseline:
        importances[baseline[0].study_name] = _importances(baseline[0], metric_names, directions)
    return ReportInfo(metric_names, directions, points, base, bounds, reference_point, history, reach, importances)
