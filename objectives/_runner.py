"""A warm trial runner: one long-lived process per slot (a GPU, or the CPU). It has imported
the training stack and keeps the loaded base (model, tokenizer, tokenized data) from one
trial to the next; each trial attaches a fresh LoRA adapter and takes it off again. A
simulated trial (objectives._simulated) runs here too, so that every trial takes one path.

It reads trial configs on stdin, one JSON line each, and answers each with one JSON line on
stdout: {"metrics": ..., "info": ...}, or {"error": {"kind", "type", "message"}}. At each of
the config's rungs it first writes {"rung": {"step", "metrics"}} and reads the worker's
decision, {"continue": true|false}, on stdin. Library output goes to stderr. After an error
it answers and exits, so that nothing a failed trial left behind (an adapter, fragmented GPU
memory after an OOM) reaches the next one; not after a table's recorded failure (nothing ran)
or a metric function's (runner_goes_on).

    python -m autotune.objectives --serve
"""

from __future__ import annotations

import gc
import json
import time
from typing import IO, Any

from pydantic import TypeAdapter

from ._config import TrialConfig
from ._errors import MetricError, TrialInputError
from ._simulated import RecordedFailure, SimulatedConfig, simulate
from ._train import Base, OnRung, base_key, load_base, train_adapter

AnyConfig = TrialConfig | SimulatedConfig
_ANY_CONFIG: TypeAdapter[AnyConfig] = TypeAdapter(AnyConfig)


def parse_config(line: str) -> AnyConfig:
    return _ANY_CONFIG.validate_json(line)


def warm_key(config: AnyConfig) -> str:
    """Trials with the same key can run one after another in one warm runner."""
    return base_key(config) if isinstance(config, TrialConfig) else "simulated"


def error_answer(kind: str, exc: BaseException) -> dict[str, Any]:
    """The structured form of a failed trial: `input` (the model or data cannot be used on
    this machine), `oom` (out of accelerator memory), `recorded` (a table records that the
    config failed), `metric` (the user's metric function failed; `metric` names it) or
    `error` (anything else)."""
    lines = str(exc).strip().splitlines()
    error = {"kind": kind, "type": type(exc).__name__, "message": lines[0] if lines else ""}
    if isinstance(exc, MetricError):
        error["metric"] = exc.metric
    return {"error": error}


def runner_goes_on(error_kind: str) -> bool:
    """Whether a runner takes the next trial after a failure of this kind: after a table's
    recorded failure (nothing ran) and a metric function's (the base model is as it was), but
    not after an error in training, which may leave anything behind (memory after an OOM)."""
    return error_kind in ("recorded", "metric")


def _is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "out of memory" in str(exc).lower()


def answer(config: AnyConfig, base: Base | None, on_rung: OnRung | None = None) -> tuple[dict[str, Any], Base | None]:
    """Run one trial (on `base`, loaded again where a QLoRA config needs another); the
    answer, and the base to keep."""
    try:
        if isinstance(config, SimulatedConfig):
            return simulate(config, on_rung), base
        loaded_in = None
        if base is None or base.key != base_key(config):
            base = None
            gc.collect()
            started = time.perf_counter()
            base = load_base(config)
            loaded_in = time.perf_counter() - started
        result = train_adapter(base, config, on_rung)
        if loaded_in is not None:
            result["info"]["timings"]["load_base_s"] = loaded_in
        return result, base
    except TrialInputError as exc:
        return error_answer("input", exc), None
    except RecordedFailure as exc:  # nothing ran: the runner goes on
        return error_answer("recorded", exc), base
    except MetricError as exc:  # train_adapter took the adapter off: the base goes on
        return error_answer("metric", exc), base
    except Exception as exc:
        return error_answer("oom" if _is_oom(exc) else "error", exc), None


def serve(requests: IO[str], answers: IO[str]) -> None:
    def write(message: dict[str, Any]) -> None:
        answers.write(json.dumps(message) + "\n")
        answers.flush()

    def ask_worker(step: int, metrics: dict[str, float]) -> bool:
        write({"rung": {"step": step, "metrics": metrics}})
        return bool(json.loads(requests.readline())["continue"])

    base: Base | None = None
    while line := requests.readline():
        result, base = answer(parse_config(line), base, ask_worker)
        write(result)
        if "error" in result and not runner_goes_on(result["error"]["kind"]):
            return
