"""Where studies live: the storage URL (SQLite by default, PostgreSQL across machines, an
Optuna journal file, a gRPC proxy), engine options, transient errors, and heartbeats for
recovering the trials of dead workers; what a trial stores (its record) and what became of it."""

from ._artifacts import check_artifact_store, kept_adapters, open_artifact_store, pack_adapter, unpack_adapter
from ._liveness import Retry, beat, fail_dead_trials, fail_stale_trials, heartbeat
from ._lock import AskLock
from ._open import StorageError, is_database_error, is_transient, open_storage, serve_grpc_proxy, storage_error
from ._outcome import (
    budget_used,
    counts_toward_budget,
    device_hours_spent,
    is_feasible,
    is_rerun,
    loss_sign,
    never_ran,
    non_domination_rank,
    searched,
    spent_budget,
    stopped,
    succeeded,
    to_loss,
    train_time_saved_s,
    train_time_spent_s,
    tried,
    under_way,
)
from ._trial_record import FailureKind, Rung, TrialRecord, read_record, record_attrs, recorded, write_record
from ._url import DEFAULT_STORAGE, mask_url, resolve_storage_url

__all__ = [
    "check_artifact_store",
    "kept_adapters",
    "open_artifact_store",
    "pack_adapter",
    "unpack_adapter",
    "AskLock",
    "DEFAULT_STORAGE",
    "FailureKind",
    "Retry",
    "Rung",
    "StorageError",
    "TrialRecord",
    "beat",
    "budget_used",
    "counts_toward_budget",
    "device_hours_spent",
    "fail_dead_trials",
    "fail_stale_trials",
    "heartbeat",
    "is_database_error",
    "is_feasible",
    "is_rerun",
    "is_transient",
    "loss_sign",
    "mask_url",
    "never_ran",
    "non_domination_rank",
    "open_storage",
    "read_record",
    "record_attrs",
    "recorded",
    "resolve_storage_url",
    "searched",
    "serve_grpc_proxy",
    "stopped",
    "storage_error",
    "succeeded",
    "to_loss",
    "train_time_saved_s",
    "train_time_spent_s",
    "tried",
    "under_way",
    "spent_budget",
    "write_record",
]
