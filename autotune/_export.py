"""`autotune export`: the chosen trials of a study, each ready to train with: peft LoraConfig
kwargs, trl SFTConfig kwargs, BitsAndBytesConfig kwargs, the metrics, and what is needed
to repeat the run."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from ._errors import AutotuneError
from ._spec import StudySpec
from ._study import load_study, on_front
from .dashboards import StudyPoints, bounds_over, collect, normalise
from .objectives import METRICS
from .storage import is_feasible, kept_adapters, loss_sign, open_artifact_store, read_record, recorded, unpack_adapter

if TYPE_CHECKING:
    import optuna

_PICK = re.compile(r"^(?:(pareto|knee)|(min|max):([\w.]+)|budget:([\w.]+)<=([-+0-9.eE]+)|trial:(\d+))$")
PICK_HELP = "pareto | knee | min:<metric> | max:<metric> | budget:<metric><=X | trial:<number>"


def _verified(points: StudyPoints, number: int) -> dict[str, Any]:
    """A verified config's objectives over its new seeds, and (on the front) the configs it
    does not beat by more than the seed spread; nothing for a config not verified."""
    verification = points.verification
    if number not in verification.verified:
        return {}
    verified = asdict(verification.verified[number])
    if number in verification.within_seed_spread_of:
        verified["within_seed_spread_of"] = verification.within_seed_spread_of[number]
    return {"verified": verified}


def _entry(study_name: str, trial: optuna.trial.FrozenTrial, points: StudyPoints) -> dict[str, Any]:
    record = read_record(trial)
    entry = {
        "study": study_name,
        "trial": trial.number,
        "params": dict(trial.params),
        "metrics": record.metrics or {},
        **_verified(points, trial.number),
    }
    if record.config is None:  # a test function or a table replayed: nothing was trained
        return entry | ({"grid_point": record.grid_point} if record.grid_point is not None else {})
    # The library kwargs the trial trained with, as it recorded them (its compute dtype resolved).
    sft = {k: v for k, v in (record.sft_config or {}).items() if k != "use_cpu"}
    return entry | {
        "model": record.config["model"],
        "dataset": record.config["dataset"],
        "lora_config": record.lora_config,
        "sft_config": {"output_dir": f"outputs/{study_name}-trial-{trial.number}", **sft},
        "quantization_config": record.quantization_config,
        "reproduce": {
            "seed": record.seed,
            "compute_dtype": record.compute_dtype,
            "versions": record.versions or {},
            "device": record.device,
            "trial_config": record.config,
        },
    }


def _metric(trial: optuna.trial.FrozenTrial, metric: str) -> float:
    return float((read_record(trial).metrics or {})[metric])


def pick_trials(study: optuna.Study, spec: StudySpec, pick: str, points: StudyPoints) -> list[optuna.trial.FrozenTrial]:
    """The trials of `study` that `pick` chooses; `points` is the study's collect()."""
    match = _PICK.match(pick)
    if match is None:
        raise AutotuneError(f"unknown --pick {pick!r}; use {PICK_HELP}")
    whole, direction, metric, budget_metric, bound, number = match.groups()
    known = [*METRICS, *(m for m in spec.metric_names if m not in METRICS), *spec.own_metric_names]
    for name in (metric, budget_metric):
        if name is not None and name not in known:
            raise AutotuneError(f"unknown metric {name!r} in --pick; choose from {', '.join(dict.fromkeys(known))}")
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if is_feasible(t)]
    if not complete:
        raise AutotuneError(
            f"study {study.study_name!r} has no complete feasible trial yet; "
            f"run a worker first: autotune worker {study.study_name}"
        )
    if number is not None:
        found = [t for t in complete if t.number == int(number)]
        if not found:
            raise AutotuneError(
                f"study {study.study_name!r} has no complete feasible trial {number}; see: autotune study show {study.study_name}"
            )
        return found
    front = on_front(trials, points)
    if whole == "pareto":
        return front
    if whole == "knee":
        bounds = bounds_over([points], spec.metric_names, spec.directions)
        distance = {
            p.number: float(np.linalg.norm(normalise(p, spec.metric_names, spec.directions, bounds)))
            for p in points.pareto
        }
        return [min(front, key=lambda t: distance[t.number])]
    if direction is not None:
        best = min if direction == "min" else max
        return [best(complete, key=lambda t: _metric(t, metric))]
    within = [t for t in complete if _metric(t, budget_metric) <= float(bound)]
    if not within:
        lowest = min(_metric(t, budget_metric) for t in complete)
        raise AutotuneError(f"no trial has {budget_metric} <= {bound} (the lowest is {lowest:.4g}); raise the bound")
    first, sign = spec.metric_names[0], loss_sign(spec.directions[0])
    return [min(within, key=lambda t: sign * _metric(t, first))]


def export(
    name: str,
    storage: str | None = None,
    *,
    pick: str = "pareto",
    verified: bool = False,
    out: str | Path | None = None,
    fmt: str = "yaml",
    adapters: str | Path | None = None,
) -> list[dict[str, Any]]:
    """The chosen trials of study `name` as entries ready to train with, with their verified
    means and standard deviations where `autotune verify` re-ran them; only those with
    `verified`. Written to `out` (YAML or JSON) when given. With `adapters`, each trial's
    kept adapter is written to `adapters`/trial-N, a folder PeftModel.from_pretrained loads.

    Example:
        >>> autotune.export("lora-sweep", pick="knee", out="best.yaml")  # doctest: +SKIP
    """
    study, spec = load_study(name, storage)
    points = collect(study, spec.metric_names, spec.directions, spec.method, metrics=spec.own_metric_names)
    chosen = pick_trials(study, spec, pick, points)
    if verified:
        chosen = [t for t in chosen if t.number in points.verification.verified]
        if not chosen:
            raise AutotuneError(
                f"none of the trials that --pick {pick} chooses is verified yet; "
                f"run: autotune verify {name} --pick {pick}, then its workers"
            )
    entries = [_entry(name, t, points) for t in chosen]
    if adapters is not None:
        written = _write_adapters(name, spec, study.get_trials(deepcopy=False), points, chosen, Path(adapters))
        for entry, folder in zip(entries, written, strict=True):
            entry["adapter"] = str(folder)
    if out is not None:
        Path(out).write_text(format_entries(entries, fmt))
    return entries


def _write_adapters(
    name: str,
    spec: StudySpec,
    trials: list[optuna.trial.FrozenTrial],
    points: StudyPoints,
    chosen: list[optuna.trial.FrozenTrial],
    folder: Path,
) -> list[Path]:
    """Write each chosen trial's kept adapter to folder/trial-N; AutotuneError for the first
    that was not kept."""
    from optuna.artifacts.exceptions import ArtifactNotFound

    keep = spec.artifacts.keep if spec.artifacts else "none"
    kept = kept_adapters(trials, {p.number for p in points.pareto}, keep)
    for trial in chosen:
        if trial.number not in kept:
            raise AutotuneError(
                f"trial {trial.number} of {name!r} has no adapter kept (artifacts.keep: {keep}); set artifacts: "
                f"{{store: DIR, keep: all}} for the next trials, or train it again: autotune verify {name} --pick trial:{trial.number}"
            )
    assert spec.artifacts is not None  # a trial's adapter is kept
    store, written = open_artifact_store(spec.artifacts.store), []
    for trial in chosen:
        target = folder / f"trial-{trial.number}"
        try:
            unpack_adapter(store, recorded(trial, "adapter_artifact"), target)
        except ArtifactNotFound:
            raise AutotuneError(
                f"trial {trial.number}'s adapter is gone from {spec.artifacts.store}; "
                f"train it again: autotune verify {name} --pick trial:{trial.number}"
            ) from None
        except Exception as exc:  # the store away, or access refused
            lines = str(exc).strip().splitlines()
            raise AutotuneError(
                f"cannot read trial {trial.number}'s adapter from {spec.artifacts.store}: "
                f"{lines[0] if lines else type(exc).__name__}"
            ) from None
        written.append(target)
    return written


class _PlainDumper(yaml.SafeDumper):
    """YAML a person reads: a value that repeats is written again, not as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def format_entries(entries: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(entries, indent=2)
    return yaml.dump(entries, Dumper=_PlainDumper, sort_keys=False)
