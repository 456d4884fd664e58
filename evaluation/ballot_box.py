"""The ballot box: cast a ballot atomically and anonymously; seal at close; verify.

Casting is one transaction: (PostgreSQL) a shared lock on the round row, so that closing waits for
ballots in flight; a conditional write that marks the invitation used only if it is unused and the
round open — exactly one row or refuse, never check-then-write (an insert into used_invitations,
whose primary key refuses a second use); then the ballot and its ratings.
The ballot row knows nothing of the invitation; evaluation.mixing keeps physical order and
transaction ids from relinking them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.database import sqlite_writer
from evaluation.ballot_sheet import ParsedBallot
from evaluation.errors import PingyiError
from evaluation.invitations import CODE_ALPHABET
from evaluation.models import Ballot, Grade, Invitation, Item, Participation, Rating, Round
from evaluation.packed_scores import pack, unpack

RECEIPT_LENGTH = 12


class CastError(PingyiError):
    """The ballot was not recorded; `reason` says why: used, closed, not_started, unknown."""

    def __init__(self, reason: str):
        super().__init__(f"ballot refused: {reason}")
        self.reason = reason


def new_receipt() -> str:
    """A random receipt code, grouped for reading: XXXX-XXXX-XXXX.

    One uniform draw below 31^12 written in the code alphabet's 31 digits: every code as
    likely as with one draw per symbol, for one call to the system's random source, not twelve.
    """
    base = len(CODE_ALPHABET)
    number, symbols = secrets.randbelow(base ** RECEIPT_LENGTH), []
    for _ in range(RECEIPT_LENGTH):
        number, digit = divmod(number, base)
        symbols.append(CODE_ALPHABET[digit])
    raw = "".join(symbols)
    return "-".join(raw[i:i + 4] for i in range(0, RECEIPT_LENGTH, 4))


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


@dataclass(frozen=True)
class Cast:
    """A recorded ballot: its receipt, and whether the round is due for a mix (evaluation.mixing).

    SQLite's casts take turns and count the round's ballots exactly: a mix at every multiple of
    the setting. PostgreSQL's commit side by side and count the ballots waiting for a mix (their
    used invitations not yet rewritten): two may see the same number, neither sees the other,
    so the mix counts again under the round's lock.
    """

    receipt: str
    mix_due: bool = False


@dataclass(frozen=True)
class _NewBallot:
    """Everything a cast writes, prepared before the transaction starts."""

    id: str
    receipt: str
    day: dt.date
    is_paper: bool
    is_valid: bool
    #: (participation id, grade id or None, comment or None, packed item scores)
    ratings: list[tuple[int, int | None, str | None, bytes]]

    @classmethod
    def of(cls, parsed: ParsedBallot, is_paper: bool, is_valid: bool) -> "_NewBallot":
        return cls(secrets.token_hex(16), new_receipt(), today(), is_paper, is_valid,
                   [(pid, grade_id, comment, pack(scores))
                    for pid, grade_id, comment, scores in parsed.answers])


def cast_ballot(session: Session, invitation_id: int, round_id: int, group_id: int,
                parsed: ParsedBallot, invalidate: bool, token_hash: str,
                is_paper: bool = False, mix_every: int = 0) -> Cast:
    """Record one ballot for an invitation. CastError changes nothing.

    mix_every is PINGYI_MIX_EVERY (0: never due): the Cast says whether a mix is due.

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
        postgresql = conn.dialect.name == "postgresql"
        try:
            seen = (_cast_postgresql if postgresql else _cast_sqlite)(conn.engine, driver, who, new)
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _as_sqlalchemy_error(conn, exc) from exc
    if seen is None:
        raise CastError(why_refused(session, invitation_id, round_id))
    # PostgreSQL saw the ballots waiting for a mix, SQLite the round's ballots, this one included.
    due = mix_every > 0 and (seen >= mix_every if postgresql else seen % mix_every == 0)
    return Cast(new.receipt, due)


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


#: Marks the invitation used: one row if it is the voter's (its link not re-issued since), the
#: round is open and no ballot was cast with it; none otherwise (ON CONFLICT: used already).
#: Written mixed: SQLite's rows carry no transaction id, so no mix ever needs to rewrite them
#: (a flag waiting for one would show, in any copy of the file, who voted since the latest mix).
_SQLITE_MARK_USED = (
    "INSERT INTO used_invitations (round_id, invitation_id, mixed)"
    " SELECT round_id, id, 1 FROM invitations WHERE id = ? AND round_id = ? AND group_id = ?"
    " AND token_hash = ? AND EXISTS (SELECT 1 FROM rounds WHERE id = ? AND status = 'open')"
    " ON CONFLICT DO NOTHING")
_SQLITE_INSERT_BALLOT = ("INSERT INTO ballots (id, round_id, group_id, receipt, cast_on, is_paper,"
                         " is_valid) VALUES (?, ?, ?, ?, ?, ?, ?)")
_SQLITE_INSERT_RATING = ("INSERT INTO ratings (ballot_id, participation_id, grade_id, comment,"
                         " scores) VALUES (?, ?, ?, ?, ?)")
#: The round's ballots, counted by the casts themselves: they take turns, so the count is exact,
#: and it costs the same however many ballots the round holds.
_SQLITE_COUNT = "UPDATE rounds SET sqlite_cast_count = sqlite_cast_count + 1 WHERE id = ?"
_SQLITE_COUNTED = "SELECT sqlite_cast_count FROM rounds WHERE id = ?"


def _cast_sqlite(engine, driver, who: tuple[int, int, int, str], new: _NewBallot) -> int | None:
    """SQLite's cast, committed, in the writers' queue: the round's ballot count, or None when the
    invitation could not be marked used (then it is rolled back). SQLite holds its write lock from
    the first write to the end of the transaction, so both happen before leaving the queue."""
    count = None
    with sqlite_writer(engine):
        try:
            count = _write_sqlite(driver, who, new)
        finally:
            (driver.rollback if count is None else driver.commit)()
    return count


def _write_sqlite(driver, who: tuple[int, int, int, str], new: _NewBallot) -> int | None:
    """Mark the invitation used, then the ballot and its ratings (executemany costs no round trips
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
        cursor.execute(_SQLITE_COUNT, (round_id,))
        return cursor.execute(_SQLITE_COUNTED, (round_id,)).fetchone()[0]
    finally:
        cursor.close()


#: PostgreSQL: the shared lock on the round, then the rest of the cast in one statement. The CTEs
#: mark the invitation used only if it is unused and the round open (exactly one row, or none:
#: ON CONFLICT waits for a cast or mix in flight on the same invitation, then sees its row; the
#: lock on the invitation waits for a re-issue of its link in flight, then finds the old token
#: gone, as the foreign key's own check would not), and
#: insert the ballot and its ratings only if it was; foreign keys are checked at the end of the
#: statement, when the ballot row exists. The used invitation waits for the next mix (mixed
#: false), sharing its xmin with the ballot until then; the cast counts the round's waiting ones
#: through their partial index. The lock must be a statement of its own: a statement's
#: snapshot is taken before it waits, and would not see a close committed meanwhile.
#: The ratings go as four arrays in binary (%b): psycopg dumps them in well under half the CPU
#: time of the text form.
#: FOR KEY SHARE: closing (FOR UPDATE) waits for the casts in flight, while an open round's
#: periodic mix (FOR NO KEY UPDATE, see evaluation.mixing) neither waits for them nor holds them.
#: Only an open round is locked: once a close has committed the round's new state, later casts
#: take no lock, so a steady stream of voters cannot keep the closing mix waiting.
_PG_SHARE_ROUND = "SELECT 1 FROM rounds WHERE id = %(r)s AND status = 'open' FOR KEY SHARE"
_PG_CAST = """
WITH used AS (INSERT INTO used_invitations (round_id, invitation_id)
         SELECT round_id, id FROM invitations
         WHERE id = %(i)s AND round_id = %(r)s AND group_id = %(g)s AND token_hash = %(t)s
           AND EXISTS (SELECT 1 FROM rounds WHERE id = %(r)s AND status = 'open')
         FOR KEY SHARE OF invitations
         ON CONFLICT DO NOTHING RETURNING invitation_id),
ballot AS (INSERT INTO ballots (id, round_id, group_id, receipt, cast_on, is_paper, is_valid)
           SELECT %(b)s, %(r)s, %(g)s, %(receipt)s, %(day)s, %(paper)s, %(valid)s FROM used
           RETURNING id),
graded AS (INSERT INTO ratings (ballot_id, participation_id, grade_id, comment, scores)
           SELECT ballot.id, t.p, t.gr, t.c, t.s FROM ballot,
                  unnest(CAST(%(p)b AS integer[]), CAST(%(gr)b AS integer[]), CAST(%(c)b AS text[]),
                         CAST(%(s)b AS bytea[])) AS t(p, gr, c, s))
SELECT (SELECT count(*) FROM used),
       (SELECT count(*) FROM used_invitations WHERE round_id = %(r)s AND NOT mixed)
"""


def _cast_postgresql(_engine, driver, who: tuple[int, int, int, str],
                     new: _NewBallot) -> int | None:
    """PostgreSQL's cast, committed: the round's ballots waiting for a mix, this one included, as
    far as this cast can see; or None when the invitation could not be marked used (then nothing
    was written, and the commit released only the round lock).

    The lock, the cast and the commit go to the server in one pipeline, one round trip; the
    server still runs them one after the other, each statement with a snapshot of its own.
    """
    with driver.pipeline():
        driver.execute(_PG_SHARE_ROUND, {"r": who[1]})
        cursor = driver.execute(_PG_CAST, _pg_cast_parameters(who, new))
        driver.commit()
    used, before = cursor.fetchone()
    # The statement's snapshot does not see its own insert: one more than it counted.
    return before + 1 if used == 1 else None


def _pg_cast_parameters(who: tuple[int, int, int, str], new: _NewBallot) -> dict:
    invitation_id, round_id, group_id, token_hash = who
    return {"i": invitation_id, "r": round_id, "g": group_id, "t": token_hash, "b": new.id,
            "receipt": new.receipt, "day": new.day, "paper": new.is_paper, "valid": new.is_valid,
            **_columns(new.ratings, "p", "gr", "c", "s")}


def _columns(rows: list[tuple], *names: str) -> dict[str, list]:
    return {name: [row[k] for row in rows] for k, name in enumerate(names)}


def why_refused(session: Session, invitation_id: int, round_id: int) -> str:
    """Why a cast could not mark its invitation used: used, closed, not_started or unknown."""
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


# --- sealing -----------------------------------------------------------------------------------

def _by_receipt(session: Session):
    """Receipt order as Python sorts strings, whatever the database's collation."""
    if session.get_bind().dialect.name == "postgresql":
        return Ballot.receipt.collate("C")
    return Ballot.receipt


def _ballot_documents(session: Session, round_id: int) -> Iterator[tuple[str, str]]:
    """(receipt, canonical JSON of the ballot's content) for every ballot, in receipt order.

    One ordered, streamed query, so memory holds one ballot at a time however large the round.
    A ballot's item scores are named by item key, blank ones left out.
    """
    item_keys = session.scalars(select(Item.key).where(Item.round_id == round_id)
                                .order_by(Item.position)).all()
    ratings = session.execute(
        select(Ballot.receipt, Ballot.is_valid, Ballot.is_paper, Participation.position,
               func.coalesce(Grade.key, "dont_know"), Rating.comment, Rating.scores)
        .join(Rating, Rating.ballot_id == Ballot.id)
        .join(Participation, Participation.id == Rating.participation_id)
        .outerjoin(Grade, Grade.id == Rating.grade_id)
        .where(Ballot.round_id == round_id).order_by(_by_receipt(session), Participation.position)
        .execution_options(yield_per=5000))
    for receipt, rows in itertools.groupby(ratings, key=lambda row: row[0]):
        doc = {"ratings": {}}
        for _r, is_valid, is_paper, position, grade, comment, scores in rows:
            doc["valid"], doc["paper"] = is_valid, is_paper
            given = {key: v for key, v in zip(item_keys, unpack(scores)) if v is not None}
            doc["ratings"][str(position)] = [grade, comment or "", given]
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
