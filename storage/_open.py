from __future__ import annotations

import sqlite3
import warnings
from typing import TYPE_CHECKING, Any

from ._url import mask_url

if TYPE_CHECKING:
    import optuna

# SQLSTATE classes and codes worth a retry: connection exceptions, serialization failure,
# deadlock, server shutting down or starting up.
_TRANSIENT_SQLSTATES = ("08", "40001", "40P01", "57P01", "57P02", "57P03")


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
    # Servers drop idle connections: a pre-ping replaces them instead of failing a trial
    # (Optuna sets it only for MySQL). A worker holds a few connections (its trial threads
    # and the heartbeat): a small pool each keeps hundreds of workers under max_connections.
    return {"pool_pre_ping": True, "pool_size": 4, "max_overflow": 4, "pool_recycle": 1800}


def is_transient(exc: BaseException) -> bool:
    """A lost connection, a serialization failure, a deadlock, a locked SQLite file:
    errors where the same operation may work a moment later. Optuna and SQLAlchemy wrap
    the driver's error (StorageInternalError, PendingRollbackError): the whole chain counts."""
    from sqlalchemy import exc as sa

    link: BaseException | None = exc
    while link is not None:
        if isinstance(link, sa.DBAPIError) and link.connection_invalidated:
            return True
        if isinstance(link, (sa.OperationalError, sa.InterfaceError)):
            orig = getattr(link, "orig", None)
            if isinstance(orig, sqlite3.Error):  # busy or locked; not "unable to open database file"
                return any(word in str(orig) for word in ("locked", "busy"))
            sqlstate = getattr(orig, "sqlstate", None)
            # No SQLSTATE (a socket closed under the driver): transient.
            return sqlstate is None or sqlstate.startswith(_TRANSIENT_SQLSTATES)
        link = link.__cause__ or link.__context__
    return False


def is_database_error(exc: BaseException) -> bool:
    """Raised by the database or its driver (wrapped by Optuna or SQLAlchemy, or not)."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    link: BaseException | None = exc
    while link is not None:
        if isinstance(link, (SQLAlchemyError, optuna.exceptions.StorageInternalError)):
            return True
        link = link.__cause__ or link.__context__
    return False


def storage_error(url: str, exc: BaseException) -> StorageError:
    """A one-line StorageError for `exc`, with no credentials in it."""
    root: BaseException | None = exc
    while root is not None and getattr(root, "orig", None) is None and (root.__cause__ or root.__context__):
        root = root.__cause__ or root.__context__  # past Optuna's StorageInternalError to the driver's
    reason = str(getattr(root, "orig", None) or exc).strip().splitlines()[0]
    password = _password(url)
    if password:
        reason = reason.replace(password, "***")
    return StorageError(f"cannot use storage {mask_url(url)}: {reason}")


def open_storage(url: str, *, heartbeat: tuple[int, int] | None = None) -> optuna.storages.BaseStorage:
    """An Optuna storage for `url`:

    - any SQLAlchemy URL: RDBStorage; with `heartbeat` (interval, grace period in seconds),
      a RUNNING trial whose worker stopped beating is failed and its config queued again once;
    - `journal:///path/to/file.log`: JournalStorage on a file (one host, no database server;
      no heartbeat: a killed worker's trial stays RUNNING);
    - `grpc://host:port`: GrpcStorageProxy, talking to `autotune grpc-proxy` in front of a
      database (hundreds of workers, one connection pool; no heartbeat).
    """
    import optuna

    try:
        with warnings.catch_warnings():  # journal, gRPC and heartbeats are "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if url.startswith("journal://"):
                from optuna.storages.journal import JournalFileBackend

                return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal://")))
            if url.startswith("grpc://"):
                host, _, port = url.removeprefix("grpc://").rpartition(":")
                return optuna.storages.GrpcStorageProxy(host=host, port=int(port))
            kwargs: dict[str, Any] = {}
            if heartbeat is not None:
                kwargs = {
                    "heartbeat_interval": heartbeat[0],
                    "grace_period": heartbeat[1],
                    "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
                }
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)
    except Exception as exc:  # SQLAlchemy and the drivers raise many types for a bad URL
        raise storage_error(url, exc) from exc


def serve_grpc_proxy(url: str, host: str, port: int) -> None:
    """Serve `url` (a database) to GrpcStorageProxy clients until stopped."""
    import optuna

    optuna.storages.run_grpc_proxy_server(open_storage(url), host=host, port=port)
