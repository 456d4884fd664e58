"""Organiser pages for voting: printable QR slips and the turnout table."""

import re

from sqlalchemy import func, select

from evaluation.models import Invitation


def test_printable_slips_carry_a_qr_code_and_a_short_code_each(client, sign_in, post, make_round, session):
    sign_in("organiser")
    round_ = make_round("open")
    response = post(f"/staff/rounds/{round_.id}/slips", {"group": "public", "count": "6"})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    assert html.count("<svg") == 6
    codes = re.findall(r'<p class="code">([A-Z0-9]{5}-[A-Z0-9]{5})</p>', html)
    assert len(set(codes)) == 6
    assert session.scalar(select(func.count()).select_from(Invitation)) == 6
    assert "links.issue" in client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)


def test_slips_refused_for_a_closed_round(client, sign_in, post, make_round, session):
    sign_in("organiser")
    round_ = make_round("closed")
    response = post(f"/staff/rounds/{round_.id}/slips", {"group": "public", "count": "2"},
                    follow_redirects=True)
    assert "links can be issued for a draft or open round" in response.get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(Invitation)) == 0


def test_slips_count_is_bounded(client, sign_in, post, make_round, session):
    sign_in("organiser")
    round_ = make_round("open")
    for count in ("5000", "0", "abc", ""):
        response = post(f"/staff/rounds/{round_.id}/slips", {"group": "public", "count": count},
                        follow_redirects=True, headers={"Accept-Language": "en"})
        assert "Number of slips: " in response.get_data(as_text=True)
        assert "Give a number from 1 to 500." in response.get_data(as_text=True)
    assert session.scalar(select(func.count()).select_from(Invitation)) == 0


def test_round_page_shows_turnout(client, sign_in, post, make_round):
    sign_in("organiser")
    round_ = make_round("open")
    post(f"/staff/rounds/{round_.id}/slips", {"group": "peer", "count": "3"})
    html = client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)
    row = re.search(r'<tr data-group="peer">(.*?)</tr>', html, re.S).group(1)
    assert '<td class="issued">3</td>' in row and '<td class="cast">0</td>' in row
