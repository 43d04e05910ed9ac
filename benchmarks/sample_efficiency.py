"""Sample efficiency: how much of the true Pareto front's hypervolume each sampler finds
within a budget, against random search, over seeds.

    python benchmarks/sample_efficiency.py --out sample_efficiency.json [--seeds 10] [--budget 50]

Problems: the two-objective test functions ZDT1 and DTLZ2 over the default search space
(lora_r, lora_alpha, learning_rate scaled to the unit cube, as `trial: {kind: ...}` runs
them), and, with --table, a table of real runs from benchmarks/tabular_grid.py replayed as
`trial: {kind: tabular, table: <file>}` replays it (the nearest grid point), over a search space
spanning the grid, minimising eval_loss and train_time_s. Each problem's true front is known (analytic on
the integer grid of lora_r, or the exhaustive table), so results are hypervolume ratios.
Samplers are built exactly as workers build them (autotune's build_sampler). Also the seed
literature's protocol: 20 random pilot trials, then 5 by the sampler against 5 more random.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna

from autotune import Range, SamplerSpec, SearchSpace
from autotune._samplers import build_sampler
from autotune.dashboards import hypervolume
from autotune.objectives import TrialInputError, load_table, synthetic_metrics

SAMPLERS = ["gp", "tpe", "nsga2", "random", "qmc"]
CHECKPOINTS = [10, 20, 30, 50]
SPACE = SearchSpace()
Problem = tuple[Callable[[dict], tuple[float, float]], float, SearchSpace]  # objective, true hypervolume, space


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
    return objective, hypervolume(front, 1.1), SPACE


def objective_point(kind: str, x: list[float]) -> tuple[float, float]:
    m = synthetic_metrics(kind, x)
    return m["train_time_s"], m["eval_loss"]


def _tabular(path: Path) -> Problem:
    """Minimise eval_loss and train_time_s, each scaled to [0, 1] over the whole grid, on a
    search space spanning the grid (log ranges); the table is replayed as workers replay it."""
    table = load_table(str(path))
    measured = [row for row in table.rows.values() if "error" not in row]
    values = np.array([[row["eval_loss"], row["train_time_s"]] for row in measured])
    low, high = values.min(axis=0), values.max(axis=0)

    def scaled(row: dict) -> tuple[float, float]:
        if "error" in row:  # as a worker tells a failed config: the worst values
            return 1.0, 1.0
        return tuple((np.array([row["eval_loss"], row["train_time_s"]]) - low) / (high - low))

    def objective(params: dict) -> tuple[float, float]:
        return scaled(table.rows[table.nearest(params)])

    space = SearchSpace(**{name: Range(low=min(grid), high=max(grid), log=True) for name, grid in table.grid.items()})
    return objective, hypervolume([np.array(scaled(row)) for row in measured], 1.1), space


def run(problem: Problem, sampler: str, seed: int, budget: int, pilot: int = 0) -> list[float]:
    """The hypervolume ratio after each trial."""
    objective, true_hv, space = problem
    spec = SamplerSpec(name=sampler, seed=seed, population_size=10 if sampler == "nsga2" else None)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=build_sampler(spec, budget, seed))
    if pilot:
        pilot_study = optuna.create_study(
            directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed)
        )
        pilot_study.optimize(lambda t: objective(space.suggest(t).model_dump()), n_trials=pilot)
        study.add_trials(pilot_study.trials)
    study.optimize(lambda t: objective(space.suggest(t).model_dump()), n_trials=budget - pilot)
    points, ratios = [], []
    for trial in study.trials:
        points.append(np.array(trial.values))
        ratios.append(hypervolume(points, 1.1) / true_hv)
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=50)
    parser.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated (default: all)")
    parser.add_argument("--table", type=Path, help="a tabular benchmark (benchmarks/tabular_grid.py)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    problems = {"zdt1": _synthetic("zdt1"), "dtlz2": _synthetic("dtlz2")}
    if args.table:
        try:
            problems[f"tabular:{args.table.name}"] = _tabular(args.table)
        except TrialInputError as exc:
            parser.error(str(exc))
    checkpoints = [c for c in CHECKPOINTS if c <= args.budget]
    results: dict = {"budget": args.budget, "seeds": args.seeds, "problems": {}}
    for name, problem in problems.items():
        curves = {}
        for sampler in args.samplers.split(","):
            started = time.perf_counter()
            curves[sampler] = np.array([run(problem, sampler, seed, args.budget) for seed in range(args.seeds)])
            print(f"{name:<28} {sampler:<7} {time.perf_counter() - started:6.1f} s", flush=True)
        target = float(np.median(curves["random"][:, -1]))
        rows = {}
        for sampler, curve in curves.items():
            median = np.median(curve, axis=0)
            reach = next((i + 1 for i, v in enumerate(median) if v >= target > 0), None)
            rows[sampler] = {
                "median": {c: float(median[c - 1]) for c in checkpoints},
                "iqr": {
                    c: [float(np.percentile(curve[:, c - 1], 25)), float(np.percentile(curve[:, c - 1], 75))]
                    for c in checkpoints
                },
                "trials_to_random_final": reach,
            }
        protocol = {}
        if args.budget >= 25:
            for sampler in args.samplers.split(","):
                finals = [run(problem, sampler, seed, 25, pilot=20)[-1] for seed in range(args.seeds)]
                protocol[sampler] = float(np.median(finals))
        results["problems"][name] = {
            "true_hypervolume": problem[1],
            "random_final_median": target,
            "samplers": rows,
            "pilot20_plus5": protocol,
        }
    print()
    for name, problem in results["problems"].items():
        print(f"## {name} (hypervolume ratio to the true front; median [IQR] over {args.seeds} seeds)")
        print(
            "| sampler | "
            + " | ".join(f"{c} trials" for c in checkpoints)
            + " | trials to random's final | 20 pilot + 5 |"
        )
        print("|---|" + "---|" * (len(checkpoints) + 2))
        for sampler, row in problem["samplers"].items():
            cells = [f"{row['median'][c]:.3f} [{row['iqr'][c][0]:.3f}, {row['iqr'][c][1]:.3f}]" for c in checkpoints]
            reach = row["trials_to_random_final"]
            pilot = problem["pilot20_plus5"].get(sampler)
            print(
                f"| {sampler} | "
                + " | ".join(cells)
                + f" | {reach if reach else '-'} | {'-' if pilot is None else f'{pilot:.3f}'} |"
            )
        print()
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
