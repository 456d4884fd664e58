"""Every field is checked against fixed choices; a bad ballot comes back marked and stores nothing."""

import threading

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from evaluation.models import Ballot, Invitation
from tests.conftest import csrf_token
from tests.survey.conftest import full_ballot, link_path


def stored(session):
    return (session.scalar(select(func.count()).select_from(Ballot)),
            session.scalar(select(func.count()).select_from(Invitation).where(Invitation.is_used)))


def change(data, **updates):
    data = dict(data)
    for key, value in updates.items():
        key = key.replace("__", "-")
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


CASES = {
    "missing grade": ({"grade__c03": None}, "grade-c03"),
    "unknown grade": ({"grade__c03": "superb"}, "grade-c03"),
    "arabic-indic digit": ({"item__c01__politics": "٣"}, "item-c01-politics"),
    "fullwidth digit": ({"item__c01__politics": "５"}, "item-c01-politics"),
    "plus sign": ({"item__c01__politics": "+3"}, "item-c01-politics"),
    "padded": ({"item__c01__politics": " 3"}, "item-c01-politics"),
    "leading zero": ({"item__c01__politics": "03"}, "item-c01-politics"),
    "above the scale": ({"item__c01__politics": "11"}, "item-c01-politics"),
    "below the scale": ({"item__c01__politics": "0"}, "item-c01-politics"),
    "decimal": ({"item__c01__politics": "3.0"}, "item-c01-politics"),
    "missing item": ({"item__c02__ability": None}, "item-c02-ability"),
    "too long comment": ({"comment__c04": "x" * 501}, "comment-c04"),
    "NUL in a comment": ({"comment__c04": "bad\x00comment"}, "comment-c04"),
    "control character in a comment": ({"comment__c04": "bell\x07"}, "comment-c04"),
    "missing reason for a dissatisfied grade": ({"grade__c05": "incompetent"}, "comment-c05"),
    "unknown cadre": ({"grade__c99": "excellent"}, None),
    "unknown item": ({"item__c01__charisma": "5"}, None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_ballot_is_refused_marked_and_kept(client, post, session, make_round, issue, name):
    updates, field = CASES[name]
    round_ = make_round("open")
    link = issue(round_)[0]
    client.get(link_path(link))
    data = change(full_ballot(round_), **updates)
    response = post("/ballot", data)
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "Your ballot was not recorded yet" in html
    if field:
        marker = f'name="{field}"'
        assert marker in html
        block = html[:html.index(marker)]
        assert block.rfind("has-error") > block.rfind("<fieldset")  # the field's own box is marked
    # answers are kept: the chosen grade of another cadre is still checked
    assert 'name="grade-c12" value="competent" checked' in html or \
        'name="grade-c12" value="basic" checked' in html
    assert stored(session) == (0, 0)
    assert post("/ballot", full_ballot(round_)).status_code == 302  # the link still works


@pytest.mark.parametrize("dont_know, said", [
    (True, "Rate this item, or choose “Don't know” for this cadre."), (False, "Rate this item.")])
def test_a_cadre_left_blank_is_marked_whole_in_one_go(client, post, session, make_round, issue,
                                                       dont_know, said):
    """No grade and no items for c03, and a bad value beside them: the grade and every item
    are marked at once, so one round of corrections is enough."""
    round_ = make_round("open", dont_know=dont_know)
    client.get(link_path(issue(round_)[0]))
    items = [i.key for i in round_.items]
    data = change(full_ballot(round_), grade__c03=None,
                  **{f"item__c03__{k}": None for k in items[1:]}, **{f"item__c03__{items[0]}": "٣"})
    response = post("/ballot", data, headers={"Accept-Language": "en"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422 and stored(session) == (0, 0)
    card = html[html.index('name="grade-c03"'):html.index('name="grade-c04"')]
    assert "Choose a grade." in card and card.count(said) == len(items) - 1
    assert card.count("Not one of the choices.") == 1


def test_repeated_field_is_refused(client, session, make_round, issue):
    round_ = make_round("open")
    client.get(link_path(issue(round_)[0]))
    data = list(full_ballot(round_).items()) + [("grade-c01", "excellent"),
                                                ("csrf_token", csrf_token(client))]
    response = client.post("/ballot", data=MultiDict(data))
    assert response.status_code == 422
    assert stored(session) == (0, 0)


def test_excellent_quota_is_enforced_by_the_server(client, post, session, make_round, issue):
    round_ = make_round("open")  # 30% of 12 cadres: at most 3 Excellent
    client.get(link_path(issue(round_)[0]))
    four = full_ballot(round_, grade_for=lambda n: "excellent" if n < 4 else "competent")
    response = post("/ballot", four)
    assert response.status_code == 422
    assert "At most 3 cadres may be graded Excellent on one ballot" in response.get_data(as_text=True)
    assert stored(session) == (0, 0)
    three = full_ballot(round_, grade_for=lambda n: "excellent" if n < 3 else "competent")
    assert post("/ballot", three).status_code == 302


def test_dont_know_needs_no_items_and_is_stored_as_no_grade(client, post, session, make_round, issue):
    from evaluation.models import Rating
    round_ = make_round("open")
    client.get(link_path(issue(round_)[0]))
    data = full_ballot(round_)
    data["grade-c07"] = "dont_know"
    for item in round_.items:
        del data[f"item-c07-{item.key}"]
    assert post("/ballot", data).status_code == 302
    assert session.scalar(select(func.count()).select_from(Rating).where(Rating.grade_id.is_(None))) == 1


def test_dont_know_is_refused_where_the_round_does_not_offer_it(client, post, session, make_round, issue):
    round_ = make_round("open", dont_know=False)
    client.get(link_path(issue(round_)[0]))
    data = full_ballot(round_)
    data["grade-c07"] = "dont_know"
    assert post("/ballot", data).status_code == 422
    assert stored(session) == (0, 0)


def test_oversized_ballot_is_refused(client, post, session, make_round, issue):
    round_ = make_round("open")
    client.get(link_path(issue(round_)[0]))
    data = full_ballot(round_)
    data["comment-c01"] = "长" * 120_000  # 1 MiB and more once form-encoded
    assert post("/ballot", data).status_code == 413
    assert stored(session) == (0, 0)


def test_group_sees_only_its_cadres(client, post, session, make_round, issue, example_spec):
    example_spec["groups"][0]["cadres"] = ["c01", "c02"]
    round_ = make_round("open", groups=example_spec["groups"])
    client.get(link_path(issue(round_, "superior")[0]))
    html = client.get("/ballot").get_data(as_text=True)
    assert 'name="grade-c01"' in html and 'name="grade-c03"' not in html
    data = full_ballot(round_, "superior")
    assert set(k.split("-")[1] for k in data if k.startswith("grade-")) == {"c01", "c02"}
    assert post("/ballot", {**data, "grade-c03": "competent"}).status_code == 422
    assert post("/ballot", data).status_code == 302


def test_invalidate_rule_keeps_but_does_not_count_a_uniform_ballot(client, post, session, make_round,
                                                                   issue):
    round_ = make_round("open", rules={"validity": "invalidate"})
    client.get(link_path(issue(round_)[0]))
    assert post("/ballot", full_ballot(round_, grade_for=lambda n: "competent")).status_code == 302
    assert session.scalar(select(Ballot.is_valid)) is False


def test_twenty_phones_racing_with_one_link_give_one_ballot(app, session, make_round, issue):
    round_ = make_round("open")
    link = issue(round_)[0]
    data = full_ballot(round_)
    phones = []
    for _ in range(20):
        phone = app.test_client()
        phone.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
        assert phone.get(link_path(link)).status_code == 302
        phones.append((phone, {**data, "csrf_token": csrf_token(phone)}))
    barrier = threading.Barrier(len(phones))
    results = [None] * len(phones)

    def cast(n, phone, form):
        barrier.wait()
        response = phone.post("/ballot", data=form)
        results[n] = (response.status_code, response.get_data(as_text=True))

    threads = [threading.Thread(target=cast, args=(n, *p)) for n, p in enumerate(phones)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    statuses = sorted(r[0] for r in results)
    assert statuses == [302] + [409] * 19, statuses
    assert all("A ballot has already been recorded for this link" in body
               for status, body in results if status == 409)
    assert stored(session) == (1, 1)


def test_many_voters_casting_at_once_while_mixes_run(app, session, make_round, issue):
    """Every ballot is recorded even when the periodic mix rewrites invitations meanwhile."""
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=3)
    round_ = make_round("open")
    data = full_ballot(round_)
    phones = []
    for link in issue(round_, "public", 30):
        phone = app.test_client()
        phone.get(link_path(link))
        phones.append((phone, {**data, "csrf_token": csrf_token(phone)}))
    barrier = threading.Barrier(len(phones))
    statuses = []

    def cast(phone, form):
        barrier.wait()
        statuses.append(phone.post("/ballot", data=form).status_code)

    threads = [threading.Thread(target=cast, args=p) for p in phones]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses == [302] * 30
    assert stored(session) == (30, 30)


def test_long_chinese_comments_and_crlf_line_breaks_fit(client, post, session, make_round, issue):
    """Twelve comments of 500 characters, CJK, with line breaks sent as CRLF: a valid ballot."""
    round_ = make_round("open")
    client.get(link_path(issue(round_)[0]))
    data = full_ballot(round_)
    for p in round_.participations:
        data[f"comment-{p.cadre.key}"] = ("评" * 249 + "\r\n") * 2
    assert post("/ballot", data).status_code == 302
    assert stored(session) == (1, 1)


def test_a_cast_leaves_the_callers_transaction_alone(app, session, make_round, issue, keys):
    """The ballot box commits on a connection of its own: work the caller has open is neither
    committed nor rolled back by it (PostgreSQL: an uncommitted write; SQLite, one writer at a
    time: an open read)."""
    from werkzeug.datastructures import MultiDict
    from sqlalchemy import func, select, update

    from evaluation.ballot_box import cast_ballot
    from evaluation.ballot_sheet import parse_ballot
    from evaluation.models import Ballot, Invitation
    from evaluation.voting import enter_with_link, sheet_for
    from tests.survey.conftest import full_ballot

    round_ = make_round("open")
    link, other = issue(round_, count=2)
    with app.app_context():
        ticket = enter_with_link(session, link.token, keys)
        parsed = parse_ballot(sheet_for(session, ticket), MultiDict(full_ballot(round_)))
        if session.get_bind().dialect.name == "postgresql":
            session.execute(update(Invitation).where(Invitation.id == other.invitation_id)
                            .values(email="pending@example.org"))
        else:
            session.scalar(select(Invitation.email).where(Invitation.id == other.invitation_id))
        assert session.in_transaction()
        cast = cast_ballot(session, ticket.invitation_id, ticket.round_id, ticket.group_id, parsed,
                           invalidate=False, token_hash=ticket.token_hash, mix_every=1)
        assert session.in_transaction()  # still the caller's to end
        session.rollback()
    assert cast.receipt and cast.mix_due  # the first ballot, with a mix after every one
    assert session.scalar(select(Invitation.email).where(Invitation.id == other.invitation_id)) is None
    assert session.scalar(select(func.count()).select_from(Ballot)) == 1
