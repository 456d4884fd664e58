"""Staff pages for voting: printable QR slips, e-mail invitations and reminders, live turnout."""

from __future__ import annotations

from typing import Callable, Sequence

import segno
from flask import abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import get_locale, gettext as _, ngettext

from core.extensions import db
from evaluation import mail_queue
from evaluation.ballot_box import CastError
from evaluation.errors import NotFoundError, PingyiError, Problem
from evaluation.forms import ActionForm, InviteForm, SlipsForm, group_choices
from evaluation.invitations import (
    UnknownLinkError, display_code, issue_links, normalise_code, turnout,
)
from evaluation.inviting import (
    EMPTY_FILE, NO_EMAIL_COLUMN, MailReport, RoundClosedForMail,
    invite, read_addresses, remind,
)
from evaluation.mailer import Mailer, MailSettings
from evaluation.views.access import actor, round_or_404
from evaluation.views.messages import said, shown
from evaluation.voting import BallotInvalidError, blank_sheet, cast_paper, paper_sheet

#: Failed addresses flashed one per line; the rest are counted.
MAX_FAILED_SHOWN = 20
#: Flashed messages ride in the session cookie (about 4 KB): long reasons and cells are cut.
MAX_SHOWN_CHARS = 120


def make_slips(round_id: int):
    """Issue N links for a group and show them as a printable A4 sheet of QR slips."""
    round_ = round_or_404(round_id)
    form = _submitted(SlipsForm(), round_)
    if form is None:
        return _back(round_id)
    try:
        links = issue_links(db.session, round_, form.group.data, form.count.data,
                            current_app.extensions["pingyi.keys"], actor())
    except PingyiError as exc:
        flash(said(exc), "error")
        return _back(round_id)
    base = current_app.config["PINGYI"].base_url
    group = next(g for g in round_.groups if g.key == form.group.data)
    slips = [{"url": f"{base}/v/{link.token}", "code": link.display_code,
              "qr": segno.make(f"{base}/v/{link.token}", error="m").svg_inline(scale=3)}
             for link in links]
    return _private(render_template(
        "evaluation/slips.html", round=round_, group=group, slips=slips,
        code_url=f"{base}{url_for('survey.enter_code')}"))


def enter_paper_ballot(round_id: int):
    """Type in a paper ballot of an open round: the code on the paper first, then its answers
    on the ballot of the code's group. Recorded, it makes way for the next one."""
    round_ = _paper_round(round_id)
    if round_ is None:
        return _back(round_id)
    if request.method == "GET":
        return _paper_page(round_)
    code = request.form.get("code", "")[:64]
    keys = current_app.extensions["pingyi.keys"]
    try:
        if request.form.get("step") != "ballot":
            _ticket, sheet = paper_sheet(db.session, round_.id, code, keys)
            return _paper_page(round_, code=code, sheet=sheet)
        receipt = cast_paper(db.session, round_.id, code, request.form, keys,
                             current_app.config["PINGYI"].mix_every, actor())
    except UnknownLinkError:
        return _paper_page(round_, code=code, problem="unknown"), 404
    except CastError as exc:
        return _paper_page(round_, code=code, problem=exc.reason), 409
    except BallotInvalidError as exc:
        return _paper_page(round_, code=code, sheet=exc.sheet, values=exc.parsed.values,
                           errors=exc.parsed.errors), 422
    flash(_("Paper ballot recorded; its receipt code is %(receipt)s.", receipt=receipt), "success")
    return redirect(url_for("evaluation.enter_paper_ballot", round_id=round_.id))


def print_paper_ballots(round_id: int):
    """A blank paper ballot of one group, to print: the voter writes the code of a slip on it,
    and an organiser types it in later (enter_paper_ballot)."""
    round_ = _paper_round(round_id)
    if round_ is None:
        return _back(round_id)
    try:
        sheet = blank_sheet(db.session, round_, request.args.get("group", ""))
    except NotFoundError:
        abort(404)
    return _private(render_template("evaluation/paper_print.html", round=round_, sheet=sheet))


def _paper_round(round_id: int):
    """The round, while paper ballots can go in (it is open); None, with a message, otherwise."""
    round_ = round_or_404(round_id)
    if round_.status == "open":
        return round_
    flash(_("Paper ballots can be typed in only while the round is open."), "error")
    return None


def _paper_page(round_, code: str = "", sheet=None, values=None, errors=None,
                problem: str | None = None):
    """The page holds a code that can still vote: like the slips, never cached nor referred.
    A code that can be one is shown as printed on the slips."""
    normal = normalise_code(code)
    return _private(render_template(
        "evaluation/paper.html", round=round_, code=display_code(normal) if normal else code[:20],
        sheet=sheet, values=values or {}, errors=errors or {}, problem=problem))


def _private(page: str):
    response = current_app.make_response(page)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def send_invitations(round_id: int):
    """Mail each address of the uploaded file its own ballot link; nobody gets a second one."""
    round_ = round_or_404(round_id)
    form = _submitted(InviteForm(), round_)
    if form is None:
        return _back(round_id)
    try:
        addresses, bad = read_addresses(form.file.data.filename or "", form.file.data.read())
    except PingyiError as exc:
        flash(_file_refused(exc), "error")
        return _back(round_id)
    group_key = form.group.data
    if mail_queue.enabled(current_app.config["PINGYI"]):
        if addresses:
            _enqueue("invite", round_, group_key, addresses)
        else:
            flash(_("No address to send to."), "error")
        _flash_failed(bad)
        return _back(round_id)
    _mail(lambda keys, mailer, base_url, report: invite(
        db.session, round_, group_key, addresses, keys, mailer, base_url, actor(), _quiet, report),
        bad)
    return _back(round_id)


def send_reminders(round_id: int):
    """Mail a fresh link to every invited address whose link is still unused."""
    round_ = round_or_404(round_id)
    if not ActionForm().validate_on_submit():
        return _back(round_id)
    if mail_queue.enabled(current_app.config["PINGYI"]):
        if round_.status != "open":  # the worker would refuse it: say so now
            flash(_("Reminders go out while a round is open."), "error")
        else:
            _enqueue("remind", round_)
    else:
        _mail(lambda keys, mailer, base_url, report: remind(
            db.session, round_, keys, mailer, base_url, actor(), _quiet, report))
    return _back(round_id)


def _enqueue(kind: str, round_, group_key: str | None = None, addresses: list[str] | None = None):
    """Hand a mailing to the mail worker and say so; nothing is queued if Redis is down."""
    try:
        mail_queue.enqueue(current_app.config["PINGYI"], kind, round_.id, actor(), group_key,
                           addresses)
    except mail_queue.QueueUnavailable:
        flash(_("The mail queue cannot be reached, so nothing was sent. Try again in a moment."),
              "error")
        return
    if kind == "invite":
        flash(ngettext("%(num)s address is queued for sending; progress shows under “Mailings”.",
                       "%(num)s addresses are queued for sending; progress shows under “Mailings”.",
                       len(addresses)), "success")
    else:
        flash(_("Reminders are queued for sending; progress shows under “Mailings”."), "success")


def _quiet(n: int, total: int, address: str) -> None:
    """Progress is for the terminal; a page reports once, at the end."""


def _submitted(form, round_):
    """The posted form, its group choices those of the round; None (errors flashed) if invalid."""
    form.group.choices = group_choices(round_)
    if form.validate_on_submit():
        return form
    for field, errors in form.errors.items():  # named as the page labels the field
        flash(f"{form[field].label.text}: {'; '.join(map(str, errors))}", "error")
    return None


def _back(round_id: int):
    """Back to the round page, where the flashed messages show."""
    return redirect(url_for("evaluation.show_round", round_id=round_id))


def _mail(send: Callable[..., MailReport], refused: Sequence[tuple[str, str]] = ()) -> None:
    """Run send(keys, mailer, base_url, report) over one mail connection and flash what it did,
    also when it stopped early."""
    config = current_app.config["PINGYI"]
    settings = MailSettings.from_config(config)
    report, mailer = MailReport(failed=list(refused)), None
    try:
        with Mailer(settings) as mailer:
            send(current_app.extensions["pingyi.keys"], mailer, config.base_url, report)
    except OSError as exc:
        db.session.rollback()
        flash(_("Could not send through the mail server: %(error)s",
                error=_cut(str(exc) or type(exc).__name__)), "error")
    except RoundClosedForMail as exc:
        db.session.rollback()
        flash(_("This round is %(status)s: no mail goes out now.", status=_(exc.status)), "error")
    except PingyiError as exc:
        db.session.rollback()
        flash(said(exc), "error")
    if report.sent or report.skipped or report.failed:
        flash(_("Sent %(sent)s, skipped %(skipped)s (sent before), failed %(failed)s.",
                sent=len(report.sent), skipped=len(report.skipped), failed=len(report.failed)),
              "info" if report.failed else "success")
        _flash_failed(report.failed)
    if mailer is not None and mailer.to_outbox and report.sent:
        flash(_("No mail server is configured: the messages were written to %(folder)s",
                folder=str(settings.outbox)), "info")


def _flash_failed(failed: Sequence[tuple[str, str]]) -> None:
    """One message per address not sent, up to a limit; the rest counted."""
    for address, why in failed[:MAX_FAILED_SHOWN]:
        flash(_("Not sent: %(address)s: %(reason)s", address=_cut(address),
                reason=_cut(shown([why])[0])), "error")
    if len(failed) > MAX_FAILED_SHOWN:
        more = len(failed) - MAX_FAILED_SHOWN
        flash(ngettext("… and %(num)s more address not sent.", "… and %(num)s more addresses not sent.",
                       more), "error")


def _file_refused(exc: PingyiError) -> str:
    """Why an address file was refused, in the page's language."""
    if exc.message == EMPTY_FILE:
        return _("The file is empty.")
    if exc.message == NO_EMAIL_COLUMN:
        return _("Row 1: an “email” column is required.")
    return said(exc)


def _cut(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS - 1] + "…"


def mailings_of(round_) -> tuple[list[dict], bool]:
    """The round's queued mailings as the page shows them, and whether the queue answered
    ([] and True where there is no queue)."""
    config = current_app.config["PINGYI"]
    if not mail_queue.enabled(config):
        return [], True
    try:
        mailings = mail_queue.recent(config, round_.id)
    except mail_queue.QueueUnavailable:
        return [], False
    zh = str(get_locale()).startswith("zh")
    labels = {g.key: g.label_zh if zh else g.label_en for g in round_.groups}
    return [{"id": m.id, "what": _mailing_title(m, labels), "state": _mailing_state(m),
             "pending": m.status in ("queued", "started"), "sent": m.sent, "skipped": m.skipped,
             "failed_count": m.failed_count,
             "failed": [(address, shown([why])[0]) for address, why in m.failed]}
            for m in mailings], True


def _mailing_title(m: mail_queue.Mailing, labels: dict[str, str]) -> str:
    if m.kind is None:
        return _("Mailing")
    if m.kind == "remind":
        return _("Reminders")
    return _("Invitations: %(group)s", group=labels.get(m.group, m.group or "?"))


def _mailing_state(m: mail_queue.Mailing) -> str:
    if m.status == "queued":
        return _("waiting for the mail worker")
    if m.status == "started":
        return _("sending: %(done)s of %(total)s", done=m.done,
                 total=m.total if m.total is not None else "?")
    if m.status == "stalled":
        return _("stalled at %(done)s of %(total)s: the mail worker may have stopped; sending "
                 "again finishes the job", done=m.done, total=m.total if m.total is not None else "?")
    if m.status == "failed":
        return _("failed: see the mail worker's log; sending again is safe")
    if m.status == "cancelled":
        return _("cancelled")
    if m.status == "gone":
        return _("expired")
    if m.error is None:
        return _("done")
    what, detail = m.error[:2]
    if what == "mail_server":
        return _("stopped: the mail server failed (%(detail)s); sending again is safe",
                 detail=_cut(detail))
    if what == "round_closed":
        return _("stopped: the round is %(status)s now", status=_(detail))
    if what == "round_missing":
        return _("stopped: the round no longer exists")
    if what == "other_instance":
        return _("stopped: another Pingyi instance that shares this Redis server and prefix "
                 "took this mailing; give each instance its own PINGYI_REDIS_PREFIX")
    if what == "busy":
        return _("stopped: another mailing of this round did not finish; sending again is safe")
    if what == "refused" and len(m.error) == 4:  # a refusal of Pingyi's own, as a Problem
        _what, message, path, values = m.error
        detail = shown([Problem(path, message, tuple(tuple(v) for v in values))])[0]
    return _("stopped: %(detail)s", detail=_cut(detail))


def show_turnout(round_id: int):
    """Turnout per group and the state of queued mailings as JSON, for the round page's refresh."""
    round_ = round_or_404(round_id)
    mailings, _answered = mailings_of(round_)
    return jsonify(status=round_.status, groups=turnout(db.session, round_),
                   mailings=[{k: m[k] for k in ("id", "state", "pending", "sent", "skipped",
                                                "failed_count")} for m in mailings])
