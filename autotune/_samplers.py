from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from ._spec import SamplerSpec

if TYPE_CHECKING:
    import optuna


def nsga2_population_size(spec: SamplerSpec, n_trials: int) -> int:
    return spec.population_size or min(50, max(4, n_trials // 5))


def build_sampler(spec: SamplerSpec, n_trials: int, seed: int | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler the spec names. `seed` is the spec's seed made distinct per worker,
    so that parallel workers do not propose the same points."""
    import optuna

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
