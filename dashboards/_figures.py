"""Draw a ReportInfo with plotly: fronts against the baseline, hypervolume history,
importances."""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np

from ._info import ReportInfo, StudyPoints, TrialPoint

if TYPE_CHECKING:
    import plotly.graph_objects as go

COLOURS = ("#1f77b4", "#d62728")  # the study, the baseline


def _hover(point: TrialPoint) -> str:
    params = "<br>".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.params.items())
    metrics = "<br>".join(f"{k}={v:.4g}" for k, v in point.metrics.items())
    return f"trial {point.number}<br>{params}<br>{metrics}" + ("" if point.feasible else "<br>infeasible")


def _studies(info: ReportInfo) -> list[StudyPoints]:
    return [info.study] + ([info.baseline] if info.baseline else [])


def pareto_figure(info: ReportInfo, x: str, y: str) -> go.Figure:
    """All trials faint, infeasible ones as crosses, each Pareto front as a step line."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for colour, study in zip(COLOURS, _studies(info), strict=False):
        label = f"{study.name} ({study.sampler})"
        for feasible in (True, False):
            points = [p for p in study.trials if p.feasible is feasible]
            if not points:
                continue
            figure.add_trace(
                go.Scatter(
                    x=[p.metrics[x] for p in points],
                    y=[p.metrics[y] for p in points],
                    mode="markers",
                    name=f"{label}: {'trials' if feasible else 'infeasible'}",
                    marker={"color": colour, "opacity": 0.35, "symbol": "circle" if feasible else "x", "size": 8},
                    hovertext=[_hover(p) for p in points],
                    hoverinfo="text",
                )
            )
        front = sorted(study.pareto, key=lambda p: (p.metrics[x], p.metrics[y]))
        figure.add_trace(
            go.Scatter(
                x=[p.metrics[x] for p in front],
                y=[p.metrics[y] for p in front],
                mode="lines+markers",
                line={"shape": "hv", "color": colour},
                marker={"color": colour, "size": 10},
                name=f"{label}: Pareto front",
                hovertext=[_hover(p) for p in front],
                hoverinfo="text",
            )
        )
        if study.verification.verified:
            figure.add_trace(_verified_trace(study, x, y, colour, label))
    figure.update_layout(title=f"Pareto front: {y} against {x}", xaxis_title=x, yaxis_title=y, template="plotly_white")
    return figure


def _verified_trace(study: StudyPoints, x: str, y: str, colour: str, label: str) -> go.Scatter:
    """Each verified config at its mean over its new seeds, with ± one standard deviation as
    error bars: how far the front's points may move with the seed."""
    import plotly.graph_objects as go

    verified = sorted(study.verification.verified.items())
    return go.Scatter(
        x=[v.mean[x] for _, v in verified],
        y=[v.mean[y] for _, v in verified],
        error_x={"type": "data", "array": [v.std[x] for _, v in verified], "color": colour},
        error_y={"type": "data", "array": [v.std[y] for _, v in verified], "color": colour},
        mode="markers",
        marker={"color": colour, "symbol": "diamond-open", "size": 11},
        name=f"{label}: verified, mean ± std over new seeds",
        hovertext=[
            f"trial {n} over seeds {', '.join(map(str, v.seeds))}<br>"
            + "<br>".join(f"{m}={v.mean[m]:.4g} ± {v.std[m]:.2g}" for m in v.mean)
            for n, v in verified
        ],
        hoverinfo="text",
    )


def pareto_figures(info: ReportInfo) -> list[go.Figure]:
    return [pareto_figure(info, x, y) for x, y in combinations(info.metric_names, 2)]


def hypervolume_figure(info: ReportInfo, against: str = "trials") -> go.Figure:
    """The hypervolume after each trial, against the trial count or (`against="train_time"`)
    the training time spent so far: what a user pays, less where trials were stopped early."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for colour, study in zip(COLOURS, _studies(info), strict=False):
        history = info.hypervolume[study.name]
        x = list(range(1, len(history) + 1)) if against == "trials" else list(np.cumsum(study.train_time_s) / 3600)
        figure.add_trace(
            go.Scatter(
                x=x,
                y=history,
                mode="lines+markers",
                name=f"{study.name} ({study.sampler})",
                line={"color": colour},
            )
        )
    figure.update_layout(
        title=f"Hypervolume (objectives normalised to [0, 1], reference point {info.reference_point:g})",
        xaxis_title="trials" if against == "trials" else "training time spent (hours)",
        yaxis_title="hypervolume",
        template="plotly_white",
    )
    return figure


def importance_figure(info: ReportInfo) -> go.Figure:
    import plotly.graph_objects as go

    figure = go.Figure()
    for name, by_metric in info.importances.items():
        for metric, importances in by_metric.items():
            figure.add_trace(go.Bar(x=list(importances), y=list(importances.values()), name=f"{name}: {metric}"))
    figure.update_layout(
        title="Hyperparameter importance per objective (PED-ANOVA)", barmode="group", template="plotly_white"
    )
    return figure
