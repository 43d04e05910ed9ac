"""What a worker shows: one line per finished trial, and a live line per running one."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from .storage import is_rerun, read_record, stopped

if TYPE_CHECKING:
    import optuna

_SHORT = {
    "lora_r": "r",
    "lora_alpha": "alpha",
    "learning_rate": "lr",
    "lora_dropout": "dropout",
    "per_device_train_batch_size": "batch",
}


def format_params(params: dict[str, Any]) -> str:
    parts = []
    for name, value in params.items():
        shown = f"{value:.2e}" if isinstance(value, float) and name == "learning_rate" else value
        parts.append(f"{_SHORT.get(name, name)}={shown}")
    return " ".join(parts)


def format_metrics(metrics: dict[str, float], names: list[str]) -> str:
    return " ".join(f"{n}={metrics[n]:.4g}" for n in names if n in metrics)


class WorkerProgress:
    def __init__(self, console: Console, metric_names: list[str]) -> None:
        self._console, self._metric_names = console, metric_names
        self._running: dict[int, tuple[float, str]] = {}
        self._live = Live(get_renderable=self._render, console=console, refresh_per_second=2, transient=True)

    def __enter__(self) -> WorkerProgress:
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.stop()

    def _render(self) -> Group:
        now = time.monotonic()
        return Group(
            *(
                Text(f"▶ trial {n} running {now - t0:5.0f} s  {what}", style="cyan")
                for n, (t0, what) in sorted(self._running.items())
            )
        )

    def started(self, number: int, params: dict[str, Any], gpu: str | None) -> None:
        where = f"GPU {gpu} " if gpu is not None else ""
        self._running[number] = (time.monotonic(), where + format_params(params))

    def finished(self, trial: optuna.trial.FrozenTrial) -> None:
        self._running.pop(trial.number, None)
        took = trial.duration.total_seconds() if trial.duration else 0.0
        record = read_record(trial)
        failed = record.failure_reason is not None  # a failed config may be told as infeasible
        state = "FAIL" if failed else trial.state.name
        head = f"trial {trial.number:>3} {state:<8} {format_params(trial.params)}"
        if is_rerun(trial):
            head += f" (re-run of trial {record.verifies}, seed {record.seed})"
        if stopped(trial):  # its metrics are the rung's, the time extrapolated
            detail = format_metrics(record.metrics or {}, self._metric_names)
            line = Text.assemble(
                (head, "yellow"), f"  stopped at step {record.stopped_at_step}: {detail}  ({took:.0f} s)"
            )
        elif not failed:
            detail = format_metrics(record.metrics or {}, self._metric_names)
            line = Text.assemble((head, "green"), f"  {detail}  ({took:.0f} s)")
        else:
            reason = record.failure_reason
            line = Text.assemble((head, "red"), f"  {reason}  ({took:.0f} s)")
        self._console.print(line, highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        self._console.print(message, highlight=False, soft_wrap=True)
