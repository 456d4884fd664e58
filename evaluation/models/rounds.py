"""A round: its questionnaire, grade scale, rater groups, rules and lifecycle."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from typing import TYPE_CHECKING

from sqlalchemy import JSON, CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.extensions import db
from core.types import UTCDateTime, utcnow

if TYPE_CHECKING:
    from evaluation.models.people import Participation

ROUND_STATUSES = ("draft", "open", "closed", "published", "archived")
TRIM_METHODS = ("none", "drop_extremes", "proportion")
VALIDITY_MODES = ("warn", "invalidate")


class Labelled:
    """A bilingual label: Chinese and English."""

    label_zh: Mapped[str] = mapped_column(String(200))
    label_en: Mapped[str] = mapped_column(String(200))

    def label(self, locale: str | None = "zh") -> str:
        """The label in the locale ("zh..." or anything else for English)."""
        return self.label_zh if (locale or "zh").startswith("zh") else self.label_en


class Round(db.Model):
    """One evaluation round and its rules; settings freeze when it opens."""

    __tablename__ = "rounds"
    #: sqlite_cast_count is the casts' own: the ORM neither writes it nor reads it back.
    __mapper_args__ = {"eager_defaults": False}
    __table_args__ = (
        CheckConstraint(f"status IN {ROUND_STATUSES!r}", name="status"),
        CheckConstraint(f"trim_method IN {TRIM_METHODS!r}", name="trim_method"),
        CheckConstraint(f"validity IN {VALIDITY_MODES!r}", name="validity"),
        CheckConstraint("item_min < item_max", name="item_scale"),
        CheckConstraint("trim_k >= 0 AND trim_min_n >= 1", name="trim_counts"),
        CheckConstraint("trim_proportion >= 0 AND trim_proportion < 0.5", name="trim_proportion"),
        CheckConstraint("threshold_num > 0 AND threshold_num < threshold_den", name="threshold"),
        CheckConstraint("min_group_size >= 1", name="min_group_size"),
        CheckConstraint("excellent_quota IS NULL OR (excellent_quota > 0 AND excellent_quota <= 1)",
                        name="excellent_quota"),
        CheckConstraint("kpi_weight >= 0 AND kpi_weight <= 1", name="kpi_weight"),
        CheckConstraint("status = 'draft' OR (fingerprint IS NOT NULL AND frozen_spec IS NOT NULL)",
                        name="frozen_when_not_draft"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    period: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="draft")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    opened_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    archived_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    #: Whether the ballot offers the non-scoring "don't know" (不了解).
    dont_know: Mapped[bool] = mapped_column(default=False)
    item_min: Mapped[int] = mapped_column(default=1)
    item_max: Mapped[int] = mapped_column(default=10)
    trim_method: Mapped[str] = mapped_column(String(16), default="drop_extremes")
    #: Values dropped from each end (drop_extremes).
    trim_k: Mapped[int] = mapped_column(default=1)
    #: Share dropped from each end (proportion).
    trim_proportion: Mapped[float] = mapped_column(default=0.0)
    #: Trimming applies only from this many ballots up.
    trim_min_n: Mapped[int] = mapped_column(default=6)
    #: Dissatisfaction threshold as an exact fraction num/den (1/3 by default).
    threshold_num: Mapped[int] = mapped_column(default=1)
    threshold_den: Mapped[int] = mapped_column(default=3)
    #: True: flagged when the share is strictly above the threshold; False: at or above.
    strict: Mapped[bool] = mapped_column(default=True)
    #: Groups with fewer ballots for a cadre are folded into the others and never shown alone.
    min_group_size: Mapped[int] = mapped_column(default=3)
    #: Largest share of the cadres on one ballot that may be graded with the best grade.
    excellent_quota: Mapped[float | None]
    #: Weight of KPI completion in the composite report card.
    kpi_weight: Mapped[float] = mapped_column(default=0.5)
    #: Forced distribution, best band first, e.g. [3, 5, 2]; null for none.
    bands: Mapped[list | None] = mapped_column(JSON)
    reason_required: Mapped[bool] = mapped_column(default=False)
    #: What a suspicious ballot (same grade for all, all Excellent) does: warn or invalidate.
    validity: Mapped[str] = mapped_column(String(16), default="warn")

    #: Canonical JSON of the settings as frozen at opening; its SHA-256 is the fingerprint.
    frozen_spec: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str | None] = mapped_column(String(64))
    #: Head of the SHA-256 chain over the ballots in receipt order, sealed at close.
    seal_head: Mapped[str | None] = mapped_column(String(64))
    #: How many ballots the seal covers.
    sealed_count: Mapped[int | None]
    #: SQLite: the round's ballots, counted by the casts (they take turns, so the count is exact
    #: and costs one small write); a mix is due at every multiple of PINGYI_MIX_EVERY. PostgreSQL
    #: leaves it at 0, since a counter row would make its casts queue: they count the used
    #: invitations waiting for a mix instead (UsedInvitation.mixed).
    sqlite_cast_count: Mapped[int] = mapped_column(server_default="0", deferred=True)

    grades: Mapped[list["Grade"]] = relationship(
        back_populates="round", order_by="Grade.position", cascade="all, delete-orphan")
    dimensions: Mapped[list["Dimension"]] = relationship(
        back_populates="round", order_by="Dimension.position", cascade="all, delete-orphan")
    items: Mapped[list["Item"]] = relationship(
        back_populates="round", order_by="Item.position", cascade="all, delete-orphan",
        overlaps="items")
    groups: Mapped[list["RaterGroup"]] = relationship(
        back_populates="round", order_by="RaterGroup.position", cascade="all, delete-orphan")
    participations: Mapped[list["Participation"]] = relationship(
        back_populates="round", order_by="Participation.position", cascade="all, delete-orphan")

    @property
    def threshold(self) -> Fraction:
        return Fraction(self.threshold_num, self.threshold_den)

    @property
    def is_draft(self) -> bool:
        return self.status == "draft"


class Grade(Labelled, db.Model):
    """One grade of the round's scale; position 0 is the best."""

    __tablename__ = "grades"
    __table_args__ = (UniqueConstraint("round_id", "key"), UniqueConstraint("round_id", "position"))

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(32))
    position: Mapped[int]
    score: Mapped[float]
    #: Counts toward the dissatisfied share.
    is_dissatisfied: Mapped[bool] = mapped_column(default=False)

    round: Mapped[Round] = relationship(back_populates="grades")


class Dimension(Labelled, db.Model):
    """A group of items (德 能 勤 绩 廉), optionally weighted."""

    __tablename__ = "dimensions"
    __table_args__ = (
        UniqueConstraint("round_id", "key"), UniqueConstraint("round_id", "position"),
        CheckConstraint("weight IS NULL OR weight >= 0", name="weight"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(32))
    position: Mapped[int]
    weight: Mapped[float | None]

    round: Mapped[Round] = relationship(back_populates="dimensions")
    #: Items are owned by the round; deleting a dimension must not null their dimension_id.
    items: Mapped[list["Item"]] = relationship(
        back_populates="dimension", order_by="Item.position", overlaps="items,round",
        passive_deletes="all")


class Item(Labelled, db.Model):
    """A questionnaire item, rated on the round's numeric item scale."""

    __tablename__ = "items"
    __table_args__ = (UniqueConstraint("round_id", "key"), UniqueConstraint("round_id", "position"))

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    dimension_id: Mapped[int] = mapped_column(
        ForeignKey("dimensions.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(32))
    #: Order over the whole questionnaire, from 0.
    position: Mapped[int]

    round: Mapped[Round] = relationship(back_populates="items", overlaps="items")
    dimension: Mapped[Dimension] = relationship(back_populates="items", overlaps="items,round")


class RaterGroup(Labelled, db.Model):
    """Superiors, peers, subordinates, the public...: a weighted group of evaluators."""

    __tablename__ = "rater_groups"
    __table_args__ = (
        UniqueConstraint("round_id", "key"), UniqueConstraint("round_id", "position"),
        # The key an invitation's (round, group) pair refers to: see Invitation.
        UniqueConstraint("round_id", "id"),
        CheckConstraint("weight >= 0 AND weight <= 1", name="weight"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(32))
    position: Mapped[int]
    weight: Mapped[float]
    #: True: the group rates every cadre of the round; False: only its targets.
    rates_all: Mapped[bool] = mapped_column(default=True)

    round: Mapped[Round] = relationship(back_populates="groups")
    targets: Mapped[list["GroupTarget"]] = relationship(
        back_populates="group", cascade="all, delete-orphan")


class GroupTarget(db.Model):
    """A cadre that a group with rates_all = False rates."""

    __tablename__ = "group_targets"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("rater_groups.id", ondelete="CASCADE"), primary_key=True)
    participation_id: Mapped[int] = mapped_column(
        ForeignKey("participations.id", ondelete="CASCADE"), primary_key=True, index=True)

    group: Mapped[RaterGroup] = relationship(back_populates="targets")
    participation: Mapped["Participation"] = relationship()
