"""Mail each address its own link; safe to re-run; remind those whose link is unused."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from evaluation import audit
from evaluation.accounts import EMAIL_RE
from evaluation.imports import read_table
from evaluation.invitations import (
    ISSUABLE, MAX_LINKS_AT_ONCE, IssueError, IssuedLink, Keys, Listed, group_of, issue_links,
    mark_sent, reissue_to_send, unsend,
)
from evaluation.errors import N_, ImportRowsError, Problem
from evaluation.mailer import Mailer, MailError, invitation_message
from evaluation.models import Invitation, Round

Progress = Callable[[int, int, str], None]

#: Why a file is refused: commands print these, pages word them for themselves.
EMPTY_FILE = "file: it is empty"
NO_EMAIL_COLUMN = "row 1: an 'email' column is required"


@dataclass
class MailReport:
    """What a sending run did."""

    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: (address, why): Pingyi's own reasons as Problems (pages translate them), a mail
    #: server's as it said them
    failed: list[tuple[str, str | Problem]] = field(default_factory=list)


def read_addresses(filename: str, data: bytes) -> tuple[list[str], list[tuple[str, Problem]]]:
    """Addresses from the `email` column of a CSV or XLSX file, and the bad ones with why."""
    rows = [r for r in read_table(filename, data) if any(r)]
    if not rows:
        raise ImportRowsError(EMPTY_FILE)
    header = [h.strip().lower() for h in rows[0]]
    column = next((i for i, h in enumerate(header) if h in ("email", "e-mail", "邮箱", "电子邮箱")), None)
    if column is None:
        raise ImportRowsError(NO_EMAIL_COLUMN)
    good, bad, seen = [], [], set()
    for number, row in enumerate(rows[1:], start=2):
        address = (row[column] if column < len(row) else "").strip().lower()
        if not EMAIL_RE.match(address) or len(address) > 254:
            bad.append((address or f"(row {number})",
                        Problem.of(N_("row {row}: not an e-mail address"), row=number)))
        elif address not in seen:
            seen.add(address)
            good.append(address)
    return good, bad


class RoundClosedForMail(IssueError):
    """The round no longer takes mail (it closed, or never opened for reminders)."""

    def __init__(self, status: str, wanted: tuple[str, ...]):
        super().__init__(f"this round is {status}: mail goes out while it is "
                         f"{' or '.join(wanted)}")
        self.status = status


def _still_takes_mail(session: Session, round_id: int, statuses: tuple[str, ...]) -> None:
    """Checked before every message: a round can close while its mail goes out."""
    status = session.scalar(select(Round.status).where(Round.id == round_id))
    if status not in statuses:
        raise RoundClosedForMail(status or "gone", statuses)


def _deliver(session: Session, mailer: Mailer, round_: Round, link: IssuedLink, base_url: str,
             reminder: bool, report: MailReport, restore: dict) -> None:
    """Send one link, already marked as mailed (committed: nothing stays locked meanwhile);
    if the message cannot go out, put back `restore` (see unsend)."""
    message = invitation_message(mailer.settings.sender, link.email, round_.title, base_url,
                                 link.token, link.display_code, reminder)
    try:
        mailer.send(message)
    except MailError as exc:
        unsend(session, link, restore)
        # A server's refusal may quote the message: the report never shows the link or code.
        why = exc.args[0].replace(link.token, "…").replace(link.display_code, "…")
        report.failed.append((link.email, why))
        return
    except BaseException:  # the mail server went away: this one was not sent either
        session.rollback()
        try:
            unsend(session, link, restore)
        except SQLAlchemyError as exc:
            session.rollback()
            logging.getLogger("pingyi").warning("could not mark a message as unsent: %s",
                                                type(exc).__name__)
        raise
    report.sent.append(link.email)


def _listed(invitation: Invitation) -> Listed:
    return Listed(invitation.id, invitation.round_id, invitation.email, invitation.token_hash,
                  invitation.code_hash, invitation.last_sent_on)


def invite(session: Session, round_: Round, group_key: str, addresses: list[str], keys: Keys,
           mailer: Mailer, base_url: str, actor: str, progress: Progress,
           report: MailReport | None = None) -> MailReport:
    """Send every new address its own link; addresses already sent to are skipped.

    Each link is marked as mailed (and committed) just before its message goes out, and put
    back if the message cannot go out, so a second mailing running at the same time, or started
    again after a crash, never mails the same address a second link. Pass `report` to keep what
    was done when the mailing stops early (a mail server that goes away, a round that closes
    meanwhile: RoundClosedForMail).
    """
    report = MailReport() if report is None else report
    _still_takes_mail(session, round_.id, ISSUABLE)
    group = group_of(round_, group_key)
    existing = {inv.email: inv for inv in session.scalars(select(Invitation).where(
        Invitation.round_id == round_.id, Invitation.email.in_(addresses)))} if addresses else {}
    new = [a for a in addresses if a not in existing]
    unsent: list[Listed] = []
    for address, inv in existing.items():
        if inv.group_id != group.id:
            report.failed.append((address, Problem.of(N_("invited already, in another group"))))
        elif inv.last_sent_on is not None:
            report.skipped.append(address)
        elif not inv.is_used:
            unsent.append(_listed(inv))  # issued before, never sent: a fresh link goes out
    links: list[IssuedLink] = []
    for start in range(0, len(new), MAX_LINKS_AT_ONCE):
        chunk = new[start:start + MAX_LINKS_AT_ONCE]
        links += issue_links(session, round_, group.key, len(chunk), keys, actor, emails=chunk)
    todo: list[IssuedLink | Listed] = [*links, *unsent]
    today = dt.date.today()
    for n, item in enumerate(todo, start=1):
        _still_takes_mail(session, round_.id, ISSUABLE)
        if isinstance(item, IssuedLink):
            link = item if mark_sent(session, item, today) else None
        else:
            link = reissue_to_send(session, item, keys, today)
        if link is None:  # mailed by another run, or used, meanwhile
            report.skipped.append(item.email)
        else:
            _deliver(session, mailer, round_, link, base_url, False, report,
                     restore={"last_sent_on": None})
        progress(n, len(todo), item.email)
    return report


def remind(session: Session, round_: Round, keys: Keys, mailer: Mailer, base_url: str, actor: str,
           progress: Progress, report: MailReport | None = None) -> MailReport:
    """Mail a fresh link to every address sent a link that is still unused (open rounds only).

    A reminder that cannot go out gives the voter's previous link back. Addresses whose first
    message never went out are for `invite` to retry, not for reminders.
    """
    report = MailReport() if report is None else report
    _still_takes_mail(session, round_.id, ("open",))
    pending = [_listed(inv) for inv in session.scalars(select(Invitation).where(
        Invitation.round_id == round_.id, Invitation.email.is_not(None),
        Invitation.last_sent_on.is_not(None), Invitation.is_used.is_(False)).order_by(Invitation.id))]
    audit.record(session, actor, "links.remind", round_.id, count=len(pending))
    session.commit()
    today = dt.date.today()
    for n, listed in enumerate(pending, start=1):
        _still_takes_mail(session, round_.id, ("open",))
        link = reissue_to_send(session, listed, keys, today)
        if link is None:  # used, or reminded by another run, meanwhile
            report.skipped.append(listed.email)
        else:
            _deliver(session, mailer, round_, link, base_url, True, report, restore={
                "token_hash": listed.token_hash, "code_hash": listed.code_hash,
                "last_sent_on": listed.last_sent_on})
        progress(n, len(pending), listed.email)
    return report
