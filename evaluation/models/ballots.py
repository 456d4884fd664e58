"""The eligibility ledger (invitations) and the ballot box (ballots, ratings), kept unlinkable.

Nothing joins a ballot to an invitation: no foreign key, no shared id or sequence, random ballot
ids, no time finer than the day on either side. On SQLite the ballot tables are WITHOUT ROWID on
random keys, so their physical order says nothing about voting order.

That an invitation was used is a row of its own (UsedInvitation), not a flag on the invitation:
a cast writes that narrow row beside its ballot, and the mixes that keep transaction ids and
physical order from relinking the two (evaluation.mixing) rewrite those rows only, not the wide,
four-times-indexed invitations.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Date, ForeignKey, ForeignKeyConstraint, Index, LargeBinary, String, Text, UniqueConstraint,
    exists, false as sa_false, text, true as sa_true,
)
from sqlalchemy.orm import Mapped, column_property, mapped_column

from core.extensions import db


class Invitation(db.Model):
    """The right to cast one ballot in one rater group; whether it was used is a UsedInvitation."""

    __tablename__ = "invitations"
    __table_args__ = (
        UniqueConstraint("round_id", "email"),
        # What a used invitation's row points at: an invitation of that round.
        UniqueConstraint("round_id", "id"),
        # One key for both: the group is one of the round's. No action on delete: a group (or
        # round) with links issued keeps them, and cannot be deleted.
        ForeignKeyConstraint(["round_id", "group_id"], ["rater_groups.round_id", "rater_groups.id"]),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    #: A round's invitations (of one group too) are found through the (round_id, email) index.
    round_id: Mapped[int]
    group_id: Mapped[int]
    #: Keyed hash of the link secret; the secret itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: Keyed hash of the short code typed in when a QR code cannot be scanned.
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: Where the link was mailed; null for printed slips.
    email: Mapped[str | None] = mapped_column(String(254))
    issued_on: Mapped[dt.date] = mapped_column(Date)
    last_sent_on: Mapped[dt.date | None] = mapped_column(Date)


class UsedInvitation(db.Model):
    """That an invitation was used: written by the cast that records its ballot, in the same
    transaction, and never removed. The primary key makes a second use impossible; the foreign
    key, that the invitation is one of the round's.

    Keyed by round first, so that a mix finds a round's rows by the key; WITHOUT ROWID on
    SQLite, so that the physical order is the invitations' order of issue, never of voting.
    """

    __tablename__ = "used_invitations"
    __table_args__ = (
        ForeignKeyConstraint(["round_id", "invitation_id"],
                             ["invitations.round_id", "invitations.id"]),
        # The rows waiting for a mix, and only those: counting them costs the same in a round
        # of fifty ballots as in one of fifty thousand. Always empty on SQLite.
        Index("ix_used_invitations_unmixed", "round_id", postgresql_where=text("NOT mixed"),
              sqlite_where=text("NOT mixed")),
        {"sqlite_with_rowid": False},
    )

    round_id: Mapped[int] = mapped_column(primary_key=True)
    invitation_id: Mapped[int] = mapped_column(primary_key=True)
    #: PostgreSQL: false from the cast until a mix (evaluation.mixing) has rewritten the row,
    #: which until then carries its cast's transaction id, as the ballot does; a mix is due once
    #: PINGYI_MIX_EVERY rows wait. SQLite's rows carry no transaction id and are written true.
    #: True for every row of a sealed round.
    mixed: Mapped[bool] = mapped_column(default=False, server_default=sa_false())


#: Read like a column (in queries and on loaded invitations); written only by casting.
Invitation.is_used = column_property(
    exists().where(UsedInvitation.invitation_id == Invitation.id,
                   UsedInvitation.round_id == Invitation.round_id))


class Ballot(db.Model):
    """One cast ballot: random id, rater group, receipt; the day only, never the time."""

    __tablename__ = "ballots"
    __table_args__ = ({"sqlite_with_rowid": False},)

    #: 128 random bits, hex: ordering by id says nothing about order of casting.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("rater_groups.id"), index=True)
    #: Random code shown to the voter and listed on the bulletin.
    receipt: Mapped[str] = mapped_column(String(32), unique=True)
    cast_on: Mapped[dt.date] = mapped_column(Date)
    is_paper: Mapped[bool] = mapped_column(default=False)
    #: False when the round's validity rule invalidated the ballot (same grade for all, all
    #: Excellent); an invalid ballot is kept and listed on the bulletin but never counted.
    is_valid: Mapped[bool] = mapped_column(default=True, server_default=sa_true())


class Rating(db.Model):
    """What a ballot gives one cadre: the overall grade (null: "don't know"), the item scores
    and the comment."""

    __tablename__ = "ratings"
    __table_args__ = ({"sqlite_with_rowid": False},)

    ballot_id: Mapped[str] = mapped_column(
        ForeignKey("ballots.id", ondelete="CASCADE"), primary_key=True)
    #: Not indexed on its own (migration 0009): an index led by the cadre takes one entry per
    #: cadre at a random place (the ballot id) on every cast, a dozen pages written where the
    #: rest of the ballot takes seven. Deleting a participation, which only a draft round
    #: allows (drafts hold no ratings), scans the ratings instead, as deleting a grade does.
    participation_id: Mapped[int] = mapped_column(
        ForeignKey("participations.id", ondelete="CASCADE"), primary_key=True)
    grade_id: Mapped[int | None] = mapped_column(ForeignKey("grades.id"))
    comment: Mapped[str | None] = mapped_column(Text)
    #: Every item's score, packed in questionnaire order: see evaluation.packed_scores.
    scores: Mapped[bytes] = mapped_column(LargeBinary)
