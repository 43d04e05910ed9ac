"""Early stopping measured: hypervolume against the training steps spent, for random search,
gp, tpe and qmc (the default sampler), each with and without autotune's multi-objective early
stopping, over seeds.

    python benchmarks/early_stopping.py --out benchmarks/results/early_stopping.json \\
        --table benchmarks/results/tabular_smollm2_curves_cpu.json [--seeds 10]

Problems: a table of real QLoRA learning curves (benchmarks/tabular_grid.py; rungs where
the table has curve points) and the multi-fidelity ZDT1 that `trial: {kind: zdt1}` runs
with early stopping (27 steps, rungs at 3 and 9). Trials run in an in-memory Optuna study
with autotune's own pieces: the sampler as workers build it (wrapped so that it learns from
stopped trials), the rung values (`at_rung`), the decision at a rung (`reach_rung`) and the
rung records. A run without early stopping trains 50 whole trials; one with early stopping goes
on until it has spent half of that compute in training steps, or 100 trials (--compute).
Objectives are (eval_loss, train_time_s), scaled as benchmarks/sample_efficiency.py scales
them; only trials that ran to the end count in the hypervolume.

Also: the Spearman rank correlation between each rung's held-out loss and the final one,
and how often a sampler proposes a config in a region (a grid point of the table, a cell of
a 5x5x5 grid on ZDT1) where a trial was already stopped: with the stopped trials shown to
the sampler (as autotune does) and hidden from it ("blind")."""

from __future__ import annotations

import argparse
import functools
import json
import math
import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from replay import default_spec, table_scale
from sample_efficiency import SPACE, _synthetic, _tabular, make_sampler, over_seeds
from scipy.stats import spearmanr

from autotune import EarlyStopping, SearchSpace
from autotune._early_stopping import at_rung, reach_rung, rung_steps
from autotune._samplers import sees_the_search
from autotune.dashboards import hypervolume
from autotune.objectives import load_table, synthetic_metrics
from autotune.storage import write_record

N_FULL_TRIALS = 50  # the compute of each run: as many steps as 50 whole trials
MAX_TRIALS = 100
METHODS = {  # name -> (sampler, early stopping, the sampler sees stopped trials)
    "random": ("random", False, False),
    "gp": ("gp", False, False),
    "random+es": ("random", True, True),
    "gp+es": ("gp", True, True),
    "tpe": ("tpe", False, False),
    "tpe+es": ("tpe", True, True),
    "tpe+es (blind)": ("tpe", True, False),
    "qmc": ("qmc", False, False),
    "qmc+es": ("qmc", True, True),
    "gp+es (blind)": ("gp", True, False),
}


@dataclass(frozen=True)
class CurveProblem:
    space: SearchSpace
    max_steps: int
    early_stopping: EarlyStopping
    # params, step -> the raw (eval_loss, train_time_s to that step); None: the config failed
    measure: Callable[[dict, int], tuple[float, float] | None]
    scale: Callable[[float, float], np.ndarray]
    true_hypervolume: float
    region: Callable[[dict], Hashable]
    rung_correlation: dict[int, float]


def _table_problem(path: Path, early_stopping: EarlyStopping) -> CurveProblem:
    table = load_table(str(path))
    max_steps = max(table.curve_steps)

    def measure(params: dict, step: int) -> tuple[float, float] | None:
        row = table.means[table.nearest(params)]
        if "error" in row:
            return None
        point = next(p for p in row["learning_curve"] if p["step"] == step)
        return point["eval_loss"], point["train_time_s"]

    rows = [r for r in table.means.values() if "error" not in r]
    final = [r["eval_loss"] for r in rows]
    correlation = {
        step: float(
            spearmanr([next(p["eval_loss"] for p in r["learning_curve"] if p["step"] == step) for r in rows], final)[0]
        )
        for step in table.curve_steps[:-1]
    }
    flat = _tabular(path)
    return CurveProblem(
        flat.space,
        max_steps,
        early_stopping,
        measure,
        table_scale(table),
        flat.true_hypervolume,
        table.nearest,
        correlation,
    )


def _zdt1_problem(early_stopping: EarlyStopping, max_steps: int = 27) -> CurveProblem:
    def measure(params: dict, step: int) -> tuple[float, float]:
        m = synthetic_metrics("zdt1", SPACE.unit_point(params), step / max_steps)
        return m["eval_loss"], m["train_time_s"]

    rng = np.random.default_rng(0)
    points = rng.random((500, 3))
    final = [synthetic_metrics("zdt1", list(x))["eval_loss"] for x in points]
    correlation = {
        step: float(
            spearmanr([synthetic_metrics("zdt1", list(x), step / max_steps)["eval_loss"] for x in points], final)[0]
        )
        for step in rung_steps(early_stopping, max_steps)
    }
    return CurveProblem(
        SPACE,
        max_steps,
        early_stopping,
        measure,
        lambda loss, time_s: np.array([loss, time_s]),
        _synthetic("zdt1").true_hypervolume,
        lambda params: tuple(min(4, int(5 * u)) for u in SPACE.unit_point(params)),
        correlation,
    )


@dataclass
class Run:
    hypervolume: list[float]  # after each trial
    steps: list[int]  # training steps spent after each trial
    stopped: int
    proposed_in_stopped_region: int  # trials whose region held a stopped trial already


def run(problem: CurveProblem, method: str, seed: int, compute: float) -> Run:
    sampler_name, early, sees_stopped = METHODS[method]
    sampler = make_sampler(sampler_name, seed, N_FULL_TRIALS)
    study = optuna.create_study(
        directions=["minimize", "minimize"], sampler=sees_the_search(sampler) if sees_stopped else sampler
    )
    rungs = rung_steps(problem.early_stopping, problem.max_steps) if early else []
    budget = N_FULL_TRIALS * problem.max_steps * (compute if early else 1.0)
    front: list[np.ndarray] = []
    result = Run([], [], 0, 0)
    stopped_regions: set[Hashable] = set()
    spent = 0
    while spent < budget and len(result.steps) < MAX_TRIALS:
        trial = study.ask()
        params = problem.space.suggest(trial).model_dump()
        region = problem.region(params)
        result.proposed_in_stopped_region += region in stopped_regions
        ran = problem.max_steps
        for step in rungs:
            measured = problem.measure(params, step)
            if measured is None:
                break
            loss, time_s = measured
            extrapolated = at_rung({"eval_loss": loss, "train_time_s": time_s}, step, problem.max_steps)
            values = [float(v) for v in problem.scale(extrapolated["eval_loss"], extrapolated["train_time_s"])]
            factor = problem.early_stopping.reduction_factor
            last = step == rungs[-1]
            if not reach_rung(study, trial, step, values, ["minimize", "minimize"], factor, len(rungs), last):
                ran = step
                write_record(trial, stopped_values=values, stopped_at_step=step)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                stopped_regions.add(region)
                result.stopped += 1
                break
        else:
            final = problem.measure(params, problem.max_steps)
            values = [1.1, 1.1] if final is None else [float(v) for v in problem.scale(*final)]
            study.tell(trial, values)
            front.append(np.array(values))
        spent += ran
        result.steps.append(spent)
        result.hypervolume.append(hypervolume(front, 1.1) / problem.true_hypervolume)
    return result


def _compute_to_reach(runs: list[Run], target: float, random_steps: int) -> float | None:
    """Median over seeds of the steps spent when the run first held `target`, over random's
    steps for its 50 trials; None where the median run never reached it."""
    used = [next((s for hv, s in zip(r.hypervolume, r.steps, strict=True) if hv >= target > 0), math.inf) for r in runs]
    median = float(np.median(used))
    return median / random_steps if math.isfinite(median) else None


def _hypervolume_at(run: Run, steps: int) -> float | None:
    """The hypervolume held after `steps` training steps; None where the run stopped before."""
    if steps > run.steps[-1]:
        return None
    held = [hv for hv, s in zip(run.hypervolume, run.steps, strict=True) if s <= steps]
    return held[-1] if held else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", type=Path, help="a table with learning curves (benchmarks/tabular_grid.py)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--min-steps", type=int, default=3)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument("--compute", type=float, default=0.5, help="of random's, for runs with early stopping")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    early_stopping = EarlyStopping(min_steps=args.min_steps, reduction_factor=args.reduction_factor)
    problems = {f"tabular:{args.table.name}": _table_problem(args.table, early_stopping)} if args.table else {}
    problems["zdt1 (multi-fidelity)"] = _zdt1_problem(early_stopping)
    methods = args.methods.split(",")
    results = []
    for name, problem in problems.items():
        runs = {
            method: over_seeds(
                f"{name} {method}", functools.partial(run, problem, method, compute=args.compute), args.seeds
            )
            for method in methods
        }
        random_steps = N_FULL_TRIALS * problem.max_steps
        target = float(np.median([_hypervolume_at(r, random_steps) for r in runs["random"]]))
        fractions = [0.1, 0.25, 0.5, 1.0]
        rows = {}
        for method, method_runs in runs.items():
            at = {f: [_hypervolume_at(r, int(f * random_steps)) for r in method_runs] for f in fractions}
            rows[method] = {
                "hypervolume_at_compute": {
                    str(f): {"median": float(np.median(v)), "iqr": [float(np.percentile(v, q)) for q in (25, 75)]}
                    for f, v in at.items()
                    if None not in v
                },
                "trials": float(np.median([len(r.steps) for r in method_runs])),
                "stopped": float(np.median([r.stopped for r in method_runs])),
                "proposed_in_stopped_region": float(
                    np.median([r.proposed_in_stopped_region / len(r.steps) for r in method_runs])
                ),
            }
        results.append(
            {
                "problem": name,
                "default": default_spec(problem.max_steps).method,  # as METHODS names it
                "early_stopping": early_stopping.model_dump(),
                "max_steps": problem.max_steps,
                "seeds": args.seeds,
                "random_final_median": target,
                "compute_to_reach_random_final": {
                    m: _compute_to_reach(r, target, random_steps) for m, r in runs.items()
                },
                "rung_spearman": {str(s): c for s, c in problem.rung_correlation.items()},
                "methods": rows,
            }
        )
        # Written after each problem (the table first), so that a long run leaves its results.
        args.out.write_text(json.dumps({**results[0], "other_problems": results[1:]}, indent=1))
    for result in results:
        print(f"\n## {result['problem']} (hypervolume ratio, median [IQR] over {args.seeds} seeds)")
        print("compute: training steps, as a share of random search's 50 whole trials")
        print(
            "| method | "
            + " | ".join(f"at {f:.0%} compute" for f in fractions)
            + " | compute to reach random's 50 | trials | stopped | proposals where a trial was stopped |"
        )
        print("|---|" + "---|" * (len(fractions) + 4))
        for method, row in result["methods"].items():
            at = row["hypervolume_at_compute"]
            cells = [
                f"{at[str(f)]['median']:.3f} [{at[str(f)]['iqr'][0]:.3f}, {at[str(f)]['iqr'][1]:.3f}]"
                if str(f) in at
                else "-"
                for f in fractions
            ]
            reach = result["compute_to_reach_random_final"][method]
            cells += ["-" if reach is None else f"{reach:.0%}", f"{row['trials']:.0f}", f"{row['stopped']:.0f}"]
            cells.append(f"{row['proposed_in_stopped_region']:.0%}")
            print(f"| {method} | " + " | ".join(cells) + " |")
        print(
            "Spearman(rung eval_loss, final eval_loss): "
            + ", ".join(f"step {s}: {c:.2f}" for s, c in result["rung_spearman"].items())
        )


if __name__ == "__main__":
    main()
