"""Replay a tabular benchmark (a table written by benchmarks/tabular_grid.py): a config's
metrics are those measured, with real training, at the nearest grid point, so a sampler
can run hundreds of trials in seconds against real QLoRA results.

Grid axes are log-spaced, so "nearest" is per axis on a log scale; hyperparameters that
are not grid axes (dropout, optimizer...) were fixed when the table was made and are
ignored here."""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._config import METRICS
from ._errors import TrialInputError


@dataclass(frozen=True)
class Table:
    grid: dict[str, list[float]]  # axis name -> its values
    rows: dict[tuple[float, ...], dict[str, Any]]  # grid point -> metrics, or {"error": ...}
    curve_steps: list[int]  # where each row's learning_curve has a point; the last: the whole run

    def nearest(self, params: Mapping[str, Any]) -> tuple[float, ...]:
        return tuple(_nearest_on_log_scale(values, params[name]) for name, values in self.grid.items())


def _nearest_on_log_scale(values: list[float], x: float) -> float:
    return min(values, key=lambda v: abs(math.log(v) - math.log(x)))


@functools.cache
def load_table(path: str) -> Table:
    """The table at `path`, checked; TrialInputError says what is wrong with it."""
    hint = "make one with benchmarks/tabular_grid.py"
    try:
        data = json.loads(Path(path).read_text())
        grid = {name: [float(v) for v in values] for name, values in data["grid"].items()}
        rows = {}
        for row in data["rows"]:
            if "error" not in row and not set(METRICS) <= set(row):
                raise ValueError(f"a row lacks {', '.join(sorted(set(METRICS) - set(row)))}")
            rows[tuple(float(row[name]) for name in grid)] = row
    except FileNotFoundError:
        raise TrialInputError(f"no table at {path!r}; {hint}") from None
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise TrialInputError(f"{path!r} is not a tabular benchmark ({exc}); {hint}") from None
    missing = math.prod(len(values) for values in grid.values()) - len(rows)
    if missing:
        raise TrialInputError(f"{path!r} misses {missing} grid points; finish it with benchmarks/tabular_grid.py")
    return Table(grid, rows, [int(s) for s in data.get("curve_steps", [])])
