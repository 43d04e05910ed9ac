"""Replay a tabular benchmark (a table written by benchmarks/tabular_grid.py): a config's
metrics are those measured, with real training, at the nearest grid point, so a sampler
can run hundreds of trials in seconds against real QLoRA results.

A table holds one row per training seed at each grid point. A replayed trial gets one
seed's row, drawn from a key (so a replay repeats), as a real trial gets one seed's draw;
a config's mean over its seeds is what benchmarks score a front with.

Grid axes of positive numbers are nearest on a log scale (they are log-spaced), an axis
holding 0 (lora_dropout) on a linear one; hyperparameters that are not grid axes (the
optimizer...) were fixed when the table was made and are ignored here."""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import METRICS
from ._errors import TrialInputError

Point = tuple[float, ...]


@dataclass(frozen=True)
class Table:
    grid: dict[str, list[float]]  # axis name -> its values
    rows: dict[Point, list[dict[str, Any]]]  # grid point -> one row per seed: metrics, or {"error": ...}
    curve_steps: list[int]  # where each row's learning_curve has a point; the last: the whole run

    def nearest(self, params: Mapping[str, Any]) -> Point:
        return tuple(_nearest(values, params[name]) for name, values in self.grid.items())

    def draw(self, point: Point, key: str) -> dict[str, Any]:
        """One seed's row at `point`, the same for the same `key`."""
        seeds = self.rows[point]
        return seeds[random.Random(f"{key}:{point}").randrange(len(seeds))]

    @functools.cached_property
    def means(self) -> dict[Point, dict[str, Any]]:
        """Each point's metrics and learning curve averaged over the seeds that ran; a row
        with the first error where none did."""
        return {point: _mean(seeds) for point, seeds in self.rows.items()}


def _nearest(values: list[float], x: float) -> float:
    scale = math.log if min(values) > 0 else float
    return min(values, key=lambda v: abs(scale(v) - scale(x)))


def _mean(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    ran = [row for row in seeds if "error" not in row]
    if not ran:
        return seeds[0]
    mean = {m: sum(row[m] for row in ran) / len(ran) for m in (*METRICS, "eval_loss_before") if m in ran[0]}
    if "learning_curve" in ran[0]:
        curves = [row["learning_curve"] for row in ran]
        mean["learning_curve"] = [
            {k: (sum(c[i][k] for c in curves) / len(curves) if k != "step" else p[k]) for k in p}
            for i, p in enumerate(curves[0])
        ]
    return mean


@functools.cache
def load_table(path: str) -> Table:
    """The table at `path`, checked; TrialInputError says what is wrong with it."""
    hint = "make one with benchmarks/tabular_grid.py"
    try:
        data = json.loads(Path(path).read_text())
        grid = {name: [float(v) for v in values] for name, values in data["grid"].items()}
        rows: dict[Point, list[dict[str, Any]]] = {}
        for row in data["rows"]:
            if "error" not in row and not set(METRICS) <= set(row):
                raise ValueError(f"a row lacks {', '.join(sorted(set(METRICS) - set(row)))}")
            rows.setdefault(tuple(float(row[name]) for name in grid), []).append(row)
    except FileNotFoundError:
        raise TrialInputError(f"no table at {path!r}; {hint}") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise TrialInputError(f"{path!r} is not a tabular benchmark ({exc}); {hint}") from None
    missing = math.prod(len(values) for values in grid.values()) - len(rows)
    if missing:
        raise TrialInputError(f"{path!r} misses {missing} grid points; finish it with benchmarks/tabular_grid.py")
    return Table(grid, rows, [int(s) for s in data.get("curve_steps", [])])
