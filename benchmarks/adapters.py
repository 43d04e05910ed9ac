"""What keeping a trial's adapter adds to the trial: the size of the adapter and the time to
save it (peft's save_pretrained), pack it and upload it to a folder artifact store, as the
worker does after a trial that trained to the end (autotune._adapters). Training is the same
with or without it, so an adapter is made with peft on the 4-bit demo model (SmolLM2-135M)
at each rank, without training; medians and the range over the repeats.

    python benchmarks/adapters.py --out benchmarks/results/adapters_demo_cpu.json [--ranks 4 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from machine import describe

from autotune.objectives import (
    DEMO_MODEL,
    Hyperparameters,
    ModelSpec,
    TrainingSpec,
    bnb_kwargs,
    lora_kwargs,
    resolve_cache_dir,
)
from autotune.objectives._model import load_model, native_compute_dtype
from autotune.storage import open_artifact_store, pack_adapter


def measure(rank: int, repeats: int, store_dir: str) -> dict[str, float]:
    import optuna
    import torch
    from optuna.artifacts import upload_artifact
    from peft import LoraConfig, get_peft_model

    dtype = native_compute_dtype(False)
    model, _ = load_model(
        ModelSpec(name_or_path=DEMO_MODEL),
        resolve_cache_dir(),
        bnb_kwargs(TrainingSpec(compute_dtype=dtype)),
        dtype,
        False,
    )
    hp = Hyperparameters(
        lora_r=rank,
        lora_alpha=2 * rank,
        learning_rate=1e-4,
        lora_dropout=0.05,
        target_modules="all-linear",
        optim="adamw_torch",
        per_device_train_batch_size=4,
    )
    model = get_peft_model(model, LoraConfig(**lora_kwargs(hp)))
    for param in model.parameters():  # in the dtype a trial trains it in (objectives._train._trainer)
        if param.requires_grad:
            param.data = param.data.to(getattr(torch, dtype))
    store, study = open_artifact_store(store_dir), optuna.create_study()
    save, pack, upload, size = [], [], [], 0
    for _ in range(repeats):
        trial = study.ask()
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            model.save_pretrained(folder)
            saved = time.perf_counter()
            packed = pack_adapter(folder)
            packed_at = time.perf_counter()
            upload_artifact(artifact_store=store, file_path=str(packed), study_or_trial=trial)
            uploaded = time.perf_counter()
        size = packed.stat().st_size
        save.append(saved - started)
        pack.append(packed_at - saved)
        upload.append(uploaded - packed_at)
        study.tell(trial, 0.0)
    total = [a + b + c for a, b, c in zip(save, pack, upload, strict=True)]
    return {
        "rank": rank,
        "compute_dtype": dtype,
        "adapter_mb": size / 2**20,
        "save_s": statistics.median(save),
        "pack_s": statistics.median(pack),
        "upload_s": statistics.median(upload),
        "total_s": statistics.median(total),
        "total_min_s": min(total),
        "total_max_s": max(total),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--ranks", type=int, nargs="+", default=[4, 64])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    machine = describe()
    with tempfile.TemporaryDirectory() as store_dir:
        rows = [measure(rank, args.repeats, store_dir) for rank in args.ranks]
    print(f"machine: {machine}")
    print("| r | dtype | adapter (MiB) | save (s) | pack (s) | upload (s) | added per trial (s), median (range) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['rank']} | {r['compute_dtype']} | {r['adapter_mb']:.2f} | {r['save_s']:.3f} | {r['pack_s']:.3f} "
            f"| {r['upload_s']:.3f} | {r['total_s']:.3f} ({r['total_min_s']:.3f}-{r['total_max_s']:.3f}) |"
        )
    args.out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
