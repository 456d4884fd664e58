"""Fixtures for the voting side: issued links, a helper that fills in a whole ballot, and a
real SMTP server on loopback (aiosmtpd) with an address file for it."""

from __future__ import annotations

import email
import email.policy
import re
import socket

import pytest
from aiosmtpd.controller import Controller

from evaluation.invitations import issue_links


@pytest.fixture
def keys(app):
    return app.extensions["pingyi.keys"]


@pytest.fixture
def issue(session, keys):
    """issue(round_, group="public", count=1) -> [IssuedLink]."""
    def do(round_, group: str = "public", count: int = 1):
        return issue_links(session, round_, group, count, keys, "test")
    return do


def link_path(link) -> str:
    return f"/v/{link.token}"


def full_ballot(round_, group_key: str = "public", grade_for=None, item_value: str = "7") -> dict:
    """Form data answering every cadre the group rates: grade key per cadre, every item."""
    group = next(g for g in round_.groups if g.key == group_key)
    targets = {t.participation_id for t in group.targets}
    data = {}
    grades = [g.key for g in round_.grades]
    for n, p in enumerate(p for p in round_.participations if group.rates_all or p.id in targets):
        key = p.cadre.key
        data[f"grade-{key}"] = grade_for(n) if grade_for else grades[1 + n % 2]
        for item in round_.items:
            data[f"item-{key}-{item.key}"] = item_value
        data[f"comment-{key}"] = ""
    return data


RECEIPT_RE = re.compile(r'<code id="receipt">([^<]+)</code>')


@pytest.fixture
def vote(client, post):
    """vote(link, data) -> response of the POST after opening the link in this client."""
    def do(link, data: dict):
        opened = client.get(link_path(link))
        assert opened.status_code == 302, opened.status_code
        return post("/ballot", data)
    return do


REFUSED = "refused@example.org"
LINK_RE = re.compile(r"http://127\.0\.0\.1:5000(/v/\S+)")


class Inbox:
    """An SMTP handler that keeps every message and refuses one address."""

    def __init__(self):
        self.messages = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address == REFUSED:
            return "550 no such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 Message accepted for delivery"

    def links_for(self, address):
        return [LINK_RE.search(m.get_content()).group(1)
                for m in self.messages if m["To"] == address]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def inbox(app):
    """A real SMTP server on loopback, and the app set to send through it."""
    handler, port = Inbox(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    app.config["PINGYI"] = app.config["PINGYI"].replace(mail_server="127.0.0.1", mail_port=port)
    yield handler
    controller.stop()


@pytest.fixture
def addresses(tmp_path):
    """A CSV of addresses: two good (one twice, one in capitals), one malformed, one refused."""
    path = tmp_path / "people.csv"
    path.write_text("name,email\n甲,a@example.org\n乙,B@Example.org\n丙,not-an-address\n"
                    f"丁,{REFUSED}\n戊,a@example.org\n", encoding="utf-8")
    return path
