"""Peer HPO libraries, run with their own code against the table replay (benchmarks/replay.py).

Each peer is one function `(replay) -> None` in `PEERS`: it asks its library for a config, trains it in the
replay (`replay.trial(params)`, then `run_to` each of `replay.curve_steps`), tells the library the values, and
goes on until `replay.done`. Every peer is told the replay's scaled objectives (`ReplayTrial.scaled`: eval_loss and
the train time extrapolated to the whole run, both minimised; a failed config at the reference point [1.1, 1.1]),
seeded from `replay.seed`, and searches the table's axes on their own scale (log or linear, integer or float);
the replay snaps each proposal to the nearest grid point. The libraries are the optional `peers` dependencies
(`pip install -e '.[peers]'`), imported only when a peer runs.

- "moasha": Syne Tune 0.16's MOASHA scheduler as shipped: random proposals, asynchronous successive halving over
  steps (grace period: the first curve step, reduction factor 3, one bracket) with its default multi-objective
  ranking (non-dominated sort with an epsilon net). Told each curve step's values through `on_trial_result`; a
  trial it stops is stopped in the replay. Its promotion ranking is broken, see `moasha`.
- "syne-ehvi": Syne Tune's `EHVI` baseline (its ExpectedHyperVolumeImprovement searcher: an independent BoTorch GP
  per objective, qLogEHVI, 3 random configs first). Full trials, told the values at the end.
- "syne-morea": Syne Tune's multi-objective regularized evolution (MultiObjectiveRegularizedEvolution, the searcher
  its factory gives "regularized_evolution" for several metrics), defaults. Full trials. With its default
  population of 100 it samples at random until 100 trials have completed, and parents are picked with the same
  broken ranking as MOASHA's.
- "ax": Ax 1.3's default generation strategy for a multi-objective experiment (`ax.api.Client`: the centre of the
  space, Sobol up to 5 trials, then BoTorch's modular BO, which for several objectives is qLogNEHVI on a GP per
  objective), objective "-eval_loss, -train_time_s" with the reference point left to Ax to infer. Full trials.

Syne Tune's other multi-objective searcher in 0.16 (multi_surrogate_multi_objective_searcher.py) cannot be
imported: it needs modules (random_scalarization, legacy_model_based_searcher) that the 0.16 wheel does not ship.

The peers are driven sequentially, as a one-worker tuner would: `suggest`, `on_trial_add`, `on_trial_result` /
`on_trial_complete` for Syne Tune; `get_next_trials(1)`, `complete_trial` for Ax."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from datetime import datetime
from typing import Any

import numpy as np
import torch
from replay import Replay, ReplayTrial

METRICS = ["eval_loss", "train_time_s"]
REDUCTION_FACTOR = 3  # MOASHA's


def _syne_space(replay: Replay) -> dict[str, Any]:
    from syne_tune.config_space import lograndint, loguniform, randint, uniform

    space: dict[str, Any] = {}
    for name, axis in replay.axes.items():
        if axis.integer:
            space[name] = (lograndint if axis.log else randint)(int(axis.low), int(axis.high))
        else:
            space[name] = (loguniform if axis.log else uniform)(axis.low, axis.high)
    return space


def _full_run(replay: Replay, trial: ReplayTrial) -> list[float]:
    """Train `trial` to the end (or until it fails): its scaled values."""
    return trial.scaled(trial.run_to(replay.max_steps), replay.max_steps)


def _syne_trial(trial_id: int, config: dict[str, Any]) -> Any:
    from syne_tune.backend.trial_status import Trial

    return Trial(trial_id=trial_id, config=config, creation_time=datetime.now())


def _rungs(replay: Replay) -> list[int]:
    """MOASHA's rung levels: grace_period * rf^k up to max_t (syne_tune/optimizer/schedulers/asha.py, Bracket)."""
    grace = replay.curve_steps[0]
    count = int(np.log(replay.max_steps / grace) / np.log(REDUCTION_FACTOR) + 1)
    return [int(grace * REDUCTION_FACTOR**k) for k in range(count)]


def moasha(replay: Replay) -> None:
    """Syne Tune's MOASHA, as shipped, told each curve step's values.

    Its ranking is broken (Syne Tune 0.16, read in the installed package): NonDominatedPriority
    (syne_tune/optimizer/schedulers/multiobjective/multiobjective_priority.py, line 97) returns
    `nondominated_sort(...)` (non_dominated_priority.py, lines 91-147), the list of trial indices in sorted order,
    best first, not each trial's rank. Bracket.on_result (syne_tune/optimizer/schedulers/asha.py, lines 258-267)
    reads that list as priorities: `ranks = searchsorted(sorted(priorities), priorities) / n` is then
    `indices / n`, and the new trial's "rank" `ranks[-1]` is the index of whichever trial sorted last. So a new
    trial goes on iff the worst-sorted trial at the rung is one of the first third recorded there: its own values
    only count in that a trial sorted last (dominated by all) is always stopped. A new trial that dominates all 8
    already at a rung was stopped in 51% of 300 random draws.

    Rung levels must fall on curve steps for decisions to be made where they are meant to: they do for curve steps
    like [3, 9, 27] or [9, 27, 81]. Where one does not, the Bracket records the trial at the next curve step past
    it (the highest rung not yet recorded at or below the step reported), so that rung's decision is taken there,
    on every trial alike: we warn and go on."""
    from syne_tune.optimizer.scheduler import SchedulerDecision
    from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

    missing = [rung for rung in _rungs(replay) if rung not in replay.curve_steps]
    if missing:
        logging.getLogger(__name__).warning(
            "MOASHA's rung levels %s are not curve steps %s: decided at the next curve step",
            missing,
            replay.curve_steps,
        )
    np.random.seed(replay.seed)  # MOASHA samples configs and brackets from numpy's global generator, not its seed
    scheduler = MOASHA(
        _syne_space(replay),
        metrics=METRICS,
        do_minimize=True,
        time_attr="steps",
        max_t=replay.max_steps,
        grace_period=replay.curve_steps[0],
        reduction_factor=REDUCTION_FACTOR,
        random_seed=replay.seed,
    )
    trial_id = 0
    while not replay.done:
        trial = _syne_trial(trial_id, scheduler.suggest().config)
        trial_id += 1
        scheduler.on_trial_add(trial)
        t = replay.trial(trial.config)
        for step in replay.curve_steps:
            measured = t.run_to(step)
            if measured is None:  # the config failed: the tuner tells it as an error
                scheduler.on_trial_error(trial)
                break
            result = {"steps": step, **dict(zip(METRICS, t.scaled(measured, step), strict=True))}
            decision = scheduler.on_trial_result(trial, result)  # STOP at max_t too: the trial is done
            if step == replay.max_steps:
                scheduler.on_trial_complete(trial, result)
            elif decision == SchedulerDecision.STOP:
                t.stop()
                break


def _syne_full(replay: Replay, scheduler: Any) -> None:
    """Drive a Syne Tune single-fidelity scheduler: full trials, told the values at the end."""
    trial_id = 0
    while not replay.done:
        trial = _syne_trial(trial_id, scheduler.suggest().config)
        trial_id += 1
        scheduler.on_trial_add(trial)
        values = _full_run(replay, replay.trial(trial.config))
        scheduler.on_trial_complete(trial, dict(zip(METRICS, values, strict=True)))


def syne_ehvi(replay: Replay) -> None:
    """Syne Tune's EHVI baseline.

    Workaround: its searcher builds tensors with `torch.Tensor(...)` (float32) and fits the GP in float64
    (`double_precision=True`, its default); BoTorch then fails on the float32 bounds and pending points it is
    handed. Running it with torch's default dtype at float64 makes those tensors float64, and nothing else."""
    from syne_tune.optimizer.baselines import EHVI

    np.random.seed(replay.seed)  # its first random configs are drawn from numpy's global generator
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # BoTorch's input-scaling and fitting warnings, each trial
            _syne_full(replay, EHVI(_syne_space(replay), metrics=METRICS, do_minimize=True, random_seed=replay.seed))
    finally:
        torch.set_default_dtype(default)


def syne_morea(replay: Replay) -> None:
    """Syne Tune's multi-objective regularized evolution, defaults."""
    from syne_tune.optimizer.schedulers.multiobjective import MultiObjectiveRegularizedEvolution
    from syne_tune.optimizer.schedulers.single_fidelity_scheduler import SingleFidelityScheduler

    # Parts of it draw from numpy's global generator, not its seed: unseeded, a run would
    # depend on what ran before it in the process.
    np.random.seed(replay.seed)
    space = _syne_space(replay)
    searcher = MultiObjectiveRegularizedEvolution(space, random_seed=replay.seed)
    _syne_full(replay, SingleFidelityScheduler(space, metrics=METRICS, do_minimize=True, searcher=searcher))


def ax(replay: Replay) -> None:
    """Ax's default generation strategy, through its Client."""
    logging.disable(logging.INFO)  # Ax logs at INFO as it is imported, before its loggers can be set
    try:
        from ax.api.client import Client
        from ax.api.configs import RangeParameterConfig
        from ax.utils.common.logger import set_ax_logger_levels
    finally:
        logging.disable(logging.NOTSET)
    set_ax_logger_levels(logging.ERROR)
    client = Client(random_seed=replay.seed)
    client.configure_experiment(
        [
            RangeParameterConfig(
                name=name,
                bounds=(axis.low, axis.high),
                # Floats on every axis: the replay snaps a proposal to the nearest grid point anyway, and
                # integer parameters send Ax to its mixed optimizer, several times slower here.
                parameter_type="float",
                scaling="log" if axis.log else "linear",
            )
            for name, axis in replay.axes.items()
        ]
    )
    client.configure_optimization(objective=", ".join(f"-{metric}" for metric in METRICS))
    client.configure_generation_strategy(initialization_random_seed=replay.seed)  # the default one, its Sobol seeded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while not replay.done:
            ((index, params),) = client.get_next_trials(max_trials=1).items()
            values = _full_run(replay, replay.trial(dict(params)))
            client.complete_trial(index, raw_data=dict(zip(METRICS, values, strict=True)))


PEERS: dict[str, Callable[[Replay], None]] = {
    "moasha": moasha,
    "syne-ehvi": syne_ehvi,
    "syne-morea": syne_morea,
    "ax": ax,
}
