"""The audit log: append state changes to a SHA-256 chain, and verify the chain."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.types import utcnow
from evaluation.models import AuditEntry

GENESIS = "0" * 64


def _entry_hash(prev_hash: str, at: str, actor: str, action: str, round_id, detail: str) -> str:
    payload = json.dumps([prev_hash, at, actor, action, round_id, detail], ensure_ascii=False,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def record(session: Session, actor: str, action: str, round_id: int | None = None,
           **detail) -> AuditEntry:
    """Append one entry after the current head (flushes; the caller commits).

    The unique prev_hash column makes two concurrent appends after the same head collide, so
    the later transaction fails instead of forking the chain.
    """
    head = session.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1))
    prev = head or GENESIS
    at = utcnow()
    text = json.dumps(detail, sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                      default=str)
    entry = AuditEntry(at=at, actor=actor, action=action, round_id=round_id, detail=text,
                       prev_hash=prev,
                       hash=_entry_hash(prev, at.isoformat(), actor, action, round_id, text))
    session.add(entry)
    session.flush()
    return entry


#: Tries of an append (with what goes with it) that keeps losing the head to other appends.
ATTEMPTS = 20


def commit_entry(session: Session, actor: str, action: str, round_id: int | None = None, *,
                 write: Callable[[], None] | None = None, attempts: int = ATTEMPTS,
                 **detail) -> None:
    """Run write() if given, append one entry after it, and commit both in one transaction.

    When another append took the same head meanwhile (the entry clashes when it is written on
    PostgreSQL, on commit on SQLite), everything is rolled back and done again with the new
    head; IntegrityError after `attempts`. Whatever write() raises otherwise goes through.
    """
    for attempt in range(attempts):
        try:
            if write is not None:
                write()
            record(session, actor, action, round_id, **detail)
            session.commit()
            return
        except IntegrityError:
            session.rollback()
            if attempt == attempts - 1:
                raise


def verify_chain(session: Session) -> list[int]:
    """Ids of entries whose hash or link does not hold; empty when the chain is intact."""
    broken: list[int] = []
    prev = GENESIS
    for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id)):
        expected = _entry_hash(prev, entry.at.isoformat(), entry.actor, entry.action,
                               entry.round_id, entry.detail)
        if entry.prev_hash != prev or entry.hash != expected:
            broken.append(entry.id)
        prev = entry.hash
    return broken


def entries_for_round(session: Session, round_id: int) -> list[AuditEntry]:
    """The log of one round, oldest first."""
    return list(session.scalars(
        select(AuditEntry).where(AuditEntry.round_id == round_id).order_by(AuditEntry.id)))
