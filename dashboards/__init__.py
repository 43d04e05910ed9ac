"""Reports and optuna-dashboard: compute the numbers first (ReportInfo), then draw them
(plotly), write them (HTML, JSON, Markdown, PNG) or push them into the dashboard."""

from ._dashboard import push_figures, serve
from ._figures import hypervolume_figure, importance_figure, pareto_figure, pareto_figures
from ._info import (
    ReportInfo,
    SeedSpread,
    StudyPoints,
    TrialPoint,
    Verification,
    Verified,
    bounds_over,
    build_report_info,
    collect,
    hypervolume,
    normalise,
    pareto_front,
    succeeded_study,
)
from ._write import CHROMIUM_FLAGS, devices_line, format_value, report_figures, verification_lines, write_report

__all__ = [
    "CHROMIUM_FLAGS",
    "ReportInfo",
    "SeedSpread",
    "StudyPoints",
    "TrialPoint",
    "Verification",
    "Verified",
    "bounds_over",
    "build_report_info",
    "collect",
    "hypervolume",
    "hypervolume_figure",
    "importance_figure",
    "normalise",
    "pareto_figure",
    "pareto_figures",
    "pareto_front",
    "succeeded_study",
    "push_figures",
    "devices_line",
    "format_value",
    "report_figures",
    "verification_lines",
    "serve",
    "write_report",
]
