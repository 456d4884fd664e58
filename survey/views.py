"""The evaluator's door. Casting ballots arrives with the voting feature; for now the home page."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("survey", __name__)


def home():
    """Say what Pingyi is and where staff sign in."""
    return render_template("survey/home.html")


bp.add_url_rule("/", "home", home, methods=["GET"])
