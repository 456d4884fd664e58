"""`flask --app wsgi results ID --format json|csv`: the results document alone on stdout."""

from __future__ import annotations

import json
import sys

import click
from flask.cli import with_appcontext

from core.extensions import db
from evaluation.errors import PingyiError
from evaluation.results import compute_results
from evaluation.results_export import results_csv


@click.command("results")
@click.argument("round_id", type=int, metavar="ID")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              help="Output format: the JSON document or one CSV row per cadre.")
@with_appcontext
def results_command(round_id: int, fmt: str) -> None:
    """Print the results of round ID (closed, published or archived)."""
    try:
        doc = compute_results(db.session, round_id)
    except PingyiError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(1)
    if fmt == "json":
        click.echo(json.dumps(doc, ensure_ascii=False, allow_nan=False))
    else:
        click.echo(results_csv(doc), nl=False)
