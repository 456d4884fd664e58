"""The ballot box: cast a ballot atomically and anonymously; mix and seal at close; verify.

Casting is one transaction: (PostgreSQL) a shared lock on the round row, so that closing waits for
ballots in flight; a conditional update that marks the invitation used only if it is unused and the
round open — exactly one row or refuse, never check-then-write; then the ballot and its ratings.
The ballot row knows nothing of the invitation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import logging
import json
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from core.database import sqlite_writer
from evaluation.ballot_sheet import ParsedBallot
from evaluation.errors import PingyiError
from evaluation.invitations import CODE_ALPHABET
from evaluation.models import Ballot, Grade, Invitation, Item, ItemRating, Participation, Rating, Round

RECEIPT_LENGTH = 12


class CastError(PingyiError):
    """The ballot was not recorded; `reason` says why: used, closed, not_started, unknown."""

    def __init__(self, reason: str):
        super().__init__(f"ballot refused: {reason}")
        self.reason = reason


def new_receipt() -> str:
    """A random receipt code, grouped for reading: XXXX-XXXX-XXXX."""
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(RECEIPT_LENGTH))
    return "-".join(raw[i:i + 4] for i in range(0, RECEIPT_LENGTH, 4))


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


@dataclass(frozen=True)
class Cast:
    """A recorded ballot: its receipt, and how many ballots the round holds with it."""

    receipt: str
    count: int
    #: PostgreSQL: the round's ballot count at its latest mix, as the cast saw it (casts commit
    #: side by side there, so counts repeat and skip). None on SQLite, where the count is exact.
    mixed_at: int | None = None


@dataclass(frozen=True)
class _NewBallot:
    """Everything a cast writes, prepared before the transaction starts."""

    id: str
    receipt: str
    day: dt.date
    is_paper: bool
    is_valid: bool
    #: (participation id, grade id or None, comment or None)
    ratings: list[tuple[int, int | None, str | None]]
    #: (participation id, item id, value)
    items: list[tuple[int, int, int]]

    @classmethod
    def of(cls, parsed: ParsedBallot, is_paper: bool, is_valid: bool) -> "_NewBallot":
        return cls(secrets.token_hex(16), new_receipt(), today(), is_paper, is_valid,
                   [(pid, grade_id, comment) for pid, grade_id, comment, _items in parsed.answers],
                   [(pid, item_id, value) for pid, _g, _c, its in parsed.answers
                    for item_id, value in its])


def cast_ballot(session: Session, invitation_id: int, round_id: int, group_id: int,
                parsed: ParsedBallot, invalidate: bool, token_hash: str,
                is_paper: bool = False) -> Cast:
    """Record one ballot for an invitation. CastError changes nothing.

    token_hash is the invitation's link hash as the voter received it: a link re-issued since
    (a reminder) voids the old one, and so the session opened with it.

    This is the hot path of a meeting room full of phones, so it speaks to the database driver
    directly (plain SQL, rows prepared beforehand) on a pooled connection of its own, and commits
    there: whatever the session has open is neither committed nor rolled back by a cast.
    """
    new = _NewBallot.of(parsed, is_paper, is_valid=not (invalidate and parsed.suspicious))
    who = (invitation_id, round_id, group_id, token_hash)
    with session.get_bind().connect() as conn:  # back to the pool rolled back, whatever happens
        driver = conn.connection.driver_connection
        try:
            if conn.dialect.name == "postgresql":
                count, mixed_at = _cast_postgresql(driver, who, new)
            else:
                count, mixed_at = _cast_sqlite(conn.engine, driver, who, new), None
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _as_sqlalchemy_error(conn, exc) from exc
    if count is None:
        raise CastError(why_refused(session, invitation_id, round_id))
    return Cast(new.receipt, count, mixed_at)


def _as_sqlalchemy_error(conn, exc: Exception) -> DBAPIError:
    """What SQLAlchemy raises for a driver error (so a locked or lost database still gives its
    503 page), with no statement or parameters attached; a lost connection is dropped, and the
    pool with it."""
    invalidated = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, None)
    if invalidated:  # as SQLAlchemy does: this connection and the rest of the pool are stale
        conn.invalidate(exc)
        conn.engine.dispose(close=False)
    return DBAPIError.instance(None, None, exc, conn.dialect.loaded_dbapi.Error,
                               hide_parameters=True, connection_invalidated=invalidated,
                               dialect=conn.dialect)


_SQLITE_MARK_USED = (
    "UPDATE invitations SET is_used = 1 WHERE id = ? AND round_id = ? AND group_id = ?"
    " AND token_hash = ? AND NOT is_used"
    " AND EXISTS (SELECT 1 FROM rounds WHERE id = ? AND status = 'open')")
_SQLITE_INSERT_BALLOT = ("INSERT INTO ballots (id, round_id, group_id, receipt, cast_on, is_paper,"
                         " is_valid) VALUES (?, ?, ?, ?, ?, ?, ?)")
_SQLITE_INSERT_RATING = ("INSERT INTO ratings (ballot_id, participation_id, grade_id, comment)"
                         " VALUES (?, ?, ?, ?)")
_SQLITE_INSERT_ITEM = ("INSERT INTO item_ratings (ballot_id, participation_id, item_id, value)"
                       " VALUES (?, ?, ?, ?)")
_SQLITE_COUNT = "SELECT count(*) FROM ballots WHERE round_id = ?"


def _cast_sqlite(engine, driver, who: tuple[int, int, int, str], new: _NewBallot) -> int | None:
    """SQLite's cast, committed, in the writers' queue: the round's ballot count, or None when the
    conditional update touched no row (then it is rolled back). SQLite holds its write lock from
    the update to the end of the transaction, so both happen before leaving the queue."""
    count = None
    with sqlite_writer(engine):
        try:
            count = _write_sqlite(driver, who, new)
        finally:
            (driver.rollback if count is None else driver.commit)()
    return count


def _write_sqlite(driver, who: tuple[int, int, int, str], new: _NewBallot) -> int | None:
    """The conditional update, then the ballot and its ratings (executemany costs no round trips
    in-process). Booleans are stored as 0/1 and days as ISO text, as SQLAlchemy stores them."""
    invitation_id, round_id, group_id, token_hash = who
    cursor = driver.cursor()
    try:
        cursor.execute(_SQLITE_MARK_USED, (invitation_id, round_id, group_id, token_hash, round_id))
        if cursor.rowcount != 1:
            return None
        cursor.execute(_SQLITE_INSERT_BALLOT, (new.id, round_id, group_id, new.receipt,
                                               new.day.isoformat(), int(new.is_paper),
                                               int(new.is_valid)))
        cursor.executemany(_SQLITE_INSERT_RATING, [(new.id, *row) for row in new.ratings])
        cursor.executemany(_SQLITE_INSERT_ITEM, [(new.id, *row) for row in new.items])
        return cursor.execute(_SQLITE_COUNT, (round_id,)).fetchone()[0]
    finally:
        cursor.close()


#: PostgreSQL: the shared lock on the round, then the rest of the cast in one statement. The CTEs
#: mark the invitation used only if it is unused and the round open (exactly one row, or none),
#: and insert the ballot and its ratings only if it was; foreign keys are checked at the end of
#: the statement, when the ballot row exists. The lock must be a statement of its own: a
#: statement's snapshot is taken before it waits, and a mix that commits meanwhile rewrites the
#: invitation row that an older snapshot would look for.
_PG_SHARE_ROUND = "SELECT 1 FROM rounds WHERE id = %(r)s FOR SHARE"
_PG_CAST = """
WITH used AS (UPDATE invitations SET is_used = true
         WHERE id = %(i)s AND round_id = %(r)s AND group_id = %(g)s AND token_hash = %(t)s
           AND NOT is_used
           AND EXISTS (SELECT 1 FROM rounds WHERE id = %(r)s AND status = 'open') RETURNING id),
ballot AS (INSERT INTO ballots (id, round_id, group_id, receipt, cast_on, is_paper, is_valid)
           SELECT %(b)s, %(r)s, %(g)s, %(receipt)s, %(day)s, %(paper)s, %(valid)s FROM used
           RETURNING id),
graded AS (INSERT INTO ratings (ballot_id, participation_id, grade_id, comment)
           SELECT ballot.id, t.p, t.gr, t.c FROM ballot,
                  unnest(CAST(%(p)s AS integer[]), CAST(%(gr)s AS integer[]), CAST(%(c)s AS text[]))
                  AS t(p, gr, c)),
scored AS (INSERT INTO item_ratings (ballot_id, participation_id, item_id, value)
           SELECT ballot.id, t.p, t.i, t.v FROM ballot,
                  unnest(CAST(%(ip)s AS integer[]), CAST(%(ii)s AS integer[]),
                         CAST(%(iv)s AS integer[])) AS t(p, i, v))
SELECT (SELECT count(*) FROM used), (SELECT count(*) FROM ballots WHERE round_id = %(r)s),
       (SELECT mixed_count FROM rounds WHERE id = %(r)s)
"""


def _cast_postgresql(driver, who: tuple[int, int, int, str],
                     new: _NewBallot) -> tuple[int | None, int]:
    """PostgreSQL's cast, committed: (the round's ballot count, or None when the conditional update
    touched no row: then nothing was written, and the commit released only the round lock;
    the round's count at its latest mix).

    The lock, the cast and the commit go to the server in one pipeline, one round trip; the
    server still runs them one after the other, each statement with a snapshot of its own.
    """
    invitation_id, round_id, group_id, token_hash = who
    with driver.pipeline():
        driver.execute(_PG_SHARE_ROUND, {"r": round_id})
        cursor = driver.execute(_PG_CAST, {
            "i": invitation_id, "r": round_id, "g": group_id, "t": token_hash, "b": new.id,
            "receipt": new.receipt, "day": new.day, "paper": new.is_paper, "valid": new.is_valid,
            **_columns(new.ratings, "p", "gr", "c"), **_columns(new.items, "ip", "ii", "iv")})
        driver.commit()
    used, before, mixed_at = cursor.fetchone()
    # The statement's snapshot does not see its own insert: the round holds `before` + 1.
    return (before + 1 if used == 1 else None), mixed_at


def _columns(rows: list[tuple], *names: str) -> dict[str, list]:
    return {name: [row[k] for row in rows] for k, name in enumerate(names)}


def why_refused(session: Session, invitation_id: int, round_id: int) -> str:
    """Why a conditional update touched nothing: used, closed, not_started or unknown."""
    row = session.execute(select(Invitation.is_used, Round.status).join(
        Round, Round.id == Invitation.round_id).where(
        Invitation.id == invitation_id, Invitation.round_id == round_id)).first()
    session.rollback()
    if row is None:
        return "unknown"
    is_used, status = row
    if status == "draft":
        return "not_started"
    if status != "open":
        return "closed"
    return "used" if is_used else "unknown"


# --- mixing: physical order and transaction ids must not relink ballots to invitations ---------

MIXED_TABLES = (("ballots", "round_id = :r"),
                ("ratings", "ballot_id IN (SELECT id FROM ballots WHERE round_id = :r)"),
                ("item_ratings", "ballot_id IN (SELECT id FROM ballots WHERE round_id = :r)"),
                ("invitations", "round_id = :r"))
#: Where mix_round leaves its transaction id for vacuum_after_mix (in the session's info).
_MIX_XID = "pingyi.mix_xid"


def mix_round(session: Session, round_id: int, full: bool = True, every: int = 1) -> bool:
    """Rewrite the round's rows in random order in this transaction (PostgreSQL; the caller commits).

    While open (not `full`), only when `every` ballots or more have come since the latest mix:
    False when another worker has mixed meanwhile.

    A cast marks its invitation used in the same transaction that inserts the ballot, so on
    PostgreSQL both carry the same xmin, and the new row versions of used invitations pile up in
    the order of casting. Rewriting every used invitation in random order gives them all this
    transaction's xmin and a random place among each other, so no join on xmin or on physical
    order links a ballot to an invitation. Unused invitations are left alone: no cast has written
    them, so they hold nothing to hide, and the cost follows the ballots cast rather than the
    links issued. `full` (at close) rewrites every invitation and the ballot rows too, so that
    neither their xmin nor their order says anything about the order of casting.
    SQLite needs none of this: no transaction ids in rows, ballots on random keys without rowids.
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    session.execute(text("SELECT 1 FROM rounds WHERE id = :r FOR UPDATE"), {"r": round_id})
    # Under the lock no cast is in flight: this count is exact.
    count, mixed = session.execute(text(
        "SELECT (SELECT count(*) FROM ballots WHERE round_id = :r), mixed_count FROM rounds"
        " WHERE id = :r"), {"r": round_id}).one()
    if not full and count - mixed < every:
        return False  # another worker has just mixed
    session.execute(text("UPDATE rounds SET mixed_count = :n WHERE id = :r"),
                    {"n": count, "r": round_id})
    # The vacuum after the commit waits for sessions that may still see the rows this deletes.
    session.info[_MIX_XID] = int(session.scalar(text("SELECT pg_current_xact_id()::text")))
    if not full:  # one statement: all rows are deleted before the sort hands out the first
        session.execute(text("WITH gone AS (DELETE FROM invitations WHERE round_id = :r AND is_used"
                             " RETURNING *) INSERT INTO invitations SELECT * FROM gone"
                             " ORDER BY random()"), {"r": round_id})
        return True
    for table, where in MIXED_TABLES:
        session.execute(text(f"CREATE TEMP TABLE mix_{table} ON COMMIT DROP AS "
                             f"SELECT * FROM {table} WHERE {where}"), {"r": round_id})
    # ratings and item ratings go with their ballots (ON DELETE CASCADE)
    session.execute(text("DELETE FROM ballots WHERE round_id = :r"), {"r": round_id})
    session.execute(text("DELETE FROM invitations WHERE round_id = :r"), {"r": round_id})
    for table, _where in MIXED_TABLES:
        session.execute(text(f"INSERT INTO {table} SELECT * FROM mix_{table} ORDER BY random()"))
    return True


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

    A vacuum keeps such versions (VACUUM FULL even copies them into its new file), and those of
    used invitations carry the casts' xmin: a transaction that began before the mix committed,
    such as a long report on another round, would keep the link on disk.
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

    PostgreSQL: once no session may still see what the mix deleted, VACUUM of the invitations
    while open (their old versions carry the casts' xmin), VACUUM FULL of every mixed table at
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
            with sqlite_writer(engine):  # casts wait in line rather than in the busy handler
                if full:
                    conn.exec_driver_sql("VACUUM")
                _checkpoint(conn, attempts=20 if full else 1)


def _vacuum_postgresql(conn, mix_xid: int | None, full: bool) -> None:
    log = logging.getLogger("pingyi")
    tables = ", ".join(table for table, _where in MIXED_TABLES)
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
            for table, _where in MIXED_TABLES:
                conn.exec_driver_sql(f"VACUUM FULL {table}")
        else:  # casts go on meanwhile; an autovacuum already at work is left to finish the job
            conn.exec_driver_sql("VACUUM (SKIP_LOCKED) invitations")
    except OperationalError as exc:  # the lock timeout: someone holds a table
        log.warning("vacuum after a mix gave up waiting for a lock (%s); once the tables are "
                    "free, run: VACUUM%s %s", type(exc.orig).__name__, " FULL" if full else "",
                    tables if full else "invitations")
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
    """Mix the round's used invitations when `every` ballots have come since the latest mix;
    True if so.

    SQLite counts under its write lock: a mix at every multiple of `every`. PostgreSQL casts
    commit side by side and see counts that repeat or skip, so the round remembers its count at
    the latest mix and the mix re-checks under the round's lock.
    """
    if every <= 0:
        return False
    due = (cast.count % every == 0 if cast.mixed_at is None
           else cast.count - cast.mixed_at >= every)
    if not due:
        return False
    if not mix_round(session, round_id, full=False, every=every):
        session.rollback()
        return False
    session.commit()
    vacuum_after_mix(session)
    return True


# --- sealing -----------------------------------------------------------------------------------

def _by_receipt(session: Session):
    """Receipt order as Python sorts strings, whatever the database's collation."""
    if session.get_bind().dialect.name == "postgresql":
        return Ballot.receipt.collate("C")
    return Ballot.receipt


def _ballot_documents(session: Session, round_id: int) -> Iterator[tuple[str, str]]:
    """(receipt, canonical JSON of the ballot's content) for every ballot, in receipt order.

    Two ordered, streamed queries (ratings; item ratings) are walked side by side, so memory
    holds one ballot at a time however large the round.
    """
    order = _by_receipt(session)
    ratings = session.execute(
        select(Ballot.receipt, Ballot.is_valid, Ballot.is_paper, Participation.position,
               func.coalesce(Grade.key, "dont_know"), Rating.comment)
        .join(Rating, Rating.ballot_id == Ballot.id)
        .join(Participation, Participation.id == Rating.participation_id)
        .outerjoin(Grade, Grade.id == Rating.grade_id)
        .where(Ballot.round_id == round_id).order_by(order, Participation.position)
        .execution_options(yield_per=5000))
    items = session.execute(
        select(Ballot.receipt, Participation.position, Item.key, ItemRating.value)
        .join(ItemRating, ItemRating.ballot_id == Ballot.id)
        .join(Participation, Participation.id == ItemRating.participation_id)
        .join(Item, Item.id == ItemRating.item_id)
        .where(Ballot.round_id == round_id).order_by(order, Participation.position)
        .execution_options(yield_per=5000))
    item_groups = itertools.groupby(items, key=lambda row: row[0])
    pending = next(item_groups, None)
    for receipt, rows in itertools.groupby(ratings, key=lambda row: row[0]):
        by_position: dict[int, dict] = {}
        if pending is not None and pending[0] == receipt:
            for _r, position, item_key, value in pending[1]:
                by_position.setdefault(position, {})[item_key] = value
            pending = next(item_groups, None)
        doc = {"ratings": {}}
        for _r, is_valid, is_paper, position, grade, comment in rows:
            doc["valid"], doc["paper"] = is_valid, is_paper
            doc["ratings"][str(position)] = [grade, comment or "", by_position.get(position, {})]
        yield receipt, json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def seal_chain(fingerprint: str, documents: Iterable[tuple[str, str]]) -> str:
    """Head of the SHA-256 chain over (receipt, content) pairs, starting from the fingerprint."""
    head = hashlib.sha256(f"pingyi-seal:{fingerprint}".encode()).hexdigest()
    for receipt, content in documents:
        head = hashlib.sha256(f"{head}\n{receipt}\n{content}".encode("utf-8")).hexdigest()
    return head


def _seal(session: Session, round_: Round) -> tuple[str, int]:
    """The chain head over the round's ballots, and how many there are."""
    count = 0

    def counted():
        nonlocal count
        for document in _ballot_documents(session, round_.id):
            count += 1
            yield document

    return seal_chain(round_.fingerprint, counted()), count


def seal_round(session: Session, round_: Round) -> None:
    """Compute and store the seal over the round's ballots (flushes; the caller commits)."""
    head, count = _seal(session, round_)
    session.execute(update(Round).where(Round.id == round_.id).values(
        seal_head=head, sealed_count=count).execution_options(synchronize_session=False))


def verify_seal(session: Session, round_: Round) -> tuple[bool, str, int]:
    """Recompute the seal: (holds, recomputed head, ballots counted)."""
    head, count = _seal(session, round_)
    return head == round_.seal_head and count == round_.sealed_count, head, count


def receipts(session: Session, round_id: int) -> list[str]:
    """Every receipt of the round, sorted (the bulletin's order)."""
    return list(session.scalars(select(Ballot.receipt).where(Ballot.round_id == round_id)
                                .order_by(_by_receipt(session))))
