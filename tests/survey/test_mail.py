"""Invitations by e-mail through a real SMTP server on loopback (aiosmtpd)."""

import email
import email.policy

from sqlalchemy import func, select

from evaluation.models import Invitation
from tests.conftest import csrf_token
from tests.survey.conftest import REFUSED, full_ballot


def invited(session):
    return session.scalar(select(func.count()).select_from(Invitation))


def test_invite_sends_each_address_its_own_link_and_reports_bad_ones(runner, session, make_round,
                                                                     inbox, addresses, client):
    round_ = make_round("open")
    result = runner.invoke(args=["invite", str(round_.id), "--group", "subordinate",
                                 "--emails", str(addresses)])
    assert result.exit_code == 1  # some addresses failed; the others were sent
    assert "not sent: not-an-address: row 4: not an e-mail address" in result.stderr
    assert f"not sent: {REFUSED}:" in result.stderr
    assert "sent 2, skipped 0 (sent before), failed 2" in result.stderr
    assert sorted(m["To"] for m in inbox.messages) == ["a@example.org", "b@example.org"]
    link_a, link_b = inbox.links_for("a@example.org")[0], inbox.links_for("b@example.org")[0]
    assert link_a != link_b
    assert client.get(link_a).status_code == 302
    body = inbox.messages[0].get_content()  # the code, and the page to type it on
    assert "请在 http://127.0.0.1:5000/code 输入代码：" in body
    assert "type this code at http://127.0.0.1:5000/code: " in body


def test_invite_again_sends_nobody_a_second_link(runner, session, make_round, inbox, addresses):
    round_ = make_round("open")
    args = ["invite", str(round_.id), "--group", "subordinate", "--emails", str(addresses)]
    runner.invoke(args=args)
    count = invited(session)
    result = runner.invoke(args=args)
    assert "sent 0, skipped 2 (sent before)" in result.stderr
    assert invited(session) == count
    assert len(inbox.messages) == 2


def test_invite_into_another_group_is_refused_per_address(runner, session, make_round, inbox,
                                                          addresses):
    round_ = make_round("open")
    runner.invoke(args=["invite", str(round_.id), "--group", "subordinate", "--emails", str(addresses)])
    result = runner.invoke(args=["invite", str(round_.id), "--group", "peer", "--emails", str(addresses)])
    assert "a@example.org: invited already, in another group" in result.stderr
    assert len(inbox.messages) == 2


def test_remind_mails_only_unused_links_and_replaces_them(app, runner, session, make_round, inbox,
                                                         addresses, client):
    round_ = make_round("open")
    runner.invoke(args=["invite", str(round_.id), "--group", "subordinate", "--emails", str(addresses)])
    old_a, old_b = inbox.links_for("a@example.org")[0], inbox.links_for("b@example.org")[0]
    voter = app.test_client()
    voter.get(old_a)
    assert voter.post("/ballot", data={**full_ballot(round_, "subordinate"),
                                       "csrf_token": csrf_token(voter)}).status_code == 302
    result = runner.invoke(args=["remind", str(round_.id)])
    assert result.exit_code == 0, result.output
    reminders = inbox.messages[2:]
    assert [m["To"] for m in reminders] == ["b@example.org"]
    assert reminders[0]["Subject"].startswith("提醒")
    new_b = inbox.links_for("b@example.org")[1]
    assert client.get(old_b).status_code == 404
    assert client.get(new_b).status_code == 302


def test_without_a_mail_server_messages_go_to_the_outbox(app, runner, make_round, tmp_path):
    round_ = make_round("open")
    path = tmp_path / "one.csv"
    path.write_text("email\nx@example.org\n")
    result = runner.invoke(args=["invite", str(round_.id), "--group", "peer", "--emails", str(path)])
    assert result.exit_code == 0, result.output
    outbox = app.config["PINGYI"].instance_path / "outbox"
    assert f"no MAIL_SERVER configured: messages were written to {outbox}" in result.stderr
    files = list(outbox.glob("*.eml"))
    assert len(files) == 1
    message = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert message["To"] == "x@example.org" and "/v/" in message.get_content()


def test_invite_file_without_an_email_column(runner, make_round, tmp_path):
    round_ = make_round("open")
    path = tmp_path / "bad.csv"
    path.write_text("name\nx\n")
    result = runner.invoke(args=["invite", str(round_.id), "--group", "peer", "--emails", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: row 1: an 'email' column is required"
