"""Studies in the database: create one from a spec, load it back with its spec, summarise."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ._baseline import LIKE_ATTR, copy_pilot_trials, pilot_points, require_comparable
from ._early_stopping import rung_steps
from ._errors import AutotuneError
from ._spec import Budget, QLoRATrial, StudySpec, TabularTrial, parse_stored_spec
from .dashboards import StudyPoints, Verification, collect
from .objectives import (
    TrialInputError,
    check_model_reference,
    held_out_size,
    load_examples,
    load_function,
    load_table,
)
from .storage import (
    check_artifact_store,
    device_hours_spent,
    is_feasible,
    kept_adapters,
    mask_url,
    open_storage,
    read_record,
    record_attrs,
    resolve_storage_url,
)

if TYPE_CHECKING:
    import optuna

SPEC_ATTR = "autotune_spec"


def _storage(url: str | None, heartbeat: tuple[int, int] | None = None) -> tuple[str, optuna.storages.BaseStorage]:
    resolved = resolve_storage_url(url)
    return resolved, open_storage(resolved, heartbeat=heartbeat)


def check_inputs(spec: StudySpec) -> None:
    """Fail before any trial on an input this machine lacks or cannot read: the model
    reference and the dataset (a missing file, an unknown layout or column), the table, an
    artifact store it cannot write, a metric function it cannot import, generation metrics
    on data with no prompts or on more prompts than the held-out split holds."""
    if spec.artifacts is not None and spec.artifacts.keep != "none":
        check_artifact_store(spec.artifacts.store)
    if isinstance(spec.trial, QLoRATrial):
        assert spec.model is not None and spec.dataset is not None  # the spec requires them
        check_model_reference(spec.model)
        examples, layout = load_examples(spec.dataset)
        if spec.metrics:
            _check_generation(spec, len(examples), "prompt" in examples.column_names, layout)
    elif isinstance(spec.trial, TabularTrial):
        table = load_table(spec.trial.table)
        if spec.early_stopping is not None and spec.training.max_steps is not None:
            steps = [*rung_steps(spec.early_stopping, spec.training.max_steps), spec.training.max_steps]
            if not set(steps) <= set(table.curve_steps) or spec.training.max_steps != max(table.curve_steps):
                have = ", ".join(map(str, table.curve_steps)) or "none"
                raise TrialInputError(
                    f"early stopping at steps {', '.join(map(str, steps))} needs the table's learning curves there "
                    f"(it has them at steps {have}); set training.max_steps and early_stopping to match, or early_stopping: null"
                )


def _check_generation(spec: StudySpec, n_examples: int, has_prompts: bool, layout: str) -> None:
    assert spec.dataset is not None
    for metric in spec.metrics:
        load_function(metric)
    if not has_prompts:
        raise TrialInputError(
            f"metrics {', '.join(spec.own_metric_names)} score completions of prompts, and dataset "
            f"{spec.dataset.path} ({layout} layout) has none; use a layout with prompts (alpaca, dolly, chat, "
            "prompt_completion) or drop metrics"
        )
    n_eval = held_out_size(n_examples, spec.dataset)  # before examples over max_length are dropped
    if spec.generation.num_examples > n_eval:
        raise TrialInputError(
            f"generation.num_examples ({spec.generation.num_examples}) is above the held-out split's {n_eval} "
            f"examples ({spec.dataset.eval_fraction:g} of {n_examples}); lower it, or raise dataset.eval_fraction"
        )


def create_study(
    name: str, spec: StudySpec, storage: str | None = None, *, skip_if_exists: bool = False, like: str | None = None
) -> optuna.Study:
    """Create a multi-objective study for `spec`, with metric names set and the spec stored
    in its user attrs, so that a worker needs only the name and the storage URL.

    With `like`, the study is a baseline of that study: its spec must match but for the
    sampler, and the other study's finished pilot trials are copied into it.

    Example:
        >>> spec = autotune.load_spec("study.yaml")
        >>> study = autotune.create_study("lora-sweep", spec)  # doctest: +SKIP
    """
    import optuna

    check_inputs(spec)
    url, rdb = _storage(storage)
    source = None
    if like is not None:
        source, source_spec = load_study(like, url)
        require_comparable(source_spec, spec, f"study {name!r} cannot be a baseline of {like!r}")
    if name in optuna.get_all_study_names(rdb):
        study = optuna.load_study(study_name=name, storage=rdb)
        if skip_if_exists and study.user_attrs.get(SPEC_ATTR) == spec.to_json_dict():
            return study
        hint = "it holds a different spec" if skip_if_exists else "pass --skip-if-exists to keep using it"
        raise AutotuneError(f"study {name!r} already exists in {mask_url(url)}; pick another name, or {hint}")
    study = optuna.create_study(study_name=name, storage=rdb, directions=spec.directions)
    try:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still in 5.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(spec.metric_names)
        study.set_user_attr(SPEC_ATTR, spec.to_json_dict())
        if source is not None:
            study.set_user_attr(LIKE_ATTR, source.study_name)
            copy_pilot_trials(source, study)
        else:
            for point in pilot_points(spec):
                study.enqueue_trial(point, user_attrs=record_attrs(pilot=True))
        for point in spec.enqueue_trials:
            study.enqueue_trial(spec.search_space.encode_point(point), skip_if_exists=True)
    except BaseException:
        optuna.delete_study(study_name=name, storage=rdb)  # nothing half-written
        raise
    return study


def load_study(
    name: str, storage: str | None = None, *, heartbeat: tuple[int, int] | None = None
) -> tuple[optuna.Study, StudySpec]:
    """An existing autotune study and its spec; `heartbeat` (interval, grace period) for a
    worker's storage."""
    import optuna

    url, rdb = _storage(storage, heartbeat)
    names = optuna.get_all_study_names(rdb)
    if name not in names:
        known = f" (studies there: {', '.join(sorted(names))})" if names else ""
        raise AutotuneError(
            f"no study named {name!r} in {mask_url(url)}{known}; "
            f"create it with: autotune study create {name} --config SPEC"
        )
    study = optuna.load_study(study_name=name, storage=rdb)
    if SPEC_ATTR not in study.user_attrs:
        raise AutotuneError(
            f"study {name!r} was not made by autotune (it has no spec); create one with autotune study create"
        )
    return study, parse_stored_spec(study.user_attrs[SPEC_ATTR], f"spec stored with study {name!r}")


@dataclass
class TrialRow:
    number: int
    state: str
    params: dict[str, Any]
    metrics: dict[str, float]
    feasible: bool
    failure: str | None = None


@dataclass
class StudySummary:
    name: str
    sampler: str  # StudySpec.method: the sampler, +es with early stopping
    budget: Budget
    objectives: list[str]
    directions: list[str]
    states: dict[str, int]
    pareto: list[TrialRow] = field(default_factory=list)
    stopped_early: int = 0  # the PRUNED trials: early stopping ended them
    train_time_s: float = 0.0  # the training time the trials took
    train_time_saved_s: float = 0.0  # what stopping trials early saved
    verification: Verification = field(default_factory=Verification)  # what autotune verify found
    adapters: dict[int, int] = field(default_factory=dict)  # trial number -> bytes of its adapter kept
    artifact_store: str | None = None  # where they are
    device_hours: float = 0.0  # the device time the trials of the search took (storage.device_hours_spent)
    devices: dict[str, tuple[float, int]] = field(default_factory=dict)  # device type -> (time factor, trials)
    measured: list[str] = field(default_factory=list)  # the spec's own metrics shown beside the objectives

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"budget": self.budget.model_dump()}


def _row(trial: optuna.trial.FrozenTrial, spec: StudySpec) -> TrialRow:
    record = read_record(trial)
    metrics = record.metrics or dict(zip(spec.metric_names, trial.values or [], strict=False))
    return TrialRow(
        number=trial.number,
        state=trial.state.name,
        params=trial.params,
        metrics=metrics,
        feasible=is_feasible(trial),
        failure=record.failure_reason,
    )


def on_front(trials: list[optuna.trial.FrozenTrial], points: StudyPoints) -> list[optuna.trial.FrozenTrial]:
    """The trials of the study's Pareto set (`points.pareto`: feasible, non-dominated), by number."""
    front = {p.number for p in points.pareto}
    return [t for t in trials if t.number in front]


def summarize(study: optuna.Study, spec: StudySpec) -> StudySummary:
    trials = study.get_trials(deepcopy=False)
    points = collect(study, spec.metric_names, spec.directions, spec.method, metrics=spec.own_metric_names)
    return StudySummary(
        name=study.study_name,
        sampler=spec.method,
        budget=spec.budget,
        objectives=spec.metric_names,
        directions=spec.directions,
        states=dict(Counter(t.state.name for t in trials)),
        pareto=[_row(t, spec) for t in on_front(trials, points)],
        stopped_early=points.stopped,
        train_time_s=sum(points.train_time_s),
        train_time_saved_s=points.train_time_saved_s,
        verification=points.verification,
        adapters=kept_adapters(trials, {p.number for p in points.pareto}, spec.artifacts.keep)
        if spec.artifacts
        else {},
        artifact_store=spec.artifacts.store if spec.artifacts else None,
        device_hours=device_hours_spent(trials),
        devices=points.devices,
        measured=points.measured,
    )


def show_study(name: str, storage: str | None = None) -> StudySummary:
    """Trials by state and the current (feasible) Pareto set of a study."""
    study, spec = load_study(name, storage)
    return summarize(study, spec)


def list_studies(storage: str | None = None) -> list[StudySummary]:
    """Every autotune study in the storage, without its Pareto set."""
    import optuna

    _, rdb = _storage(storage)
    summaries = []
    for frozen in rdb.get_all_studies():
        if SPEC_ATTR not in frozen.user_attrs:
            continue
        spec = parse_stored_spec(frozen.user_attrs[SPEC_ATTR], f"spec stored with study {frozen.study_name!r}")
        study = optuna.load_study(study_name=frozen.study_name, storage=rdb)
        states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
        summaries.append(
            StudySummary(
                frozen.study_name,
                spec.method,
                spec.budget,
                spec.metric_names,
                spec.directions,
                dict(states),
            )
        )
    return summaries
