"""From a link to a receipt, and every refusal on the way, on both databases."""

import pytest
from sqlalchemy import func, select

from evaluation.models import Ballot, Invitation, Rating
from evaluation.packed_scores import unpack
from tests.survey.conftest import RECEIPT_RE, full_ballot, link_path


def counts(session):
    return (session.scalar(select(func.count()).select_from(Ballot)),
            session.scalar(select(func.count()).select_from(Rating)),
            sum(v is not None for scores in session.scalars(select(Rating.scores))
                for v in unpack(scores)),
            session.scalar(select(func.count()).select_from(Invitation).where(Invitation.is_used)))


def test_link_is_swapped_for_a_session_and_leads_to_a_receipt(client, post, session, make_round, issue):
    round_ = make_round("open")
    link = issue(round_)[0]
    opened = client.get(link_path(link))
    assert opened.status_code == 302 and opened.location == "/ballot"
    page = client.get("/ballot")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'name="grade-c01"' in html and 'name="item-c01-politics"' in html
    assert 'value="dont_know"' in html and 'name="comment-c12"' in html
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    # Seen again, the page leaves the voter's cookies alone: no session rewritten, no staff
    # "remember me" cookie cleared.
    again = client.get("/ballot")
    assert again.status_code == 200 and again.headers.getlist("Set-Cookie") == []
    response = post("/ballot", full_ballot(round_))
    assert response.status_code == 302 and response.location == "/receipt"
    receipt = RECEIPT_RE.search(client.get("/receipt").get_data(as_text=True)).group(1)
    ballot = session.scalar(select(Ballot))
    assert ballot.receipt == receipt
    assert counts(session) == (1, 12, 60, 1)


def test_item_scores_are_stored_in_questionnaire_order_and_blanks_stay_blank(
        client, post, session, make_round, issue):
    from evaluation.rounds import transition_round
    from tests.conftest import reverse_item_order

    round_ = make_round("draft")
    reverse_item_order(session, round_)  # item ids now run against the questionnaire's order
    transition_round(session, round_, "open", "test")
    client.get(link_path(issue(round_)[0]))
    data = full_ballot(round_)
    c01, c02 = round_.participations[:2]
    keys = [item.key for item in round_.items]  # in questionnaire order
    assert keys == ["integrity", "results", "diligence", "ability", "politics"]
    for k, key in enumerate(keys):
        data[f"item-c01-{key}"] = str(6 + k)
    data["grade-c02"] = "dont_know"
    for key in keys:
        data[f"item-c02-{key}"] = ""
    data["item-c02-results"] = "4"
    assert post("/ballot", data).status_code == 302
    stored = dict(session.execute(select(Rating.participation_id, Rating.scores)).all())
    assert unpack(stored[c01.id]) == [6, 7, 8, 9, 10]
    assert unpack(stored[c02.id]) == [None, 4, None, None, None]
    assert unpack(stored[round_.participations[2].id]) == [7] * 5


def test_used_link_gives_409_when_opened_and_when_posted(client, post, session, make_round, issue, app):
    round_ = make_round("open")
    link = issue(round_)[0]
    client.get(link_path(link))
    data = full_ballot(round_)
    other = app.test_client()  # a second phone that opened the same link before the first voted
    other.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    other.get(link_path(link))
    assert post("/ballot", data).status_code == 302
    again = client.get(link_path(link))
    assert again.status_code == 409
    assert "A ballot has already been recorded for this link" in again.get_data(as_text=True)
    from tests.conftest import csrf_token
    late = other.post("/ballot", data={**data, "csrf_token": csrf_token(other)})
    assert late.status_code == 409
    assert "A ballot has already been recorded for this link" in late.get_data(as_text=True)
    assert counts(session)[0] == 1


@pytest.mark.parametrize("status, code, text", [
    ("draft", 403, "Voting has not started"),
    ("closed", 410, "Voting has closed"),
])
def test_link_of_a_round_not_open(client, session, make_round, issue, status, code, text):
    from evaluation.rounds import transition_round
    round_ = make_round("draft")
    link = issue(round_)[0]
    if status == "closed":
        transition_round(session, round_, "open", "test")
        transition_round(session, round_, "close", "test")
    response = client.get(link_path(link))
    assert response.status_code == code
    assert text in response.get_data(as_text=True)


def test_ballot_posted_after_close_is_refused(client, post, session, make_round, issue):
    from evaluation.rounds import transition_round
    round_ = make_round("open")
    link = issue(round_)[0]
    client.get(link_path(link))
    transition_round(session, round_, "close", "test")
    response = post("/ballot", full_ballot(round_))
    assert response.status_code == 410
    assert counts(session) == (0, 0, 0, 0)


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
    lambda t: "x" + t,
    lambda t: t.split(".")[0] + ".forged",
    lambda t: "not-a-token",
])
def test_forged_link_is_refused_before_any_query(client, app, make_round, issue, mangle):
    from sqlalchemy import event
    from core.extensions import db
    round_ = make_round("open")
    token = issue(round_)[0].token
    statements = []
    with app.app_context():
        engine = db.engine

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get(f"/v/{mangle(token)}")
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements == []
    assert response.status_code == 404
    assert "This is not a valid ballot link" in response.get_data(as_text=True)


def test_the_about_page_says_what_is_stored_in_plain_words(client, make_round, issue, session):
    """Without a ballot in hand it speaks of the round's minimum in general; with one, it gives
    that round's minimum. It never claims ballots are shuffled while voting goes on."""
    en = client.get("/about", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "the round's minimum (usually 3)" in en
    assert "Until then, someone who copies" in en and "shuffled on disk while voting" not in en
    zh = client.get("/about", headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "抹去" in zh and "通常为 3 人" in zh
    round_ = make_round("open")
    round_.min_group_size = 5
    session.commit()
    assert client.get(link_path(issue(round_)[0])).status_code == 302
    en = client.get("/about", headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "fewer than 5 ballots is never shown on its own" in en


def test_switching_language_on_the_ballot_keeps_the_answers_and_casts_nothing(
        client, post, make_round, issue, session):
    round_ = make_round("open")
    assert client.get(link_path(issue(round_)[0]), headers={"Accept-Language": "zh-CN"}
                      ).status_code == 302
    ballot = client.get("/ballot").get_data(as_text=True)
    assert 'form="ballot" formaction="/ballot/language"' in ballot  # the header's buttons
    answers = {k: v for k, v in full_ballot(round_).items() if k.startswith(("grade-c01", "item-c01"))}
    answers["comment-c01"] = "有理有据 <b>"
    page = post("/ballot/language", {**answers, "lang": "en"})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and '<html lang="en">' in text
    assert f'name="grade-c01" value="{answers["grade-c01"]}" checked' in text
    assert "有理有据 &lt;b&gt;</textarea>" in text
    assert session.scalar(select(func.count()).select_from(Ballot)) == 0
    assert not session.scalar(select(Invitation.is_used))
    assert '<html lang="en">' in client.get("/ballot").get_data(as_text=True)  # remembered
