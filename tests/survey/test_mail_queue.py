"""The mail queue: with REDIS_URL set, the round page queues invitations and reminders in a real
Redis, and a real RQ worker sends them through a real SMTP server on loopback."""

from __future__ import annotations

import html
import re
import secrets
import signal

import pytest
from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job
from sqlalchemy import func, select

from evaluation.models import Invitation
from tests.conftest import REDIS_TEST_URL, require_redis
from tests.survey.conftest import REFUSED, free_port, full_ballot


class MailQueue:
    """The app switched to a queue of its own in the test Redis, and a worker to drain it."""

    def __init__(self, app):
        self.app, self.name = app, f"pingyi-test-{secrets.token_hex(6)}"
        self.redis = Redis.from_url(REDIS_TEST_URL)
        app.config["PINGYI"] = app.config["PINGYI"].replace(redis_url=REDIS_TEST_URL,
                                                            mail_queue=self.name)

    def queued(self) -> int:
        return Queue(self.name, connection=self.redis).count

    def work(self) -> None:
        """Run a worker in this process until the queue is empty, as `mail-worker --burst`."""
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with self.app.app_context():
                SimpleWorker([Queue(self.name, connection=self.redis)],
                             connection=self.redis).work(burst=True)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)

    def jobs(self) -> list[Job]:
        ids = [raw.decode() for key in self.redis.scan_iter(f"{self.name}:round:*")
               for raw in self.redis.lrange(key, 0, -1)]
        return [job for job in Job.fetch_many(ids, connection=self.redis) if job is not None]

    def clean(self) -> None:
        ids = [job.id for job in self.jobs()]
        for pattern in (f"{self.name}:*", f"rq:*{self.name}*", *(f"rq:*{i}*" for i in ids)):
            for key in self.redis.scan_iter(pattern):
                self.redis.delete(key)


@pytest.fixture
def queue(app):
    require_redis()
    mail = MailQueue(app)
    yield mail
    mail.clean()


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def invited(session) -> int:
    session.rollback()  # a fresh snapshot: the worker commits in its own session
    return session.scalar(select(func.count()).select_from(Invitation))


def upload(post, round_, path, group="subordinate"):
    with path.open("rb") as file:
        return post(f"/staff/rounds/{round_.id}/invite", {"group": group, "file": (file, path.name)},
                    content_type="multipart/form-data", follow_redirects=True)


def mailing_rows(page: str) -> list[list[str]]:
    """The cells of the round page's table of mailings, tags stripped."""
    table = re.search(r'<table id="mailings">(.*?)</table>', page, re.S)
    assert table, "no table of mailings on the round page"
    rows = re.findall(r"<tr data-job=[^>]*>(.*?)</tr>", table.group(1), re.S)
    return [[re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", cell)).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)] for row in rows]


def test_upload_queues_the_mailing_and_the_worker_sends_each_address_its_own_link(
        app, client, sign_in, post, make_round, session, inbox, addresses, queue):
    sign_in()
    round_ = make_round("open")
    page = text(upload(post, round_, addresses))
    assert "3 addresses are queued for sending" in page  # a, b and the refused one
    assert "Not sent: not-an-address: row 4: not an e-mail address" in page
    assert inbox.messages == [] and invited(session) == 0 and queue.queued() == 1
    assert mailing_rows(page) == [["Invitations: 中层干部 / Subordinates", "waiting for the mail worker",
                                   "", "", ""]]

    queue.work()

    assert sorted(m["To"] for m in inbox.messages) == ["a@example.org", "b@example.org"]
    link_a, link_b = inbox.links_for("a@example.org")[0], inbox.links_for("b@example.org")[0]
    assert link_a != link_b
    assert all(app.test_client().get(link).status_code == 302 for link in (link_a, link_b))
    assert invited(session) == 3
    page = text(client.get(f"/staff/rounds/{round_.id}"))
    [row] = mailing_rows(page)
    assert row[1:4] == ["done", "2", "0"]
    assert row[4].startswith("1 ") and REFUSED in row[4]


def test_neither_the_queue_nor_its_reports_hold_a_link_or_code(
        client, sign_in, post, make_round, inbox, addresses, queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    queue.work()
    secrets_sent = []
    for message in inbox.messages:
        body = message.get_content()
        secrets_sent.append(re.search(r"/v/(\S+)", body).group(1))
        secrets_sent.append(re.search(r"(?:代码|code on the ballot site): (\S+)", body).group(1))
    assert len(secrets_sent) == 4
    [job] = queue.jobs()
    stored = repr((job.args, job.kwargs, job.meta, job.latest_result()))
    assert "a@example.org" in stored  # the check can see what the job holds
    assert not [s for s in secrets_sent if s in stored or s.replace("-", "") in stored]
    raw = b"".join(queue.redis.dump(key) or b"" for pattern in ("rq:*", f"{queue.name}:*")
                   for key in queue.redis.scan_iter(pattern))
    assert not [s for s in secrets_sent if s.encode() in raw]


def test_uploading_again_through_the_queue_sends_nobody_a_second_link(
        client, sign_in, post, make_round, session, inbox, addresses, queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    upload(post, round_, addresses)
    queue.work()
    assert len(inbox.messages) == 2 and invited(session) == 3
    newest, oldest = mailing_rows(text(client.get(f"/staff/rounds/{round_.id}")))
    assert oldest[1:3] == ["done", "2"]
    assert newest[1:4] == ["done", "0", "2"]


def test_reminders_through_the_queue_reach_only_the_unused_links(
        app, client, sign_in, post, make_round, inbox, addresses, queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    queue.work()
    voter = app.test_client()
    link_a, first_b = inbox.links_for("a@example.org")[0], inbox.links_for("b@example.org")[0]
    assert voter.get(link_a).status_code == 302
    token = re.search(r'name="csrf_token" value="([^"]+)"', voter.get("/ballot").get_data(as_text=True))
    answers = full_ballot(round_, "subordinate") | {"csrf_token": token.group(1)}
    assert voter.post("/ballot", data=answers).status_code == 302

    page = text(post(f"/staff/rounds/{round_.id}/remind", follow_redirects=True))
    assert "Reminders are queued for sending" in page
    queue.work()

    assert [m["To"] for m in inbox.messages[2:]] == ["b@example.org"]
    assert inbox.messages[2]["Subject"].startswith("提醒")
    assert app.test_client().get(first_b).status_code == 404  # the reminder replaced it
    assert app.test_client().get(inbox.links_for("b@example.org")[1]).status_code == 302
    newest = mailing_rows(text(client.get(f"/staff/rounds/{round_.id}")))[0]
    assert newest[:3] == ["Reminders", "done", "1"]


def test_reminders_for_a_round_that_is_not_open_are_refused_at_once(
        client, sign_in, post, make_round, queue):
    sign_in()
    round_ = make_round("draft")
    page = text(post(f"/staff/rounds/{round_.id}/remind", follow_redirects=True))
    assert "Reminders go out while a round is open." in page
    assert queue.queued() == 0


def test_a_mail_server_that_is_down_stops_the_mailing_and_sending_again_delivers(
        app, client, sign_in, post, make_round, session, addresses, queue, request):
    sign_in()
    round_ = make_round("open")
    app.config["PINGYI"] = app.config["PINGYI"].replace(mail_server="127.0.0.1",
                                                        mail_port=free_port())
    upload(post, round_, addresses)
    queue.work()
    [row] = mailing_rows(text(client.get(f"/staff/rounds/{round_.id}")))
    assert row[1].startswith("stopped: mail server:") and row[2] == "0"
    assert invited(session) == 0  # the server was tried before any link was issued

    inbox = request.getfixturevalue("inbox")
    upload(post, round_, addresses)
    queue.work()
    assert sorted(m["To"] for m in inbox.messages) == ["a@example.org", "b@example.org"]
    assert invited(session) == 3
    assert all(app.test_client().get(inbox.links_for(a)[0]).status_code == 302
               for a in ("a@example.org", "b@example.org"))


def test_with_redis_down_nothing_is_queued_or_sent_and_the_page_says_so(
        app, client, sign_in, post, make_round, session, inbox, addresses):
    sign_in()
    round_ = make_round("open")
    app.config["PINGYI"] = app.config["PINGYI"].replace(
        redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = upload(post, round_, addresses)
    page = text(response)
    assert response.status_code == 200
    assert "The mail queue cannot be reached, so nothing was sent." in page
    assert "The mail queue cannot be reached: the state of queued mailings is unknown." in page
    assert inbox.messages == [] and invited(session) == 0
    assert client.get(f"/staff/rounds/{round_.id}/turnout.json").get_json()["mailings"] == []


def test_the_round_pages_refresh_carries_the_state_of_each_mailing(
        client, sign_in, post, make_round, inbox, addresses, queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    [waiting] = client.get(f"/staff/rounds/{round_.id}/turnout.json").get_json()["mailings"]
    assert waiting["state"] == "waiting for the mail worker" and waiting["pending"] is True
    assert waiting["sent"] is None
    queue.work()
    [done] = client.get(f"/staff/rounds/{round_.id}/turnout.json").get_json()["mailings"]
    assert done == {"id": waiting["id"], "state": "done", "pending": False, "sent": 2,
                    "skipped": 0, "failed_count": 1}


def test_the_mail_worker_command_sends_what_is_queued(
        app, runner, client, sign_in, post, make_round, inbox, addresses, queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = runner.invoke(args=["mail-worker", "--burst"])
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert result.exit_code == 0, result.output
    assert f"mail worker on queue {queue.name}" in result.output
    assert sorted(m["To"] for m in inbox.messages) == ["a@example.org", "b@example.org"]


def test_the_mail_worker_command_needs_redis(runner):
    result = runner.invoke(args=["mail-worker", "--burst"])
    assert result.exit_code == 1
    assert "error: REDIS_URL is not set" in result.output


def test_the_mail_worker_command_says_when_redis_does_not_answer(app, runner):
    app.config["PINGYI"] = app.config["PINGYI"].replace(
        redis_url=f"redis://127.0.0.1:{free_port()}/0")
    result = runner.invoke(args=["mail-worker", "--burst"])
    assert result.exit_code == 1
    assert "error: the mail queue (Redis) did not answer" in result.output
