"""The mailing protocol itself: each link is marked as mailed and committed before its message
goes out, and put back if the message cannot go out. So nothing stays locked during a send, two
mailings at once never mail one address two links, and a refused reminder gives the voter's
previous link back. Through a real SMTP server on loopback."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.extensions import db
from evaluation import inviting
from evaluation.inviting import invite, remind
from evaluation.mailer import Mailer, MailSettings
from evaluation.models import Round
from tests.survey.conftest import REFUSED
from tests.survey.test_mail_queue import FlakyInbox, smtp_server

A, B, C = "a@example.org", "b@example.org", "c@example.org"


class Meddling:
    """A mailer that runs `during` (once) while its first message is on the way."""

    def __init__(self, mailer: Mailer, during):
        self.mailer, self.during = mailer, during
        self.settings = mailer.settings

    def send(self, message):
        during, self.during = self.during, None
        if during:
            during()
        self.mailer.send(message)


def quiet(*_args):
    """No progress to show."""


def mail(app, send, during=None):
    """Run send(session, round, keys, mailer, base_url) in an app context, as a command does."""
    with app.app_context():
        config = app.config["PINGYI"]
        with Mailer(MailSettings.from_config(config)) as mailer:
            return send(db.session, app.extensions["pingyi.keys"],
                        Meddling(mailer, during) if during else mailer, config.base_url)


def invite_into(app, round_id, addresses, during=None):
    return mail(app, lambda session, keys, mailer, base: invite(
        session, session.get(Round, round_id), "subordinate", addresses, keys, mailer, base,
        "test", quiet), during)


def remind_all(app, round_id, during=None):
    return mail(app, lambda session, keys, mailer, base: remind(
        session, session.get(Round, round_id), keys, mailer, base, "test", quiet), during)


def opens(app, link) -> bool:
    return app.test_client().get(link).status_code == 302


def test_two_mailings_at_once_never_mail_one_address_two_links(app, make_round, inbox):
    round_id = make_round("open").id

    def second_run():  # started while the first is sending to a; b is issued but not yet sent
        with Session(bind=db.engine) as other:
            with Mailer(MailSettings.from_config(app.config["PINGYI"])) as mailer:
                invite(other, other.get(Round, round_id), "subordinate", [B], app.extensions[
                    "pingyi.keys"], mailer, app.config["PINGYI"].base_url, "test", quiet)

    with app.app_context():  # the second run works in an app context of its own
        first = invite_into(app, round_id, [A, B], during=second_run)
    assert first.sent == [A] and first.skipped == [B]  # the second run had mailed b meanwhile
    assert sorted(m["To"] for m in inbox.messages) == [A, B]
    assert opens(app, inbox.links_for(B)[0]) and opens(app, inbox.links_for(A)[0])


def test_nothing_stays_locked_while_a_message_goes_out(app, make_round, inbox):
    round_id = make_round("open").id
    invite_into(app, round_id, [A])
    with app.app_context():
        engine = db.engine
    written = []

    def another_writer():  # a vote, say: it must not wait for the mail server
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA busy_timeout = 100")
            else:
                conn.exec_driver_sql("SET lock_timeout = '100ms'")
            written.append(conn.execute(text(
                "UPDATE invitations SET issued_on = issued_on WHERE round_id = :r"),
                {"r": round_id}).rowcount)
            conn.commit()

    remind_all(app, round_id, during=another_writer)
    assert written == [1]
    assert [m["To"] for m in inbox.messages] == [A, A]
    assert opens(app, inbox.links_for(A)[1]) and not opens(app, inbox.links_for(A)[0])


def test_a_refused_reminder_gives_the_previous_link_back(app, make_round, inbox):
    round_id = make_round("open").id
    invite_into(app, round_id, [A, B])
    with smtp_server(app, FlakyInbox(refuse={B})) as second:
        report = remind_all(app, round_id)
    assert report.sent == [A] and [a for a, _why in report.failed] == [B]
    assert [m["To"] for m in second.messages] == [A]
    assert opens(app, inbox.links_for(B)[0])  # b's first link still votes
    assert not opens(app, inbox.links_for(A)[0]) and opens(app, second.links_for(A)[0])


def test_a_long_list_is_issued_in_parts(app, make_round, inbox, monkeypatch):
    monkeypatch.setattr(inviting, "MAX_LINKS_AT_ONCE", 2)
    round_id = make_round("open").id
    report = invite_into(app, round_id, [A, B, C, REFUSED, "d@example.org"])
    assert sorted(report.sent) == [A, B, C, "d@example.org"] and len(report.failed) == 1
    assert all(opens(app, inbox.links_for(address)[0]) for address in (A, B, C))
