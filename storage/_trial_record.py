"""What autotune stores on a trial, beside Optuna's own state, params and values: one typed
record, kept as the trial's user attrs (one attr per field, so optuna-dashboard shows each),
written and read here only. Every field is optional: a trial gains them as it is asked, runs
and is told; studies written by earlier releases read as they are."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import optuna

# Why a trial ended without metrics: `config` (the config itself failed: an error, an OOM,
# a crash, a time limit, a divergence), `input` (the model or data cannot be used on this
# machine), `metric` (the user's metric function failed: not the config's fault, so no
# budget is spent), `interrupted` (its worker was stopped), `surplus` (other workers used the budget
# first), `duplicate` (its config was in flight or tried already) or `abandoned` (its worker
# lost the storage before starting it): the last four never trained.
FailureKind = Literal["config", "input", "metric", "interrupted", "surplus", "duplicate", "abandoned"]


class Rung(BaseModel):
    step: int
    values: list[float]  # the objectives at that step, in the spec's order


class TrialRecord(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)  # written: only its fields

    # Asked: which worker runs it (host:pid) and the seed its sampler drew from.
    worker: str | None = None
    sampler_seed: int | None = None
    # Queued: a baseline's pilot point, or a verification re-run of trial `verifies`.
    pilot: bool | None = None
    verifies: int | None = None
    seed: int | None = None  # the training seed: a re-run's set when queued, others' recorded
    # Run: the trial config a QLoRA trial trained with (objectives.TrialConfig as JSON).
    config: dict[str, Any] | None = None
    # Trained: the metrics (objectives.METRICS), and what the runner recorded to repeat it.
    metrics: dict[str, float] | None = None
    compute_dtype: str | None = None
    eval_loss_before: float | None = None
    device: str | None = None
    peak_mem_kind: str | None = None
    versions: dict[str, str] | None = None
    data: dict[str, Any] | None = None
    n_train_tokens: float | None = None
    lora_config: dict[str, Any] | None = None
    sft_config: dict[str, Any] | None = None
    quantization_config: dict[str, Any] | None = None
    timings: dict[str, float] | None = None
    learning_curve: list[dict[str, Any]] | None = None
    grid_point: dict[str, float] | None = None  # a table's trial: the grid point replayed
    table_seed: int | None = None  # ... and the seed whose row it drew
    # Ran on a slot: the seconds its device was given to it, from the config handed to the
    # runner to the runner's answer (loading, training, evaluation; to the rung where it
    # stopped, or to its failure); a test function's or table's is its delay.
    device_time_s: float | None = None
    # A QLoRA trial's device type, its time factor in the study (autotune._devices: its
    # metrics' times are in the reference device's seconds) and the train_time_s it measured.
    device_type: str | None = None
    device_factor: float | None = None
    measured_train_time_s: float | None = None
    # Kept: the trained adapter in the study's artifact store (a tar of peft's folder), its
    # size; or why it could not be stored.
    adapter_artifact: str | None = None
    adapter_bytes: int | None = None
    artifact_error: str | None = None
    # Early stopping: the values at each rung reached; where it stopped, its last rung's
    # values (what the sampler is shown) and the training time to that rung.
    rungs: list[Rung] | None = None
    stopped_at_step: int | None = None
    stopped_values: list[float] | None = None
    rung_train_time_s: float | None = None
    # Failed: why, and the end of the runner's log.
    failure_kind: FailureKind | None = None
    failure_reason: str | None = None
    log_tail: str | None = None


def read_record(trial: optuna.trial.FrozenTrial | optuna.Trial) -> TrialRecord:
    """The trial's record, checked; attrs that are no field of it (a newer release's, a
    user's own) are left out."""
    return TrialRecord.model_validate({k: v for k, v in trial.user_attrs.items() if k in TrialRecord.model_fields})


def recorded(trial: optuna.trial.FrozenTrial | optuna.Trial, field: str) -> Any:
    """One field of the trial's record as stored, unchecked: for the checks that run over
    every trial of a study at every ask (a whole record's check costs ~10 us a trial)."""
    if field not in TrialRecord.model_fields:
        raise KeyError(f"{field!r} is no field of TrialRecord")
    return trial.user_attrs.get(field)


def write_record(trial: optuna.Trial, **fields: Any) -> None:
    """Store `fields` of the trial's record, checked against it first."""
    for key, value in record_attrs(**fields).items():
        trial.set_user_attr(key, value)


def record_attrs(**fields: Any) -> dict[str, Any]:
    """`fields` as the user attrs of a trial to enqueue, checked."""
    return TrialRecord.model_validate(fields).model_dump(mode="json", include=set(fields))
