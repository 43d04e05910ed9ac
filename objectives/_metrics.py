"""Metrics of generated completions: the built-in ones and the user's own functions.

Every metric is called the way HF `evaluate` and lm-evaluation-harness call theirs, with
keywords: fn(predictions=..., references=..., prompts=...), three lists of strings of one
length (the completions generated, the held-out completions, the prompts they answer), and
returns a float, or a dict of named floats."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import numbers
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._config import MetricSpec
from ._errors import MetricError, TrialInputError

MetricFunction = Callable[..., Any]
_WHITESPACE = re.compile(r"\s+")


def _normalise(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip().lower()


def exact_match(predictions: list[str], references: list[str], prompts: list[str]) -> float:
    """The share of completions equal to their reference after stripping both ends, collapsing
    each run of whitespace to one space and lower-casing (evaluate's exact_match with
    ignore_case, on whitespace-normalised text; punctuation and articles count)."""
    return sum(_normalise(p) == _normalise(r) for p, r in zip(predictions, references, strict=True)) / len(predictions)


def rouge_l(predictions: list[str], references: list[str], prompts: list[str]) -> float:
    """The mean ROUGE-L F-measure (longest common subsequence) of each completion against its
    reference, by Google's rouge-score package as evaluate's `rouge` uses it (rougeL, no
    stemming: its tokenizer lower-cases and keeps ASCII letters and digits only)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]
    return sum(scores) / len(scores)


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def json_valid(predictions: list[str], references: list[str], prompts: list[str]) -> float:
    """The share of completions that parse as one JSON value (json.loads, surrounding whitespace allowed)."""
    return sum(_parses(p) for p in predictions) / len(predictions)


BUILT_IN: dict[str, MetricFunction] = {"exact_match": exact_match, "rouge_l": rouge_l, "json_valid": json_valid}


def _import(reference: str) -> Any:
    """The module a reference's left part names: a .py file, or an importable module."""
    where = reference.rpartition(":")[0]
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise TrialInputError(f"metric function {reference}: no file {where}")
        spec = importlib.util.spec_from_file_location(f"autotune_metrics_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))  # its own imports of files beside it
        try:
            spec.loader.exec_module(module)
        finally:
            sys.path.remove(str(path.parent))
        return module
    return importlib.import_module(where)


def load_function(metric: MetricSpec) -> MetricFunction:
    """The metric's function, imported and checked to take the three keywords; TrialInputError
    (one line) where it cannot be."""
    if metric.function is None:
        return BUILT_IN[metric.name]
    reference = metric.function
    try:
        module = _import(reference)
    except TrialInputError:
        raise
    except Exception as exc:  # whatever the user's module raises on import
        lines = str(exc).strip().splitlines()
        raise TrialInputError(
            f"cannot import metric function {reference}: {type(exc).__name__}: {lines[0] if lines else ''}"
        ) from None
    name = reference.rpartition(":")[2]
    function = getattr(module, name, None)
    if not callable(function):
        raise TrialInputError(f"metric function {reference}: {reference.rpartition(':')[0]} has no function {name}")
    try:
        inspect.signature(function).bind(predictions=[], references=[], prompts=[])
    except TypeError:
        raise TrialInputError(
            f"metric function {reference} must take the keywords predictions, references and prompts "
            "(lists of strings; add **kwargs for those it does not use)"
        ) from None
    return function


def _as_values(metric: MetricSpec, value: Any) -> dict[str, float]:
    items = value.items() if isinstance(value, dict) else [(None, value)]
    values = {}
    for key, v in items:
        name = metric.name if key is None else f"{metric.name}.{key}"
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise MetricError(
                metric.name,
                f"metric {metric.name} ({metric.function}) returned {v!r} for {name}: return a finite float, "
                "or a dict of them",
            )
        values[name] = float(v)
    if not values:
        raise MetricError(metric.name, f"metric {metric.name} ({metric.function}) returned an empty dict")
    return values


def compute_metrics(
    metrics: list[tuple[MetricSpec, MetricFunction]], predictions: list[str], references: list[str], prompts: list[str]
) -> dict[str, float]:
    """Each metric's value(s) on the completions; MetricError where a user's function raises."""
    values: dict[str, float] = {}
    for metric, function in metrics:
        if metric.function is None:
            values[metric.name] = function(predictions=predictions, references=references, prompts=prompts)
            continue
        try:
            value = function(predictions=list(predictions), references=list(references), prompts=list(prompts))
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            raise MetricError(
                metric.name,
                f"metric {metric.name} ({metric.function}) raised {type(exc).__name__}: {lines[0] if lines else ''}",
            ) from exc
        values |= _as_values(metric, value)
    return values
