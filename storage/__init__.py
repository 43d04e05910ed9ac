"""Where studies live: the storage URL (SQLite by default, PostgreSQL across machines),
engine options, and heartbeats for recovering the trials of dead workers."""

from ._open import GRACE_PERIOD_S, HEARTBEAT_INTERVAL_S, StorageError, open_storage, storage_error
from ._url import DEFAULT_STORAGE, mask_url, resolve_storage_url

__all__ = [
    "DEFAULT_STORAGE",
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "StorageError",
    "mask_url",
    "open_storage",
    "resolve_storage_url",
    "storage_error",
]
