"""Round list, round page, new round, lifecycle buttons, spec downloads."""

from __future__ import annotations

import json

from flask import Response, abort, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from wtforms.fields.choices import SelectChoice

from core.extensions import db
from evaluation import rounds as use
from evaluation.audit import entries_for_round
from evaluation.definitions import export_spec
from evaluation.errors import PingyiError
from evaluation.forms import TRIM_METHODS, ActionForm, InviteForm, NewRoundForm, SlipsForm, group_choices
from evaluation.invitations import turnout
from evaluation.specs import SpecError, load_spec, validate_spec
from evaluation.views.access import actor, round_or_404
from evaluation.views.messages import said, shown
from evaluation.views.voting import mailings_of


def list_rounds():
    """List every round with its status."""
    return render_template("evaluation/rounds.html", rounds=use.list_rounds(db.session),
                           form=ActionForm())


def new_round():
    """Create a draft: blank with defaults, copied from another round, or from a spec file."""
    form = NewRoundForm()
    existing = use.list_rounds(db.session)
    form.template.choices = [SelectChoice(0, _("Defaults (优秀/称职/基本称职/不称职, four groups)"))] + [
        SelectChoice(r.id, f"#{r.id} {r.title} ({r.period})") for r in existing]
    problems: list[str] = []
    if form.validate_on_submit():
        try:
            spec = _spec_for_new(form)
            round_ = use.create_round(db.session, spec, actor())
            flash(_("Draft round created."), "success")
            return redirect(url_for("evaluation.show_round", round_id=round_.id))
        except PingyiError as exc:
            problems = shown(exc.details)
        except SpecError as exc:
            problems = shown(exc.details)
    return render_template("evaluation/new_round.html", form=form, problems=problems)


def _spec_for_new(form: NewRoundForm) -> dict:
    if form.spec_file.data:
        spec = load_spec(form.spec_file.data.read())
    elif form.template.data:
        spec = export_spec(round_or_404(form.template.data))
    else:
        spec = validate_spec({"title": form.title.data or "-", "period": form.period.data or "-"})
    overrides = {k: v for k, v in (("title", form.title.data), ("period", form.period.data)) if v}
    return validate_spec(spec | overrides) if overrides else spec


def show_round(round_id: int):
    """Show a round: definition, state, fingerprint, audit log and the lifecycle buttons."""
    round_ = round_or_404(round_id)
    slips_form = SlipsForm()
    slips_form.group.choices = group_choices(round_)
    invite_form = InviteForm()
    invite_form.group.choices = slips_form.group.choices
    mailings, queue_answered = mailings_of(round_)
    return render_template(
        "evaluation/round.html", round=round_, spec=export_spec(round_), form=ActionForm(),
        problems=shown(use.readiness_problems(round_)) if round_.is_draft else [],
        log=entries_for_round(db.session, round_.id), slips_form=slips_form,
        invite_form=invite_form, turnout=turnout(db.session, round_), mailings=mailings,
        queue_answered=queue_answered, trim_methods=TRIM_METHODS, closing=use.is_closing(round_))


def transition_round(round_id: int, action: str):
    """Open, close, publish or archive the round."""
    round_ = round_or_404(round_id)
    if action not in use.TRANSITIONS:
        abort(404)
    if ActionForm().validate_on_submit():
        try:
            use.transition_round(db.session, round_, action, actor())
            flash(_("Done: the round is now %(status)s.", status=_(round_.status)), "success")
        except PingyiError as exc:
            flash(said(exc), "error")
    return redirect(url_for("evaluation.show_round", round_id=round_.id))


def download_spec(round_id: int):
    """Download the round's current definition as a round-spec file."""
    round_ = round_or_404(round_id)
    text = json.dumps(export_spec(round_), ensure_ascii=False, indent=2)
    return _json_download(text, f"round-{round_.id}.json")


def download_frozen(round_id: int):
    """Download the exact bytes frozen at opening; their SHA-256 is the fingerprint."""
    round_ = round_or_404(round_id)
    if round_.frozen_spec is None:
        abort(404)
    return _json_download(round_.frozen_spec, f"round-{round_.id}-frozen.json")


def _json_download(text: str, filename: str) -> Response:
    return Response(text.encode("utf-8"), mimetype="application/json",
                    headers={"Content-Disposition": f"attachment; filename={filename}"})
