"""optuna-dashboard on the same storage, with the report's figures pushed into each study
(0.21 has no hypervolume plot and ignores set_constraint in its own Pareto front)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._figures import hypervolume_figure, pareto_figures
from ._info import ReportInfo

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore


def push_figures(study: optuna.Study, info: ReportInfo) -> list[str]:
    """Save the fronts (with the baseline) and the hypervolume history into `study`; ids are
    stable, so pushing again replaces them."""
    from optuna_dashboard import save_plotly_graph_object

    figures = {f"autotune-front-{i}": f for i, f in enumerate(pareto_figures(info))}
    figures["autotune-hypervolume"] = hypervolume_figure(info)
    figures["autotune-hypervolume-time"] = hypervolume_figure(info, against="train_time")
    return [save_plotly_graph_object(study, f, graph_object_id=key) for key, f in figures.items()]


def serve(
    storage: optuna.storages.BaseStorage, host: str, port: int, artifact_store: ArtifactStore | None = None
) -> None:
    """optuna-dashboard until stopped; with `artifact_store`, it lists and serves each trial's artifacts."""
    from optuna_dashboard import run_server

    run_server(storage, host=host, port=port, artifact_store=artifact_store)
