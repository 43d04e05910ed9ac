"""One ask at a time per study, across worker processes and machines. A worker holds this
lock while it asks the sampler for a trial and stores the trial's params, so that the next
ask, by any worker, already sees that trial in flight: Optuna's GPSampler and TPE's
constant_liar condition on RUNNING trials, and only propose the same point when asks race.

- SQLite and journal files (one machine): an exclusive `flock` on a file beside the database.
- PostgreSQL: a session advisory lock; MySQL/MariaDB: a named lock (`GET_LOCK`), each on a
  connection of its own. The server releases either when that connection dies, so a killed
  worker, or a server restart, never leaves it held.
- gRPC proxy: no lock; the worker's check for a config already in flight still applies.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from pathlib import Path
from typing import IO, Any


class AskLock:
    def __init__(self, url: str, study_name: str) -> None:
        # One lock serves the worker's asking thread and its slot threads (calibrations):
        # taken first, it keeps one thread's file or connection from replacing another's.
        self._threads = threading.Lock()
        self._path: Path | None = None
        self._file: IO[str] | None = None
        self._engine: Any = None
        self._connection: Any = None
        name = f"autotune-ask:{study_name}"
        if url.startswith("journal://"):
            self._path = Path(url.removeprefix("journal://") + ".ask-lock")
        elif url.startswith("sqlite"):
            from sqlalchemy.engine import make_url

            database = make_url(url).database
            if database and database != ":memory:":
                self._path = Path(database + ".ask-lock")
        elif url.startswith(("postgresql", "mysql", "mariadb")):
            import sqlalchemy

            self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
            if self._engine.dialect.name == "postgresql":
                key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
                self._statements = ("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)")
                self._params: dict[str, Any] = {"key": key}
            else:
                self._statements = ("SELECT GET_LOCK(:key, -1)", "SELECT RELEASE_LOCK(:key)")
                self._params = {"key": name[:64]}

    @property
    def exclusive(self) -> bool:
        """Whether holding it keeps other workers' asks out (not through a gRPC proxy)."""
        return self._path is not None or self._engine is not None

    def acquire(self) -> None:
        """Wait for the lock. A failure (the server away) raises, holding nothing."""
        self._threads.acquire()
        try:
            self._acquire_across_processes()
        except BaseException:
            self._threads.release()
            raise

    def _acquire_across_processes(self) -> None:
        if self._path is not None:
            file = self._path.open("a")
            fcntl.flock(file, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            self._file = file
        elif self._engine is not None:
            from sqlalchemy import text

            connection = self._engine.connect()
            try:
                connection.execute(text(self._statements[0]), self._params)
            except BaseException:
                connection.close()
                raise
            self._connection = connection

    def release(self) -> None:
        try:
            self._release_across_processes()
        finally:
            self._threads.release()

    def _release_across_processes(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._connection is not None:
            from sqlalchemy import text

            connection, self._connection = self._connection, None
            try:
                connection.execute(text(self._statements[1]), self._params)
            except Exception:
                pass  # the connection is gone, and the server released the lock with it
            finally:
                connection.close()

    def __enter__(self) -> AskLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def close(self) -> None:
        self._release_across_processes()
        if self._engine is not None:
            self._engine.dispose()
