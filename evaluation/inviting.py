"""Mail each address its own link; safe to re-run; remind those whose link is unused."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from evaluation import audit
from evaluation.accounts import EMAIL_RE
from evaluation.imports import read_table
from evaluation.invitations import (
    ISSUABLE, IssueError, IssuedLink, Keys, group_of, issue_links, remint,
)
from evaluation.errors import ImportRowsError
from evaluation.mailer import Mailer, MailError, invitation_message
from evaluation.models import Invitation, Round

Progress = Callable[[int, int, str], None]

#: Why a file or an address is refused: commands print these, pages show them translated.
EMPTY_FILE = "file: it is empty"
NO_EMAIL_COLUMN = "row 1: an 'email' column is required"
NOT_AN_ADDRESS = "row {row}: not an e-mail address"
OTHER_GROUP = "invited already, in another group"


@dataclass
class MailReport:
    """What a sending run did."""

    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


def read_addresses(filename: str, data: bytes) -> tuple[list[str], list[tuple[str, str]]]:
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
            bad.append((address or f"(row {number})", NOT_AN_ADDRESS.format(row=number)))
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
             reminder: bool, report: MailReport) -> None:
    """Send one link; commit it as sent (with whatever issued it), or roll that back."""
    message = invitation_message(mailer.settings.sender, link.email, round_.title,
                                 f"{base_url}/v/{link.token}", link.display_code, reminder)
    try:
        mailer.send(message)
    except MailError as exc:
        session.rollback()
        # A server's refusal may quote the message: the report never shows the link or code.
        why = exc.args[0].replace(link.token, "…").replace(link.display_code, "…")
        report.failed.append((link.email, why))
        return
    session.execute(update(Invitation).where(Invitation.id == link.invitation_id)
                    .values(last_sent_on=dt.date.today()).execution_options(synchronize_session=False))
    session.commit()
    report.sent.append(link.email)


def invite(session: Session, round_: Round, group_key: str, addresses: list[str], keys: Keys,
           mailer: Mailer, base_url: str, actor: str, progress: Progress,
           report: MailReport | None = None) -> MailReport:
    """Send every new address its own link; addresses already sent to are skipped.

    Pass `report` to keep what was done when the mailing stops early (a mail server that goes
    away, a round that closes meanwhile: RoundClosedForMail).
    """
    report = MailReport() if report is None else report
    _still_takes_mail(session, round_.id, ISSUABLE)
    group = group_of(round_, group_key)
    existing = {inv.email: inv for inv in session.scalars(select(Invitation).where(
        Invitation.round_id == round_.id, Invitation.email.in_(addresses)))} if addresses else {}
    new = [a for a in addresses if a not in existing]
    unsent = []
    for address, inv in existing.items():
        if inv.group_id != group.id:
            report.failed.append((address, OTHER_GROUP))
        elif inv.last_sent_on is not None:
            report.skipped.append(address)
        elif not inv.is_used:
            unsent.append(inv)
    links = issue_links(session, round_, group.key, len(new), keys, actor, emails=new) if new else []
    # An invitation issued before but never sent gets a fresh link just before its message, and
    # both are committed together, or rolled back together if the message is refused.
    todo: list[IssuedLink | Invitation] = [*links, *unsent]
    for n, item in enumerate(todo, start=1):
        _still_takes_mail(session, round_.id, ISSUABLE)
        link = item if isinstance(item, IssuedLink) else remint(session, item, keys)
        if link is None:  # used meanwhile
            session.rollback()
            report.skipped.append(item.email)
        else:
            _deliver(session, mailer, round_, link, base_url, False, report)
        progress(n, len(todo), link.email if link else item.email)
    return report


def remind(session: Session, round_: Round, keys: Keys, mailer: Mailer, base_url: str, actor: str,
           progress: Progress, report: MailReport | None = None) -> MailReport:
    """Mail a fresh link to every address sent a link that is still unused (open rounds only).

    Addresses whose first message never went out are for `invite` to retry, not for reminders.
    """
    report = MailReport() if report is None else report
    _still_takes_mail(session, round_.id, ("open",))
    pending = list(session.scalars(select(Invitation).where(
        Invitation.round_id == round_.id, Invitation.email.is_not(None),
        Invitation.last_sent_on.is_not(None), Invitation.is_used.is_(False)).order_by(Invitation.id)))
    audit.record(session, actor, "links.remind", round_.id, count=len(pending))
    session.commit()
    for n, invitation in enumerate(pending, start=1):
        _still_takes_mail(session, round_.id, ("open",))
        link = remint(session, invitation, keys)
        if link is None:
            session.rollback()
            report.skipped.append(invitation.email)
        else:
            _deliver(session, mailer, round_, link, base_url, True, report)
        progress(n, len(pending), invitation.email)
    return report
