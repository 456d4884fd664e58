"""The hash-chained audit log of state changes (never anything about a vote)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from core.extensions import db
from core.types import UTCDateTime, utcnow


class AuditEntry(db.Model):
    """One state change: who did what, when; chained to the previous entry by SHA-256."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: The staff e-mail, or "cli:<system user>" for commands.
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(64))
    #: Plain id, no foreign key: the log outlives what it describes.
    round_id: Mapped[int | None] = mapped_column(index=True)
    #: Canonical JSON of the details.
    detail: Mapped[str] = mapped_column(Text, default="{}")
    #: Hash of the previous entry ("0" * 64 for the first); unique, so the chain cannot fork.
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)
