"""The machine a benchmark ran on, as its JSON records it."""

from __future__ import annotations

import os
import platform
import subprocess


def describe() -> str:
    """The CPU's model, its core count, whether it computes bfloat16 natively (what
    `compute_dtype: auto` trains in) and the GPU, if any."""
    fields = dict(
        line.split(":", 1)
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        if ":" in line
    )
    flags = fields.get("Flags", "").split()
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    bf16 = f"native bf16 ({', '.join(native)})" if native else "no native bf16"
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{fields.get('Model name', platform.processor()).strip()}, {os.cpu_count()} cores, {bf16}, {gpu}"
