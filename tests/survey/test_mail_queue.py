"""The mail queue: with REDIS_URL set, the round page queues invitations and reminders in a real
Redis, and a real RQ worker sends them through a real SMTP server on loopback."""

from __future__ import annotations

import html
import re
import secrets
import signal
import threading
import time
import zlib
from contextlib import contextmanager

import pytest
from redis import Redis
from aiosmtpd.controller import Controller
from rq import Queue, SimpleWorker
from rq.job import Job
from sqlalchemy import func, select

from evaluation.models import Invitation
from tests.conftest import REDIS_TEST_URL, require_redis
from evaluation.rounds import transition_round
from tests.survey.conftest import REFUSED, Inbox, free_port, full_ballot


class MailQueue:
    """The app switched to a queue of its own in the test Redis, and a worker to drain it."""

    def __init__(self, app):
        self.app, prefix = app, f"pingyi-test-{secrets.token_hex(6)}"
        self.redis = Redis.from_url(REDIS_TEST_URL)
        app.config["PINGYI"] = app.config["PINGYI"].replace(redis_url=REDIS_TEST_URL,
                                                            redis_prefix=prefix)
        self.name = app.config["PINGYI"].mail_queue

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

    def contents(self) -> str:
        """Every value of every key of this queue and its jobs, decompressed where it is."""
        ids = [job.id for job in self.jobs()]
        keys = {k for pattern in (f"{self.name}:*", f"rq:*{self.name}*", *(f"rq:*{i}*" for i in ids))
                for k in self.redis.scan_iter(pattern)}
        assert keys
        values = []
        for key in keys:
            kind = self.redis.type(key).decode()
            if kind == "string":
                values.append(self.redis.get(key))
            elif kind == "hash":
                values += self.redis.hgetall(key).values()
            elif kind == "list":
                values += self.redis.lrange(key, 0, -1)
            elif kind == "zset":
                values += self.redis.zrange(key, 0, -1)
            elif kind == "set":
                values += self.redis.smembers(key)
        text = []
        for value in values:
            try:
                value = zlib.decompress(value)
            except zlib.error:
                pass
            text.append(value.decode("utf-8", "replace"))
        return "\n".join(text)

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
    assert mailing_rows(page) == [["Invitations: Subordinates", "waiting for the mail worker",
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
        secrets_sent.append(re.search(r"type this code at \S+/code: (\S+)", body).group(1))
    assert len(secrets_sent) == 4
    [job] = queue.jobs()
    stored = repr((job.args, job.kwargs, job.meta, job.latest_result()))
    raw = queue.contents()
    for blob in (stored, raw):
        assert "a@example.org" in blob  # the check can see what the queue holds
        assert not [s for s in secrets_sent if s in blob or s.replace("-", "") in blob]


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
    assert row[1].startswith("stopped: the mail server failed (") and row[2] == "0"
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


class FlakyInbox(Inbox):
    """An SMTP server that refuses some addresses and answers "421 closing" to one message."""

    def __init__(self, refuse=(), close_at: int | None = None):
        super().__init__()
        self.refuse, self.close_at, self.data_count = set(refuse), close_at, 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 no such user here"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):
        self.data_count += 1
        if self.data_count == self.close_at:
            return "421 4.3.0 closing the connection"
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def smtp_server(app, handler):
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    app.config["PINGYI"] = app.config["PINGYI"].replace(mail_server="127.0.0.1", mail_port=port)
    try:
        yield handler
    finally:
        controller.stop()


def test_a_mailing_cut_short_keeps_its_counts_and_sending_again_mails_working_links(
        app, client, sign_in, post, make_round, session, queue, tmp_path):
    sign_in()
    round_ = make_round("open")
    people = tmp_path / "four.csv"
    people.write_text("email\na@example.org\nb@example.org\nc@example.org\nd@example.org\n")
    with smtp_server(app, FlakyInbox(close_at=2)) as first:
        upload(post, round_, people)
        queue.work()
    assert [m["To"] for m in first.messages] == ["a@example.org"]
    [row] = mailing_rows(text(client.get(f"/staff/rounds/{round_.id}")))
    assert row[1].startswith("stopped: the mail server failed") and row[1].endswith("sending again is safe")
    assert row[2:4] == ["1", "0"] and row[4].startswith("1 ") and "b@example.org" in row[4]

    # b is refused this time; c and d, issued before but never sent, get fresh links that work
    with smtp_server(app, FlakyInbox(refuse={"b@example.org"})) as second:
        upload(post, round_, people)
        queue.work()
    assert sorted(m["To"] for m in second.messages) == ["c@example.org", "d@example.org"]
    for address in ("c@example.org", "d@example.org"):
        assert app.test_client().get(second.links_for(address)[0]).status_code == 302, address
    newest = mailing_rows(text(client.get(f"/staff/rounds/{round_.id}")))[0]
    assert newest[1:4] == ["done", "2", "1"]  # a was sent before
    assert invited(session) == 4


def test_a_mailing_queued_before_the_round_closed_sends_nothing(
        app, client, sign_in, post, make_round, session, inbox, addresses, queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    transition_round(session, round_, "close", "test")
    queue.work()
    assert inbox.messages == [] and invited(session) == 0
    [row] = mailing_rows(text(client.get(f"/staff/rounds/{round_.id}")))
    assert row[1:3] == ["stopped: the round is closed now", "0"]


def test_one_mailing_of_a_round_at_a_time(app, client, sign_in, post, make_round, inbox, addresses,
                                          queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    held = queue.redis.lock(f"{queue.name}:lock:{round_.id}", timeout=10, thread_local=False)
    assert held.acquire(blocking=False)  # another worker's mailing of this round
    releaser = threading.Timer(0.6, held.release)
    start = time.monotonic()
    releaser.start()
    queue.work()
    releaser.join()
    assert 0.5 <= time.monotonic() - start < 5  # waited for the release, not the lock's expiry
    assert sorted(m["To"] for m in inbox.messages) == ["a@example.org", "b@example.org"]


def test_a_mailing_that_stops_showing_progress_is_shown_as_stalled(
        client, sign_in, post, make_round, addresses, queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    [job] = queue.jobs()
    job.meta.update(done=1, total=3, beat=time.time() - 3600)  # a worker killed an hour ago
    job.save_meta()
    job.set_status("started")
    [row] = mailing_rows(text(client.get(f"/staff/rounds/{round_.id}")))
    assert row[1].startswith("stalled at 1 of 3: the mail worker may have stopped")


def test_the_state_of_a_mailing_shows_in_chinese(client, sign_in, post, make_round, inbox,
                                                 addresses, queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    queue.work()
    page = text(client.get(f"/staff/rounds/{round_.id}", headers={"Accept-Language": "zh-CN"}))
    [row] = mailing_rows(page)
    assert row[:2] == ["邀请：中层干部", "已完成"]


def test_a_worker_runs_only_the_mailings_its_own_instance_queued(
        app, client, sign_in, post, make_round, session, inbox, addresses, queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    queued_by = app.config["PINGYI"]
    # the worker of another instance, wrongly sharing this Redis server and prefix
    app.config["PINGYI"] = queued_by.replace(secret_key="another-instance-" + "k" * 32)
    queue.work()
    app.config["PINGYI"] = queued_by
    assert inbox.messages == [] and invited(session) == 0
    [row] = mailing_rows(text(client.get(f"/staff/rounds/{round_.id}")))
    assert row[1].startswith("stopped: another Pingyi instance")


def test_a_mailing_queued_before_a_key_rotation_still_goes_out(
        app, client, sign_in, post, make_round, inbox, addresses, queue):
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    old = app.config["PINGYI"]
    app.config["PINGYI"] = old.replace(secret_key="rotated-" + "k" * 32,
                                       secret_key_fallbacks=(old.secret_key,))
    queue.work()
    assert sorted(m["To"] for m in inbox.messages) == ["a@example.org", "b@example.org"]


def test_a_mailing_for_a_round_this_database_does_not_hold_stops(app, client, sign_in, make_round,
                                                                  queue, inbox):
    from evaluation import mail_queue
    sign_in()
    round_ = make_round("open")
    mail_queue.enqueue(app.config["PINGYI"], "remind", round_.id + 1000, "test")
    queue.work()
    assert inbox.messages == []
    [job] = queue.jobs()
    assert tuple(job.meta["error"]) == ("round_missing", "")


def test_an_unexpected_error_fails_the_mailing_and_keeps_its_counts(
        app, client, sign_in, post, make_round, inbox, addresses, queue, monkeypatch):
    from evaluation import inviting
    sign_in()
    round_ = make_round("open")
    upload(post, round_, addresses)
    real_deliver, calls = inviting._deliver, []

    def deliver_then_fail(*args, **kwargs):  # a bug, or the database going away, mid-mailing
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("unexpected")
        return real_deliver(*args, **kwargs)

    monkeypatch.setattr(inviting, "_deliver", deliver_then_fail)
    queue.work()
    [row] = mailing_rows(text(client.get(f"/staff/rounds/{round_.id}")))
    assert row[1].startswith("failed: see the mail worker's log") and row[2] == "1"
    assert [m["To"] for m in inbox.messages] == ["a@example.org"]


def test_a_refusal_of_pingyi_s_own_in_the_worker_shows_in_the_page_s_language(
        app, client, sign_in, make_round, queue, inbox):
    from evaluation import mail_queue
    sign_in()
    round_ = make_round("open")
    mail_queue.enqueue(app.config["PINGYI"], "invite", round_.id, "test", "nobody", ["a@example.org"])
    queue.work()
    assert inbox.messages == []
    [row] = mailing_rows(text(client.get(f"/staff/rounds/{round_.id}",
                                         headers={"Accept-Language": "zh-CN"})))
    assert row[1].startswith(f"已中止：group: 第 {round_.id} 轮测评没有评价群体 'nobody'（现有：")
