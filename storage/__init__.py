"""Where studies live: the storage URL (SQLite by default, PostgreSQL across machines, an
Optuna journal file, a gRPC proxy), engine options, transient errors, and heartbeats for
recovering the trials of dead workers."""

from ._lock import AskLock
from ._open import StorageError, is_database_error, is_transient, open_storage, serve_grpc_proxy, storage_error
from ._url import DEFAULT_STORAGE, mask_url, resolve_storage_url

__all__ = [
    "AskLock",
    "DEFAULT_STORAGE",
    "StorageError",
    "is_database_error",
    "is_transient",
    "mask_url",
    "open_storage",
    "resolve_storage_url",
    "serve_grpc_proxy",
    "storage_error",
]
