"""`flask --app wsgi ...` commands; each calls the same use cases as the web pages."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from sqlalchemy import select

from core.extensions import db
from evaluation import rounds as use
from evaluation.accounts import create_user
from evaluation.cli_common import cli_actor, refuse
from evaluation.cli_results import results_command
from evaluation.cli_voting import VOTING_COMMANDS
from evaluation.errors import PingyiError
from evaluation.invitations import issue_links
from evaluation.models import ROLES, User
from evaluation.specs import SpecError, load_spec

user_cli = AppGroup("user", help="Staff accounts.")
round_cli = AppGroup("round", help="Evaluation rounds: create, list, open, close, publish, archive.")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "round.json"
DEMO_ORGANISER = ("organiser@example.org", "pingyi-demo-organiser")
DEMO_ANALYST = ("analyst@example.org", "pingyi-demo-analyst")


def _hash_method() -> str:
    return current_app.config["PINGYI"].password_hash_method


@user_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(ROLES), required=True, help="What the user may do.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password from the first line of standard input instead of a prompt.")
def user_create(email: str, role: str, password_stdin: bool) -> None:
    """Create a staff account EMAIL with a role."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True, err=True)
    try:
        user = create_user(db.session, email, password, role, cli_actor(), _hash_method())
    except PingyiError as exc:
        refuse(exc.problems)
    click.echo(f"created {user.role} {user.email}", err=True)


def _round_id_argument(func):
    return click.argument("round_id", type=int, metavar="ID")(func)


@round_cli.command("create")
@click.option("--from", "path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="A round-spec JSON file (see README, \"Round specs\").")
def round_create(path: Path) -> None:
    """Create a draft round from a round-spec file and print its id."""
    try:
        spec = load_spec(path.read_bytes())
    except OSError as exc:
        refuse([f"{path}: cannot read the file ({exc.strerror})"], 2)
    except SpecError as exc:
        refuse([f"{path}: {p}" for p in exc.problems], 2)
    try:
        round_ = use.create_round(db.session, spec, cli_actor())
    except PingyiError as exc:
        refuse(exc.problems)
    click.echo(round_.id)


def _transition_command(action: str):
    @_round_id_argument
    def command(round_id: int) -> None:
        try:
            round_ = use.transition_round(db.session, use.get_round(db.session, round_id), action,
                                          cli_actor())
        except PingyiError as exc:
            refuse(exc.problems)
        click.echo(f"round {round_.id} is {round_.status}", err=True)
        if action == "open":
            click.echo(f"fingerprint {round_.fingerprint}", err=True)
        if action == "close":
            click.echo(f"sealed {round_.sealed_count} ballots, seal {round_.seal_head}", err=True)

    command.__doc__ = f"{action.capitalize()} round ID." + (
        " Closing a round whose close stopped halfway finishes it." if action == "close" else "")
    return round_cli.command(action)(command)


for _action in use.TRANSITIONS:
    _transition_command(_action)


@round_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def round_list(as_json: bool) -> None:
    """List rounds: id, status, period, title."""
    rounds = use.list_rounds(db.session)
    if as_json:
        click.echo(json.dumps([{"id": r.id, "status": r.status, "period": r.period,
                                "title": r.title, "fingerprint": r.fingerprint} for r in rounds],
                              ensure_ascii=False))
        return
    for r in rounds:
        click.echo(f"{r.id}\t{r.status}\t{r.period}\t{r.title}")


@click.command("demo")
@with_appcontext
def demo() -> None:
    """Load demo accounts and an open demo round from examples/round.json (once)."""
    if db.session.scalar(select(User.id).where(User.email == DEMO_ORGANISER[0])):
        click.echo("demo data present already", err=True)
    else:
        for (email, password), role in ((DEMO_ORGANISER, "organiser"), (DEMO_ANALYST, "analyst")):
            create_user(db.session, email, password, role, cli_actor(), _hash_method())
        round_ = use.create_round(db.session, load_spec(EXAMPLE.read_bytes()), cli_actor())
        use.transition_round(db.session, round_, "open", cli_actor())
        _write_demo_links(round_)
        click.echo(f"demo round {round_.id} created and opened", err=True)
    click.echo(f"organiser: {DEMO_ORGANISER[0]} / {DEMO_ORGANISER[1]}", err=True)
    click.echo(f"analyst:   {DEMO_ANALYST[0]} / {DEMO_ANALYST[1]}", err=True)
    click.echo(f"sample ballot links: {_demo_links_path()} (URL, tab, short code; each votes once)",
               err=True)


def _demo_links_path() -> Path:
    return current_app.config["PINGYI"].instance_path / "demo-links.txt"


def _write_demo_links(round_) -> None:
    """Issue a few links per group of the demo round and keep them in the instance folder."""
    config, keys = current_app.config["PINGYI"], current_app.extensions["pingyi.keys"]
    lines = []
    for group in ("superior", "peer", "subordinate", "public"):
        for link in issue_links(db.session, round_, group, 5, keys, cli_actor()):
            lines.append(f"{config.base_url}/v/{link.token}\t{link.display_code}\t{group}")
    _demo_links_path().write_text("\n".join(lines) + "\n", encoding="utf-8")


def register_cli(app: Flask) -> None:
    """Attach the command groups to the app."""
    app.cli.add_command(user_cli)
    app.cli.add_command(round_cli)
    app.cli.add_command(demo)
    app.cli.add_command(results_command)
    for command in VOTING_COMMANDS:
        app.cli.add_command(command)


