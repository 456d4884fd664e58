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

from sqlalchemy import bindparam, exists, func, insert, select, text, update
from sqlalchemy.orm import Session

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


#: Marks an invitation used only if it is unused, of this round and group, and the round is open.
_MARK_USED = (
    update(Invitation.__table__)
    .where(Invitation.id == bindparam("i"), Invitation.round_id == bindparam("r"),
           Invitation.group_id == bindparam("g"), Invitation.token_hash == bindparam("t"),
           Invitation.is_used.is_(False),
           exists().where(Round.id == bindparam("r"), Round.status == "open"))
    .values(is_used=True))
_INSERT_BALLOT = insert(Ballot.__table__)
_INSERT_RATINGS = insert(Rating.__table__)
_INSERT_ITEMS = insert(ItemRating.__table__)


@dataclass(frozen=True)
class Cast:
    """A recorded ballot: its receipt, and how many ballots the round holds with it."""

    receipt: str
    count: int


_COUNT = select(func.count()).select_from(Ballot.__table__).where(Ballot.round_id == bindparam("r"))


def cast_ballot(session: Session, invitation_id: int, round_id: int, group_id: int,
                parsed: ParsedBallot, invalidate: bool, token_hash: str,
                is_paper: bool = False) -> Cast:
    """Record one ballot for an invitation. CastError changes nothing.

    token_hash is the invitation's link hash as the voter received it: a link re-issued since
    (a reminder) voids the old one, and so the session opened with it.
    """
    conn = session.connection()
    is_valid = not (invalidate and parsed.suspicious)
    try:
        if conn.dialect.name == "postgresql":
            cast = _cast_in_one_statement(conn, (invitation_id, round_id, group_id, token_hash),
                                          parsed, is_valid, is_paper)
        else:
            used = conn.execute(_MARK_USED, {"i": invitation_id, "r": round_id, "g": group_id,
                                             "t": token_hash})
            cast = None
            if used.rowcount == 1:
                receipt = _insert_ballot(conn, round_id, group_id, parsed, is_valid, is_paper)
                cast = Cast(receipt, conn.execute(_COUNT, {"r": round_id}).scalar_one())
        if cast is None:
            session.rollback()
            raise CastError(why_refused(session, invitation_id, round_id))
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return cast


def _insert_ballot(conn, round_id: int, group_id: int, parsed: ParsedBallot, is_valid: bool,
                   is_paper: bool) -> str:
    """SQLite's cast after the conditional update: the ballot row, then its ratings (executemany
    costs no round trips in-process)."""
    ballot_id, receipt = secrets.token_hex(16), new_receipt()
    conn.execute(_INSERT_BALLOT, {"id": ballot_id, "round_id": round_id, "group_id": group_id,
                                  "receipt": receipt, "cast_on": today(), "is_paper": is_paper,
                                  "is_valid": is_valid})
    conn.execute(_INSERT_RATINGS, [
        {"ballot_id": ballot_id, "participation_id": p, "grade_id": g, "comment": c}
        for p, g, c, _items in parsed.answers])
    items = [{"ballot_id": ballot_id, "participation_id": p, "item_id": i, "value": v}
             for p, _g, _c, its in parsed.answers for i, v in its]
    if items:
        conn.execute(_INSERT_ITEMS, items)
    return receipt


#: PostgreSQL: after the round lock, the rest of the cast in one statement and one round trip.
#: The CTEs mark the invitation used only if it is unused and the round open (exactly one row, or
#: none), and insert the ballot and its ratings only if it was; foreign keys are checked at the
#: end of the statement, when the ballot row exists. The lock must be a statement of its own:
#: a statement's snapshot is taken before it waits, and a mix that commits meanwhile rewrites
#: the invitation row that an older snapshot would look for.
_SHARE_ROUND = text("SELECT 1 FROM rounds WHERE id = :r FOR SHARE")
_PG_CAST = text("""
WITH used AS (UPDATE invitations SET is_used = true
         WHERE id = :i AND round_id = :r AND group_id = :g AND token_hash = :t AND NOT is_used
           AND EXISTS (SELECT 1 FROM rounds WHERE id = :r AND status = 'open') RETURNING id),
ballot AS (INSERT INTO ballots (id, round_id, group_id, receipt, cast_on, is_paper, is_valid)
           SELECT :b, :r, :g, :receipt, :day, :paper, :valid FROM used RETURNING id),
graded AS (INSERT INTO ratings (ballot_id, participation_id, grade_id, comment)
           SELECT ballot.id, t.p, t.gr, t.c FROM ballot,
                  unnest(CAST(:p AS integer[]), CAST(:gr AS integer[]), CAST(:c AS text[]))
                  AS t(p, gr, c)),
scored AS (INSERT INTO item_ratings (ballot_id, participation_id, item_id, value)
           SELECT ballot.id, t.p, t.i, t.v FROM ballot,
                  unnest(CAST(:ip AS integer[]), CAST(:ii AS integer[]), CAST(:iv AS integer[]))
                  AS t(p, i, v))
SELECT (SELECT count(*) FROM used), (SELECT count(*) FROM ballots WHERE round_id = :r)
""")


def _cast_in_one_statement(conn, who: tuple[int, int, int, str], parsed: ParsedBallot,
                           is_valid: bool, is_paper: bool) -> Cast | None:
    """PostgreSQL's cast, or None when the conditional update touched no row.

    who: (invitation id, round id, group id, token hash).
    """
    invitation_id, round_id, group_id, token_hash = who
    ballot_id, receipt = secrets.token_hex(16), new_receipt()
    ratings = [(pid, grade_id, comment) for pid, grade_id, comment, _items in parsed.answers]
    items = [(pid, item_id, value) for pid, _g, _c, its in parsed.answers for item_id, value in its]
    conn.execute(_SHARE_ROUND, {"r": round_id})
    used, before = conn.execute(_PG_CAST, {
        "i": invitation_id, "r": round_id, "g": group_id, "t": token_hash, "b": ballot_id,
        "receipt": receipt,
        "day": today(), "paper": is_paper, "valid": is_valid,
        **_columns(ratings, "p", "gr", "c"), **_columns(items, "ip", "ii", "iv")}).one()
    # The statement's snapshot does not see its own insert: the round holds `before` + 1.
    return Cast(receipt, before + 1) if used == 1 else None


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


def mix_round(session: Session, round_id: int, full: bool = True) -> None:
    """Rewrite the round's rows in random order in this transaction (PostgreSQL; the caller commits).

    A cast marks its invitation used in the same transaction that inserts the ballot, so on
    PostgreSQL both carry the same xmin. Rewriting every invitation of the round (cheap: one row
    each) gives them all this transaction's xmin and a random place on disk, so no join on xmin or
    on physical order links a ballot to an invitation. `full` (at close) rewrites the ballot rows
    too, so that neither their xmin nor their order says anything about the order of casting.
    SQLite needs none of this: no transaction ids in rows, ballots on random keys without rowids.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(text("SELECT 1 FROM rounds WHERE id = :r FOR UPDATE"), {"r": round_id})
    tables = MIXED_TABLES if full else MIXED_TABLES[3:]
    for table, where in tables:
        session.execute(text(f"CREATE TEMP TABLE mix_{table} ON COMMIT DROP AS "
                             f"SELECT * FROM {table} WHERE {where}"), {"r": round_id})
    if full:  # ratings and item ratings go with their ballots (ON DELETE CASCADE)
        session.execute(text("DELETE FROM ballots WHERE round_id = :r"), {"r": round_id})
    session.execute(text("DELETE FROM invitations WHERE round_id = :r"), {"r": round_id})
    for table, _where in tables:
        session.execute(text(f"INSERT INTO {table} SELECT * FROM mix_{table} ORDER BY random()"))


def vacuum_after_mix(session: Session, full: bool = False) -> None:
    """Clear old row versions after a mix, outside any transaction.

    PostgreSQL: VACUUM (FULL at close: the tables are rewritten into new files). SQLite: VACUUM
    rebuilds the file at close (secure_delete zeroes freed pages anyway), and the WAL, which holds
    pages in commit order, is checkpointed and truncated.
    """
    session.commit()  # end whatever transaction the session holds
    engine = session.get_bind()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            for table, _where in MIXED_TABLES if full else MIXED_TABLES[3:]:
                conn.execute(text(f"VACUUM {'FULL ' if full else ''}{table}"))
        elif engine.dialect.name == "sqlite":
            if full:
                conn.exec_driver_sql("VACUUM")
            _checkpoint(conn, attempts=20 if full else 1)


def _checkpoint(conn, attempts: int) -> None:
    """Empty SQLite's write-ahead log; readers in flight can hold it, so retry a little."""
    for _ in range(attempts):
        if not conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()[0]:
            return
        time.sleep(0.1)
    logging.getLogger("pingyi").warning("WAL checkpoint incomplete: readers were active")


def maybe_mix(session: Session, round_id: int, every: int, count: int) -> bool:
    """When the round's ballot count reaches a multiple of `every`, mix its invitations; True if so."""
    if every <= 0 or count % every:
        return False
    mix_round(session, round_id, full=False)
    session.commit()
    # No VACUUM here: it can stall behind autovacuum, and only VACUUM FULL (at close) rewrites
    # the files anyway. SQLite's write-ahead log, which keeps pages in commit order, is emptied.
    if session.get_bind().dialect.name == "sqlite":
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
