"""Editing a draft round: settings and rules, grades, questionnaire, groups, cadres, import."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from wtforms.fields.choices import SelectChoice

from core.extensions import db
from evaluation import editing
from evaluation.definitions import export_spec
from evaluation.errors import PingyiError
from evaluation.forms import (
    BLANK_ROWS, CadresForm, GradesForm, GroupsForm, ImportCadresForm, QuestionnaireForm, SettingsForm,
)
from evaluation.imports import merge_cadres, parse_cadres
from evaluation.rounds import edit_round
from evaluation.specs import SpecError
from evaluation.views.access import actor, round_or_404
from evaluation.views.messages import shown

SECTIONS = {
    "grades": (GradesForm, "rows", editing.grades_from_rows),
    "groups": (GroupsForm, "rows", editing.groups_from_rows),
    "cadres": (CadresForm, "rows", editing.cadres_from_rows),
}


def _draft_or_redirect(round_id: int):
    round_ = round_or_404(round_id)
    if not round_.is_draft:
        flash(_("This round is %(status)s: its settings are frozen.", status=_(round_.status)), "error")
        return round_, redirect(url_for("evaluation.show_round", round_id=round_id))
    return round_, None


def _save(round_, changes: dict, what: str) -> list[str]:
    """Validate and save; the problems to show, empty on success."""
    try:
        edit_round(db.session, round_, changes, actor(), what)
    except SpecError as exc:
        return shown(exc.details)
    except PingyiError as exc:
        return shown(exc.details)
    flash(_("Saved."), "success")
    return []


def edit_settings(round_id: int):
    """Edit the title, period, item scale and rules of a draft."""
    round_, refused = _draft_or_redirect(round_id)
    if refused:
        return refused
    spec = export_spec(round_)
    form = SettingsForm(data=None if request.method == "POST" else editing.settings_form_data(spec))
    form.dissatisfied.choices = [SelectChoice(g["key"], g["label"]["zh"] + " / " + g["label"]["en"])
                                 for g in spec["grades"]]
    problems = []
    if form.validate_on_submit():
        problems = _save(round_, editing.settings_changes(form.data), "settings")
        if not problems:
            return redirect(url_for("evaluation.show_round", round_id=round_id))
    return render_template("evaluation/edit_settings.html", round=round_, form=form,
                           problems=problems)


def edit_list(round_id: int, section: str):
    """Edit one list of a draft (grades, groups or cadres) as rows; blank rows are ignored."""
    round_, refused = _draft_or_redirect(round_id)
    if refused:
        return refused
    form_class, field, build = SECTIONS[section]
    form = _rows_form(form_class, {field: editing.rows_for(section, export_spec(round_))})
    problems, by_row = [], {}
    if form.validate_on_submit():
        rows, index = editing.non_blank(form[field].data)
        problems = _save(round_, {section: build(rows)}, section)
        if not problems:
            return redirect(url_for("evaluation.show_round", round_id=round_id))
        by_row, problems = editing.split_problems(problems, section, index)
    return render_template("evaluation/edit_list.html", round=round_, form=form, section=section,
                           rows=form[field], problems=problems, by_row=by_row,
                           import_form=ImportCadresForm() if section == "cadres" else None)


def edit_questionnaire(round_id: int):
    """Edit the dimensions and items of a draft."""
    round_, refused = _draft_or_redirect(round_id)
    if refused:
        return refused
    spec = export_spec(round_)
    form = _rows_form(QuestionnaireForm, {"dimensions": editing.rows_for("dimensions", spec),
                                          "items": editing.rows_for("items", spec)})
    problems = []
    if form.validate_on_submit():
        dims, _index = editing.non_blank(form.dimensions.data)
        items, _index = editing.non_blank(form.items.data)
        dimensions, missing = editing.dimensions_from_rows(dims, items)
        problems = shown(missing)
        if not problems:
            problems = _save(round_, {"dimensions": dimensions}, "questionnaire")
        if not problems:
            return redirect(url_for("evaluation.show_round", round_id=round_id))
    return render_template("evaluation/edit_questionnaire.html", round=round_, form=form,
                           problems=problems)


def import_cadres(round_id: int):
    """Add or update a draft's cadres from a CSV or XLSX file: every row good, or none."""
    round_, refused = _draft_or_redirect(round_id)
    if refused:
        return refused
    form = ImportCadresForm()
    problems = [f"{name}: {e}" for name, errors in form.errors.items() for e in errors]
    if form.validate_on_submit():
        upload = form.file.data
        try:
            imported = parse_cadres(upload.filename or "", upload.read())
            merged = merge_cadres(export_spec(round_)["cadres"], imported)
            problems = _save(round_, {"cadres": merged}, "cadres import")
        except PingyiError as exc:
            problems = shown(exc.details)
        if not problems:
            return redirect(url_for("evaluation.show_round", round_id=round_id))
    else:
        problems = [f"{name}: {e}" for name, errors in form.errors.items() for e in errors]
    form_class, field, _build = SECTIONS["cadres"]
    rows_form = _rows_form(form_class, {field: editing.rows_for("cadres", export_spec(round_))})
    return render_template("evaluation/edit_list.html", round=round_, form=rows_form,
                           section="cadres", rows=rows_form[field], problems=problems, by_row={},
                           import_form=form), 400


def _rows_form(form_class, data: dict):
    """The form with the saved rows (or the posted ones) plus a few blank rows to add."""
    if request.method == "POST":
        return form_class()
    form = form_class(data={k: rows for k, rows in data.items()})
    for name in data:
        for _n in range(BLANK_ROWS):
            form[name].append_entry()
    return form
