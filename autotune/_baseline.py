"""The random-search baseline: a sibling study with the same spec and a random sampler,
and the seed literature's protocol: N random pilot trials, run once and copied into both
studies, after which the samplers diverge."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import AutotuneError
from ._spec import StudySpec
from .storage import read_record

if TYPE_CHECKING:
    import optuna

LIKE_ATTR = "autotune_like"
# What two studies must share for their fronts to compare; the sampler may differ.
_COMPARED = ("model", "dataset", "search_space", "objectives", "constraints", "training", "budget")


def _first_difference(a: Any, b: Any, path: str) -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            found = _first_difference(a.get(key), b.get(key), f"{path}.{key}")
            if found:
                return found
        return None
    return None if a == b else f"{path} ({a!r} against {b!r})"


def spec_difference(study: StudySpec, baseline: StudySpec) -> str | None:
    """The first setting in which two specs differ where a comparison needs them equal."""
    a, b = study.to_json_dict(), baseline.to_json_dict()
    for key in _COMPARED:
        found = _first_difference(a[key], b[key], key)
        if found:
            return found
    return None


def require_comparable(study: StudySpec, baseline: StudySpec, refusal: str) -> None:
    """Raise `refusal: they differ in ...` where the specs differ but for the sampler."""
    difference = spec_difference(study, baseline)
    if difference:
        raise AutotuneError(f"{refusal}: they differ in {difference}")


def pilot_points(spec: StudySpec) -> list[dict[str, Any]]:
    """`sampler.n_pilot_trials` configs drawn at random (seeded), in Optuna's param form."""
    import optuna

    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.sampler.seed))
    points = []
    for _ in range(spec.sampler.n_pilot_trials):
        trial = scratch.ask()
        spec.search_space.suggest(trial)
        points.append(dict(trial.params))
        scratch.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return points


def copy_pilot_trials(source: optuna.Study, target: optuna.Study) -> int:
    """Copy the finished pilot trials of `source` into `target` (Optuna's add_trials)."""
    from optuna.trial import TrialState

    pilots = [t for t in source.get_trials(deepcopy=False) if read_record(t).pilot]
    unfinished = [t.number for t in pilots if not t.state.is_finished()]
    if unfinished:
        raise AutotuneError(
            f"study {source.study_name!r} has {len(unfinished)} pilot trials not yet run; run them first "
            f"(autotune worker {source.study_name} --n-trials {len(unfinished)}), then create the baseline"
        )
    target.add_trials([t for t in pilots if t.state == TrialState.COMPLETE])
    return len(pilots)
