from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from ._url import mask_url

if TYPE_CHECKING:
    import optuna

# A worker beats every HEARTBEAT_INTERVAL_S; a RUNNING trial silent for GRACE_PERIOD_S is
# failed by the next worker that starts a trial, and re-queued once.
HEARTBEAT_INTERVAL_S = 20
GRACE_PERIOD_S = 60


class StorageError(Exception):
    """The storage cannot be used; the message names it with its password masked."""


def _password(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password
    except Exception:
        return None


def engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # Wait for a busy SQLite file instead of failing at once when workers write together.
        return {"connect_args": {"timeout": 60}}
    # Servers drop idle connections; a pre-ping replaces them instead of failing a trial.
    return {"pool_pre_ping": True}


def storage_error(url: str, exc: BaseException) -> StorageError:
    """A one-line StorageError for `exc`, with no credentials in it."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    password = _password(url)
    if password:
        reason = reason.replace(password, "***")
    return StorageError(f"cannot use storage {mask_url(url)}: {reason}")


def open_storage(url: str, *, heartbeat: bool = False) -> optuna.storages.RDBStorage:
    """An Optuna RDBStorage on `url`; with `heartbeat`, trials of dead workers are failed
    after the grace period and their configs re-queued once."""
    import optuna

    kwargs: dict[str, Any] = {}
    if heartbeat:
        kwargs = {
            "heartbeat_interval": HEARTBEAT_INTERVAL_S,
            "grace_period": GRACE_PERIOD_S,
        }
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat:
                kwargs["heartbeat_stale_trial_callback"] = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)
    except Exception as exc:  # SQLAlchemy and the drivers raise many types for a bad URL
        raise storage_error(url, exc) from exc
