"""Invitations: issue signed one-time links and short codes, find them again, re-mint unused ones.

The database keeps only digests: SHA-256 of the link's 128-bit secret, and an HMAC of the short
code under the secret key (a 10-character code is short enough to brute-force from a bare hash).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core.signing import BadLinkError, LinkSigner
from evaluation import audit
from evaluation.errors import N_, NotFoundError, PingyiError, Problem
from evaluation.models import Ballot, Invitation, RaterGroup, Round

#: No 0/O, 1/I/L: nothing that reads as something else on a slip.
CODE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 10
MAX_LINKS_AT_ONCE = 2000
ISSUABLE = ("draft", "open")


class IssueError(PingyiError):
    """Links cannot be issued as asked."""


class UnknownLinkError(PingyiError):
    """No invitation answers to this link or code."""


@dataclass(frozen=True)
class IssuedLink:
    """A new link, known only now: the token for the URL and the short code."""

    invitation_id: int
    token: str
    code: str
    email: str | None = None
    #: What the database keeps of this link (the hash of its secret).
    token_hash: str = ""

    @property
    def display_code(self) -> str:
        return display_code(self.code)


@dataclass(frozen=True)
class Keys:
    """What invitations need from the settings: the link signer and the secret keys."""

    signer: LinkSigner
    secret_keys: tuple[str, ...]  # current first, then fallbacks

    @classmethod
    def from_config(cls, config) -> "Keys":
        return cls(LinkSigner(config.secret_key, config.secret_key_fallbacks),
                   (config.secret_key, *config.secret_key_fallbacks))


def token_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def code_digest(code: str, key: str) -> str:
    return hmac.new(key.encode("utf-8"), b"pingyi.code:" + code.encode("ascii"), "sha256").hexdigest()


def normalise_code(text: str) -> str | None:
    """The code as stored (upper case, no separators), or None if it cannot be one."""
    code = re.sub(r"[\s\-–—_.]", "", text or "").upper()
    if len(code) != CODE_LENGTH or any(c not in CODE_ALPHABET for c in code):
        return None
    return code


def display_code(code: str) -> str:
    """A stored code as the slips print it: XXXXX-XXXXX."""
    return f"{code[:5]}-{code[5:]}"


def _new_secret() -> str:
    return secrets.token_urlsafe(16)


def _new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def group_of(round_: Round, group_key: str) -> RaterGroup:
    group = next((g for g in round_.groups if g.key == group_key), None)
    if group is None:
        keys = ", ".join(g.key for g in round_.groups)
        raise IssueError(Problem.of(N_("round {round} has no group {group!r} (it has {keys})"),
                                    "group", round=round_.id, group=group_key, keys=keys))
    return group


#: Issuing this many links at once refreshes PostgreSQL's statistics of the invitations table.
ANALYZE_AFTER = 100


def issue_links(session: Session, round_: Round, group_key: str, count: int, keys: Keys,
                actor: str, emails: list[str] | None = None) -> list[IssuedLink]:
    """Create invitations for a group and return their links (secrets are not kept); commits."""
    if round_.status not in ISSUABLE:
        raise IssueError(Problem.of(
            N_("links can be issued for a draft or open round, not a {status} one"),
            status=round_.status))
    if not 1 <= count <= MAX_LINKS_AT_ONCE:
        raise IssueError(Problem.of(N_("between 1 and {most} at a time, got {got}"), "count",
                                    most=MAX_LINKS_AT_ONCE, got=count))
    group = group_of(round_, group_key)
    today = dt.date.today()
    issued = []
    for n in range(count):
        secret, code = _new_secret(), _new_code()
        invitation = Invitation(round_id=round_.id, group_id=group.id, token_hash=token_digest(secret),
                                code_hash=code_digest(code, keys.secret_keys[0]), issued_on=today,
                                email=emails[n] if emails else None)
        session.add(invitation)
        issued.append((invitation, secret, code))
    session.flush()
    audit.record(session, actor, "links.issue", round_.id, group=group.key, count=count,
                 by_email=bool(emails))
    session.commit()
    if count >= ANALYZE_AFTER and session.get_bind().dialect.name == "postgresql":
        # Fresh statistics: without them the planner may find a ballot's invitation through
        # the round's index, reading every link of the round, until autovacuum catches up.
        try:
            session.execute(text("ANALYZE invitations"))
            session.commit()
        except SQLAlchemyError as exc:  # the links exist: never lose them to the statistics
            session.rollback()
            logging.getLogger("pingyi").warning("ANALYZE invitations skipped: %s",
                                                type(exc).__name__)
    return [IssuedLink(inv.id, keys.signer.dumps(round_.id, secret), code, inv.email,
                       inv.token_hash) for inv, secret, code in issued]


@dataclass(frozen=True)
class Listed:
    """An invitation as a mailing listed it: its link and when it was last mailed, then."""

    id: int
    round_id: int
    email: str
    token_hash: str
    code_hash: str
    last_sent_on: dt.date | None


def reissue_to_send(session: Session, listed: Listed, keys: Keys, sent_on: dt.date
                    ) -> IssuedLink | None:
    """Give a listed invitation a fresh link and mark it mailed on `sent_on`, if it is unused
    and no one has re-issued or mailed it since it was listed; commits, so nothing stays locked
    while the message goes out. None (and nothing changed) otherwise: a concurrent mailing, or
    a vote, got there first."""
    link = _reissue(session, listed.id, listed.round_id, listed.email, keys,
                    Invitation.is_used.is_(False), Invitation.token_hash == listed.token_hash,
                    Invitation.last_sent_on.is_not_distinct_from(listed.last_sent_on),
                    last_sent_on=sent_on)
    (session.commit if link else session.rollback)()
    return link


def mark_sent(session: Session, link: IssuedLink, sent_on: dt.date) -> bool:
    """Mark a new link mailed on `sent_on` before its message goes out, if no one has re-issued
    or mailed it since; commits. False (nothing changed) otherwise."""
    done = session.execute(
        update(Invitation).where(Invitation.id == link.invitation_id,
                                 Invitation.token_hash == link.token_hash,
                                 Invitation.last_sent_on.is_(None))
        .values(last_sent_on=sent_on).execution_options(synchronize_session=False)).rowcount == 1
    (session.commit if done else session.rollback)()
    return done


def unsend(session: Session, link: IssuedLink, restore: dict) -> None:
    """Undo mark_sent or reissue_to_send after the message could not go out: put back what
    `restore` names (a reminder's refused message gives the voter's previous link back), unless
    the link has changed since; commits."""
    session.execute(
        update(Invitation).where(Invitation.id == link.invitation_id,
                                 Invitation.token_hash == link.token_hash)
        .values(**restore).execution_options(synchronize_session=False))
    session.commit()


def _reissue(session: Session, invitation_id: int, round_id: int, email: str | None, keys: Keys,
             *conditions, **values) -> IssuedLink | None:
    secret, code = _new_secret(), _new_code()
    token_hash = token_digest(secret)
    # PostgreSQL: lock the row first (waiting for a cast in flight, which holds it), so that the
    # update's conditions are read afresh, after that cast: the invitation's use is a row of
    # another table, which the update's own snapshot would not see. SQLite writes one at a time.
    session.execute(select(Invitation.id).where(Invitation.id == invitation_id).with_for_update())
    result = session.execute(
        update(Invitation).where(Invitation.id == invitation_id, *conditions)
        .values(token_hash=token_hash, code_hash=code_digest(code, keys.secret_keys[0]), **values)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return None
    return IssuedLink(invitation_id, keys.signer.dumps(round_id, secret), code, email, token_hash)


_INVITATIONS, _ROUNDS = Invitation.__table__, Round.__table__
#: What entering with a link or code needs: the invitation and the state of its round. Core
#: statements, in one query: every voter's first request asks one.
_ENTRY = (select(_INVITATIONS.c.id, _INVITATIONS.c.round_id, _INVITATIONS.c.group_id,
                 _INVITATIONS.c.token_hash, Invitation.is_used.label("is_used"), _ROUNDS.c.status,
                 _ROUNDS.c.fingerprint)
          .join(_ROUNDS, _ROUNDS.c.id == _INVITATIONS.c.round_id))
_BY_TOKEN = _ENTRY.where(_INVITATIONS.c.token_hash == bindparam("t"),
                         _INVITATIONS.c.round_id == bindparam("r"))
_BY_CODE = _ENTRY.where(_INVITATIONS.c.code_hash.in_(bindparam("codes", expanding=True)))
_BY_TICKET = _ENTRY.where(_INVITATIONS.c.id == bindparam("i"),
                          _INVITATIONS.c.round_id == bindparam("r"),
                          _INVITATIONS.c.token_hash == bindparam("t"))


def _entry(session: Session, statement, params: dict):
    """The first row of one of the entry queries, a statement of its own.

    PostgreSQL: on a pooled connection in autocommit, so that the one query of a ballot page
    costs one round trip instead of three (BEGIN, the query, ROLLBACK): measured in one process,
    6-23 % less of the worker's CPU per ballot page (four runs). SQLite, in-process with no
    round trips: in the session's transaction, which there is cheaper than switching the
    connection's isolation level back and forth.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return conn.execute(statement, params).first()
    return session.connection().execute(statement, params).first()


def find_by_token(session: Session, token: str, keys: Keys):
    """The invitation of a genuine link with its round's state (a row: id, round_id, group_id,
    token_hash, is_used, status, fingerprint); BadLinkError before any query for a forged one."""
    payload = keys.signer.loads(token)
    row = _entry(session, _BY_TOKEN, {"t": token_digest(payload.secret), "r": payload.round_id})
    if row is None:
        raise UnknownLinkError("no invitation for this link")
    return row


def find_for_ticket(session: Session, invitation_id: int, round_id: int, token_hash: str):
    """The invitation a voter's session names, as find_by_token gives it; None if it is gone or
    its link was re-issued since (the token hash no longer matches)."""
    return _entry(session, _BY_TICKET, {"i": invitation_id, "r": round_id, "t": token_hash})


def find_by_code(session: Session, text: str, keys: Keys):
    """The invitation of a short code (any current or fallback key), as find_by_token gives it;
    UnknownLinkError if none."""
    code = normalise_code(text)
    if code is None:
        raise UnknownLinkError("not a code")
    digests = [code_digest(code, key) for key in keys.secret_keys]
    row = _entry(session, _BY_CODE, {"codes": digests})
    if row is None:
        raise UnknownLinkError("no invitation for this code")
    return row


def turnout(session: Session, round_: Round) -> list[dict]:
    """Per group: invitations issued and ballots cast; cast hidden below the minimum group size."""
    issued = dict(session.execute(select(Invitation.group_id, func.count()).where(
        Invitation.round_id == round_.id).group_by(Invitation.group_id)).all())
    cast = dict(session.execute(select(Ballot.group_id, func.count()).where(
        Ballot.round_id == round_.id).group_by(Ballot.group_id)).all())
    rows = []
    for group in round_.groups:
        n = cast.get(group.id, 0)
        shown = n >= round_.min_group_size or n == 0
        rows.append({"group": group.key, "label": {"zh": group.label_zh, "en": group.label_en},
                     "issued": issued.get(group.id, 0), "cast": n if shown else None,
                     "below_minimum": not shown})
    return rows


__all__ = ["BadLinkError", "IssueError", "IssuedLink", "Keys", "NotFoundError", "UnknownLinkError",
           "find_by_code", "find_by_token", "find_for_ticket", "issue_links", "mark_sent",
           "reissue_to_send", "turnout", "unsend"]
