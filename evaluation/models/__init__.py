"""All of Pingyi's tables, one module per aggregate."""

from evaluation.models.accounts import ROLES, User
from evaluation.models.audit import AuditEntry
from evaluation.models.ballots import Ballot, Invitation, Rating, UsedInvitation
from evaluation.models.people import Cadre, Participation
from evaluation.models.rounds import (
    ROUND_STATUSES, TRIM_METHODS, VALIDITY_MODES, Dimension, Grade, GroupTarget, Item,
    RaterGroup, Round,
)

__all__ = [
    "ROLES", "ROUND_STATUSES", "TRIM_METHODS", "VALIDITY_MODES", "AuditEntry", "Ballot", "Cadre",
    "Dimension", "Grade", "GroupTarget", "Invitation", "Item", "Participation",
    "RaterGroup", "Rating", "Round", "UsedInvitation", "User",
]
