"""Fixtures for the voting side: issued links and a helper that fills in a whole ballot."""

from __future__ import annotations

import re

import pytest

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
