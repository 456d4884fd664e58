"""Staff pages for voting: printable QR slips and live turnout."""

from __future__ import annotations

import segno
from flask import current_app, flash, jsonify, redirect, render_template, url_for
from wtforms.fields.choices import SelectChoice

from core.extensions import db
from evaluation.errors import PingyiError
from evaluation.forms import SlipsForm
from evaluation.invitations import issue_links, turnout
from evaluation.views.access import actor, round_or_404


def make_slips(round_id: int):
    """Issue N links for a group and show them as a printable A4 sheet of QR slips."""
    round_ = round_or_404(round_id)
    form = SlipsForm()
    form.group.choices = [SelectChoice(g.key, f"{g.label_zh} / {g.label_en}") for g in round_.groups]
    if not form.validate_on_submit():
        for field, errors in form.errors.items():
            flash(f"{field}: {'; '.join(errors)}", "error")
        return redirect(url_for("evaluation.show_round", round_id=round_id))
    try:
        links = issue_links(db.session, round_, form.group.data, form.count.data,
                            current_app.extensions["pingyi.keys"], actor())
    except PingyiError as exc:
        flash(exc.message, "error")
        return redirect(url_for("evaluation.show_round", round_id=round_id))
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


def show_turnout(round_id: int):
    """Turnout per group as JSON, for the round page's live refresh."""
    round_ = round_or_404(round_id)
    return jsonify(status=round_.status, groups=turnout(db.session, round_))
