"""Seed spread against the front's spread, on the demo (SmolLM2-135M, CPU): runs the demo
study, verifies the chosen configs with new seeds through the demo's workers, and prints how
far each config's held-out loss moves with the seed against how far apart the front's
configs are.

    python benchmarks/seed_spread.py --out benchmarks/results/seed_spread_demo_cpu.json [--seeds 3]

The storage defaults to a fresh SQLite file beside --out; given one that holds the demo study
already, the study is resumed and only missing re-runs are trained."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from machine import describe

import autotune
from autotune._demo import DEMO_STUDY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--storage", help="default: sqlite file beside --out")
    parser.add_argument("--pick", default="pareto")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    storage = args.storage or f"sqlite:///{args.out.with_suffix('.db').resolve()}"

    autotune.run_demo(storage)  # the search
    autotune.verify(DEMO_STUDY, storage, pick=args.pick, seeds=args.seeds)
    autotune.run_demo(storage)  # its workers run the queued re-runs
    summary = autotune.show_study(DEMO_STUDY, storage)
    knee = autotune.export(DEMO_STUDY, storage, pick="knee")[0]

    verification = summary.verification
    print(
        f"{'trial':>5} {'role':<5} {'eval_loss as found':>18} {'over new seeds':>20} {'train_time_s over new seeds':>28}"
    )
    for row in summary.pareto:
        verified = verification.verified.get(row.number)
        if verified is None:
            continue
        role = "knee" if row.number == knee["trial"] else ""
        loss = f"{verified.mean['eval_loss']:.4f} ± {verified.std['eval_loss']:.4f}"
        time = f"{verified.mean['train_time_s']:.2f} ± {verified.std['train_time_s']:.2f}"
        print(f"{row.number:>5} {role:<5} {row.metrics['eval_loss']:>18.4f} {loss:>20} {time:>28}")
    for spread in verification.seed_spread:
        front = f"{spread.front_sd:.4g}" if spread.front_sd is not None else "-"
        ratio = f"{spread.signal_to_noise:.3g}" if spread.signal_to_noise is not None else "-"
        print(f"{spread.metric}: seed sd {spread.seed_sd:.4g}, front sd {front}, signal to noise {ratio}")
    args.out.write_text(
        json.dumps(
            {
                "machine": describe(),
                "storage": storage,
                "pick": args.pick,
                "knee": knee["trial"],
                "knee_verified": asdict(verification.verified[knee["trial"]])
                if knee["trial"] in verification.verified
                else None,
                "summary": summary.to_dict(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
