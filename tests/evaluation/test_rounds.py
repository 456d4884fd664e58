"""Round use cases on a real database: creation from a spec, draft edits, the lifecycle."""

import hashlib
import json

import pytest
from sqlalchemy import func, select

from evaluation import rounds as use
from evaluation.audit import entries_for_round, verify_chain
from evaluation.definitions import export_spec
from evaluation.errors import RoundNotEditableError, TransitionError
from evaluation.models import AuditEntry, Cadre, Invitation, Round
from evaluation.specs import SpecError, canonical_json, frozen_settings, validate_spec


def test_created_round_exports_exactly_its_spec(session, make_round, example_spec):
    round_ = make_round()
    session.expire_all()
    assert export_spec(session.get(Round, round_.id)) == example_spec


def test_group_targets_survive_the_round_trip(session, example_spec):
    example_spec["groups"][0]["cadres"] = ["c03", "c01"]
    round_ = use.create_round(session, validate_spec(example_spec), "test")
    session.expire_all()
    assert export_spec(session.get(Round, round_.id))["groups"][0]["cadres"] == ["c01", "c03"]


def test_cadres_persist_across_rounds(session, make_round):
    first, second = make_round(), make_round(title="Next year", period="2027")
    assert session.scalar(select(func.count(Cadre.id))) == 12
    assert first.participations[0].cadre_id == second.participations[0].cadre_id


@pytest.mark.parametrize("action, path", [
    ("open", ["open"]), ("close", ["open", "close"]), ("publish", ["open", "close", "publish"]),
    ("archive", ["open", "close", "archive"]), ("archive", ["open", "close", "publish", "archive"]),
])
def test_legal_transitions_set_status_time_and_log(session, make_round, action, path):
    round_ = make_round()
    for step in path:
        use.transition_round(session, round_, step, "someone@example.org")
    assert round_.status == use.TRANSITIONS[action][1]
    assert getattr(round_, use.TRANSITIONS[action][2]) is not None
    actions = [e.action for e in entries_for_round(session, round_.id)]
    assert actions == ["round.create"] + [a for s in path for a in
                                          (f"round.{s}", "round.seal")[:2 if s == "close" else 1]]


ILLEGAL = [(status, action) for status, allowed in {
    "draft": {"open"}, "open": {"close"}, "closed": {"publish", "archive"},
    "published": {"archive"}, "archived": set()}.items()
    for action in use.TRANSITIONS if action not in allowed]


@pytest.mark.parametrize("status, action", ILLEGAL)
def test_every_illegal_transition_is_refused_and_changes_nothing(session, make_round, status, action):
    round_ = make_round(status)
    log_before = session.scalar(select(func.count(AuditEntry.id)))
    with pytest.raises(TransitionError, match=f"cannot {action} a round that is {status}"):
        use.transition_round(session, round_, action, "test")
    session.expire_all()
    assert session.get(Round, round_.id).status == status
    assert session.scalar(select(func.count(AuditEntry.id))) == log_before


def test_open_freezes_settings_and_fingerprint_is_reproducible(session, make_round, example_spec):
    round_ = make_round("open")
    assert round_.frozen_spec == canonical_json(frozen_settings(example_spec))
    assert round_.fingerprint == hashlib.sha256(round_.frozen_spec.encode("utf-8")).hexdigest()
    assert round_.fingerprint == hashlib.sha256(
        canonical_json(frozen_settings(export_spec(round_))).encode("utf-8")).hexdigest()
    assert json.loads(round_.frozen_spec)["title"] == example_spec["title"]


def test_fingerprint_changes_with_any_setting(session, make_round):
    a = make_round("open")
    b = make_round("open", rules={"dissatisfaction": {"threshold": "1/3", "strict": False}})
    assert a.fingerprint != b.fingerprint


def test_round_without_cadres_cannot_open(session, make_round):
    round_ = make_round(cadres=[])
    with pytest.raises(TransitionError) as info:
        use.transition_round(session, round_, "open", "test")
    assert "cadres: a round needs at least one cadre" in info.value.problems
    session.expire_all()
    assert session.get(Round, round_.id).status == "draft"


def test_round_with_unrated_cadre_cannot_open(session, example_spec):
    for group in example_spec["groups"]:
        group["cadres"] = ["c01"]
    round_ = use.create_round(session, validate_spec(example_spec), "test")
    with pytest.raises(TransitionError) as info:
        use.transition_round(session, round_, "open", "test")
    assert "cadres[1]: no group rates 'c02'" in info.value.problems


def test_round_with_weights_not_adding_up_cannot_open(session, make_round):
    round_ = make_round()
    round_.groups[0].weight = 0.5  # as if changed behind the validator's back
    session.commit()
    with pytest.raises(TransitionError) as info:
        use.transition_round(session, round_, "open", "test")
    assert any("weights must add up to 1, they add up to 1.2" in p for p in info.value.problems)


def test_round_without_groups_cannot_open(session, make_round):
    round_ = make_round()
    round_.groups = []
    session.commit()
    with pytest.raises(TransitionError) as info:
        use.transition_round(session, round_, "open", "test")
    assert "groups: needs at least 1 entry" in info.value.problems


def test_edit_of_open_round_is_refused(session, make_round):
    round_ = make_round("open")
    with pytest.raises(RoundNotEditableError):
        use.edit_round(session, round_, {"title": "Changed"}, "test", "settings")
    session.expire_all()
    assert session.get(Round, round_.id).title != "Changed"


def test_draft_edit_reorders_renames_adds_and_removes_by_key(session, make_round, example_spec):
    round_ = make_round()
    spec = export_spec(round_)
    cadres = spec["cadres"]
    new_cadres = [cadres[2], cadres[0]] + [{"key": "c99", "name": "新人", "post": None, "unit": None, "kpi": 50}]
    grades = list(reversed(spec["grades"]))  # wrong order: must be refused
    with pytest.raises(SpecError):
        use.edit_round(session, round_, {"grades": grades}, "test", "grades")
    first_id = round_.participations[0].id
    use.edit_round(session, round_, {"cadres": new_cadres}, "test", "cadres")
    session.expire_all()
    round_ = session.get(Round, round_.id)
    assert [p.cadre.key for p in round_.participations] == ["c03", "c01", "c99"]
    assert round_.participations[1].id == first_id  # kept, not recreated
    assert export_spec(round_)["grades"] == example_spec["grades"]


def test_refused_edit_changes_nothing(session, make_round, example_spec):
    round_ = make_round()
    bad_groups = [dict(g, weight=0.5) for g in example_spec["groups"]]
    with pytest.raises(SpecError) as info:
        use.edit_round(session, round_, {"groups": bad_groups, "title": "New"}, "test", "groups")
    assert "groups[3].weight: weights must add up to 1, they add up to 2" in info.value.problems
    session.expire_all()
    assert export_spec(session.get(Round, round_.id)) == example_spec


def test_group_with_links_cannot_be_removed(session, make_round, example_spec):
    import datetime as dt
    round_ = make_round()
    session.add(Invitation(round_id=round_.id, group_id=round_.groups[3].id, token_hash="a" * 64,
                           code_hash="b" * 64, issued_on=dt.date.today()))
    session.commit()
    groups = [dict(g) for g in example_spec["groups"][:3]]
    groups[2]["weight"] = 0.45
    with pytest.raises(RoundNotEditableError, match="group 'public' has links issued"):
        use.edit_round(session, round_, {"groups": groups}, "test", "groups")
    session.expire_all()
    assert len(session.get(Round, round_.id).groups) == 4


def test_audit_chain_holds_and_detects_tampering(session, make_round):
    round_ = make_round("closed")
    assert verify_chain(session) == []
    entry = entries_for_round(session, round_.id)[1]
    entry.actor = "someone-else"
    session.commit()
    assert verify_chain(session) == [entry.id]


def test_audit_log_never_forks(session, make_round):
    """Two entries after the same head are refused by the database, not just by code."""
    from sqlalchemy.exc import IntegrityError
    make_round()
    head = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
    session.add(AuditEntry(actor="x", action="forged", detail="{}", prev_hash=head.prev_hash,
                           hash="f" * 64, at=head.at))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()


def test_appends_from_two_sessions_at_once_all_land_in_one_chain(app, session, make_round):
    """commit_entry reads the new head and tries again when another append took its head."""
    import threading

    from sqlalchemy.orm import Session as OrmSession

    from core.extensions import db
    from evaluation.audit import commit_entry
    round_ = make_round()
    before = session.scalar(select(func.count(AuditEntry.id)))
    session.rollback()
    start, failures = threading.Barrier(2), []

    def append(who):
        with app.app_context(), OrmSession(db.engine) as own:
            start.wait()
            for k in range(15):
                try:
                    commit_entry(own, who, "ballot.paper", round_.id, attempts=50)
                except Exception as exc:  # noqa: BLE001 - counted, and the test fails
                    failures.append(repr(exc))

    threads = [threading.Thread(target=append, args=(f"staff{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    assert session.scalar(select(func.count(AuditEntry.id))) == before + 30
    assert verify_chain(session) == []


def test_a_state_change_whose_audit_entry_lost_the_head_is_tried_again(app, session, make_round):
    """Rounds opened while someone else appends to the audit log all open, each logged once."""
    import threading

    from sqlalchemy.orm import Session as OrmSession

    from core.extensions import db
    from evaluation.audit import commit_entry
    ids = [make_round().id for _ in range(6)]
    session.rollback()
    start, failures = threading.Barrier(2), []

    def append():
        with app.app_context(), OrmSession(db.engine) as own:
            start.wait()
            for _ in range(40):
                commit_entry(own, "other", "ballot.paper", ids[0], attempts=50)

    def open_rounds():
        with app.app_context(), OrmSession(db.engine) as own:
            start.wait()
            for round_id in ids:
                try:
                    use.transition_round(own, own.get(Round, round_id), "open", "test")
                except Exception as exc:  # noqa: BLE001 - counted, and the test fails
                    failures.append(repr(exc))

    threads = [threading.Thread(target=append), threading.Thread(target=open_rounds)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == []
    session.expire_all()
    assert [session.get(Round, i).status for i in ids] == ["open"] * 6
    opened = session.scalar(select(func.count(AuditEntry.id)).where(
        AuditEntry.action == "round.open", AuditEntry.round_id.in_(ids)))
    assert opened == 6 and verify_chain(session) == []
