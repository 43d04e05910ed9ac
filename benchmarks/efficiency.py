"""Efficiency across landscapes: how much training compute each method spends to hold random
search's 50-trial hypervolume, on every table given, and the default method chosen by a rule
fixed before looking.

    python benchmarks/efficiency.py --out benchmarks/results/efficiency.json \\
        --table benchmarks/results/tabular_pydoc_alpaca_cpu.json --table ... [--peers]

Each table (benchmarks/tabular_grid.py, several seeds per config) is replayed as
benchmarks/replay.py says: a trial trains one drawn seed of its config, pays its steps and
training seconds, and puts its config's seed mean on the run's front. Random search runs 50
whole trials on --random-seeds seeds (100: its target, the median 50-trial hypervolume,
moves with fewer); its median training seconds are the unit of compute. Every other method
runs until it has spent HORIZON times that compute, on --seeds seeds. Reported per method,
medians over seeds with IQRs beside: the hypervolume ratio held at 10%, 25%, 50% and 100% of
random's seconds, and the steps and seconds (fractions of random's) spent when the run first
held random's target (null where the median run never did within HORIZON times random's
compute), with a 95% bootstrap interval of that median for the seconds. Compute is training
seconds; with --charge-evaluation a trial also pays for each held-out evaluation it runs
(replay.ScoredTable), as a user does.

Our methods are an Optuna sampler as workers build it (autotune's build_sampler), with or
without multi-objective early stopping (rungs at min_steps x reduction_factor^k, min_steps a
fraction of the steps; stopped trials shown to the sampler): `(witnessed)` is autotune's
until 2026-12-01: the cut widened to keep the completed trials' front, every (rungs + 1)-th
trial let through every rung; `(evidenced)` the same, but such a trial placed outside a
rung's cut goes on only while fewer than 5 of them completed through it or the cut is widened;
`(witness-to-last-rung)`, autotune's as shipped (reach_rung), such a trial is judged by the
cut at the last rung; `(widened)` is that cut alone; `(guarded)` is autotune's until
2026-12-01, where the rung stopped nothing until it would have let every completed front
trial go on; plain `+es` the promotion rule alone, as it was before the guard. With --peers,
the peers of benchmarks/peers.py run too (pip install -e '.[peers]').

The rule (written before any table was replayed): the default is the candidate with the
smallest worst case, over the tables, of the seconds it spends to reach random's target;
ties go to the larger worst-case hypervolume at 25% of random's compute. The seconds to reach
are measured up to HORIZON times random's compute (until 2026-11-30 up to random's compute:
on the three deciding tables then, every candidate missed the target within it on at least
one table, which left the choice to the tie-break; the horizon was raised before the 81-step
table was replayed). Only tables that pass the difficulty check (random@10 at most 0.8 of
the true front) decide (this gate was added after the first replay showed the small seeded
tables failing the check; the others are reported, not counted). The guarded methods
(GUARDED) joined the candidates before the committed table's seeds 43 and 44 were built, the
space-filling ones (SPACE_FILLING) before the chat-curves table was built, the widened ones
(WIDENED, WITNESSED) before the pydoc 45-step table was replayed, the evidenced one
(EVIDENCED: the never-stopped trials hedge only until a rung has earned its plain cut) while the chat
36-step table was building, before anything was replayed on it, and TO_LAST_RUNG (they go on
past every rung but the last) while the pydoc 36-step table was; the hedged ones (HEDGED)
are measured only, and so are the bounds (BOUNDS: `(oracle)`, whose first rung stops exactly
the configs off the true front, which no early stopping can know: what perfect stopping with
those proposals would spend; `+true-rungs`, autotune's cut told each config's final seed mean
at every rung, a learning curve that ranks without noise: what the cut itself costs).

Where the seconds go, per method: of the seconds spent until the run first held random's
target, the shares in trials that ran a new config to the end, that ran a config to the end
again, that were stopped early, and that early stopping never stops; and the configs tried.

Difficulty, per table: random@10 (the hypervolume ratio after 10 random trials; a table where
it is near 1 cannot tell methods apart), the seed sd of eval_loss against the spread of the
configs' means, and the Spearman correlation of each rung's mean eval_loss with the final."""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from machine import describe
from replay import REFERENCE, Replay, ScoredTable, default_spec
from scipy.stats import spearmanr

from autotune import EarlyStopping, SamplerSpec
from autotune._early_stopping import (
    MIN_COMPLETED,
    completed_front,
    never_stopped,
    promotion_keys,
    reach_rung,
    record_rung,
    rung_cut,
    rung_places,
    rung_records,
    rung_steps,
    within_cut,
)
from autotune._samplers import build_sampler, sees_the_search
from autotune.objectives import TrialInputError, load_table
from autotune.storage import is_feasible, to_loss, write_record

N_RANDOM_TRIALS = 50
FRACTIONS = [0.1, 0.25, 0.5, 1.0]
DIRECTIONS = ["minimize", "minimize"]
DIFFICULTY_BAR = 0.8  # a table where 10 random trials hold more of the true front cannot rank methods
HORIZON = 2.0  # methods run on to this multiple of random's compute, so that a late arrival is measured


@dataclass(frozen=True)
class Method:
    sampler: str
    min_steps: float | None = None  # early stopping's first rung, a fraction of the steps; None: off
    reduction_factor: int = 3
    qmc_startup: bool = False  # the sampler's first 10 trials from scrambled Sobol, not at random
    qmc_every: int = 0  # with qmc_startup, every qmc_every-th later trial from Sobol too (0: none)
    # Hyperband's hedge: trial n is in bracket n % (rungs + 1), which starts at rung n % (rungs + 1)
    # (the last bracket never stops), and ranks at a rung against its own bracket's trials only.
    brackets: bool = False
    # autotune's early stopping until 2026-12-01: a rung stops trials only once the study's own
    # completed trials show it would have kept their Pareto front.
    guarded: bool = False
    # The cut widened instead of lifted: where the guard would keep every trial (the rung would
    # have stopped a completed front trial), keep as many as it takes to keep that front.
    widened: bool = False
    # With widened: every (rungs + 1)-th trial goes on at every rung (Hyperband's bracket that
    # never stops), so that the front the cut is widened to keep includes trials it did not select
    # (autotune's early stopping until 2026-12-01).
    witnessed: bool = False
    # With witnessed: a trial that never stops goes on past a rung where it is placed outside the
    # cut only until the rung has earned its plain cut: MIN_COMPLETED never-stopped trials (an
    # unselected sample) completed through it, and the completed front placed within its best
    # n // reduction_factor there. The hedge stays where the evidence says the rung misplaces.
    evidenced: bool = False
    # With widened: every (rungs + 1)-th trial goes on past every rung but the last (where the
    # first rungs rank the final front worst), and at the last the cut decides, as for any other
    # (autotune's early stopping as shipped, reach_rung).
    witness_to_last_rung: bool = False
    # Bounds, not methods: the first rung stops exactly the configs off the true front of the
    # table's seed means, as no early stopping that sees only the trials can (oracle); the rungs
    # see each config's final seed mean, a learning curve that ranks without noise (true_rungs).
    oracle: bool = False
    true_rungs: bool = False


RANDOM = Method("random")
CANDIDATES = {  # fixed before looking: what the default is chosen from
    "tpe": Method("tpe"),
    "gp": Method("gp"),
    "qmc": Method("qmc"),
    "random+es": Method("random", 1 / 9),
    "tpe+es": Method("tpe", 1 / 9),
    "tpe+es(late)": Method("tpe", 1 / 3),  # one rung, at a third of the steps
    "tpe+qmc": Method("tpe", qmc_startup=True),
    "tpe+qmc+es": Method("tpe", 1 / 9, qmc_startup=True),
}
HEDGED = {  # added after the candidates above were replayed (issue 22's "brackets that hedge"): not chosen from
    "tpe+hb": Method("tpe", 1 / 9, brackets=True),
    "random+hb": Method("random", 1 / 9, brackets=True),
}
GUARDED = {  # added before the seeded committed table was replayed; chosen from with the candidates
    "tpe+es(guarded)": Method("tpe", 1 / 9, guarded=True),
    "random+es(guarded)": Method("random", 1 / 9, guarded=True),
}
SPACE_FILLING = {  # added before the chat-curves table was built; chosen from with the candidates
    "qmc+es": Method("qmc", 1 / 9),
    "qmc+es(guarded)": Method("qmc", 1 / 9, guarded=True),
    "tpe+qmc(half)+es": Method("tpe", 1 / 9, qmc_startup=True, qmc_every=2),
}
WIDENED = {  # added before the pydoc 45-step table was replayed (2026-11-30); chosen from with the candidates
    "random+es(widened)": Method("random", 1 / 9, widened=True),
    "qmc+es(widened)": Method("qmc", 1 / 9, widened=True),
    "tpe+es(widened)": Method("tpe", 1 / 9, widened=True),
}
WITNESSED = {  # added after WIDENED capped the front, before the pydoc 45-step table was replayed; chosen from
    "random+es(witnessed)": Method("random", 1 / 9, widened=True, witnessed=True),
    "qmc+es(witnessed)": Method("qmc", 1 / 9, widened=True, witnessed=True),
}
BOUNDS = {  # added 2026-12-01: what early stopping would spend, knowing the front or the final losses; not chosen from
    "qmc+es(oracle)": Method("qmc", 1 / 9, oracle=True),
    "random+es(oracle)": Method("random", 1 / 9, oracle=True),
    "qmc+es(witnessed)+true-rungs": Method("qmc", 1 / 9, widened=True, witnessed=True, true_rungs=True),
    "qmc+es(widened)+true-rungs": Method("qmc", 1 / 9, widened=True, true_rungs=True),
}
# Added 2026-12-01 while the chat 36-step table was building, before anything was replayed on it;
# chosen from (the rule kept the default: it capped the front on code-curves and code-long).
EVIDENCED = {
    "qmc+es(evidenced)": Method("qmc", 1 / 9, widened=True, witnessed=True, evidenced=True),
}
# Added 2026-12-01 while the pydoc 36-step table was building, before anything was replayed on it;
# chosen from (the rule kept the default: 102% of random's seconds on chat-curves against 97%).
TO_LAST_RUNG = {
    "qmc+es(witness-to-last-rung)": Method("qmc", 1 / 9, widened=True, witness_to_last_rung=True),
}
CHOSEN_FROM = CANDIDATES | GUARDED | SPACE_FILLING | WIDENED | WITNESSED | EVIDENCED | TO_LAST_RUNG
N_STARTUP = 10  # Optuna's default n_startup_trials for tpe and gp


class _WithSobol(optuna.samplers.BaseSampler):
    """`inner`, but the first N_STARTUP trials from scrambled Sobol points (as Ax starts), and
    with `every`, every `every`-th later trial too."""

    def __init__(self, inner: optuna.samplers.BaseSampler, seed: int, every: int = 0) -> None:
        self.inner, self.qmc = inner, optuna.samplers.QMCSampler(seed=seed, scramble=True)
        self.every = every

    def _for(self, trial: optuna.trial.FrozenTrial) -> optuna.samplers.BaseSampler:
        from_sobol = trial.number < N_STARTUP or (self.every and trial.number % self.every == 0)
        return self.qmc if from_sobol else self.inner

    def infer_relative_search_space(self, study, trial):  # type: ignore[no-untyped-def]
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):  # type: ignore[no-untyped-def]
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, name, distribution):  # type: ignore[no-untyped-def]
        return self._for(trial).sample_independent(study, trial, name, distribution)

    def before_trial(self, study, trial):  # type: ignore[no-untyped-def]
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study, trial, state, values):  # type: ignore[no-untyped-def]
        self._for(trial).after_trial(study, trial, state, values)


def default_method() -> str:
    """The method a spec with a step budget gets by default, named as CHOSEN_FROM names it
    (autotune's early stopping is the one that judges its never-stopped trials at the last rung)."""
    max_steps = 27
    spec = default_spec(max_steps)
    if spec.early_stopping is None:
        return str(spec.sampler.name)
    name = f"{spec.sampler.name}+es(witness-to-last-rung)"
    method = CHOSEN_FROM[name]
    assert method.min_steps is not None and round(method.min_steps * max_steps) == spec.early_stopping.min_steps
    assert method.reduction_factor == spec.early_stopping.reduction_factor
    return name


def run_ours(method: Method, replay: Replay) -> None:
    sampler = build_sampler(SamplerSpec(name=method.sampler, seed=replay.seed), N_RANDOM_TRIALS, replay.seed)
    if method.qmc_startup:
        sampler = _WithSobol(sampler, replay.seed, method.qmc_every)
    early = method.min_steps is not None
    study = optuna.create_study(directions=DIRECTIONS, sampler=sees_the_search(sampler) if early else sampler)
    space = replay.problem.search_space()
    rungs = []
    if early:
        first = max(1, round(method.min_steps * replay.max_steps))
        rungs = rung_steps(EarlyStopping(min_steps=first, reduction_factor=method.reduction_factor), replay.max_steps)
    while not replay.done:
        trial = study.ask()
        run = replay.trial(space.suggest(trial).model_dump())
        bracket = trial.number % (len(rungs) + 1) if method.brackets else 0
        hedged = method.witnessed or method.witness_to_last_rung
        run.never_stopped = (hedged and never_stopped(trial.number, len(rungs))) or (
            method.brackets and bracket == len(rungs)
        )
        for step in rungs[bracket:]:
            measured = run.run_to(step)
            values = run.scaled(measured, step)
            if measured is None:
                break
            if method.true_rungs:
                values = [float(v) for v in replay.problem.mean_points[run.point]]
            if method.oracle:
                goes_on = run.point in replay.problem.front
            else:
                goes_on = _goes_on(study, trial, step, values, method, len(rungs), last=step == rungs[-1])
            if not goes_on:
                write_record(trial, stopped_values=values, stopped_at_step=step)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                run.stop()
                break
        else:
            study.tell(trial, run.scaled(run.run_to(replay.max_steps), replay.max_steps))
            continue
        if run.failed:
            study.tell(trial, [REFERENCE, REFERENCE])


def _goes_on(
    study: optuna.Study,
    trial: optuna.Trial,
    step: int,
    values: list[float],
    method: Method,
    rungs: int,
    last: bool,
) -> bool:
    """Early stopping's decision at rung `step` (`last`: the last of `rungs`):
    witness-to-last-rung, autotune's (reach_rung); widened, autotune's cut (within_cut), and
    witnessed, a trial that never stops (`never_stopped`) goes on outside the cut too, with
    evidenced only while the rung has not earned its plain cut (`_earned_plain_cut`); otherwise
    the promotion rule (`_promoted`), with brackets against the trial's own bracket, and
    guarded, every trial going on while the rung would have stopped a completed front trial
    (`_keeps_front`)."""
    if method.witness_to_last_rung:
        return reach_rung(study, trial, step, values, DIRECTIONS, method.reduction_factor, rungs, last)
    record_rung(trial, step, values)
    trials = study.get_trials(deepcopy=False)
    if method.widened:
        if within_cut(trials, trial.number, step, DIRECTIONS, method.reduction_factor):
            return True
        if method.evidenced:
            hedged = not _earned_plain_cut(trials, step, method.reduction_factor, rungs)
        else:
            hedged = method.witnessed
        return hedged and never_stopped(trial.number, rungs) and all(math.isfinite(v) for v in values)
    if method.brackets:
        trials = [t for t in trials if t.number % (rungs + 1) == trial.number % (rungs + 1)]
    others = [v for t, v in rung_records(trials, step) if t.number != trial.number]
    if _promoted(values, others, method.reduction_factor):
        return True
    return method.guarded and not _keeps_front(trials, step, method.reduction_factor)


def _earned_plain_cut(trials: list[optuna.trial.FrozenTrial], step: int, reduction_factor: int, rungs: int) -> bool:
    """(evidenced): whether rung `step` has earned its plain cut: MIN_COMPLETED never-stopped
    trials (the rung's unselected sample) have completed through it, and its cut is not widened
    beyond the best n // reduction_factor (no completed front trial was placed lower)."""
    reached = rung_records(trials, step)
    cut = rung_cut(reached, rung_places(reached, DIRECTIONS), DIRECTIONS, reduction_factor)
    witnessed = sum(1 for t, _ in reached if is_feasible(t) and never_stopped(t.number, rungs))
    return witnessed >= MIN_COMPLETED and cut <= max(1, len(reached) // reduction_factor)


def _promoted(values: list[float], others: list[list[float]], reduction_factor: int) -> bool:
    """The promotion rule alone, as autotune ranked until 2026-12-01: whether `values` are among
    the best max(1, n // reduction_factor) of the n at the rung (`others` and them), ranked
    with them first, so that ties in crowding distance go their way too."""
    if not all(math.isfinite(v) for v in values):
        return False
    finite = [o for o in others if all(math.isfinite(v) for v in o)]
    keys = promotion_keys(np.array([to_loss(v, DIRECTIONS) for v in [values, *finite]]))
    kept = max(1, (1 + len(others)) // reduction_factor)  # a diverged trial counts, ranked last
    return keys[0] <= sorted(keys)[min(kept, len(keys)) - 1]


def _keeps_front(trials: list[optuna.trial.FrozenTrial], step: int, reduction_factor: int) -> bool:
    """The guard, autotune's until 2026-12-01: whether rung `step` would have promoted every
    trial on the completed trials' front (at least MIN_COMPLETED of them)."""
    reached = rung_records(trials, step)
    front = completed_front(reached, DIRECTIONS)
    return front is not None and all(
        _promoted(values, [v for other, v in reached if other.number != t.number], reduction_factor)
        for t, values in front
    )


def _quartiles(values: list[float]) -> list[float | None]:
    with np.errstate(invalid="ignore"):  # a quartile among runs that never reached: inf
        quartiles = np.percentile(np.array(values, dtype=float), [25, 75])
    return [None if not math.isfinite(q) else float(q) for q in quartiles]


def _median_ci(values: list[float]) -> list[float | None]:
    """A 95% bootstrap interval of the median over the seeds (2,000 resamples, seeded): two
    methods whose medians lie within each other's intervals are not told apart by the seeds."""
    draws = np.random.default_rng(0).choice(np.array(values, dtype=float), size=(2000, len(values)))
    # lower/higher, not interpolated: between two runs that never reached (inf) is inf, not nan
    low = np.percentile(np.median(draws, axis=1), 2.5, method="lower")
    high = np.percentile(np.median(draws, axis=1), 97.5, method="higher")
    return [None if not math.isfinite(q) else float(q) for q in (low, high)]


def _median(values: list[float]) -> float | None:
    m = float(np.median(np.array(values, dtype=float)))
    return m if math.isfinite(m) else None


def _difficulty(problem: ScoredTable, random_runs: list[Replay]) -> dict:
    table = problem.table
    at_10 = [r.history.hypervolume[9] for r in random_runs]
    means = {p: row for p, row in table.means.items() if "error" not in row}
    # The seed sd of configs that learn (mean below the base model's loss): diverging ones
    # scatter by whole nats and would drown the noise that decides a front.
    sds = [
        float(np.std([row["eval_loss"] for row in table.rows[p] if "error" not in row], ddof=1))
        for p, row in means.items()
        if len(table.rows[p]) > 1 and row["eval_loss"] < row["eval_loss_before"]
    ]
    losses = [row["eval_loss"] for row in means.values()]
    rung_spearman = {
        str(step): float(
            spearmanr(
                [next(c["eval_loss"] for c in row["learning_curve"] if c["step"] == step) for row in means.values()],
                losses,
            )[0]
        )
        for step in table.curve_steps[:-1]
    }
    return {
        "configs": len(table.rows),
        "seeds_per_config": max(len(rows) for rows in table.rows.values()),
        "max_steps": problem.max_steps,
        "random_at_10": {"median": float(np.median(at_10)), "iqr": _quartiles(at_10)},
        "seed_sd_eval_loss": {  # over the configs that learn
            "pooled": float(np.sqrt(np.mean(np.square(sds)))) if sds else None,
            "median": float(np.median(sds)) if sds else None,
        },
        "best_to_median_eval_loss": float(np.median(losses) - min(losses)),
        "rung_spearman": rung_spearman,
        "failed_configs": len(table.rows) - len(means),
    }


def _summary(runs: list[Replay], target: float, random_steps: float, random_seconds: float) -> dict:
    at = {str(f): [r.history.at_seconds(f * random_seconds) for r in runs] for f in FRACTIONS}
    reached = [r.history.first_reaching(target) for r in runs]
    steps = [s / random_steps for s, _ in reached]
    seconds = [s / random_seconds for _, s in reached]
    spent = [r.spending(s) for r, (_, s) in zip(runs, reached, strict=True)]
    return {
        "hv_at_compute": {f: float(np.median(v)) for f, v in at.items()},
        "hv_at_compute_iqr": {f: _quartiles(v) for f, v in at.items()},
        "compute_to_random_final": {"steps": _median(steps), "seconds": _median(seconds)},
        "compute_to_random_final_iqr": {"steps": _quartiles(steps), "seconds": _quartiles(seconds)},
        "compute_to_random_final_ci95": {"seconds": _median_ci(seconds)},
        "trials": float(np.median([r.history.trials for r in runs])),
        "stopped": float(np.median([r.history.stopped for r in runs])),
        # where the seconds went until the run first held random's target (all of them if never)
        "spent_until_random_final": {k: float(np.median([s[k] for s in spent])) for k in spent[0]},
    }


def _timed(label: str, runs: Callable[[], list[Replay]]) -> list[Replay]:
    started = time.perf_counter()
    done = runs()
    print(f"{label:<56} {time.perf_counter() - started:7.1f} s", flush=True)
    return done


def measure_table(
    problem: ScoredTable,
    name: str,
    methods: dict[str, Callable[[Replay], None]],
    peers: dict[str, Callable[[Replay], None]],
    seeds: int,
    peer_seeds: int,
    random_seeds: int,
) -> dict:
    def random_run(seed: int) -> Replay:
        replay = Replay(problem, seed, math.inf, max_trials=N_RANDOM_TRIALS)
        run_ours(RANDOM, replay)
        return replay

    random_runs = _timed(f"{name} random x {random_seeds}", lambda: [random_run(s) for s in range(random_seeds)])
    target = float(np.median([r.history.hypervolume[-1] for r in random_runs]))
    random_steps = float(N_RANDOM_TRIALS * problem.max_steps)
    random_seconds = float(np.median([r.history.seconds[-1] for r in random_runs]))
    result = {
        "difficulty": _difficulty(problem, random_runs),
        "random_target": {"hypervolume_ratio": target, "seeds": random_seeds},
        "random_compute": {"steps": random_steps, "seconds": random_seconds},
        "methods": {"random": _summary(random_runs, target, random_steps, random_seconds)},
    }
    budget_s = HORIZON * random_seconds
    for method, run in methods.items():
        runs = _timed(f"{name} {method} x {seeds}", lambda run=run: _runs(problem, run, seeds, budget_s))
        result["methods"][method] = _summary(runs, target, random_steps, random_seconds)
    for peer, run in peers.items():
        runs = _timed(f"{name} {peer} x {peer_seeds}", lambda run=run: _runs(problem, run, peer_seeds, budget_s))
        result["methods"][peer] = {"peer": True, **_summary(runs, target, random_steps, random_seconds)}
    return result


def _runs(problem: ScoredTable, run: Callable[[Replay], None], seeds: int, budget_s: float) -> list[Replay]:
    replays = [Replay(problem, seed, budget_s) for seed in range(seeds)]
    for replay in replays:
        run(replay)
    return replays


def choose_default(tables: dict[str, dict], candidates: list[str]) -> dict:
    """The rule: the smallest worst case of the seconds to reach random's target; ties to the
    larger worst-case hypervolume at 25% of random's compute. Only tables that can tell methods
    apart decide (random@10 at most DIFFICULTY_BAR of the true front's hypervolume)."""
    deciding = {n: t for n, t in tables.items() if t["difficulty"]["random_at_10"]["median"] <= DIFFICULTY_BAR}

    def seconds(method: str, table: str) -> float:
        reached = deciding[table]["methods"][method]["compute_to_random_final"]["seconds"]
        return math.inf if reached is None else reached

    def worst_table(method: str) -> str:
        return max(deciding, key=lambda table: seconds(method, table))

    def worst(method: str) -> tuple[float, float]:
        hv = min(t["methods"][method]["hv_at_compute"]["0.25"] for t in deciding.values())
        return seconds(method, worst_table(method)), -hv

    if not deciding:
        return {"chosen": None, "deciding_tables": [], "worst_case": {}}
    ranked = sorted(candidates, key=worst)
    return {
        "chosen": ranked[0],
        "deciding_tables": list(deciding),
        "worst_case": {
            m: {
                "seconds_to_random_final": worst(m)[0] if math.isfinite(worst(m)[0]) else None,
                "table": worst_table(m),
                # how precisely the seeds measured it (absent from results measured before 2026-12-01)
                "ci95": deciding[worst_table(m)]["methods"][m].get("compute_to_random_final_ci95", {}).get("seconds"),
                "hv_at_0.25": -worst(m)[1],
            }
            for m in ranked
        },
    }


def _seed_sd(sd: dict) -> str:
    if sd["pooled"] is None:
        return "unknown (one seed per config)"
    return f"{sd['pooled']:.3f} pooled, {sd['median']:.3f} median over the configs that learn"


def _print(name: str, table: dict, seeds: int) -> None:
    d = table["difficulty"]
    print(f"\n## {name}: {d['configs']} configs x {d['seeds_per_config']} seeds, {d['max_steps']} steps")
    print(
        f"random@10 {d['random_at_10']['median']:.2f} [{d['random_at_10']['iqr'][0]:.2f}, "
        f"{d['random_at_10']['iqr'][1]:.2f}]; seed sd of eval_loss {_seed_sd(d['seed_sd_eval_loss'])}, "
        f"best to median {d['best_to_median_eval_loss']:.3f}; Spearman(rung, final) "
        + ", ".join(f"step {s}: {c:.2f}" for s, c in d["rung_spearman"].items())
    )
    print(
        f"random's target: {table['random_target']['hypervolume_ratio']:.3f} of the true front "
        f"({table['random_target']['seeds']} seeds); its compute {table['random_compute']['seconds']:.0f} s"
    )
    print(f"hypervolume ratio at a share of random's training seconds, median [IQR] over {seeds} seeds")
    print("| method | " + " | ".join(f"{f:.0%}" for f in FRACTIONS) + " | seconds to random's | steps to random's |")
    print("|---|" + "---|" * (len(FRACTIONS) + 2))
    for method, row in table["methods"].items():
        cells = [
            f"{row['hv_at_compute'][str(f)]:.3f} [{row['hv_at_compute_iqr'][str(f)][0]:.3f}, "
            f"{row['hv_at_compute_iqr'][str(f)][1]:.3f}]"
            for f in FRACTIONS
        ]
        for unit in ("seconds", "steps"):
            v, iqr = row["compute_to_random_final"][unit], row["compute_to_random_final_iqr"][unit]
            spread = ", ".join("-" if q is None else f"{q:.0%}" for q in iqr)
            cells.append("-" if v is None else f"{v:.0%} [{spread}]")
        print(f"| {method} | " + " | ".join(cells) + " |")
    print("\nwhere the seconds went until the run first held random's target (shares, medians over seeds)")
    print("| method | completed, a new config | completed again | stopped early | never stopped | configs tried |")
    print("|---|---|---|---|---|---|")
    for method, row in table["methods"].items():
        spent = row["spent_until_random_final"]
        shares = [f"{spent[k]:.0%}" for k in ("completed_new", "completed_again", "stopped", "never_stopped")]
        print(f"| {method} | " + " | ".join(shares) + f" | {spent['configs_tried']:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, action="append", required=True, help="a table; repeatable")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--random-seeds", type=int, default=100)
    known = CHOSEN_FROM | HEDGED | BOUNDS
    parser.add_argument("--methods", default=",".join(CHOSEN_FROM), help="comma-separated, of: " + ", ".join(known))
    parser.add_argument("--peers", default="", help="comma-separated, of benchmarks/peers.py's: moasha, syne-ehvi, ...")
    parser.add_argument("--peer-seeds", type=int, help="seeds for the peers (default: --seeds)")
    parser.add_argument(
        "--charge-evaluation",
        action="store_true",
        help="charge each held-out evaluation (every rung and the end) beside the training seconds",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    names = list(dict.fromkeys([default_method(), *args.methods.split(",")]))  # the default always runs
    unknown = set(names) - set(known)
    if unknown:
        parser.error(f"unknown method(s) {', '.join(sorted(unknown))}; choose from {', '.join(known)}")
    methods: dict[str, Callable[[Replay], None]] = {
        name: (lambda replay, m=known[name]: run_ours(m, replay)) for name in names
    }
    peers: dict[str, Callable[[Replay], None]] = {}
    if args.peers:
        from peers import PEERS

        asked = args.peers.split(",")
        if set(asked) - set(PEERS):
            parser.error(
                f"unknown peer(s) {', '.join(sorted(set(asked) - set(PEERS)))}; choose from {', '.join(PEERS)}"
            )
        peers = {name: PEERS[name] for name in asked}
    problems = {}
    for path in args.table:
        try:
            problems[path.stem] = ScoredTable(load_table(str(path)), evaluation=args.charge_evaluation)
        except TrialInputError as exc:
            parser.error(str(exc))
    results: dict = {
        "machine": describe(),
        "seeds": args.seeds,
        "peer_seeds": args.peer_seeds or args.seeds if peers else None,
        "charged": "training and evaluation seconds" if args.charge_evaluation else "training seconds",
        "tables": {},
    }
    for name, problem in problems.items():
        results["tables"][name] = measure_table(
            problem, name, methods, peers, args.seeds, args.peer_seeds or args.seeds, args.random_seeds
        )
        args.out.write_text(json.dumps(results, indent=1))  # after each table, so a long run leaves results
    results["default"] = default_method()
    results["choice"] = {
        "rule": "smallest worst case over the tables of the seconds to reach random's target",
        **choose_default(results["tables"], [n for n in names if n in CHOSEN_FROM]),
    }
    args.out.write_text(json.dumps(results, indent=1))
    for name, table in results["tables"].items():
        _print(name, table, args.seeds)
    print("\nworst case over the deciding tables of the seconds to random's target, [95% interval of the median]")
    for method, worst in results["choice"]["worst_case"].items():
        ci = ", ".join("-" if q is None else f"{q:.0%}" for q in worst["ci95"] or (None, None))
        seconds = "never" if worst["seconds_to_random_final"] is None else f"{worst['seconds_to_random_final']:.0%}"
        print(f"{method}: {seconds} [{ci}] on {worst['table']}")
    print(f"\ndefault: {results['default']}; by the rule: {results['choice']['chosen']}")


if __name__ == "__main__":
    main()
