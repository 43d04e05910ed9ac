"""The sampler a spec names, and the study as it sees it."""

from __future__ import annotations

import copy
import warnings
from typing import TYPE_CHECKING, Any

from ._spec import SamplerSpec
from .storage import is_rerun, recorded, stopped

if TYPE_CHECKING:
    import optuna


def nsga2_population_size(spec: SamplerSpec, n_trials: int | None) -> int:
    if spec.population_size is not None:
        return spec.population_size
    assert n_trials is not None, "a spec without budget.n_trials sets nsga2's population_size"
    return min(50, max(4, n_trials // 5))


def build_sampler(spec: SamplerSpec, n_trials: int | None, seed: int | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler the spec names. `seed` is the spec's seed made distinct per worker,
    so that parallel workers do not propose the same points."""
    import optuna

    assert spec.name is not None, "a StudySpec names its sampler (StudySpec._resolve_defaults)"
    startup = {} if spec.n_startup_trials is None else {"n_startup_trials": spec.n_startup_trials}
    if spec.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **startup)
    if spec.name == "tpe":
        # constant_liar: trials in flight count as bad guesses, so parallel workers spread out.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True, **startup)
    if spec.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=nsga2_population_size(spec, n_trials))
    if spec.name == "qmc":
        with warnings.catch_warnings():  # experimental since Optuna 3.0
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, scramble=True)  # unscrambled, every seed is the same
    return optuna.samplers.RandomSampler(seed=seed)


class _StudyAsSamplerSees:
    """The study's search: each stopped trial shown COMPLETE with its last rung's values,
    verification re-runs left out (a config's repeats are no new points)."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self, deepcopy: bool = True, states: Any = None, use_cache: bool = False
    ) -> list[optuna.trial.FrozenTrial]:
        from optuna.trial import TrialState

        trials = self._study._get_trials(deepcopy=deepcopy, states=None, use_cache=use_cache)
        seen = []
        for trial in trials:
            if is_rerun(trial):
                continue
            if stopped(trial):
                trial = copy.copy(trial)
                trial.state, trial.values = TrialState.COMPLETE, recorded(trial, "stopped_values")
            if states is None or trial.state in states:
                seen.append(trial)
        return seen

    def get_trials(self, deepcopy: bool = True, states: Any = None) -> list[optuna.trial.FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[optuna.trial.FrozenTrial]:
        return self._get_trials()


def sees_the_search(sampler: optuna.samplers.BaseSampler) -> optuna.samplers.BaseSampler:
    """`sampler`, shown the study through _StudyAsSamplerSees. Stopped trials as COMPLETE
    ones with their last rung's values: model based samplers (GPSampler fits COMPLETE trials
    only) then learn where trials get stopped, and do not propose there again."""
    import optuna

    class SeesTheSearch(optuna.samplers.BaseSampler):
        def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
            self.inner = inner

        def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> Any:
            return self.inner.infer_relative_search_space(_StudyAsSamplerSees(study), trial)  # type: ignore[arg-type]

        def sample_relative(self, study: optuna.Study, trial: Any, search_space: Any) -> Any:
            return self.inner.sample_relative(_StudyAsSamplerSees(study), trial, search_space)  # type: ignore[arg-type]

        def sample_independent(self, study: optuna.Study, trial: Any, name: str, distribution: Any) -> Any:
            return self.inner.sample_independent(_StudyAsSamplerSees(study), trial, name, distribution)  # type: ignore[arg-type]

        def before_trial(self, study: optuna.Study, trial: Any) -> None:
            self.inner.before_trial(study, trial)

        def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return SeesTheSearch(sampler)
