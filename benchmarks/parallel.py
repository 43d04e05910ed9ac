"""Parallel workers on one study: do they propose distinct configs, and do they find as good
a front as one worker does?

    python benchmarks/parallel.py --out parallel.json [--seeds 5] [--budget 40] [--delay 0.5]

A gp study of ZDT1 (trial kind zdt1, `--delay` seconds a trial, so that trials overlap as
real ones do), on SQLite, run three ways: one worker, one trial at a time; four worker
processes; one worker with `--gpus 0,1,2,3` (four slots; zdt1 needs no GPU). For each:
complete trials, distinct configs among them, asks caught as duplicates (recorded, never
run), wall time, and the hypervolume at the budget as a fraction of the true front's.
Medians over seeds, with the range.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import optuna
import yaml
from sample_efficiency import _synthetic

from autotune.dashboards import hypervolume
from autotune.storage import read_record

MODES = {
    "1 worker": (1, None),
    "4 worker processes": (4, None),
    "1 worker, --gpus 0,1,2,3": (1, "0,1,2,3"),
}


def run(mode: str, seed: int, budget: int, delay: float, folder: Path) -> dict:
    processes, gpus = MODES[mode]
    url = f"sqlite:///{folder}/{seed}-{processes}-{gpus}.db"
    spec = folder / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "trial": {"kind": "zdt1", "delay_s": delay},
                "sampler": {"name": "gp", "seed": seed},
                "budget": {"n_trials": budget},
            }
        )
    )
    autotune = [sys.executable, "-m", "autotune"]
    subprocess.run([*autotune, "study", "create", "z", "--config", str(spec), "--storage", url], check=True)
    command = [*autotune, "worker", "z", "--storage", url] + (["--gpus", gpus] if gpus else [])
    started = time.perf_counter()
    workers = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for _ in range(processes)]
    if any(w.wait() != 0 for w in workers):
        raise RuntimeError(f"{mode}: a worker failed")
    wall = time.perf_counter() - started
    trials = optuna.load_study(study_name="z", storage=url).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    _, true_hv, _ = _synthetic("zdt1")
    # values are (eval_loss, train_time_s); the hypervolume does not depend on their order
    hv = hypervolume([np.array(t.values) for t in complete], 1.1) / true_hv
    return {
        "complete": len(complete),
        "distinct": len({tuple(sorted(t.params.items())) for t in complete}),
        "duplicates_caught": sum(1 for t in trials if read_record(t).failure_kind == "duplicate"),
        "hypervolume_ratio": hv,
        "wall_s": wall,
    }


def _cell(summary: dict, key: str, fmt: str) -> str:
    s = summary[key]
    return f"{s['median']:{fmt}} [{s['min']:{fmt}}, {s['max']:{fmt}}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=40)
    parser.add_argument("--delay", type=float, default=0.5, help="seconds a trial takes")
    args = parser.parse_args()
    results: dict = {"budget": args.budget, "delay_s": args.delay, "seeds": args.seeds, "modes": {}}
    print(
        "| workers | complete | distinct configs | duplicate asks caught | hypervolume / true front | wall time (s) |"
    )
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            runs = [run(mode, seed, args.budget, args.delay, Path(tmp)) for seed in range(args.seeds)]
            summary = {
                key: {
                    "median": float(np.median([r[key] for r in runs])),
                    "min": min(r[key] for r in runs),
                    "max": max(r[key] for r in runs),
                }
                for key in runs[0]
            }
            results["modes"][mode] = {"runs": runs, "summary": summary}

            print(
                f"| {mode} | {_cell(summary, 'complete', '.0f')} | {_cell(summary, 'distinct', '.0f')} "
                f"| {_cell(summary, 'duplicates_caught', '.0f')} | {_cell(summary, 'hypervolume_ratio', '.3f')} "
                f"| {_cell(summary, 'wall_s', '.0f')} |",
                flush=True,
            )
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
