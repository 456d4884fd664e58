"""Mixing: after casting, neither physical order nor transaction ids may relink a ballot to its
invitation.

On PostgreSQL a cast marks its invitation used (a used_invitations row) in the transaction that
inserts the ballot, so both rows carry the same xmin, and new rows pile up in the order of
casting. A mix rewrites the round's used-invitation rows in random order in one transaction,
after every N ballots while the round is open and with the ballots at close, and a vacuum then
clears the old versions. A cast writes no version of the invitation's own row: its foreign-key
check only locks it (FOR KEY SHARE, which stamps the cast's transaction id in the row's xmax),
and every mix's foreign-key checks lock it again, stamping the mix's over it.
SQLite needs none of that (no transaction ids in rows, ballots on random keys without rowids):
there the write-ahead log, which holds pages in commit order, is checkpointed and truncated.
PostgreSQL's mixes mark the rows they rewrite (`mixed`), and the next is due once N rows wait:
a cast counts those few, never the round's whole ballot box. SQLite's casts count the round's
ballots on the round row, and a mix is due at every multiple of N.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from core.database import sqlite_checkpointer, sqlite_writer
from evaluation.ballot_box import Cast

MIXED_TABLES = (("ballots", "round_id = :r"),
                ("ratings", "ballot_id IN (SELECT id FROM ballots WHERE round_id = :r)"),
                ("used_invitations", "round_id = :r"))
#: What the closing VACUUM FULL rewrites: the mixed tables, and the invitations, whose rows a
#: cast's foreign-key check locks (the lock stamps its xmax; the mixes stamp theirs over it) and
#: whose old versions may still carry casts' xmin from before migration 0006.
VACUUMED_AT_CLOSE = (*(table for table, _where in MIXED_TABLES), "invitations")
#: Where mix_round leaves its transaction id for vacuum_after_mix (in the session's info).
_MIX_XID = "pingyi.mix_xid"


def mix_round(session: Session, round_id: int, full: bool = True, every: int = 1) -> bool:
    """Rewrite the round's rows in random order, marked mixed, in this transaction (PostgreSQL;
    the caller commits).

    While open (not `full`), only when `every` or more are waiting for a mix: False when another
    worker has mixed meanwhile.

    A cast marks its invitation used (a row of used_invitations) in the same transaction that
    inserts the ballot, so on PostgreSQL both carry the same xmin, and the used-invitation rows
    pile up in the order of casting. Rewriting every one of the round's in random order gives
    them all this transaction's xmin and a random place among each other, so no join on xmin or
    on physical order links a ballot to an invitation. The invitations are not rewritten: a cast
    writes no version of them (the xmax its foreign-key check stamps on the row, re-inserting
    the used-invitation rows stamps over), and the narrow rows (one index, one key) cost far
    less to rewrite than the invitations (four indexes) did. `full` (at close) rewrites the
    ballot rows too, so that neither their xmin nor their order says anything about the order
    of casting.
    SQLite needs none of this: no transaction ids in rows, ballots on random keys without rowids
    (its used-invitation rows are written mixed).
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    if not full:
        return _mix_open_round(session, round_id, every)
    # Under the lock no cast is in flight: every row of the round is mixed now.
    session.execute(text("SELECT 1 FROM rounds WHERE id = :r FOR UPDATE"), {"r": round_id})
    _record_mix(session)
    for table, where in MIXED_TABLES:
        session.execute(text(f"CREATE TEMP TABLE mix_{table} ON COMMIT DROP AS "
                             f"SELECT * FROM {table} WHERE {where}"), {"r": round_id})
    session.execute(text("UPDATE mix_used_invitations SET mixed = true"))
    # ratings go with their ballots (ON DELETE CASCADE)
    session.execute(text("DELETE FROM ballots WHERE round_id = :r"), {"r": round_id})
    session.execute(text("DELETE FROM used_invitations WHERE round_id = :r"), {"r": round_id})
    for table, _where in MIXED_TABLES:
        session.execute(text(f"INSERT INTO {table} SELECT * FROM mix_{table} ORDER BY random()"))
    return True


#: An open round's mix in one statement, so one snapshot: it rewrites every used invitation of
#: the round, and nothing unless `every` of them have been waiting since the latest mix (counted
#: through the partial index of the waiting rows). All rows are deleted before the sort hands
#: out the first; they come back marked mixed.
_PG_MIX_OPEN = text("""
WITH waiting AS (SELECT count(*) AS n FROM used_invitations WHERE round_id = :r AND NOT mixed),
gone AS (DELETE FROM used_invitations WHERE round_id = :r
         AND (SELECT n FROM waiting) >= :every RETURNING round_id, invitation_id),
moved AS (INSERT INTO used_invitations (round_id, invitation_id, mixed)
          SELECT round_id, invitation_id, true FROM gone ORDER BY random())
SELECT n FROM waiting
""")


def _mix_open_round(session: Session, round_id: int, every: int) -> bool:
    """The periodic mix of an open round (see mix_round); False when it is not due after all.

    It locks the round FOR NO KEY UPDATE: a close waits for the mix, but casts, which hold FOR
    KEY SHARE, go on meanwhile instead of queueing behind the rewrite. A cast that commits
    during the mix is neither rewritten nor counted, so the next mix comes N ballots later at
    the latest. SKIP LOCKED: while another mix (or a close) holds the round, this one gives up
    at once rather than keep a worker waiting for a rewrite that covers its ballot or leaves it
    waiting for the next cast's mix, which is due then (the waiting rows only ever grow).
    """
    locked = session.scalar(text("SELECT 1 FROM rounds WHERE id = :r AND status = 'open'"
                                 " FOR NO KEY UPDATE SKIP LOCKED"), {"r": round_id})
    if locked is None:  # closed meanwhile (the closing mix has done it all), or being mixed
        return False
    # A statement of its own after the lock: its snapshot sees a mix that committed meanwhile.
    if session.scalar(_PG_MIX_OPEN, {"r": round_id, "every": every}) < every:
        return False  # another worker has just mixed
    _record_mix(session)
    return True


def _record_mix(session: Session) -> None:
    """Remember the mix's transaction id: the vacuum after the commit waits for sessions that
    may still see the rows the mix deletes."""
    session.info[_MIX_XID] = int(session.scalar(text("SELECT pg_current_xact_id()::text")))


#: How long the vacuum after a mix waits for older snapshots to end, in seconds: while open (a
#: voter's reply waits too) and at close.
SNAPSHOT_WAIT_OPEN, SNAPSHOT_WAIT_CLOSE = 1.0, 20.0

#: What may still see the row versions a mix deleted: sessions of this database with a snapshot
#: or a transaction as old as the mix (every role sees every session's backend_xmin and
#: backend_xid; plain vacuums hold nothing back), prepared transactions, and replication slots.
_OLDER_SNAPSHOTS = text("""
SELECT (SELECT count(*) FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND pid NOT IN (SELECT pid FROM pg_stat_progress_vacuum)
          AND (age(backend_xmin) >= age(CAST(:x AS xid)) OR age(backend_xid) >= age(CAST(:x AS xid))))
     + (SELECT count(*) FROM pg_prepared_xacts
        WHERE database = current_database() AND age(transaction) >= age(CAST(:x AS xid)))
     + (SELECT count(*) FROM pg_replication_slots WHERE age(xmin) >= age(CAST(:x AS xid)))
""")
#: A vacuum after a mix gives up rather than queue this long for a table's lock (and make every
#: reader of that table queue behind it).
VACUUM_LOCK_TIMEOUT = "10s"


def _wait_for_older_snapshots(conn, mix_xid: int, timeout: float) -> bool:
    """Wait until no other session of this database may still see the row versions the mix
    deleted (no snapshot or transaction as old as the mix); False if some still could at the
    timeout.

    A vacuum keeps such versions (VACUUM FULL even copies them into its new file), and the
    used-invitation rows a mix deleted carry the casts' xmin: a transaction that began before
    the mix committed, such as a long report on another round, would keep the link on disk.
    """
    deadline, pause = time.monotonic() + timeout, 0.002
    xid = str(mix_xid & 0xFFFFFFFF)  # pg_stat_activity shows 32-bit transaction ids
    while conn.execute(_OLDER_SNAPSHOTS, {"x": xid}).scalar():
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
    return True


def vacuum_after_mix(session: Session, full: bool = False) -> None:
    """Clear old row versions after a mix, outside any transaction.

    PostgreSQL: once no session may still see what the mix deleted, VACUUM of used_invitations
    while open (the rows it deleted carry the casts' xmin), VACUUM FULL of every mixed table at
    close (rewritten into new files). SQLite: VACUUM rebuilds the file at close (secure_delete
    zeroes freed pages anyway), and the WAL, which holds pages in commit order, is checkpointed
    and truncated.
    """
    session.commit()  # end whatever transaction the session holds
    mix_xid = session.info.pop(_MIX_XID, None)
    engine = session.get_bind()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            _vacuum_postgresql(conn, mix_xid, full)
        elif engine.dialect.name == "sqlite":
            with sqlite_checkpointer(engine):
                if not full:  # copy the log into the file while casts go on, then empty it
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                with sqlite_writer(engine):  # casts wait in line, not in the busy handler
                    if full:
                        conn.exec_driver_sql("VACUUM")
                    _checkpoint(conn, attempts=20 if full else 1)


def _vacuum_postgresql(conn, mix_xid: int | None, full: bool) -> None:
    log = logging.getLogger("pingyi")
    tables = ", ".join(VACUUMED_AT_CLOSE)
    if mix_xid is not None and not _wait_for_older_snapshots(
            conn, mix_xid, SNAPSHOT_WAIT_CLOSE if full else SNAPSHOT_WAIT_OPEN):
        if full:  # VACUUM FULL would copy those versions into its new files: no use now
            log.warning("close: a transaction older than the closing mix is still running, so "
                        "the old row versions stay for now; once it has ended, run: "
                        "VACUUM FULL %s", tables)
            return
        log.warning("mix: a transaction older than the mix is still running; the row versions "
                    "it may see stay until a later vacuum")
    conn.exec_driver_sql(f"SET lock_timeout = '{VACUUM_LOCK_TIMEOUT}'")
    try:
        if full:
            for table in VACUUMED_AT_CLOSE:
                conn.exec_driver_sql(f"VACUUM FULL {table}")
        else:  # casts go on meanwhile; an autovacuum already at work is left to finish the job
            conn.exec_driver_sql("VACUUM (SKIP_LOCKED) used_invitations")
    except OperationalError as exc:  # the lock timeout: someone holds a table
        log.warning("vacuum after a mix gave up waiting for a lock (%s); once the tables are "
                    "free, run: VACUUM%s %s", type(exc.orig).__name__, " FULL" if full else "",
                    tables if full else "used_invitations")
    finally:
        conn.exec_driver_sql("RESET lock_timeout")


def _checkpoint(conn, attempts: int) -> None:
    """Empty SQLite's write-ahead log; readers in flight can hold it, so retry a little."""
    for _ in range(attempts):
        if not conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()[0]:
            return
        time.sleep(0.1)
    logging.getLogger("pingyi").warning("WAL checkpoint incomplete: readers were active")


def maybe_mix(session: Session, round_id: int, every: int, cast: Cast) -> bool:
    """Mix the round's used invitations when the cast found a mix due; True if so.

    SQLite's count is exact: a mix at every multiple of `every`. PostgreSQL's may be stale (casts
    commit side by side, and a mix may have run since), so the mix counts the waiting rows
    again under the round's lock, and does nothing when it is not due after all.
    """
    if every <= 0 or not cast.mix_due:
        return False
    if not mix_round(session, round_id, full=False, every=every):
        session.rollback()
        return False
    session.commit()
    vacuum_after_mix(session)
    return True
