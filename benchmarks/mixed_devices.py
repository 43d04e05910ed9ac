"""Mixed device types in one study (autotune._devices): the same configs trained on two
"devices" of this CPU, workers with 1 and with 2 threads (device types `cpu (..., 1 threads)`
and `cpu (..., 2 threads)`). A worker with 1 thread calibrates first (the study's reference)
and trains the configs; `autotune verify` queues 2 re-runs of each, which a worker with 2
threads trains (it calibrates first). Per config: its time on 2 threads over its time on 1,
as measured and as scaled to the reference; medians over the configs. Real QLoRA on the demo
model (SmolLM2-135M) and data by default; run it on a quiet machine.

    python benchmarks/mixed_devices.py --out benchmarks/results/mixed_devices_cpu.json [--configs 5] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from machine import describe

import autotune

CONFIGS = [  # different ranks and batch sizes: the factor must hold across them
    {"lora_r": 4, "per_device_train_batch_size": 2},
    {"lora_r": 64, "per_device_train_batch_size": 2},
    {"lora_r": 16, "per_device_train_batch_size": 4},
    {"lora_r": 4, "per_device_train_batch_size": 4},
    {"lora_r": 64, "per_device_train_batch_size": 4},
]


def _worker(url: str, threads: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "autotune", "worker", "s", "--storage", url]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"worker with {threads} threads failed:\n{done.stdout}{done.stderr}")


def run(model: str, dataset: dict, configs: list[dict], steps: int, folder: Path) -> dict:
    url = f"sqlite:///{folder / 'study.db'}"
    spec = {
        "model": model,
        "dataset": dataset,
        "search_space": {
            "lora_r": {"choices": sorted({c["lora_r"] for c in configs})},
            "lora_alpha": 16,
            "learning_rate": 1e-4,
            "per_device_train_batch_size": {"choices": sorted({c["per_device_train_batch_size"] for c in configs})},
        },
        "sampler": {"name": "random", "seed": 0},
        "budget": {"n_trials": len(configs)},
        "training": {"max_steps": steps},
        "enqueue_trials": configs,
    }
    autotune.create_study("s", autotune.parse_spec(spec), url)
    _worker(url, threads=1)
    for number in range(len(configs)):
        autotune.verify("s", url, pick=f"trial:{number}", seeds=2)
    _worker(url, threads=2)

    study = autotune.load_study("s", url)[0]
    trials = study.get_trials()
    first = {t.number: t for t in trials if "verifies" not in t.user_attrs}
    rows = []
    for t in (t for t in trials if "verifies" in t.user_attrs):
        reference = first[t.user_attrs["verifies"]].user_attrs["metrics"]["train_time_s"]
        rows.append(
            {
                "config": {k: t.params[k] for k in ("lora_r", "per_device_train_batch_size")},
                "seconds_1_thread": reference,
                "seconds_2_threads_measured": t.user_attrs["measured_train_time_s"],
                "seconds_2_threads_scaled": t.user_attrs["metrics"]["train_time_s"],
            }
        )
    by_config: dict[str, list[dict]] = {}
    for row in rows:
        by_config.setdefault(json.dumps(row["config"]), []).append(row)

    def median_ratio(key: str) -> list[float]:  # per config, its re-runs' median
        return [statistics.median(r[key] / r["seconds_1_thread"] for r in group) for group in by_config.values()]

    measured, scaled = median_ratio("seconds_2_threads_measured"), median_ratio("seconds_2_threads_scaled")
    return {
        "calibration": study.user_attrs["device_calibration"],
        "rows": rows,
        "ratio_measured": {"median": statistics.median(measured), "range": [min(measured), max(measured)]},
        "ratio_scaled": {"median": statistics.median(scaled), "range": [min(scaled), max(scaled)]},
        "scaled_within_15_percent": sum(abs(r - 1) <= 0.15 for r in scaled),
        "configs": len(by_config),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m", help="a model reference, as in a spec")
    parser.add_argument("--dataset", default="builtin:pydoc-topics", help="a dataset path, as in a spec")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--configs", type=int, default=len(CONFIGS), help=f"how many of the {len(CONFIGS)} configs")
    parser.add_argument("--steps", type=int, default=10, help="training steps per trial")
    args = parser.parse_args()
    dataset = {"path": args.dataset, "max_length": args.max_length, "max_samples": 256}
    with tempfile.TemporaryDirectory() as folder:
        result = run(args.model, dataset, CONFIGS[: args.configs], args.steps, Path(folder))
    result = {"machine": describe(), "model": args.model, "steps": args.steps, **result}
    print(f"{'config':<46} 1 thread (s)  2 threads measured (s)  2 threads scaled (s)")
    for row in result["rows"]:
        config = yaml.safe_dump(row["config"], default_flow_style=True).strip()
        print(
            f"{config:<46} {row['seconds_1_thread']:>12.2f}  {row['seconds_2_threads_measured']:>22.2f}"
            f"  {row['seconds_2_threads_scaled']:>20.2f}"
        )
    for key in ("ratio_measured", "ratio_scaled"):
        ratio = result[key]
        print(f"{key}: median {ratio['median']:.3f} (range {ratio['range'][0]:.3f}-{ratio['range'][1]:.3f})")
    print(f"configs scaled within 15%: {result['scaled_within_15_percent']} of {result['configs']}")
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
