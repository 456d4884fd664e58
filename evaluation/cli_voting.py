"""Commands for links and ballots: links, invite, remind, mail-worker, verify."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import current_app
from flask.cli import with_appcontext
from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, SimpleWorker

from core.extensions import db
from evaluation import mail_queue
from evaluation.ballot_box import verify_seal
from evaluation.cli_common import cli_actor, refuse
from evaluation.errors import PingyiError
from evaluation.invitations import issue_links
from evaluation.inviting import MailReport, invite, read_addresses, remind
from evaluation.mailer import Mailer, MailSettings
from evaluation.rounds import get_round


def _context():
    config = current_app.config["PINGYI"]
    return config, current_app.extensions["pingyi.keys"]


@click.command("links")
@click.argument("round_id", type=int, metavar="ROUND")
@click.option("--group", "group_key", required=True, help="Key of the rater group the links are for.")
@click.option("--count", type=int, required=True, help="How many links to make (1-2000).")
@with_appcontext
def links_command(round_id: int, group_key: str, count: int) -> None:
    """Print COUNT new ballot links for a group: the URL, a tab, the short code, one a line."""
    config, keys = _context()
    try:
        links = issue_links(db.session, get_round(db.session, round_id), group_key, count, keys, cli_actor())
    except PingyiError as exc:
        refuse(exc.problems)
    for link in links:
        click.echo(f"{config.base_url}/v/{link.token}\t{link.display_code}")
    click.echo(f"{len(links)} links for group {group_key}; they are not stored: keep this output",
               err=True)


def _print_report(report: MailReport, to_outbox: bool, outbox: Path) -> None:
    for address, why in report.failed:
        click.echo(f"not sent: {address}: {why}", err=True)
    click.echo(f"sent {len(report.sent)}, skipped {len(report.skipped)} (sent before), "
               f"failed {len(report.failed)}", err=True)
    if to_outbox:
        click.echo(f"no MAIL_SERVER configured: messages were written to {outbox}", err=True)


def _progress(n: int, total: int, address: str) -> None:
    click.echo(f"[{n}/{total}] {address}", err=True)


def _mail(round_id: int, send, bad: list[tuple[str, str]] = ()) -> None:
    """Run send(round, keys, mailer, base_url, report) with one mailer, report what was done
    (also when it stopped early), exit 1 if anything failed."""
    config, keys = _context()
    settings = MailSettings.from_config(config)
    report, mailer = MailReport(failed=list(bad)), None
    try:
        with Mailer(settings) as mailer:
            send(get_round(db.session, round_id), keys, mailer, config.base_url, report)
    except (OSError, PingyiError) as exc:
        db.session.rollback()
        if report.sent or report.skipped or report.failed:
            _print_report(report, mailer is not None and mailer.to_outbox, settings.outbox)
        refuse([f"mail server: {exc}"] if isinstance(exc, OSError) else exc.problems)
    _print_report(report, mailer.to_outbox, settings.outbox)
    sys.exit(1 if report.failed else 0)


@click.command("invite")
@click.argument("round_id", type=int, metavar="ROUND")
@click.option("--group", "group_key", required=True, help="Key of the rater group to invite into.")
@click.option("--emails", "path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV or XLSX file with an 'email' column.")
@with_appcontext
def invite_command(round_id: int, group_key: str, path: Path) -> None:
    """Mail each address its own ballot link; re-running sends nobody a second link."""
    try:
        addresses, bad = read_addresses(path.name, path.read_bytes())
    except OSError as exc:
        refuse([f"{path}: {exc.strerror or exc}"])
    except PingyiError as exc:
        refuse(exc.problems)
    _mail(round_id, lambda round_, keys, mailer, base_url, report: invite(
        db.session, round_, group_key, addresses, keys, mailer, base_url, cli_actor(), _progress,
        report), bad)


@click.command("remind")
@click.argument("round_id", type=int, metavar="ROUND")
@with_appcontext
def remind_command(round_id: int) -> None:
    """Mail a fresh link to every invited address whose link is still unused."""
    _mail(round_id, lambda round_, keys, mailer, base_url, report: remind(
        db.session, round_, keys, mailer, base_url, cli_actor(), _progress, report))


@click.command("mail-worker")
@click.option("--burst", is_flag=True, help="Send what is queued, then stop (for cron or tests).")
@with_appcontext
def mail_worker_command(burst: bool) -> None:
    """Send the mailings queued from the round pages (needs REDIS_URL)."""
    config = current_app.config["PINGYI"]
    if not mail_queue.enabled(config):
        refuse(["REDIS_URL is not set: the round pages send mail themselves, no worker is needed"])
    connection = Redis.from_url(config.redis_url, socket_connect_timeout=2)
    try:
        connection.ping()
    except RedisError as exc:
        refuse([f"the mail queue (Redis) did not answer: {exc}"])
    click.echo(f"mail worker on queue {config.mail_queue}"
               + ("" if config.mail_server else f"; no MAIL_SERVER: messages go to "
                  f"{MailSettings.from_config(config).outbox}"), err=True)
    # One process, no fork per job: the app and its database pool stay as they are.
    SimpleWorker([Queue(config.mail_queue, connection=connection)], connection=connection).work(
        burst=burst, logging_level="WARNING")


@click.command("verify")
@click.argument("round_id", type=int, metavar="ROUND")
@with_appcontext
def verify_command(round_id: int) -> None:
    """Recompute the seal of a closed round and say whether it holds."""
    try:
        round_ = get_round(db.session, round_id)
    except PingyiError as exc:
        refuse(exc.problems)
    if round_.seal_head is None:
        refuse([f"round {round_id} is {round_.status}: it is sealed when it closes"])
    holds, head, count = verify_seal(db.session, round_)
    if holds:
        click.echo(f"seal holds: {count} ballots, head {head}")
        return
    click.echo(f"seal BROKEN: stored {round_.sealed_count} ballots, head {round_.seal_head}; "
               f"recomputed {count} ballots, head {head}", err=True)
    sys.exit(1)


VOTING_COMMANDS = (links_command, invite_command, remind_command, mail_worker_command,
                   verify_command)
