"""Use cases behind the evaluator's door: enter with a link or code, load the sheet, cast."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from evaluation import audit
from evaluation.ballot_box import CastError, cast_ballot
from evaluation.mixing import maybe_mix
from evaluation.ballot_sheet import ParsedBallot, Sheet, build_sheet, parse_ballot
from evaluation.errors import NotFoundError
from evaluation.invitations import (
    Keys, UnknownLinkError, find_by_code, find_by_token, find_for_ticket,
)
from evaluation.models import Round


@dataclass(frozen=True)
class Ticket:
    """What the voter's session holds between opening the link and casting."""

    invitation_id: int
    round_id: int
    group_id: int
    #: The round's public fingerprint: names the frozen settings, so the sheet can be cached.
    fingerprint: str
    #: The invitation's token hash when the ticket was issued: a re-issued link voids the ticket.
    token_hash: str

    def to_session(self) -> list:
        return [self.invitation_id, self.round_id, self.group_id, self.fingerprint, self.token_hash]

    @classmethod
    def from_session(cls, value) -> "Ticket | None":
        if (isinstance(value, list) and len(value) == 5
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value[:3])
                and all(isinstance(v, str) and len(v) == 64 for v in value[3:])):
            return cls(*value)
        return None


class BallotInvalidError(Exception):
    """The posted ballot has errors; nothing was stored."""

    def __init__(self, parsed: ParsedBallot, sheet: Sheet):
        super().__init__("invalid ballot")
        self.parsed, self.sheet = parsed, sheet


def _state_of(invitation_used: bool, status: str) -> str | None:
    if status == "draft":
        return "not_started"
    if status != "open":
        return "closed"
    if invitation_used:
        return "used"
    return None


def _ticket(session: Session, entry) -> Ticket:
    """The ticket for an invitation found with its round's state (see find_by_token)."""
    session.rollback()
    refusal = _state_of(entry.is_used, entry.status)
    if refusal:
        raise CastError(refusal)
    return Ticket(entry.id, entry.round_id, entry.group_id, entry.fingerprint, entry.token_hash)


def enter_with_link(session: Session, token: str, keys: Keys) -> Ticket:
    """The ticket for a link; BadLinkError / UnknownLinkError / CastError(reason) otherwise."""
    return _ticket(session, find_by_token(session, token, keys))


def enter_with_code(session: Session, code: str, keys: Keys) -> Ticket:
    """The ticket for a short code; UnknownLinkError / CastError(reason) otherwise."""
    return _ticket(session, find_by_code(session, code, keys))


def sheet_for(session: Session, ticket: Ticket) -> Sheet:
    """The ballot sheet for a ticket that may still vote; CastError(reason) otherwise."""
    entry = find_for_ticket(session, ticket.invitation_id, ticket.round_id, ticket.token_hash)
    session.rollback()
    if entry is None:
        raise CastError("unknown")
    refusal = _state_of(entry.is_used, entry.status)
    if refusal:
        raise CastError(refusal)
    return _cached_sheet(session, ticket.round_id, ticket.group_id, entry.fingerprint)


_SHEETS: dict[tuple, Sheet] = {}
_SHEETS_LOCK = threading.Lock()


def _sheet_key(session: Session, round_id: int, group_id: int, fingerprint: str) -> tuple:
    return (id(session.get_bind()), round_id, group_id, fingerprint)


def _cached_sheet(session: Session, round_id: int, group_id: int, fingerprint: str) -> Sheet:
    """An open round's settings are frozen and the fingerprint names them: safe to cache."""
    key = _sheet_key(session, round_id, group_id, fingerprint)
    sheet = _SHEETS.get(key)
    if sheet is None:
        sheet = build_sheet(session.get(Round, round_id), group_id)
        session.rollback()
        with _SHEETS_LOCK:
            if len(_SHEETS) > 256:
                _SHEETS.clear()
            _SHEETS[key] = sheet
    return sheet


def answers_so_far(session: Session, ticket: Ticket, form) -> tuple[Sheet, dict[str, str]]:
    """The ticket's sheet and the answers in a posted form, kept as given, errors and all;
    nothing is stored. CastError(reason) when the ticket can no longer vote."""
    sheet = sheet_for(session, ticket)
    return sheet, parse_ballot(sheet, form).values


def cast(session: Session, ticket: Ticket, form, mix_every: int, is_paper: bool = False) -> str:
    """Validate a posted ballot and record it; the receipt. BallotInvalidError / CastError."""
    # The conditional update in cast_ballot checks the invitation and the round: a cached sheet
    # spares a query here.
    sheet = _SHEETS.get(_sheet_key(session, ticket.round_id, ticket.group_id, ticket.fingerprint))
    sheet = sheet or sheet_for(session, ticket)
    parsed = parse_ballot(sheet, form)
    if parsed.errors:
        raise BallotInvalidError(parsed, sheet)
    cast_ = cast_ballot(session, ticket.invitation_id, ticket.round_id, ticket.group_id, parsed,
                        invalidate=sheet.validity == "invalidate", token_hash=ticket.token_hash,
                        is_paper=is_paper, mix_every=mix_every)
    try:
        maybe_mix(session, ticket.round_id, mix_every, cast_)
    except SQLAlchemyError as exc:  # the ballot is in: never lose its receipt to a failed mix
        session.rollback()
        logging.getLogger("pingyi").warning("mix skipped: %s", type(exc).__name__)
    return cast_.receipt


# --- paper ballots ---------------------------------------------------------------------------

#: The paper-ballot form's own fields, beside the ballot's: the code written on the paper, and
#: the step (the code alone first, then the ballot of its group).
PAPER_FIELDS = ("code", "step")


def paper_sheet(session: Session, round_id: int, code: str, keys: Keys) -> tuple[Ticket, Sheet]:
    """The ticket and ballot sheet of the code on a paper ballot of this round.

    UnknownLinkError for a code of no invitation, or of another round's; CastError(reason) when
    the code can no longer vote (used, closed, not started).
    """
    ticket = enter_with_code(session, code, keys)
    if ticket.round_id != round_id:
        raise UnknownLinkError("a code of another round")
    return ticket, sheet_for(session, ticket)


def blank_sheet(session: Session, round_: Round, group_key: str) -> Sheet:
    """The ballot sheet of one group of an open round, for blank paper ballots; NotFoundError
    for a group the round has not."""
    group = next((g for g in round_.groups if g.key == group_key), None)
    if group is None:
        raise NotFoundError(f"round {round_.id} has no group {group_key!r}")
    return _cached_sheet(session, round_.id, group.id, round_.fingerprint)


def cast_paper(session: Session, round_id: int, code: str, form, keys: Keys, mix_every: int,
               actor: str) -> str:
    """Record a paper ballot typed in by staff, through the same ballot box as the voters'
    (the code's invitation is used up, so its link or code cannot vote again), and log who
    typed one in; the receipt. UnknownLinkError / CastError / BallotInvalidError, and then
    nothing is stored."""
    ticket, _sheet = paper_sheet(session, round_id, code, keys)
    answers = form.copy()
    for name in PAPER_FIELDS:
        answers.poplist(name)
    receipt = cast(session, ticket, answers, mix_every, is_paper=True)
    try:
        audit.commit_entry(session, actor, "ballot.paper", round_id)
    except SQLAlchemyError as exc:  # the ballot is in: never lose its receipt to the log
        session.rollback()
        logging.getLogger("pingyi").warning("paper ballot not logged: %s", type(exc).__name__)
    return receipt
