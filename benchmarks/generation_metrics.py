"""What generation metrics cost and change, on the demo (SmolLM2-135M on Python's reference):
the time that generating and scoring completions of 50 held-out prompts adds to each
evaluation, and how the Pareto front (the configs on it) changes when the quality objective
is a generation metric (rouge_l) instead of the held-out loss.

    python benchmarks/generation_metrics.py --out benchmarks/results/generation_metrics_demo_cpu.json [--trials 20]

One study of random configs (the demo's search space and training, its data cut to 500
examples so that the held-out split holds 50) measures every trial's eval_loss, rouge_l,
exact_match and train_time_s; the two fronts, (eval_loss, train_time_s) and (rouge_l,
train_time_s), are taken over the same trials, so they differ only by the objective."""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import yaml
from machine import describe
from scipy.stats import spearmanr

import autotune
from autotune.dashboards import TrialPoint, pareto_front
from autotune.storage import read_record, succeeded

STUDY = "generation-metrics"


def spec(trials: int, max_steps: int, num_examples: int, max_new_tokens: int) -> autotune.StudySpec:
    data = yaml.safe_load((Path(autotune.__file__).parent / "demo.yaml").read_text())
    data["dataset"]["max_samples"] = 10 * num_examples  # eval_fraction 0.1: num_examples held out
    data["metrics"] = [{"name": "exact_match"}, {"name": "rouge_l"}]
    data["generation"] = {"max_new_tokens": max_new_tokens, "num_examples": num_examples}
    data["sampler"] = {"name": "random", "seed": 0}
    data["budget"] = {"n_trials": trials}
    data["training"]["max_steps"] = max_steps
    return autotune.parse_spec(data, "benchmark spec")


def front(rows: list[dict], quality: str, direction: str) -> list[int]:
    points = [TrialPoint(r["trial"], {}, r, True) for r in rows]
    return sorted(p.number for p in pareto_front(points, [quality, "train_time_s"], [direction, "minimize"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--max-steps", type=int, default=10, help="the demo's")
    parser.add_argument("--num-examples", type=int, default=50)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="autotune-bench-") as folder:
        storage = f"sqlite:///{folder}/studies.db"
        autotune.create_study(STUDY, spec(args.trials, args.max_steps, args.num_examples, args.max_new_tokens), storage)
        autotune.run_worker(STUDY, storage)
        study, _ = autotune.load_study(STUDY, storage)
        rows = []
        for trial in study.get_trials():
            if not succeeded(trial):
                continue
            record = read_record(trial)
            metrics, timings = record.metrics or {}, record.timings or {}
            rows.append(
                {
                    "trial": trial.number,
                    "params": trial.params,
                    **metrics,
                    "loss_eval_s": timings["eval_s"] - metrics["eval_time_s"],  # the held-out loss's evaluation
                }
            )

    print(
        f"{'trial':>5} {'eval_loss':>9} {'rouge_l':>7} {'exact_match':>11} {'train_time_s':>12} {'loss eval s':>11} {'generation s':>12}"
    )
    for r in rows:
        print(
            f"{r['trial']:>5} {r['eval_loss']:>9.4f} {r['rouge_l']:>7.4f} {r['exact_match']:>11.3f} "
            f"{r['train_time_s']:>12.2f} {r['loss_eval_s']:>11.2f} {r['eval_time_s']:>12.2f}"
        )
    by_loss, by_rouge = front(rows, "eval_loss", "minimize"), front(rows, "rouge_l", "maximize")
    shared = sorted(set(by_loss) & set(by_rouge))
    correlation = (
        spearmanr([r["eval_loss"] for r in rows], [r["rouge_l"] for r in rows]).statistic if len(rows) > 2 else None
    )
    summary = {
        "median_generation_s": statistics.median(r["eval_time_s"] for r in rows),
        "median_loss_eval_s": statistics.median(r["loss_eval_s"] for r in rows),
        "median_train_time_s": statistics.median(r["train_time_s"] for r in rows),
        "front_by_eval_loss": by_loss,
        "front_by_rouge_l": by_rouge,
        "on_both_fronts": shared,
        "jaccard": len(shared) / len(set(by_loss) | set(by_rouge)),
        "spearman_eval_loss_rouge_l": correlation,
    }
    print(
        f"per evaluation: generating and scoring {args.num_examples} prompts {summary['median_generation_s']:.2f} s "
        f"(median), the held-out loss {summary['median_loss_eval_s']:.2f} s; training {summary['median_train_time_s']:.2f} s"
    )
    print(f"front by (eval_loss, train_time_s): trials {by_loss}; by (rouge_l, train_time_s): trials {by_rouge}")
    print(
        f"on both: {shared} (Jaccard {summary['jaccard']:.2f}); Spearman(eval_loss, rouge_l) over trials: {correlation}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "machine": describe(),
                "settings": vars(args) | {"out": str(args.out)},
                "summary": summary,
                "trials": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
