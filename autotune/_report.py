"""`autotune report` and `autotune dashboard`: read studies, compute the report's numbers
(autotune.dashboards), write them or push them into optuna-dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ._baseline import LIKE_ATTR, require_comparable
from ._errors import AutotuneError
from ._spec import parse_stored_spec
from ._study import SPEC_ATTR, _storage, load_study
from .dashboards import ReportInfo, build_report_info, push_figures, serve, succeeded_study, write_report
from .storage import mask_url, open_artifact_store

if TYPE_CHECKING:
    import optuna


def _has_complete(study: optuna.Study) -> bool:
    import optuna

    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def build_report(
    name: str, storage: str | None = None, *, baseline: str | None = None, reference_point: float = 1.1
) -> tuple[ReportInfo, optuna.Study]:
    """The numbers of a report on study `name`, against `baseline` if given."""
    study, spec = load_study(name, storage)
    if not _has_complete(study):
        raise AutotuneError(f"study {name!r} has no complete trial yet; run a worker first: autotune worker {name}")
    other = None
    if baseline is not None:
        base_study, base_spec = load_study(baseline, storage)
        require_comparable(spec, base_spec, f"{baseline!r} is not a baseline of {name!r}")
        other = (base_study, base_spec.method)
    if reference_point <= 1.0:
        raise AutotuneError(
            f"--reference-point must be above 1 (objectives are normalised to [0, 1]), got {reference_point}"
        )
    info = build_report_info(
        study, spec.method, spec.metric_names, spec.directions, other, reference_point, spec.own_metric_names
    )
    return info, study


def report(
    name: str,
    storage: str | None = None,
    *,
    baseline: str | None = None,
    out: str | Path | None = None,
    reference_point: float = 1.1,
) -> dict[str, Path]:
    """Write the HTML report, JSON and Markdown summaries (and a PNG of the main plot) of
    study `name` into `out` (default ./autotune-report/NAME); returns the files written.

    Example:
        >>> autotune.report("lora-sweep", baseline="lora-sweep-random")  # doctest: +SKIP
    """
    import optuna

    info, study = build_report(name, storage, baseline=baseline, reference_point=reference_point)
    succeeded = succeeded_study(study)  # a failed config's penalty values are no point to draw
    parallel = [
        optuna.visualization.plot_parallel_coordinate(succeeded, target=lambda t, i=i: t.values[i], target_name=metric)
        for i, metric in enumerate(info.metric_names)
    ]
    return write_report(info, Path(out) if out else Path("autotune-report") / name, parallel)


def run_dashboard(storage: str | None = None, *, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Push each autotune study's fronts (against its --like baseline) and hypervolume
    history into optuna-dashboard, then serve it on the same storage until stopped."""
    import optuna

    url, rdb = _storage(storage)
    studies = [s for s in rdb.get_all_studies() if SPEC_ATTR in s.user_attrs]
    specs = [parse_stored_spec(s.user_attrs[SPEC_ATTR], f"spec stored with study {s.study_name!r}") for s in studies]
    baseline_of = {s.user_attrs[LIKE_ATTR]: s.study_name for s in studies if LIKE_ATTR in s.user_attrs}
    for frozen in studies:
        name = frozen.study_name
        if not _has_complete(optuna.load_study(study_name=name, storage=rdb)):
            continue
        info, study = build_report(name, url, baseline=baseline_of.get(name))
        push_figures(study, info)
    # optuna-dashboard serves one artifact store: the first study's that keeps adapters.
    stores = [spec.artifacts.store for spec in specs if spec.artifacts is not None and spec.artifacts.keep != "none"]
    artifacts = f"; adapters from {stores[0]}" if stores else ""
    print(f"optuna-dashboard on http://{host}:{port} for {mask_url(url)}{artifacts} (Ctrl-C stops it)", flush=True)
    serve(rdb, host, port, open_artifact_store(stores[0]) if stores else None)
