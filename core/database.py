"""Connection settings applied to every database connection, and SQLite's queue of writers."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator

from sqlalchemy import event
from sqlalchemy.engine import Engine

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: SQLite's busy handler alone
    fcntl = None


@event.listens_for(Engine, "connect")
def _configure_sqlite(dbapi_connection, connection_record) -> None:
    """Turn on foreign keys, WAL and secure delete for SQLite connections."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute("PRAGMA journal_mode = WAL")
    # Deleted ballot pages are zeroed, so a copied file keeps no old rows.
    cursor.execute("PRAGMA secure_delete = ON")
    cursor.close()


class _FileQueue:
    """One process's place in the queue: a thread lock, then flock on a file beside the database."""

    def __init__(self, path: str, database: str, kind: str):
        self.path, self.database, self.kind = path, database, kind
        self.thread_lock, self.fd, self.pid = threading.Lock(), None, None

    def _open(self) -> int | None:
        """The lock file, made like SQLite makes its -wal and -shm files: the database file's
        permissions and, when root makes it, its owner. None if it cannot be opened."""
        try:
            try:
                db_stat = os.stat(self.database)
            except FileNotFoundError:  # SQLite makes the database on first write
                db_stat = None
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT,
                         db_stat.st_mode & 0o666 if db_stat else 0o644)
            if db_stat and os.geteuid() == 0:
                os.fchown(fd, db_stat.st_uid, db_stat.st_gid)
            return fd
        except OSError as exc:
            logging.getLogger("pingyi").warning("SQLite %s queue off: %s", self.kind, exc)
            return None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self.thread_lock:
            if self.pid != os.getpid():  # a forked worker opens its own file description
                self.fd, self.pid = self._open(), os.getpid()
            if self.fd is None:  # the queue only orders the waiting: go without it
                yield
                return
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self.fd, fcntl.LOCK_UN)


_QUEUES: dict[str, _FileQueue] = {}
_QUEUES_GUARD = threading.Lock()


@contextlib.contextmanager
def sqlite_writer(engine: Engine) -> Iterator[None]:
    """Wait for the other writers of this SQLite file in line; a no-op on other databases.

    SQLite lets one transaction write at a time. A writer that finds the file locked sleeps in its
    busy handler (1, 2, 5, 10 ... ms) and tries again, so under a burst of ballots from several
    worker processes the sleeps, not the work, set the pace. Writers that queue here first wake as
    soon as the writer before them is done. SQLite's own locking still guarantees correctness;
    this only orders the waiting. Hold it around a whole write transaction, commit included.
    """
    with _queue(engine, ".writers", "writers'"):
        yield


@contextlib.contextmanager
def sqlite_checkpointer(engine: Engine) -> Iterator[None]:
    """Wait for the other checkpointers of this SQLite file in line; a no-op on other databases.

    SQLite runs one checkpoint at a time and refuses a second at once (SQLITE_BUSY) rather than
    waiting: a checkpoint that copies the log while casts go on, outside the writers' queue,
    must not make another process's checkpoint fail. Take it before the writers' queue, never
    inside it.
    """
    with _queue(engine, ".checkpoint", "checkpoints'"):
        yield


@contextlib.contextmanager
def _queue(engine: Engine, suffix: str, kind: str) -> Iterator[None]:
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if fcntl is None or not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    database = os.path.abspath(database)
    path = database + suffix
    lock = _QUEUES.get(path)
    if lock is None:
        with _QUEUES_GUARD:
            lock = _QUEUES.setdefault(path, _FileQueue(path, database, kind))
    with lock.held():
        yield
