"""`flask --app wsgi results ID --format json|csv` (placeholder until results land)."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext


@click.command("results")
@click.argument("round_id", type=int, metavar="ID")
@click.option("--format", "fmt", type=click.Choice(["json", "csv"]), default="json",
              help="Output format.")
@with_appcontext
def results_command(round_id: int, fmt: str) -> None:
    """Print the results of round ID."""
    click.echo("error: results are not implemented yet", err=True)
    sys.exit(1)
