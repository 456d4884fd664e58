"""Paper ballots typed in by staff: the code on the paper, then the answers, into the same ballot
box as the phones' ballots."""

import re

import pytest
from sqlalchemy import func, select

from evaluation.audit import entries_for_round
from evaluation.models import Ballot, Invitation, Rating
from tests.survey.conftest import full_ballot, link_path

FLASH_RECEIPT_RE = re.compile(r"receipt code is ([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})")


def _paper(round_) -> str:
    return f"/staff/rounds/{round_.id}/paper"


def _ballots(session, round_) -> int:
    session.rollback()
    return session.scalar(select(func.count()).select_from(Ballot).where(
        Ballot.round_id == round_.id))


def test_a_paper_ballot_goes_into_the_ballot_box_once(app, client, post, session, sign_in,
                                                     make_round, issue):
    round_ = make_round("open")
    link, = issue(round_, "peer", 1)
    sign_in("organiser")
    assert "Type in paper ballots" in client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)
    assert 'id="paper-code-form"' in client.get(_paper(round_)).get_data(as_text=True)
    # The code as a person types it: lower case, without the dash.
    typed = link.display_code.replace("-", "").lower()
    sheet = post(_paper(round_), {"step": "code", "code": typed})
    page = sheet.get_data(as_text=True)
    assert sheet.status_code == 200 and 'id="ballot"' in page
    assert sheet.headers["Cache-Control"] == "no-store"
    assert sheet.headers["Referrer-Policy"] == "no-referrer"
    peer = next(g for g in round_.groups if g.key == "peer")
    answers = full_ballot(round_, "peer")
    assert page.count('class="card cadre"') == sum(1 for k in answers if k.startswith("grade-"))
    assert peer.label("en") in page
    assert f'<code id="paper-code">{link.display_code}</code>' in page
    answers["comment-c01"] = "on paper"
    done = post(_paper(round_), {"step": "ballot", "code": typed, **answers})
    assert done.status_code == 302 and done.headers["Location"].endswith(_paper(round_))
    receipt = FLASH_RECEIPT_RE.search(client.get(_paper(round_)).get_data(as_text=True)).group(1)
    ballot = session.execute(select(Ballot).where(Ballot.round_id == round_.id)).scalar_one()
    assert (ballot.receipt, ballot.is_paper, ballot.group_id) == (receipt, True, peer.id)
    assert session.scalar(select(Rating.comment).where(
        Rating.ballot_id == ballot.id, Rating.comment.is_not(None))) == "on paper"
    assert session.scalar(select(Invitation.is_used).where(
        Invitation.round_id == round_.id)) is True
    assert [e.action for e in entries_for_round(session, round_.id)][-1] == "ballot.paper"
    # The paper used the code up: neither the paper again nor the voter's phone can vote with it.
    again = post(_paper(round_), {"step": "ballot", "code": typed, **answers})
    assert again.status_code == 409 and 'id="paper-problem"' in again.get_data(as_text=True)
    assert post(_paper(round_), {"step": "code", "code": typed}).status_code == 409
    phone = app.test_client()
    assert phone.get(link_path(link)).status_code == 409
    assert _ballots(session, round_) == 1


def test_a_paper_ballot_with_errors_comes_back_marked_and_stores_nothing(
        client, post, session, sign_in, make_round, issue):
    round_ = make_round("open")
    link, = issue(round_, "public", 1)
    sign_in("organiser")
    answers = full_ballot(round_)
    answers.pop("grade-c02")
    answers["item-c03-politics"] = "٣"
    answers["comment-c04"] = "kept"
    response = post(_paper(round_), {"step": "ballot", "code": link.display_code, **answers})
    page = response.get_data(as_text=True)
    assert response.status_code == 422 and 'id="ballot-errors"' in page
    assert page.count('class="grades has-error"') == 1 and page.count('class="item has-error"') >= 1
    assert ">kept</textarea>" in page and f'value="{link.display_code}"' in page
    assert _ballots(session, round_) == 0
    assert session.scalar(select(Invitation.is_used).where(
        Invitation.round_id == round_.id)) is False


@pytest.mark.parametrize("code", ["", "ABCDE-FGHJK", "not a code at all"])
def test_an_unknown_code_is_refused_and_changes_nothing(client, post, session, sign_in,
                                                        make_round, issue, code):
    round_ = make_round("open")
    issue(round_, "public", 1)
    sign_in("organiser")
    for step in ("code", "ballot"):
        response = post(_paper(round_), {"step": step, "code": code, **full_ballot(round_)})
        assert response.status_code == 404
        assert "No ballot of this round has this code" in response.get_data(as_text=True)
    assert _ballots(session, round_) == 0


def test_a_code_of_another_round_is_refused(client, post, session, sign_in, make_round, issue):
    first, second = make_round("open"), make_round("open", title="Other", period="2027")
    link, = issue(second, "public", 1)
    sign_in("organiser")
    response = post(_paper(first), {"step": "ballot", "code": link.display_code,
                                    **full_ballot(first)})
    assert response.status_code == 404
    assert _ballots(session, first) == _ballots(session, second) == 0


@pytest.mark.parametrize("status", ["draft", "closed"])
def test_paper_ballots_only_while_open(client, post, session, sign_in, make_round, status):
    round_ = make_round(status)
    sign_in("organiser")
    for response in (client.get(_paper(round_)), post(_paper(round_), {"step": "code", "code": "x"})):
        assert response.status_code == 302
        assert response.headers["Location"].endswith(f"/staff/rounds/{round_.id}")
    assert "only while the round is open" in client.get(f"/staff/rounds/{round_.id}").get_data(
        as_text=True)


def test_analysts_cannot_type_in_paper_ballots(client, post, session, sign_in, make_round, issue):
    round_ = make_round("open")
    link, = issue(round_, "public", 1)
    sign_in("analyst")
    assert client.get(_paper(round_)).status_code == 403
    assert client.get(f"{_paper(round_)}/print?group=public").status_code == 403
    response = post(_paper(round_), {"step": "ballot", "code": link.display_code,
                                     **full_ballot(round_)})
    assert response.status_code == 403
    assert _ballots(session, round_) == 0


def test_a_blank_paper_ballot_prints_the_groups_cadres_grades_and_scale(
        client, sign_in, make_round):
    round_ = make_round("open", dont_know=False)
    peer = next(g for g in round_.groups if g.key == "peer")
    targets = {t.participation_id for t in peer.targets}
    rated = [p.cadre.name for p in round_.participations if peer.rates_all or p.id in targets]
    sign_in("organiser")
    page = client.get(_paper(round_))
    assert 'id="paper-print-form"' in page.get_data(as_text=True)
    response = client.get(f"{_paper(round_)}/print?group=peer",
                          headers={"Accept-Language": "en"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert html.count('class="cadre"') == len(rated) and all(name in html for name in rated)
    assert all(f"☐ {g.label_en}" in html for g in round_.grades)
    assert "Don&#39;t know" not in html and "Don't know" not in html
    item_rows = html.count("<tr><th>")
    assert item_rows == len(rated) * len(round_.items)
    assert html.count('<span class="num">') == item_rows * (round_.item_max - round_.item_min + 1)
    assert 'id="code-blank"' in html and "<script" not in html and "style=" not in html


def test_blank_paper_ballots_refused_for_an_unknown_group_or_a_round_not_open(
        client, sign_in, make_round):
    sign_in("organiser")
    round_ = make_round("open")
    assert client.get(f"{_paper(round_)}/print?group=nobody").status_code == 404
    assert client.get(f"{_paper(round_)}/print").status_code == 404
    draft = make_round("draft", title="Draft", period="2027")
    response = client.get(f"{_paper(draft)}/print?group=peer")
    assert response.status_code == 302 and response.headers["Location"].endswith(
        f"/staff/rounds/{draft.id}")
