"""Results pages for organisers and analysts: the page and its CSV/XLSX downloads."""

from __future__ import annotations

from flask import Response, render_template

from core.extensions import db
from evaluation.errors import ResultsNotReadyError
from evaluation.results import compute_results
from evaluation.results_export import XLSX_MIMETYPE, by_rank, results_csv, results_xlsx
from evaluation.rounds import is_closing
from evaluation.views.access import round_or_404


def show_results(round_id: int):
    """Show a round's results: scores, flags, groups, turnout, reliability and rater bias."""
    round_ = round_or_404(round_id)
    try:
        doc = compute_results(db.session, round_.id)
    except ResultsNotReadyError:
        return render_template("evaluation/results.html", round=round_, doc=None,
                               closing=is_closing(round_)), 409
    return render_template("evaluation/results.html", round=round_, doc=doc,
                           cadres=by_rank(doc["cadres"]))


def export_results(round_id: int, fmt: str):
    """Download a round's results as CSV or XLSX."""
    round_ = round_or_404(round_id)
    try:
        doc = compute_results(db.session, round_.id)
    except ResultsNotReadyError:
        return render_template("evaluation/results.html", round=round_, doc=None), 409
    if fmt == "xlsx":
        body, mimetype = results_xlsx(doc), XLSX_MIMETYPE
    else:  # a byte-order mark lets spreadsheet programs read the UTF-8 (Chinese names)
        body, mimetype = results_csv(doc).encode("utf-8-sig"), "text/csv"  # werkzeug adds the charset
    return Response(body, mimetype=mimetype, headers={
        "Content-Disposition": f"attachment; filename=round-{round_.id}-results.{fmt}"})
