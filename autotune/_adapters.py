"""Keeping what a trial trained (spec `artifacts`): the runner saves the adapter of a trial
that trained to the end, the worker uploads it to the study's artifact store (Optuna's
artifact API, so optuna-dashboard lists it) and records it on the trial before telling it;
with keep: front, adapters are removed once their trial falls off the Pareto front.

Removal needs no coordination between workers: a finished trial's values never change and a
study's trials only grow, so a trial one worker sees dominated stays dominated for all;
only told trials are looked at, so an adapter still uploading is never removed, and a
second removal of the same one is harmless. Export reads the record, which is written
after the upload completes: a worker killed while uploading leaves no adapter to export."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ._spec import ArtifactsSpec, StudySpec
from .dashboards import collect
from .storage import Retry, kept_adapters, open_artifact_store, pack_adapter, recorded, write_record

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts._protocol import ArtifactStore


@dataclass
class Adapters:
    spec: StudySpec
    artifacts: ArtifactsSpec
    store: ArtifactStore
    removed: set[str] = field(default_factory=set)  # by this worker

    @classmethod
    def of(cls, spec: StudySpec) -> Adapters | None:
        if spec.artifacts is None or spec.artifacts.keep == "none":
            return None
        return cls(spec, spec.artifacts, open_artifact_store(spec.artifacts.store))

    @staticmethod
    def folder() -> tempfile.TemporaryDirectory[str]:
        """A folder for the runner to save the trial's adapter in; removed afterwards."""
        return tempfile.TemporaryDirectory(prefix="autotune-adapter-", ignore_cleanup_errors=True)

    def keep(self, trial: optuna.Trial, folder: str, retry: Retry) -> None:
        """Upload the adapter saved in `folder` (none where the trial stopped early) and record
        it; a store that fails is recorded as `artifact_error` and said, the trial goes on."""
        from optuna.artifacts import upload_artifact

        if not any(Path(folder).iterdir()):
            return
        packed = pack_adapter(folder)
        size = packed.stat().st_size
        try:
            artifact = upload_artifact(artifact_store=self.store, file_path=str(packed), study_or_trial=trial)
        except Exception as exc:
            lines = str(exc).strip().splitlines()
            reason = f"adapter not kept: {type(exc).__name__}{': ' + lines[0] if lines else ''}"
            retry(lambda: write_record(trial, artifact_error=reason))
            retry.note(f"trial {trial.number}: {reason}")
            return
        finally:
            shutil.rmtree(packed.parent, ignore_errors=True)
        retry(lambda: write_record(trial, adapter_artifact=artifact, adapter_bytes=size))

    def prune(self, study: optuna.Study) -> None:
        """With keep: front, remove the adapters of told trials that are off the front."""
        from optuna.artifacts.exceptions import ArtifactNotFound

        if self.artifacts.keep != "front":
            return
        spec, trials = self.spec, study.get_trials(deepcopy=False)
        front = {p.number for p in collect(study, spec.metric_names, spec.directions, spec.method, trials).pareto}
        kept = kept_adapters(trials, front, self.artifacts.keep)
        for trial in trials:
            artifact = recorded(trial, "adapter_artifact")
            if artifact is None or trial.number in kept or artifact in self.removed or not trial.state.is_finished():
                continue
            try:
                self.store.remove(artifact)
            except ArtifactNotFound:
                pass  # another worker removed it
            self.removed.add(artifact)
