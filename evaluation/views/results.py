"""Results pages for organisers and analysts (placeholder until results land)."""

from __future__ import annotations

from flask import abort


def show_results(round_id: int):
    """Show a round's results."""
    abort(404)


def export_results(round_id: int, fmt: str):
    """Download a round's results as CSV or XLSX."""
    abort(404)
