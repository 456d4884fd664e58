"""SQLite's queue of writers: one writer at a time across processes, a no-op elsewhere."""

from __future__ import annotations

import multiprocessing
import time

from sqlalchemy import create_engine

from core.database import sqlite_writer


def _hold(url: str, seconds: float, spans) -> None:
    engine = create_engine(url)
    with sqlite_writer(engine):
        start = time.monotonic()
        time.sleep(seconds)
        spans.append((start, time.monotonic()))


def test_writers_in_separate_processes_take_turns(tmp_path):
    """Worker processes (gunicorn forks them) never hold the queue at the same time."""
    url = f"sqlite:///{tmp_path / 'queue.db'}"
    with multiprocessing.Manager() as manager:
        spans = manager.list()
        ctx = multiprocessing.get_context("fork")
        workers = [ctx.Process(target=_hold, args=(url, 0.2, spans)) for _ in range(3)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(10)
        spans = sorted(spans)
    assert len(spans) == 3
    for (_start, end), (next_start, _end) in zip(spans, spans[1:]):
        assert next_start >= end, "two writers held the queue at once"
    assert (tmp_path / "queue.db.writers").exists()


def test_threads_of_one_process_take_turns_too(tmp_path):
    import threading

    url = f"sqlite:///{tmp_path / 'queue.db'}"
    spans: list[tuple[float, float]] = []
    threads = [threading.Thread(target=_hold, args=(url, 0.1, spans)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    spans.sort()
    assert len(spans) == 3
    assert all(nxt[0] >= cur[1] for cur, nxt in zip(spans, spans[1:]))


def test_no_queue_for_memory_databases_or_postgresql(tmp_path):
    """Nothing to order: no lock file is made and the block just runs."""
    for url in ("sqlite://", "postgresql+psycopg://nobody@127.0.0.1:1/none"):
        with sqlite_writer(create_engine(url)):
            pass
    assert not list(tmp_path.iterdir())


def test_a_lock_file_that_cannot_be_opened_turns_the_queue_off(tmp_path, caplog):
    """The queue only orders the waiting: writers go on without it, and the log says why."""
    (tmp_path / "q.db.writers").mkdir()  # in the way, whoever runs the test
    (tmp_path / "q.db").write_bytes(b"")
    with sqlite_writer(create_engine(f"sqlite:///{tmp_path / 'q.db'}")):
        pass
    assert "writers' queue off" in caplog.text


def test_the_lock_file_takes_the_database_file_permissions(tmp_path):
    database = tmp_path / "p.db"
    database.write_bytes(b"")
    database.chmod(0o664)
    with sqlite_writer(create_engine(f"sqlite:///{database}")):
        pass
    assert (tmp_path / "p.db.writers").stat().st_mode & 0o777 == 0o664 & ~_umask()


def _umask() -> int:
    import os
    mask = os.umask(0)
    os.umask(mask)
    return mask
