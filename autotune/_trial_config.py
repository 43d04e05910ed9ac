"""The config a trial's runner runs: the spec's model and data, trained with the trial's
hyperparameters and seed, with the rungs early stopping may end it at; or the simulated
trial (a test function, a table) the spec's trial kind names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._early_stopping import rung_steps
from ._spec import QLoRATrial, StudySpec, TabularTrial, TestFunctionTrial
from .objectives import AnyConfig, Hyperparameters, SimulatedConfig, TrialConfig
from .storage import is_rerun, recorded

if TYPE_CHECKING:
    import optuna


def trial_config(spec: StudySpec, trial: optuna.Trial, hyperparameters: Hyperparameters, cache_dir: str) -> AnyConfig:
    """What the runner runs: the spec's model and data trained with the trial's
    hyperparameters, or the simulated trial the spec's kind names."""
    seed = recorded(trial, "seed")  # a verification re-run's, set when it was queued
    seed = spec.training.seed if seed is None else seed
    rungs = rungs_of(spec, trial)
    if isinstance(spec.trial, QLoRATrial):
        return TrialConfig(
            model=spec.model,
            dataset=spec.dataset,
            training=spec.training.model_copy(update={"seed": seed}),
            hyperparameters=hyperparameters,
            cache_dir=cache_dir,
            rungs=rungs,
            metrics=spec.metrics,
            generation=spec.generation,
        )
    simulated = {
        "seed": seed,
        "draw": f"{seed}:{trial.number}",
        "delay_s": spec.trial.delay_s,
        "max_steps": spec.training.max_steps or 1,
        "rungs": rungs,
    }
    if isinstance(spec.trial, TabularTrial):
        return SimulatedConfig(
            kind="tabular", table=spec.trial.table, hyperparameters=hyperparameters.model_dump(), **simulated
        )
    assert isinstance(spec.trial, TestFunctionTrial)
    point = spec.search_space.unit_point(trial.params)
    return SimulatedConfig(kind=spec.trial.kind, point=point, noise=spec.trial.noise, **simulated)


def rungs_of(spec: StudySpec, trial: optuna.Trial) -> list[int]:
    """The steps at which early stopping may end the trial; none for a re-run, which measures
    its config's whole run."""
    if spec.early_stopping is None or spec.training.max_steps is None or is_rerun(trial):
        return []
    return rung_steps(spec.early_stopping, spec.training.max_steps)
