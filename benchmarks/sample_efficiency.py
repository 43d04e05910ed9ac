"""Sample efficiency: how much of the true Pareto front's hypervolume each sampler finds
within a budget, against random search, over seeds.

    python benchmarks/sample_efficiency.py --out sample_efficiency.json [--seeds 10] [--budget 50]

Problems: the two-objective test functions ZDT1 and DTLZ2 over the default search space
(lora_r, lora_alpha, learning_rate scaled to the unit cube, as `trial: {kind: ...}` runs
them), and, with --table (repeatable), tables of real runs from benchmarks/tabular_grid.py
replayed as `trial: {kind: tabular, table: <file>}` replays them (the nearest grid point),
over a search space spanning the grid, minimising eval_loss and train_time_s. Each
problem's true front is known (analytic on the integer grid of lora_r, or the exhaustive
table), so results are hypervolume ratios. On a table, each run also adds up the training
time of its trials: the compute a user pays. Samplers are built exactly as workers build
them (autotune's build_sampler); `botorch` (not one of autotune's: optuna-integration's
BoTorchSampler with qLogNEHVI) runs where `pip install 'optuna-integration[botorch]'` was
done. Also the seed literature's protocol: 20 random pilot trials, then 5 by the sampler
against 5 more random.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import optuna
from replay import ScoredTable

from autotune import SamplerSpec, SearchSpace
from autotune._samplers import build_sampler
from autotune.dashboards import hypervolume
from autotune.objectives import TrialInputError, load_table, synthetic_metrics

_R = TypeVar("_R")
SAMPLERS = ["gp", "tpe", "nsga2", "random", "qmc"]
CHECKPOINTS = [10, 20, 30, 50]
SPACE = SearchSpace()


@dataclass(frozen=True)
class Problem:
    objective: Callable[[dict], tuple[float, float]]  # params -> objective values, scaled
    true_hypervolume: float
    space: SearchSpace
    train_time_s: Callable[[dict], float] | None = None  # params -> the compute a trial costs


def _synthetic(kind: str) -> Problem:
    def objective(params: dict) -> tuple[float, float]:
        m = synthetic_metrics(kind, SPACE.unit_point(params))
        return m["train_time_s"], m["eval_loss"]

    # The front: every integer lora_r, the other two at their optimum (g = 0).
    rest = {"zdt1": 0.0, "dtlz2": 0.5}[kind]
    front = []
    for r in range(4, 65):
        x0 = SPACE.unit_point({"lora_r": r, "lora_alpha": 8, "learning_rate": 1e-5})[0]
        front.append(np.array(objective_point(kind, [x0, rest, rest])))
    return Problem(objective, hypervolume(front, 1.1), SPACE)


def objective_point(kind: str, x: list[float]) -> tuple[float, float]:
    m = synthetic_metrics(kind, x)
    return m["train_time_s"], m["eval_loss"]


def _tabular(path: Path) -> Problem:
    """Minimise eval_loss and train_time_s (scaled as benchmarks/replay.py scales them, on the
    configs' seed means), on a search space spanning the grid (log ranges where the grid
    is log-spaced); each trial scores its nearest grid point's mean."""
    scored = ScoredTable(load_table(str(path)))
    table = scored.table

    def objective(params: dict) -> tuple[float, float]:
        return tuple(scored.mean_points[table.nearest(params)])

    def train_time_s(params: dict) -> float:
        return table.means[table.nearest(params)].get("train_time_s", 0.0)

    return Problem(objective, scored.true_hypervolume, scored.search_space(), train_time_s)


def make_sampler(name: str, seed: int, budget: int) -> optuna.samplers.BaseSampler:
    if name == "botorch":
        from optuna_integration import BoTorchSampler
        from optuna_integration.botorch import qnehvi_candidates_func  # qLogNEHVI where botorch has it

        return BoTorchSampler(candidates_func=qnehvi_candidates_func, seed=seed)
    return build_sampler(SamplerSpec(name=name, seed=seed), budget, seed)


def run(problem: Problem, sampler: str, seed: int, budget: int, pilot: int = 0) -> tuple[list[float], list[float]]:
    """The hypervolume ratio after each trial, and the training time spent so far."""
    objective, space = problem.objective, problem.space
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler(sampler, seed, budget))
    if pilot:
        pilot_study = optuna.create_study(
            directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed)
        )
        pilot_study.optimize(lambda t: objective(space.suggest(t).model_dump()), n_trials=pilot)
        study.add_trials(pilot_study.trials)
    study.optimize(lambda t: objective(space.suggest(t).model_dump()), n_trials=budget - pilot)
    points, ratios, spent = [], [], []
    for trial in study.trials:
        points.append(np.array(trial.values))
        ratios.append(hypervolume(points, 1.1) / problem.true_hypervolume)
        cost = problem.train_time_s(trial.params) if problem.train_time_s else 0.0
        spent.append((spent[-1] if spent else 0.0) + cost)
    return ratios, spent


def over_seeds(label: str, one_run: Callable[[int], _R], seeds: int) -> list[_R]:
    """`one_run(seed)` for each seed, timed."""
    started = time.perf_counter()
    runs = [one_run(seed) for seed in range(seeds)]
    print(f"{label:<48} {time.perf_counter() - started:6.1f} s", flush=True)
    return runs


def _first_reaching(ratios: np.ndarray, target: float) -> int | None:
    return next((i for i, v in enumerate(ratios) if v >= target > 0), None)


def _summary(runs: list[tuple[list[float], list[float]]], target: float, checkpoints: list[int]) -> dict:
    ratios = np.array([r for r, _ in runs])
    spent = np.array([s for _, s in runs])
    median = np.median(ratios, axis=0)
    reach = _first_reaching(median, target)
    row = {
        "median": {c: float(median[c - 1]) for c in checkpoints},
        "iqr": {c: [float(np.percentile(ratios[:, c - 1], q)) for q in (25, 75)] for c in checkpoints},
        "trials_to_random_final": None if reach is None else reach + 1,
    }
    if spent[:, -1].any():
        # Per seed: the training time spent when the run first held random's final hypervolume.
        times = [s[i] if (i := _first_reaching(r, target)) is not None else math.inf for r, s in runs]
        to_target = float(np.median(times))
        row["train_time_s"] = {c: float(np.median(spent[:, c - 1])) for c in checkpoints}
        row["train_time_to_random_final_s"] = to_target if math.isfinite(to_target) else None
    return row


def _print(name: str, problem: dict, seeds: int, checkpoints: list[int]) -> None:
    print(f"## {name} (hypervolume ratio to the true front; median [IQR] over {seeds} seeds)")
    timed = "random_train_time_s" in problem
    extra = " | training time to random's final, of random's |" if timed else " |"
    print("| sampler | " + " | ".join(f"{c} trials" for c in checkpoints) + " | trials to random's final" + extra)
    print("|---|" + "---|" * (len(checkpoints) + 1 + timed))
    for sampler, row in problem["samplers"].items():
        cells = [f"{row['median'][c]:.3f} [{row['iqr'][c][0]:.3f}, {row['iqr'][c][1]:.3f}]" for c in checkpoints]
        cells.append(str(row["trials_to_random_final"] or "-"))
        if timed:
            t = row["train_time_to_random_final_s"]
            cells.append("-" if t is None else f"{t:.0f} s ({t / problem['random_train_time_s']:.0%})")
        print(f"| {sampler} | " + " | ".join(cells) + " |")
    protocol = problem["pilot20_plus5"]
    if protocol:
        print("20 random pilot trials + 5: " + ", ".join(f"{s} {v:.3f}" for s, v in protocol.items()))
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated (default: autotune's)")
    parser.add_argument("--table", type=Path, action="append", default=[], help="a tabular benchmark; repeatable")
    parser.add_argument("--no-test-functions", action="store_true", help="only the tables")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    problems = {} if args.no_test_functions else {"zdt1": _synthetic("zdt1"), "dtlz2": _synthetic("dtlz2")}
    for table in args.table:
        try:
            problems[f"tabular:{table.name}"] = _tabular(table)
        except TrialInputError as exc:
            parser.error(str(exc))
    samplers = args.samplers.split(",")
    checkpoints = [c for c in CHECKPOINTS if c <= args.budget]
    results: dict = {"budget": args.budget, "seeds": args.seeds, "problems": {}}
    for name, problem in problems.items():
        runs = {
            sampler: over_seeds(
                f"{name} {sampler}", functools.partial(run, problem, sampler, budget=args.budget), args.seeds
            )
            for sampler in samplers
        }
        target = float(np.median([r[-1] for r, _ in runs["random"]]))
        protocol = {}
        if args.budget >= 25:
            for sampler in samplers:
                finals = [run(problem, sampler, seed, 25, pilot=20)[0][-1] for seed in range(args.seeds)]
                protocol[sampler] = float(np.median(finals))
        results["problems"][name] = {
            "true_hypervolume": problem.true_hypervolume,
            "random_final_median": target,
            "samplers": {sampler: _summary(r, target, checkpoints) for sampler, r in runs.items()},
            "pilot20_plus5": protocol,
        }
        if problem.train_time_s:
            results["problems"][name]["random_train_time_s"] = float(np.median([s[-1] for _, s in runs["random"]]))
    print()
    for name, problem in results["problems"].items():
        _print(name, problem, args.seeds, checkpoints)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
