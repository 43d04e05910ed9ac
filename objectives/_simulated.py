"""A trial that trains nothing, run by the same runner as a QLoRA trial: a test function at
a point of the unit cube, or a tabular benchmark's row (benchmarks/tabular_grid.py) at the
grid point nearest the hyperparameters. It takes `delay_s` in all and answers at its rungs
as training does, so that load tests and benchmarks exercise the worker's one trial path."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._config import METRICS, perplexity
from ._synthetic import synthetic_metrics
from ._tabular import load_table
from ._train import OnRung


class RecordedFailure(Exception):
    """The table records that this config failed when the table was made."""


class SimulatedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["zdt1", "dtlz2", "tabular"]
    point: list[float] = []  # a test function's: the searched hyperparameters scaled to [0, 1]
    hyperparameters: dict[str, Any] = {}  # a table's: the trial's values, matched to the grid
    table: str | None = None
    seed: int  # a test function's noise draw; with the trial number, a table's seed draw
    draw: str  # the key one table seed is drawn by
    noise: float = 0.0
    delay_s: float = Field(0.0, ge=0)
    max_steps: int = Field(1, ge=1)
    rungs: list[int] = []


def simulate(config: SimulatedConfig, on_rung: OnRung | None = None) -> dict[str, Any]:
    """{"metrics", "info"} after the whole run, or after the rung where `on_rung` ended it
    (info["stopped_at_step"]), as objectives.train_adapter answers."""
    done = 0
    for step in [*config.rungs, config.max_steps]:
        time.sleep(config.delay_s * (step - done) / config.max_steps)
        done = step
        result = _measure(config, step)
        result["info"]["device_time_s"] = config.delay_s * step / config.max_steps  # the pretend device's
        if step < config.max_steps and on_rung is not None and not on_rung(step, result["metrics"]):
            result["info"]["stopped_at_step"] = step
            return result
    return result


def _measure(config: SimulatedConfig, step: int) -> dict[str, Any]:
    """The metrics after `step`: a test function at that fidelity, or the table's learning
    curve at that step (the table records held-out loss and time along the curve; the other
    metrics are the whole run's), from one of the table's seeds."""
    if config.kind != "tabular":
        metrics = synthetic_metrics(
            config.kind, config.point, step / config.max_steps, noise=config.noise, seed=config.seed
        )
        return {"metrics": metrics, "info": {"seed": config.seed}}
    assert config.table is not None
    table = load_table(config.table)
    point = table.nearest(config.hyperparameters)
    row = table.draw(point, config.draw)
    if "error" in row:
        raise RecordedFailure(f"failed when the table was made: {row['error']}")
    metrics = {m: row[m] for m in METRICS}
    if step < config.max_steps:
        curve = next(p for p in row["learning_curve"] if p["step"] == step)
        metrics |= {
            "eval_loss": curve["eval_loss"],
            "perplexity": perplexity(curve["eval_loss"]),
            "train_time_s": curve["train_time_s"],
        }
    grid_point = dict(zip(table.grid, point, strict=True))
    return {"metrics": metrics, "info": {"grid_point": grid_point, "table_seed": row.get("seed")}}
