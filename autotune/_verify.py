"""`autotune verify`: train chosen configs of a study again, each with K new seeds, to tell
their advantage on the front from seed noise. The re-runs are queued in the study and run
by the normal workers (so on every machine that shares the storage, recovered like any
trial); `study show`, the report and `export` then give each verified config's mean and
standard deviation over its new seeds (autotune.dashboards.collect)."""

from __future__ import annotations

from dataclasses import dataclass

from ._errors import AutotuneError
from ._export import pick_trials
from ._spec import TabularTrial
from ._study import load_study
from .dashboards import collect
from .storage import is_rerun, record_attrs, recorded, under_way


@dataclass
class VerifyPlan:
    configs: list[int]  # the trial numbers of the configs verified
    seeds: list[int]  # the new seeds each is trained with
    queued: int  # re-runs queued now
    queued_before: int  # re-runs queued, running or done already
    device_hours: float  # what those queued now will take, from their configs' own runs (not the budget's)


def verify(name: str, storage: str | None = None, *, pick: str = "pareto", seeds: int = 3) -> VerifyPlan:
    """Queue, for each config of study `name` that `pick` chooses (as in export), re-runs
    with `seeds` new training seeds (the spec's seed + 1, + 2, ...), but those queued or run
    before: running it again queues only what is missing.

    Example:
        >>> autotune.verify("lora-sweep", pick="knee", seeds=3)  # doctest: +SKIP
    """
    if seeds < 2:
        raise AutotuneError(f"--seeds must be at least 2 (a standard deviation needs two runs), got {seeds}")
    study, spec = load_study(name, storage)
    if isinstance(spec.trial, TabularTrial):
        raise AutotuneError(
            f"study {name!r} replays a table of runs, one seed per config: there is nothing to train again; "
            "verify a study whose trials train (trial kind qlora)"
        )
    chosen = pick_trials(study, spec, pick, collect(study, spec.metric_names, spec.directions, spec.method))
    new_seeds = [spec.training.seed + i for i in range(1, seeds + 1)]
    taken = {
        (recorded(t, "verifies"), recorded(t, "seed"))
        for t in study.get_trials(deepcopy=False)
        if is_rerun(t) and under_way(t)
    }
    queued, device_s = 0, 0.0
    for trial in chosen:
        for seed in new_seeds:
            if (trial.number, seed) not in taken:
                study.enqueue_trial(trial.params, user_attrs=record_attrs(verifies=trial.number, seed=seed))
                queued += 1
                device_s += recorded(trial, "device_time_s") or 0.0
    return VerifyPlan([t.number for t in chosen], new_seeds, queued, len(chosen) * seeds - queued, device_s / 3600)
