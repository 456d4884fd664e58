"""Links from the command line, short codes, key rotation, rate limits, turnout, the seal."""

import hashlib
import re

import pytest
from sqlalchemy import select, update

from core.signing import LinkSigner
from evaluation.ballot_box import seal_chain
from evaluation.invitations import CODE_ALPHABET, Keys, normalise_code
from evaluation.models import Ballot, Rating
from evaluation.packed_scores import pack, unpack
from evaluation.rounds import transition_round
from tests.conftest import csrf_token
from tests.survey.conftest import full_ballot, link_path

LINE_RE = re.compile(r"^(http://127\.0\.0\.1:5000/v/(\S+))\t([A-Z0-9]{5}-[A-Z0-9]{5})$")


def test_links_command_prints_url_tab_code_lines(runner, session, make_round, client):
    round_ = make_round("open")
    result = runner.invoke(args=["links", str(round_.id), "--group", "peer", "--count", "5"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    matches = [LINE_RE.match(line) for line in lines]
    assert all(matches), lines
    codes = {m.group(3) for m in matches}
    assert len(codes) == 5 and all(set(c.replace("-", "")) <= set(CODE_ALPHABET) for c in codes)
    assert not set("01ILO") & set("".join(codes))
    assert client.get("/v/" + matches[0].group(2)).status_code == 302


@pytest.mark.parametrize("args, message", [
    (["--group", "nobody", "--count", "2"],
     "group: round 1 has no group 'nobody' (it has superior, peer, subordinate, public)"),
    (["--group", "peer", "--count", "0"], "count: between 1 and 2000 at a time, got 0"),
])
def test_links_command_refusals(runner, make_round, args, message):
    make_round("open")
    result = runner.invoke(args=["links", "1", *args])
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.strip() == f"error: {message}"


def test_no_links_for_a_closed_round(runner, make_round):
    make_round("closed")
    result = runner.invoke(args=["links", "1", "--group", "peer", "--count", "1"])
    assert result.exit_code == 1
    assert "not a closed one" in result.stderr


def test_short_code_opens_the_ballot_however_it_is_typed(client, post, make_round, issue):
    round_ = make_round("open")
    link = issue(round_)[0]
    typed = " " + link.code[:5].lower() + " – " + link.code[5:].lower() + " "
    response = post("/code", {"code": typed})
    assert response.status_code == 302 and response.location == "/ballot"
    assert post("/ballot", full_ballot(round_)).status_code == 302


def test_a_used_code_is_refused_in_words_about_a_code(client, post, make_round, issue):
    round_ = make_round("open")
    link = issue(round_)[0]
    assert post("/code", {"code": link.display_code}).status_code == 302
    assert post("/ballot", full_ballot(round_)).status_code == 302
    again = post("/code", {"code": link.display_code}, headers={"Accept-Language": "zh-CN"})
    assert again.status_code == 409 and "此代码已提交过测评票" in again.get_data(as_text=True)
    opened = client.get(link_path(link), headers={"Accept-Language": "zh-CN"})
    assert opened.status_code == 409 and "此链接已提交过测评票" in opened.get_data(as_text=True)


def test_a_wrong_code_comes_back_in_the_box_escaped(post, make_round):
    make_round("open")
    response = post("/code", {"code": 'ABCDE-FGH"<b>'})
    page = response.get_data(as_text=True)
    assert response.status_code == 404 and 'value="ABCDE-FGH&#34;&lt;b&gt;"' in page
    assert 'aria-invalid="true"' in page and "<b>" not in page


@pytest.mark.parametrize("text, expected", [
    ("ABCDE-FGHJK", "ABCDEFGHJK"), ("abcde fghjk", "ABCDEFGHJK"), ("ABCDE-FGHJ", None),
    ("ABCDE-FGHJ1", None), ("ABCDE-FGHJO", None), ("", None),
])
def test_normalise_code(text, expected):
    assert normalise_code(text) == expected


def test_links_survive_key_rotation(app, client, make_round, issue):
    round_ = make_round("open")
    link = issue(round_)[0]
    config = app.config["PINGYI"]
    rotated = config.replace(secret_key="a-brand-new-key-" + "y" * 32,
                             secret_key_fallbacks=(config.secret_key,))
    app.extensions["pingyi.keys"] = Keys.from_config(rotated)
    assert client.get(link_path(link)).status_code == 302
    app.extensions["pingyi.keys"] = Keys.from_config(config.replace(secret_key="other-" + "z" * 40))
    assert client.get(link_path(link)).status_code == 404


def test_signer_refuses_other_purposes():
    signer = LinkSigner("k" * 40)
    from itsdangerous import URLSafeSerializer
    other = URLSafeSerializer("k" * 40, salt="something-else").dumps([1, "secret"])
    from core.signing import BadLinkError
    with pytest.raises(BadLinkError):
        signer.loads(other)


def test_invalid_attempts_are_rate_limited_but_used_links_and_ballots_are_not(
        app, client, post, make_round, issue):
    app.config["PINGYI"] = app.config["PINGYI"].replace(link_rate_limit="30 per minute")
    round_ = make_round("open")
    used, fresh = issue(round_, "public", 2)
    client.get(link_path(used))
    assert post("/ballot", full_ballot(round_)).status_code == 302
    for _ in range(40):  # a meeting room double-tapping a used link is never locked out
        assert client.get(link_path(used)).status_code == 409
    statuses = [client.get(f"/v/forged-{n}").status_code for n in range(31)]
    assert statuses[:30] == [404] * 30 and statuses[30] == 429
    refused = client.post("/code", data={"code": "AAAAA-AAAAA", "csrf_token": csrf_token(client)},
                          headers={"Accept-Language": "en"})
    assert refused.status_code == 429
    assert "a link or QR code you were given still opens at once" in refused.get_data(as_text=True)
    # a genuine code waits for the minute too: letting it through would tell a guesser which
    # codes exist
    assert client.post("/code", data={"code": fresh.display_code, "csrf_token": csrf_token(client)}
                       ).status_code == 429
    # another phone in the same room (same address): a genuine link still opens, and casting
    # is never limited
    other = app.test_client()
    assert other.get(link_path(fresh)).status_code == 302
    assert other.post("/ballot", data={**full_ballot(round_), "csrf_token": csrf_token(other)}
                      ).status_code == 302


def test_turnout_hides_groups_below_the_minimum(app, client, sign_in, make_round, issue, post):
    round_ = make_round("open")
    links = issue(round_, "public", 4)
    for link in links[:2]:
        voter = app.test_client()
        voter.get(link_path(link))
        voter.post("/ballot", data={**full_ballot(round_), "csrf_token": csrf_token(voter)})
    sign_in("analyst")
    groups = {g["group"]: g for g in client.get(f"/staff/rounds/{round_.id}/turnout.json").json["groups"]}
    assert groups["public"] == {**groups["public"], "issued": 4, "cast": None, "below_minimum": True}
    assert groups["peer"]["cast"] == 0
    voter = app.test_client()
    voter.get(link_path(links[2]))
    voter.post("/ballot", data={**full_ballot(round_), "csrf_token": csrf_token(voter)})
    groups = {g["group"]: g for g in client.get(f"/staff/rounds/{round_.id}/turnout.json").json["groups"]}
    assert groups["public"]["cast"] == 3


def test_seal_chain_is_sha256_in_the_given_order():
    docs = [("AAAA-AAAA-AAAA", '{"x":1}'), ("BBBB-BBBB-BBBB", '{"x":2}')]
    h = hashlib.sha256(b"pingyi-seal:fp").hexdigest()
    for receipt, content in docs:
        h = hashlib.sha256(f"{h}\n{receipt}\n{content}".encode()).hexdigest()
    assert seal_chain("fp", docs) == h
    assert seal_chain("fp", docs[::-1]) != h


def test_verify_holds_after_close_and_catches_tampering(app, runner, client, post, session, make_round,
                                                        issue):
    round_ = make_round("open")
    for link in issue(round_, "public", 3):
        voter = app.test_client()
        voter.get(link_path(link))
        voter.post("/ballot", data={**full_ballot(round_), "csrf_token": csrf_token(voter)})
    assert runner.invoke(args=["verify", str(round_.id)]).exit_code == 1  # not sealed while open
    transition_round(session, round_, "close", "test")
    result = runner.invoke(args=["verify", str(round_.id)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"seal holds: 3 ballots, head {round_.seal_head}")
    rating = session.execute(select(Rating.ballot_id, Rating.participation_id, Rating.scores)
                             .limit(1)).one()
    changed = pack([10] + unpack(rating.scores)[1:])  # one item score of one ballot: 7 -> 10
    session.execute(update(Rating).where(Rating.ballot_id == rating.ballot_id,
                                         Rating.participation_id == rating.participation_id)
                    .values(scores=changed))
    session.commit()
    result = runner.invoke(args=["verify", str(round_.id)])
    assert result.exit_code == 1 and "seal BROKEN" in result.stderr


def test_reissued_link_voids_a_session_opened_with_the_old_one(app, client, post, session, make_round,
                                                               issue, keys):
    import datetime as dt

    from evaluation.invitations import Listed, reissue_to_send
    from evaluation.models import Invitation
    round_ = make_round("open")
    old = issue(round_)[0]
    client.get(link_path(old))  # someone opened the old link (say it leaked) ...
    inv = session.get(Invitation, old.invitation_id)
    new = reissue_to_send(session, Listed(inv.id, inv.round_id, inv.email, inv.token_hash,
                                          inv.code_hash, inv.last_sent_on), keys,
                          dt.date.today())  # ... then a reminder
    response = post("/ballot", full_ballot(round_))
    assert response.status_code == 404
    assert session.scalar(select(Ballot.id)) is None
    voter = app.test_client()
    assert voter.get(link_path(new)).status_code == 302
    assert voter.post("/ballot", data={**full_ballot(round_), "csrf_token": csrf_token(voter)}
                      ).status_code == 302


def test_a_cast_finds_its_invitation_by_key_right_after_a_large_issue(session, make_round, issue):
    """PostgreSQL: issuing many links refreshes the statistics, so casting does not read every
    link of the round to find one (the plan before autovacuum's first visit)."""
    round_ = make_round("open")
    links = issue(round_, "public", 300)
    if session.get_bind().dialect.name != "postgresql":
        return  # SQLite plans by its indexes alone: nothing to refresh
    from sqlalchemy import text
    from evaluation.ballot_box import _PG_CAST
    plan = "\n".join(session.execute(text(
        "EXPLAIN SELECT round_id, id FROM invitations WHERE id = :i AND round_id = :r "
        "AND group_id = :g AND token_hash = :t"),
        {"i": links[0].invitation_id, "r": round_.id, "t": "x" * 64,
         "g": next(g.id for g in round_.groups if g.key == "public")}
    ).scalars())
    assert "Seq Scan" not in plan and any(key in plan for key in (
        "pk_invitations", "uq_invitations_token_hash", "uq_invitations_round_id_id")), plan
    assert "WHERE id = %(i)s AND round_id = %(r)s" in " ".join(_PG_CAST.split())


def test_with_redis_the_workers_share_one_budget_of_invalid_attempts(config):
    """Two app instances (two gunicorn workers) on one Redis: the budget of invalid links and
    codes of an address is counted across both, in this instance's keys only."""
    import secrets as random

    from redis import Redis

    from tests.conftest import REDIS_TEST_URL, require_redis
    from wsgi import create_app
    require_redis()
    prefix = f"pingyi-test-{random.token_hex(6)}"
    shared = config.replace(redis_url=REDIS_TEST_URL, redis_prefix=prefix,
                            link_rate_limit="4 per minute")
    workers = [create_app(shared).test_client(), create_app(shared).test_client()]
    redis = Redis.from_url(REDIS_TEST_URL)
    try:
        statuses = [workers[n % 2].get(f"/v/forged-{n}").status_code for n in range(6)]
        assert statuses == [404, 404, 404, 404, 429, 429]
        assert any(redis.scan_iter(f"*{prefix}/*"))
        # another instance on the same Redis server keeps a budget of its own
        neighbour = create_app(shared.replace(redis_prefix=prefix + "-b")).test_client()
        assert neighbour.get("/v/forged").status_code == 404
    finally:
        for key in redis.scan_iter(f"*{prefix}*"):
            redis.delete(key)


def test_a_close_that_stopped_halfway_is_finished_by_closing_again(app, client, post, runner,
                                                                    session, sign_in, make_round,
                                                                    issue):
    """Voting ended but the ballots were never mixed and sealed (the state a close leaves when it
    stops between its two steps): the round page says so and offers to finish, publishing and
    archiving are refused and change nothing, and closing again seals every ballot, once."""
    from core.types import utcnow
    from evaluation.audit import entries_for_round
    from evaluation.ballot_box import receipts, verify_seal
    from evaluation.errors import TransitionError
    from evaluation.models import Round
    from evaluation.rounds import is_closing
    round_ = make_round("open")
    for link in issue(round_, "public", 3):
        voter = app.test_client()
        voter.get(link_path(link))
        assert voter.post("/ballot", data={**full_ballot(round_),
                                           "csrf_token": csrf_token(voter)}).status_code == 302
    session.execute(update(Round).where(Round.id == round_.id).values(status="closed",
                                                                      closed_at=utcnow()))
    session.commit()
    session.refresh(round_)
    assert is_closing(round_)
    sign_in("organiser")
    page = client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)
    assert 'id="closing"' in page and "Finish closing" in page
    assert f'/staff/rounds/{round_.id}/publish"' not in page
    assert f'/staff/rounds/{round_.id}/results"' not in page
    results = client.get(f"/staff/rounds/{round_.id}/results")
    assert results.status_code == 409 and "Closing did not finish" in results.get_data(as_text=True)
    refused = runner.invoke(args=["results", str(round_.id), "--format", "json"])
    assert refused.exit_code == 1 and "closing did not finish" in refused.stderr
    for action in ("publish", "archive"):
        with pytest.raises(TransitionError, match=f"close it again before you {action} it"):
            transition_round(session, round_, action, "test")
        assert post(f"/staff/rounds/{round_.id}/{action}", {}).status_code == 302
        session.expire_all()
        assert session.get(Round, round_.id).status == "closed"
    result = runner.invoke(args=["round", "close", str(round_.id)])
    assert result.exit_code == 0, result.output
    session.expire_all()
    round_ = session.get(Round, round_.id)
    assert f"sealed 3 ballots, seal {round_.seal_head}" in result.stderr
    assert not is_closing(round_) and verify_seal(session, round_)[0]
    assert len(receipts(session, round_.id)) == 3
    assert client.get(f"/bulletin/{round_.id}").status_code == 200
    assert client.get(f"/staff/rounds/{round_.id}/results").status_code == 200
    page = client.get(f"/staff/rounds/{round_.id}").get_data(as_text=True)
    assert 'id="closing"' not in page and f'/staff/rounds/{round_.id}/publish"' in page
    again = runner.invoke(args=["round", "close", str(round_.id)])
    assert again.exit_code == 1 and "cannot close a round that is closed" in again.stderr
    actions = [e.action for e in entries_for_round(session, round_.id)]
    assert actions[-1] == "round.seal" and actions.count("round.seal") == 1


def test_receipts_are_twelve_symbols_of_the_code_alphabet_each_one_at_every_place():
    """Every symbol turns up at every place of the code: no place is fixed or left out of the
    one random draw a receipt is written from (about 1e-40 to fail by chance)."""
    from evaluation.ballot_box import new_receipt

    receipts = [new_receipt() for _ in range(3000)]
    assert all(re.fullmatch(r"[%s]{4}-[%s]{4}-[%s]{4}" % ((CODE_ALPHABET,) * 3), r) for r in receipts)
    assert len(set(receipts)) == len(receipts)
    for place in [i for i in range(14) if i not in (4, 9)]:
        assert {r[place] for r in receipts} == set(CODE_ALPHABET), place
