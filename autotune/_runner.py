"""The worker's side of a slot's warm runner (`python -m autotune.objectives --serve`): start
it, hand it a trial config, wait for its structured answer (or a stop, or the time limit),
and start a fresh one when it dies, fails a trial, needs another base model, or
has run its share of trials. A crash, an OOM or a kill ends the runner and fails only its
trial; the worker goes on."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import IO, Any

from .objectives import AnyConfig, TrialConfig, runner_goes_on, warm_key
from .storage import FailureKind

_POLL_S = 0.2
_SIGNAL_GRACE_S = 2.0  # how long a runner killed by SIGTERM/SIGINT waits for the worker's own stop


class TrialFailed(Exception):
    """A trial ended without metrics; `kind` says why (storage.FailureKind)."""

    def __init__(self, reason: str, kind: FailureKind, log_tail: str = "", metric: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.kind, self.log_tail = reason, kind, log_tail
        self.metric = metric  # kind metric: the metric whose function failed


def exit_reason(returncode: int) -> str:
    """One line for a runner that died without answering."""
    if returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (out of host memory, or killed by hand)" if name == "SIGKILL" else ""
        return f"trial process killed by {name}{hint}"
    return f"trial process exited with code {returncode}"


def failed(answer: dict[str, Any], log_tail: str) -> TrialFailed:
    """The TrialFailed for a runner's error answer."""
    error = answer["error"]
    if error["kind"] == "input":
        return TrialFailed(error["message"], "input", log_tail)
    if error["kind"] == "recorded":
        return TrialFailed(error["message"], "config", log_tail)
    if error["kind"] == "metric":
        return TrialFailed(error["message"], "metric", log_tail, metric=error["metric"])
    reason = f"{error['type']}: {error['message']}"
    return TrialFailed(f"CUDA OOM: {reason}" if error["kind"] == "oom" else reason, "config", log_tail)


class Runner:
    """One slot's runner process, started on first use."""

    def __init__(self, gpu: str | None, trials_per_runner: int) -> None:
        self.gpu, self.trials_per_runner = gpu, trials_per_runner
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._key: str | None = None
        self._trials = 0

    def _start(self) -> subprocess.Popen[bytes]:
        self.close()
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        # Appends only: the runner writes at the end whatever the worker last read.
        self._log = tempfile.TemporaryFile(mode="a+b", prefix="autotune-runner-")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "autotune.objectives", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
        )
        self._trials = 0
        return self._process

    def _ready(self, config: AnyConfig) -> subprocess.Popen[bytes]:
        process = self._process
        key = warm_key(config)
        if process is None or process.poll() is not None or self._trials >= self.trials_per_runner or key != self._key:
            process = self._start()
        self._key = key
        return process

    def _log_tail(self, since: int) -> str:
        assert self._log is not None
        self._log.seek(since)
        return self._log.read()[-4000:].decode(errors="replace")

    def run(
        self,
        config: AnyConfig,
        *,
        stop: threading.Event,
        time_limit_s: float | None = None,
        on_rung: Callable[[int, dict[str, float]], bool] | None = None,
    ) -> dict[str, Any]:
        """The trial's {"metrics", "info"}; raises TrialFailed with the reason otherwise.
        At each of the config's rungs, `on_rung(step, metrics)` says whether it goes on."""
        process = self._ready(config)
        assert process.stdin is not None and process.stdout is not None and self._log is not None
        log_start = self._log.seek(0, os.SEEK_END)
        if isinstance(config, TrialConfig):  # training may leak; a simulated trial leaves nothing behind
            self._trials += 1
        self._send(process, config.model_dump_json())
        started, received = time.monotonic(), b""
        while True:
            line, newline, rest = received.partition(b"\n")
            if not newline:
                received += self._read(process, stop, started, time_limit_s, log_start)
                continue
            received = rest
            message = json.loads(line)
            if "rung" not in message:
                break
            go_on = on_rung is None or on_rung(message["rung"]["step"], message["rung"]["metrics"])
            self._send(process, json.dumps({"continue": go_on}))
        if "error" in message:
            failure = failed(message, self._log_tail(log_start))
            if not runner_goes_on(message["error"]["kind"]):
                self.close()  # it exits after an error; a fresh one takes the next trial
            raise failure
        return message

    def _send(self, process: subprocess.Popen[bytes], line: str) -> None:
        assert process.stdin is not None
        try:
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass  # it died: the next read says how

    def _read(
        self,
        process: subprocess.Popen[bytes],
        stop: threading.Event,
        started: float,
        limit: float | None,
        log_start: int,
    ) -> bytes:
        """What the runner wrote next, waiting for it; TrialFailed where the worker stops,
        the time limit passes or the runner dies."""
        assert process.stdout is not None
        while True:
            if stop.is_set():
                self.close()
                raise TrialFailed("interrupted: the worker was asked to stop", "interrupted")
            if limit is not None and time.monotonic() - started > limit:
                self.close()
                raise TrialFailed(f"timed out: over the trial time limit of {limit:g} s", "config")
            if select.select([process.stdout], [], [], _POLL_S)[0]:
                chunk = os.read(process.stdout.fileno(), 1 << 20)
                if not chunk:  # it died without answering
                    returncode = process.wait()
                    # A scheduler (Slurm) signals every process of a job: the runner may die of
                    # it before the worker has handled its own. Then the trial was interrupted.
                    if returncode in (-signal.SIGTERM, -signal.SIGINT) and stop.wait(_SIGNAL_GRACE_S):
                        self.close()
                        raise TrialFailed("interrupted: the worker was asked to stop", "interrupted")
                    raise TrialFailed(exit_reason(returncode), "config", self._log_tail(log_start))
                return chunk

    def close(self) -> None:
        """End the runner process: asked to (stdin closed), then terminated, then killed."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            assert process.stdin is not None
            try:
                process.stdin.close()
                process.wait(timeout=0.5)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
