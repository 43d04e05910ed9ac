"""Write a report: one self-contained HTML page (plotly inlined: it opens with no
network), a JSON and a Markdown summary, and a PNG of the main plot where a headless
Chromium is at hand."""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ._figures import hypervolume_figure, importance_figure, pareto_figures
from ._info import ReportInfo, SeedSpread, StudyPoints, TrialPoint, Verification, Verified

if TYPE_CHECKING:
    import plotly.graph_objects as go


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_value(value: float, metric: str, verified: Verified | None) -> str:
    """A trial's value of `metric`, followed where it is verified by its mean ± std over its
    new seeds."""
    if verified is None or metric not in verified.mean:  # no re-run recorded it
        return f"{value:.4g}"
    return f"{value:.4g} → {verified.mean[metric]:.4g} ± {verified.std[metric]:.2g}"


def describe_seed_spread(spread: SeedSpread) -> str:
    """One objective's seed spread against the spread between the front's configs."""
    line = f"{spread.metric}: one config's seed spread (sd) {spread.seed_sd:.3g}, over {spread.configs} verified"
    if spread.front_sd is None:
        return line + "; the front holds one config"
    line += f"; the front's configs spread {spread.front_sd:.3g}"
    return line + (f": signal to noise {spread.signal_to_noise:.2g}" if spread.seed_sd > 0 else ": no seed noise")


def verification_lines(verification: Verification) -> list[str]:
    """What `autotune verify` found: the seed spread per objective, the front configs whose
    advantage is within it, the re-runs still to come."""
    lines = []
    if verification.verified:
        seeds = sorted({s for v in verification.verified.values() for s in v.seeds})
        n = len(verification.verified)
        lines.append(
            f"{n} config{'s' if n > 1 else ''} verified, each trained again with new seeds "
            f"({', '.join(map(str, seeds))}); values shown as found → mean ± std over the new seeds."
        )
        lines += [describe_seed_spread(s) for s in verification.seed_spread]
        for number, others in verification.within_seed_spread_of.items():
            if others:
                lines.append(
                    f"trial {number} beats trial {', '.join(map(str, others))} by no more than the seed spread: "
                    "its place on the front may be luck."
                )
    if verification.reruns_pending:
        lines.append(f"{verification.reruns_pending} verification re-runs queued or running.")
    return lines


def devices_line(devices: dict[str, tuple[float, int]]) -> str | None:
    """Which device types ran the trials, and their time factors; None where none recorded one."""
    if not devices:
        return None
    reference = next((d for d, (factor, _) in devices.items() if factor == 1.0), None)
    used = ", ".join(f"{d} x{factor:.3g} ({n} trial{'s' * (n != 1)})" for d, (factor, n) in devices.items())
    return f"devices: {used}" + (f"; train_time_s in seconds of {reference}" if len(devices) > 1 and reference else "")


def _outcomes(study: StudyPoints) -> str:
    line = f"{len(study.trials)} succeeded of {len(study.budget_trials)} trials"
    if study.stopped:
        spent = sum(study.train_time_s)
        saved = study.train_time_saved_s / (spent + study.train_time_saved_s)
        line += f", {study.stopped} stopped early (saving {saved:.0%} of the training time)"
    return line


def _markdown(info: ReportInfo) -> str:
    lines = [f"# autotune report: {info.study.name}", ""]
    for study in [info.study] + ([info.baseline] if info.baseline else []):
        hv = info.hypervolume[study.name][-1] if info.hypervolume[study.name] else 0.0
        lines += [
            f"## {study.name} ({study.sampler})",
            "",
            f"{_outcomes(study)}; final hypervolume {hv:.4f}.",
            "",
        ]
        if study.failures:
            lines += ["Failed trials:", ""] + [f"- {n} × {reason}" for reason, n in study.failures.items()] + [""]
        devices = devices_line(study.devices)
        if devices:
            lines += [devices, ""]
        verification = verification_lines(study.verification)
        if verification:
            lines += [f"- {line}" for line in verification] + [""]
        params = sorted({k for p in study.pareto for k in p.params})
        shown = [*info.metric_names, *study.measured]
        lines += ["| trial | " + " | ".join(params + shown) + " |", "|---" * (1 + len(params) + len(shown)) + "|"]
        for p, cells in _pareto_rows(study, params, shown):
            lines.append(f"| {p.number} | " + " | ".join(cells) + " |")
        lines.append("")
    bounds = ", ".join(
        f"{m} in [{lo:.4g}, {hi:.4g}]" for m, (lo, hi) in zip(info.metric_names, info.bounds, strict=True)
    )
    lines += [
        "## Hypervolume",
        "",
        f"Objectives normalised between the ideal and nadir of the joint Pareto front ({bounds}), "
        f"reference point {info.reference_point:g} in every objective.",
    ]
    if info.baseline is not None:
        reach = info.trials_to_reach_baseline
        lines.append(
            f"{info.study.name} reached the baseline's final hypervolume after {reach} trials."
            if reach
            else f"{info.study.name} did not reach the baseline's final hypervolume."
        )
    return "\n".join(lines) + "\n"


def _pareto_rows(study: StudyPoints, params: list[str], metric_names: list[str]) -> list[tuple[TrialPoint, list[str]]]:
    """Each front config's cells: its params, then its `metric_names` (verified ones with
    their mean ± std)."""
    return [
        (
            p,
            [_fmt(p.params.get(k, "")) for k in params]
            + [
                format_value(p.metrics.get(m, float("nan")), m, study.verification.verified.get(p.number))
                for m in metric_names
            ],
        )
        for p in sorted(study.pareto, key=lambda p: p.number)
    ]


def _table(study: StudyPoints, metric_names: list[str]) -> str:
    params = sorted({k for p in study.pareto for k in p.params})
    shown = [*metric_names, *study.measured]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["trial", *params, *shown])
    rows = [
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in [str(p.number), *cells]) + "</tr>"
        for p, cells in _pareto_rows(study, params, shown)
    ]
    failures = "".join(f"<li>{n} × {html.escape(r)}</li>" for r, n in study.failures.items())
    verification = "".join(f"<li>{html.escape(line)}</li>" for line in verification_lines(study.verification))
    return (
        f"<h2>{html.escape(study.name)} ({html.escape(study.sampler)}): Pareto trials</h2>"
        f"<p>{html.escape(_outcomes(study))}.</p>"
        + (f"<ul class='verification'>{verification}</ul>" if verification else "")
        + f"<table><tr>{head}</tr>{''.join(rows)}</table>"
        + (f"<p>Failed trials:</p><ul>{failures}</ul>" if failures else "")
    )


def report_figures(info: ReportInfo) -> list[go.Figure]:
    """The report's figures, the main one (the first Pareto plot) first."""
    figures = pareto_figures(info) + [hypervolume_figure(info), hypervolume_figure(info, against="train_time")]
    if any(info.importances.values()):
        figures.append(importance_figure(info))
    return figures


# Headless Chromium as root on a machine with no network: no sandbox, no GPU, and none of
# the background connections that a closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _screenshot(figure: go.Figure, path: Path) -> bool:
    """A PNG of one figure through headless Chromium; False where there is none."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "figure.html"
        figure.write_html(page, include_plotlyjs=True, full_html=True, default_width=1100, default_height=700)
        flags = [
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp}/profile",
            "--hide-scrollbars",
            "--window-size=1120,720",
            "--virtual-time-budget=5000",
        ]
        done = subprocess.run(
            [browser, *flags, f"--screenshot={path}", page.as_uri()], capture_output=True, timeout=120
        )
    return done.returncode == 0 and path.exists()


def write_report(info: ReportInfo, out_dir: Path, extra_figures: list[go.Figure] = ()) -> dict[str, Path]:
    """Write report.html, summary.json, summary.md and (where possible) pareto.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = report_figures(info) + list(extra_figures)
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0), default_height=600) for i, f in enumerate(figures)]
    tables = _table(info.study, info.metric_names) + (_table(info.baseline, info.metric_names) if info.baseline else "")
    summary = _markdown(info)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>autotune report: {html.escape(info.study.name)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>"
        f"<h1>autotune report: {html.escape(info.study.name)}</h1>"
        f"<pre>{html.escape(summary.split('## Hypervolume', 1)[1].strip())}</pre>"
        + "".join(parts)
        + tables
        + "</body></html>"
    )
    written = {"html": out_dir / "report.html", "json": out_dir / "summary.json", "markdown": out_dir / "summary.md"}
    written["html"].write_text(page)
    written["json"].write_text(json.dumps(info.to_dict(), indent=1))
    written["markdown"].write_text(summary)
    if _screenshot(figures[0], out_dir / "pareto.png"):
        written["png"] = out_dir / "pareto.png"
    return written
