"""The core trial on a GPU at realistic settings: SmolLM2-135M, sequence length 512, batch 8,
bf16 compute; paged_adamw_8bit and paged_adamw_32bit, 4-bit NF4 and plain LoRA. Each
config trains in its own process (as a worker runs it), so peak memory is its own.

    python benchmarks/gpu_qlora.py --out results.json [--max-steps 60]

Prints a table and writes JSON: metrics per config, and whether bitsandbytes ran its CUDA
kernels (its native library and the device of a 4-bit layer's packed weight)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autotune import load_spec
from autotune.objectives import Hyperparameters, TrialConfig, resolve_cache_dir

SPEC = Path(__file__).parent / "specs" / "smollm2_gpu.yaml"

CHECK_CUDA_KERNELS = """
import json, torch, bitsandbytes as bnb
from bitsandbytes.cextension import lib
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from autotune.objectives import ModelSpec, resolve_cache_dir, resolve_model
source = resolve_model(ModelSpec(name_or_path="smollm2-135m"), resolve_cache_dir())
q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.bfloat16)
model = AutoModelForCausalLM.from_pretrained(source, quantization_config=q, device_map={"": 0})
layer = model.model.layers[0].self_attn.q_proj
x = torch.randn(4, layer.in_features, device="cuda", dtype=torch.bfloat16)
with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
    layer(x); torch.cuda.synchronize()
kernels = sorted({e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA})
print(json.dumps({"native_library": str(getattr(lib, "_lib", lib)), "layer": type(layer).__name__,
                  "packed_weight_device": str(layer.weight.device), "quant_type": layer.weight.quant_type,
                  "cuda_kernels_in_4bit_forward": kernels, "device": torch.cuda.get_device_name()}))
"""


def run_config(config: TrialConfig) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trial.json"
        path.write_text(config.model_dump_json())
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "autotune.objectives", str(path)], capture_output=True, text=True)
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1], "wall_s": time.perf_counter() - started}
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["wall_s"] = time.perf_counter() - started
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-steps", type=int, default=60)
    args = parser.parse_args()
    spec = load_spec(SPEC)
    check = subprocess.run([sys.executable, "-c", CHECK_CUDA_KERNELS], capture_output=True, text=True)
    kernels = (
        json.loads(check.stdout.strip().splitlines()[-1]) if check.returncode == 0 else {"error": check.stderr[-2000:]}
    )
    print(json.dumps(kernels, indent=1))
    rows = []
    for quantization in ("nf4", "none"):
        for optim in ("paged_adamw_8bit", "paged_adamw_32bit"):
            config = TrialConfig(
                model=spec.model,
                dataset=spec.dataset,
                training=spec.training.model_copy(update={"quantization": quantization, "max_steps": args.max_steps}),
                hyperparameters=Hyperparameters(
                    lora_r=16,
                    lora_alpha=32,
                    lora_dropout=0.05,
                    target_modules="all-linear",
                    learning_rate=2e-4,
                    optim=optim,
                    per_device_train_batch_size=8,
                ),
                cache_dir=resolve_cache_dir(),
            )
            result = run_config(config)
            rows.append({"quantization": quantization, "optim": optim, **result})
            metrics = result.get("metrics", {})
            print(
                f"{quantization:<5} {optim:<18} tokens/s {metrics.get('tokens_per_s', float('nan')):8.0f}  "
                f"peak {metrics.get('peak_mem_gb', float('nan')):6.3f} GB  train {metrics.get('train_time_s', float('nan')):6.1f} s  "
                f"eval_loss {metrics.get('eval_loss', float('nan')):.4f} (before {result.get('info', {}).get('eval_loss_before', float('nan')):.4f})"
                f"  {result.get('error', '')}",
                flush=True,
            )
    args.out.write_text(
        json.dumps({"spec": str(SPEC), "max_steps": args.max_steps, "bitsandbytes": kernels, "runs": rows}, indent=1)
    )


if __name__ == "__main__":
    main()
