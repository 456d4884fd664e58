"""Staff pages for voting: printable QR slips, e-mail invitations and reminders, live turnout."""

from __future__ import annotations

from typing import Callable, Sequence

import segno
from flask import current_app, flash, jsonify, redirect, render_template, url_for
from flask_babel import gettext as _, ngettext

from core.extensions import db
from evaluation.errors import PingyiError
from evaluation.forms import ActionForm, InviteForm, SlipsForm, group_choices
from evaluation.invitations import issue_links, turnout
from evaluation.inviting import MailReport, invite, read_addresses, remind
from evaluation.mailer import Mailer, MailSettings
from evaluation.views.access import actor, round_or_404

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
        flash(exc.message, "error")
        return _back(round_id)
    base = current_app.config["PINGYI"].base_url
    group = next(g for g in round_.groups if g.key == form.group.data)
    slips = [{"url": f"{base}/v/{link.token}", "code": link.display_code,
              "qr": segno.make(f"{base}/v/{link.token}", error="m").svg_inline(scale=3)}
             for link in links]
    response = current_app.make_response(render_template(
        "evaluation/slips.html", round=round_, group=group, slips=slips,
        code_url=f"{base}{url_for('survey.enter_code')}"))
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
        flash(exc.message, "error")
        return _back(round_id)
    group_key = form.group.data
    _mail(lambda keys, mailer, base_url: invite(
        db.session, round_, group_key, addresses, keys, mailer, base_url, actor(), _quiet), bad)
    return _back(round_id)


def send_reminders(round_id: int):
    """Mail a fresh link to every invited address whose link is still unused."""
    round_ = round_or_404(round_id)
    if ActionForm().validate_on_submit():
        _mail(lambda keys, mailer, base_url: remind(
            db.session, round_, keys, mailer, base_url, actor(), _quiet))
    return _back(round_id)


def _quiet(n: int, total: int, address: str) -> None:
    """Progress is for the terminal; a page reports once, at the end."""


def _submitted(form, round_):
    """The posted form, its group choices those of the round; None (errors flashed) if invalid."""
    form.group.choices = group_choices(round_)
    if form.validate_on_submit():
        return form
    for field, errors in form.errors.items():
        flash(f"{field}: {'; '.join(map(str, errors))}", "error")
    return None


def _back(round_id: int):
    """Back to the round page, where the flashed messages show."""
    return redirect(url_for("evaluation.show_round", round_id=round_id))


def _mail(send: Callable[..., MailReport], refused: Sequence[tuple[str, str]] = ()) -> None:
    """Run send(keys, mailer, base_url) over one mail connection and flash what it did."""
    config = current_app.config["PINGYI"]
    settings = MailSettings.from_config(config)
    try:
        with Mailer(settings) as mailer:
            report = send(current_app.extensions["pingyi.keys"], mailer, config.base_url)
    except OSError as exc:
        flash(_("Could not send through the mail server: %(error)s",
                error=str(exc) or type(exc).__name__), "error")
        return
    except PingyiError as exc:
        flash(exc.message, "error")
        return
    failed = [*refused, *report.failed]
    flash(_("Sent %(sent)s, skipped %(skipped)s (sent before), failed %(failed)s.",
            sent=len(report.sent), skipped=len(report.skipped), failed=len(failed)),
          "info" if failed else "success")
    for address, why in failed[:MAX_FAILED_SHOWN]:
        flash(_("Not sent: %(address)s: %(reason)s", address=_cut(address), reason=_cut(why)),
              "error")
    if len(failed) > MAX_FAILED_SHOWN:
        more = len(failed) - MAX_FAILED_SHOWN
        flash(ngettext("… and %(num)s more address not sent.", "… and %(num)s more addresses not sent.",
                       more), "error")
    if mailer.to_outbox:
        flash(_("No mail server is configured: the messages were written to %(folder)s",
                folder=str(settings.outbox)), "info")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS - 1] + "…"


def show_turnout(round_id: int):
    """Turnout per group as JSON, for the round page's live refresh."""
    round_ = round_or_404(round_id)
    return jsonify(status=round_.status, groups=turnout(db.session, round_))
