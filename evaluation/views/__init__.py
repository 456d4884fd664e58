"""The staff blueprint's URL table; the views themselves live beside it."""

from __future__ import annotations

from flask import Blueprint, current_app, redirect, url_for

from core.extensions import limiter

from evaluation.views import auth, edit, results, rounds, voting
from evaluation.views.access import staff_required, writer_required

bp = Blueprint("evaluation", __name__, url_prefix="/staff")


def index():
    """Send staff to the round list."""
    return redirect(url_for("evaluation.list_rounds"))


def login_limit() -> str:
    """The sign-in rate limit from the settings."""
    return current_app.config["PINGYI"].login_rate_limit


#: (rule, endpoint, view, methods); the access decorator is part of the table.
URLS = [
    ("/sign-in", "sign_in", limiter.limit(login_limit, methods=["POST"])(auth.sign_in),
     ["GET", "POST"]),
    ("/sign-out", "sign_out", auth.sign_out, ["POST"]),
    ("/language", "set_language", auth.set_language, ["POST"]),
    ("/", "index", staff_required(index), ["GET"]),
    ("/rounds", "list_rounds", staff_required(rounds.list_rounds), ["GET"]),
    ("/rounds/new", "new_round", writer_required(rounds.new_round), ["GET", "POST"]),
    ("/rounds/<int:round_id>", "show_round", staff_required(rounds.show_round), ["GET"]),
    ("/rounds/<int:round_id>/spec.json", "download_spec", staff_required(rounds.download_spec),
     ["GET"]),
    ("/rounds/<int:round_id>/frozen.json", "download_frozen",
     staff_required(rounds.download_frozen), ["GET"]),
    ("/rounds/<int:round_id>/<any(open, close, publish, archive):action>", "transition_round",
     writer_required(rounds.transition_round), ["POST"]),
    ("/rounds/<int:round_id>/settings", "edit_settings", writer_required(edit.edit_settings),
     ["GET", "POST"]),
    ("/rounds/<int:round_id>/questionnaire", "edit_questionnaire",
     writer_required(edit.edit_questionnaire), ["GET", "POST"]),
    ("/rounds/<int:round_id>/<any(grades, groups, cadres):section>", "edit_list",
     writer_required(edit.edit_list), ["GET", "POST"]),
    ("/rounds/<int:round_id>/cadres/import", "import_cadres", writer_required(edit.import_cadres),
     ["POST"]),
    ("/rounds/<int:round_id>/slips", "make_slips", writer_required(voting.make_slips), ["POST"]),
    ("/rounds/<int:round_id>/paper", "enter_paper_ballot",
     writer_required(voting.enter_paper_ballot), ["GET", "POST"]),
    ("/rounds/<int:round_id>/paper/print", "print_paper_ballots",
     writer_required(voting.print_paper_ballots), ["GET"]),
    ("/rounds/<int:round_id>/invite", "send_invitations", writer_required(voting.send_invitations),
     ["POST"]),
    ("/rounds/<int:round_id>/remind", "send_reminders", writer_required(voting.send_reminders),
     ["POST"]),
    ("/rounds/<int:round_id>/turnout.json", "show_turnout", staff_required(voting.show_turnout),
     ["GET"]),
    ("/rounds/<int:round_id>/results", "show_results", staff_required(results.show_results),
     ["GET"]),
    ("/rounds/<int:round_id>/results.<any(csv, xlsx):fmt>", "export_results",
     staff_required(results.export_results), ["GET"]),
]

for rule, endpoint, view, methods in URLS:
    bp.add_url_rule(rule, endpoint, view, methods=methods)
