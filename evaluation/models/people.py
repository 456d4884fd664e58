"""Cadres as persistent people, and their participation in a round."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.extensions import db

if TYPE_CHECKING:
    from evaluation.models.rounds import Round


class Cadre(db.Model):
    """A person in a leading post, kept across rounds so that history can be shown."""

    __tablename__ = "cadres"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: The unit's own stable identifier for the person (e.g. a staff number).
    key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))

    participations: Mapped[list["Participation"]] = relationship(back_populates="cadre")


class Participation(db.Model):
    """A cadre as evaluated in one round: post, unit and KPI at that time."""

    __tablename__ = "participations"
    __table_args__ = (
        UniqueConstraint("round_id", "cadre_id"),
        UniqueConstraint("round_id", "position"),
        CheckConstraint("kpi IS NULL OR (kpi >= 0 AND kpi <= 100)", name="kpi_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    round_id: Mapped[int] = mapped_column(ForeignKey("rounds.id", ondelete="CASCADE"), index=True)
    cadre_id: Mapped[int] = mapped_column(ForeignKey("cadres.id"), index=True)
    #: Order on the ballot, from 0.
    position: Mapped[int]
    post: Mapped[str | None] = mapped_column(String(200))
    unit: Mapped[str | None] = mapped_column(String(200))
    #: KPI completion, 0-100, entered or imported by the organiser.
    kpi: Mapped[float | None]

    round: Mapped["Round"] = relationship(back_populates="participations")
    cadre: Mapped[Cadre] = relationship(back_populates="participations", lazy="joined")

    @property
    def key(self) -> str:
        return self.cadre.key

    @property
    def name(self) -> str:
        return self.cadre.name
