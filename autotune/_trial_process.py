"""Run one trial in a child process (`python -m autotune.objectives`), so that a CUDA OOM,
a segfault or a leak ends the trial and never the worker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

from .objectives import TrialConfig

FailureKind = Literal["config", "interrupted", "surplus"]
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+(?:Error|Exception|Interrupt)|error)\b.*:")


class TrialFailed(Exception):
    """A trial ended without metrics. `kind` says why: `config` (the config itself failed:
    an error, OOM, a time limit), `interrupted` (the worker was stopped), or `surplus` (the
    budget was reached by other workers before this trial began)."""

    def __init__(self, reason: str, kind: FailureKind, log_tail: str = "") -> None:
        super().__init__(reason)
        self.reason, self.kind, self.log_tail = reason, kind, log_tail


def failure_reason(returncode: int, stderr: str) -> str:
    """One line that says why a trial process failed."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of host memory, or killed by hand)" if name == "SIGKILL" else ""
        return f"trial process killed by {name}{hint}"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    exception = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), None)
    reason = exception or (lines[-1] if lines else f"trial process exited with code {returncode}")
    if "out of memory" in reason.lower() and "CUDA" in reason:
        reason = f"CUDA OOM: {reason}"
    return reason.removeprefix("error: ")[:500]


def _end(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_trial_process(
    config: TrialConfig, *, gpu: str | None, stop: threading.Event, time_limit_s: float | None = None
) -> dict[str, Any]:
    """The trial's {"metrics", "info"}; raises TrialFailed with the reason otherwise."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    with tempfile.TemporaryDirectory(prefix="autotune-") as tmp:
        config_file, out_file, err_file = (Path(tmp) / n for n in ("trial.json", "stdout", "stderr"))
        config_file.write_text(config.model_dump_json())
        with out_file.open("wb") as out, err_file.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, "-m", "autotune.objectives", str(config_file)], stdout=out, stderr=err, env=env
            )
            started = time.monotonic()
            while process.poll() is None:
                if stop.wait(0.2):
                    _end(process)
                    raise TrialFailed("interrupted: the worker was asked to stop", "interrupted")
                if time_limit_s is not None and time.monotonic() - started > time_limit_s:
                    _end(process)
                    raise TrialFailed(f"timed out: over the trial time limit of {time_limit_s:g} s", "config")
        stderr = err_file.read_text(errors="replace")
        if process.returncode != 0:
            raise TrialFailed(failure_reason(process.returncode, stderr), "config", stderr[-4000:])
        return json.loads(out_file.read_text().strip().splitlines()[-1])
