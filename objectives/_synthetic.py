"""Standard two-objective test functions on the unit cube, reported under the trial's
metric names, so that a study can run without training (load tests, benchmarks).

f1 stands for cost (train_time_s, peak_mem_gb, and tokens_per_s as 1/f1), f2 for quality
(eval_loss, train_loss, perplexity as exp(f2))."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from ._config import perplexity


def zdt1(x: Sequence[float]) -> tuple[float, float]:
    """Zitzler-Deb-Thiele 1: a convex front f2 = 1 - sqrt(f1) where x[1:] = 0."""
    f1 = x[0]
    g = 1.0 + 9.0 * sum(x[1:]) / max(1, len(x) - 1)
    return f1, g * (1.0 - math.sqrt(f1 / g))


def dtlz2(x: Sequence[float]) -> tuple[float, float]:
    """DTLZ2 with two objectives: a concave quarter circle where x[1:] = 0.5."""
    g = sum((xi - 0.5) ** 2 for xi in x[1:])
    return (1.0 + g) * math.cos(x[0] * math.pi / 2), (1.0 + g) * math.sin(x[0] * math.pi / 2)


TEST_FUNCTIONS = {"zdt1": zdt1, "dtlz2": dtlz2}


def synthetic_metrics(
    kind: str, x: Sequence[float], fidelity: float = 1.0, *, noise: float = 0.0, seed: int = 0
) -> dict[str, float]:
    """The metrics of point `x`, as measured after `fidelity` (0..1] of the training steps: a
    multi-fidelity version for early stopping, in which the cost so far is that share of the
    whole and the quality is worse by up to (1 - fidelity), by a term that depends on x[-1]
    in a way the final quality does not, so early values rank configs only roughly. With
    `noise`, the quality moves by a normal draw of that standard deviation, the same for the
    same `seed` and `x`, as a training run's does with its seed."""
    cost, quality = TEST_FUNCTIONS[kind](x)
    cost *= fidelity
    quality += (1.0 - fidelity) * 0.5 * (1.0 + math.cos(3.0 * math.pi * x[-1]))
    if noise:
        quality += noise * random.Random(f"{seed}:{list(x)!r}").gauss(0.0, 1.0)
    return {
        "eval_loss": quality,
        "perplexity": perplexity(quality),
        "train_loss": quality,
        "train_time_s": cost,
        "peak_mem_gb": cost,
        "tokens_per_s": 1.0 / (cost + 1e-3),
    }
