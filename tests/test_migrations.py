"""The Alembic chain: upgrade head yields exactly the models' schema; downgrade removes it all."""

import contextlib
import datetime as dt

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade
from sqlalchemy import create_engine, inspect

from core.config import Config
from core.extensions import db
from evaluation.models import Invitation
from tests.conftest import create_pg_database, drop_pg_database, pg_url_for, require_pg
from wsgi import create_app


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    """An empty database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    require_pg()
    name = create_pg_database("pingyi_migrate")
    yield pg_url_for(name)
    drop_pg_database(name)


def schema_diff(engine):
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def table_names(engine) -> set[str]:
    return set(inspect(engine).get_table_names())


def test_upgrade_matches_models_and_downgrade_removes_everything(empty_database, tmp_path):
    config = Config.from_env({}, instance_path=tmp_path, database_url=empty_database, testing=True)
    app = create_app(config)
    engine = create_engine(config.database_url)
    try:
        with app.app_context():
            upgrade()
            assert schema_diff(engine) == []
            assert table_names(engine) >= {t.name for t in db.metadata.sorted_tables}
            downgrade(revision="base")
            assert table_names(engine) <= {"alembic_version"}
            upgrade()
            assert schema_diff(engine) == []
            db.engine.dispose()
    finally:
        engine.dispose()


def test_sqlite_ballot_tables_have_no_rowid(tmp_path):
    config = Config.from_env({}, instance_path=tmp_path, database_url=f"sqlite:///{tmp_path}/m.db",
                             testing=True)
    app = create_app(config)
    with app.app_context():
        upgrade()
        with db.engine.connect() as conn:
            sql = dict(conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type='table'").all())
        db.engine.dispose()
    for table in ("ballots", "ratings", "used_invitations"):
        assert sql[table].rstrip().endswith("WITHOUT ROWID"), table


@contextlib.contextmanager
def two_rounds_at_0004(database: str, tmp_path):
    """The schema as 0004 left it, with two rounds of the example spec, in the app's context."""
    from evaluation.rounds import create_round
    from evaluation.specs import load_spec
    from tests.conftest import EXAMPLE
    config = Config.from_env({}, instance_path=tmp_path, database_url=database, testing=True)
    with create_app(config).app_context():
        upgrade(revision="0004_lighter_casting")
        spec = load_spec(EXAMPLE.read_bytes())
        yield config, create_round(db.session, spec, "test"), create_round(db.session, spec, "test")
        db.session.remove()
        db.engine.dispose()


def stray_invitation(round_, other_round):
    """An invitation of round_ with a group of other_round."""
    return Invitation(round_id=round_.id, group_id=other_round.groups[0].id, token_hash="x" * 64,
                      code_hash="x" * 64, issued_on=dt.date(2026, 1, 5))


def old_invitation(round_id: int, group_id: int, key: str, used: bool = False) -> None:
    """An invitation as the schema before 0006 holds it (its own is_used flag)."""
    from sqlalchemy import text
    db.session.execute(text(
        "INSERT INTO invitations (round_id, group_id, token_hash, code_hash, is_used, issued_on)"
        " VALUES (:r, :g, :t, :t, :u, :d)"),
        {"r": round_id, "g": group_id, "t": key * 64, "u": used, "d": dt.date(2026, 1, 5)})


def test_composite_invitation_key_keeps_the_invitations(empty_database, tmp_path):
    """0005: invitations issued before the upgrade are kept, and from then on the database
    itself refuses an invitation whose group belongs to another round."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import IntegrityError

    with two_rounds_at_0004(empty_database, tmp_path) as (_config, first, second):
        for k, g in enumerate(first.groups):
            old_invitation(first.id, g.id, str(k), used=k == 1)
        db.session.commit()
        upgrade()
        assert db.session.scalar(select(func.count()).select_from(Invitation)) == 4
        # 0006: the used one has its row in used_invitations, the others none
        assert db.session.execute(select(Invitation.token_hash, Invitation.is_used).order_by(
            Invitation.token_hash)).all() == [(f"{k}" * 64, k == 1) for k in range(4)]
        db.session.add(stray_invitation(first, second))
        with pytest.raises(IntegrityError):
            db.session.commit()
        db.session.rollback()


def test_an_invitation_of_another_rounds_group_stops_0005_before_it_changes_anything(
        empty_database, tmp_path):
    with two_rounds_at_0004(empty_database, tmp_path) as (config, first, second):
        old_invitation(first.id, second.groups[0].id, "x")
        refused_until_fixed(
            config, "0004_lighter_casting",
            lambda schema: "ix_invitations_group_id" in {
                ix["name"] for ix in schema.get_indexes("invitations")},
            "DELETE FROM invitations")  # the stray row was the reason


def refused_until_fixed(config, stays_at: str, unchanged, fix: str) -> None:
    """Commit what the test wrote; then the upgrade stops (Flask-Migrate logs the error and
    exits), the database still at stays_at and unchanged(inspector) true; once the SQL `fix`
    has run, the upgrade goes through to the models' schema."""
    from sqlalchemy import text

    db.session.commit()
    db.session.remove()
    with pytest.raises(SystemExit):
        upgrade()
    with db.engine.connect() as conn:
        assert conn.scalar(text("SELECT version_num FROM alembic_version")) == stays_at
    engine = create_engine(config.database_url)
    try:
        assert unchanged(inspect(engine))
    finally:
        engine.dispose()
    db.session.execute(text(fix))
    db.session.commit()
    db.session.remove()
    upgrade()
    engine = create_engine(config.database_url)
    assert schema_diff(engine) == []
    engine.dispose()


def test_0006_downgrade_puts_the_used_flag_back(empty_database, tmp_path):
    from sqlalchemy import text

    from tests.conftest import EXAMPLE
    from evaluation.rounds import create_round
    from evaluation.specs import load_spec
    config = Config.from_env({}, instance_path=tmp_path, database_url=empty_database, testing=True)
    with create_app(config).app_context():
        upgrade()
        round_ = create_round(db.session, load_spec(EXAMPLE.read_bytes()), "test")
        for key in "ab":
            db.session.add(Invitation(round_id=round_.id, group_id=round_.groups[0].id,
                                      token_hash=key * 64, code_hash=key * 64,
                                      issued_on=dt.date(2026, 1, 5)))
        db.session.flush()
        used = db.session.scalar(text("SELECT id FROM invitations WHERE token_hash LIKE 'b%'"))
        db.session.execute(text("INSERT INTO used_invitations (round_id, invitation_id)"
                                " VALUES (:r, :i)"),
                           {"r": round_.id, "i": used})
        db.session.commit()
        db.session.remove()
        downgrade(revision="0005_invitation_group_of_round")
        flags = db.session.execute(text(
            "SELECT token_hash, is_used FROM invitations ORDER BY token_hash")).all()
        assert [(t[0], bool(u)) for t, u in flags] == [("a", False), ("b", True)]
        db.session.remove()
        db.engine.dispose()


def test_0006_leaves_no_cast_xmin_on_the_invitations(empty_database, tmp_path):
    """PostgreSQL: a ballot cast before the upgrade shares its xmin with its invitation (the old
    cast updated both); no mix rewrites invitations after 0006, so the upgrade itself does."""
    from sqlalchemy import text

    if not empty_database.startswith("postgresql"):
        return  # no transaction ids in SQLite's rows
    with two_rounds_at_0004(empty_database, tmp_path) as (_config, first, _second):
        upgrade(revision="0005_invitation_group_of_round")
        group = first.groups[0].id
        for k in range(3):
            old_invitation(first.id, group, str(k))
        db.session.commit()
        for k in range(2):  # two casts as the old code made them: one transaction each
            db.session.execute(text("UPDATE invitations SET is_used = true WHERE token_hash = :t"),
                               {"t": str(k) * 64})
            db.session.execute(text(
                "INSERT INTO ballots (id, round_id, group_id, receipt, cast_on, is_paper, is_valid)"
                " VALUES (:b, :r, :g, :b, :d, false, true)"),
                {"b": f"ballot{k}", "r": first.id, "g": group, "d": dt.date(2026, 1, 5)})
            db.session.commit()
        linked = text("SELECT count(*) FROM ballots b JOIN invitations i ON i.xmin = b.xmin")
        assert db.session.scalar(linked) == 2  # the link the upgrade must not keep
        db.session.commit()
        upgrade()
        assert db.session.scalar(linked) == 0
        assert db.session.scalar(text("SELECT count(*) FROM used_invitations")) == 2


def test_0007_packs_item_scores_into_their_ratings_and_the_downgrade_unpacks_them(
        empty_database, tmp_path):
    """Scores given before the upgrade come out of the packed column in questionnaire order,
    blanks blank; the seal's document of the ballot is what it was; the downgrade gives back
    the very rows."""
    from sqlalchemy import text

    from evaluation.ballot_box import _ballot_documents
    from evaluation.packed_scores import unpack
    from evaluation.rounds import create_round
    from evaluation.specs import load_spec
    from tests.conftest import EXAMPLE, reverse_item_order

    config = Config.from_env({}, instance_path=tmp_path, database_url=empty_database, testing=True)
    with create_app(config).app_context():
        upgrade(revision="0006_used_invitations")
        round_ = create_round(db.session, load_spec(EXAMPLE.read_bytes()), "test")
        reverse_item_order(db.session, round_)  # item ids now run against the questionnaire
        items = {i.key: i.id for i in round_.items}
        assert list(items) == ["integrity", "results", "diligence", "ability", "politics"]
        c01, c02, c03 = (p.id for p in round_.participations[:3])
        competent = next(g.id for g in round_.grades if g.key == "competent")
        db.session.execute(text(
            "INSERT INTO ballots (id, round_id, group_id, receipt, cast_on, is_paper, is_valid)"
            " VALUES ('b1', :r, :g, 'AAAA-BBBB-CCCC', :d, false, true)"),
            {"r": round_.id, "g": round_.groups[0].id, "d": dt.date(2026, 1, 5)})
        db.session.execute(text("INSERT INTO ratings (ballot_id, participation_id, grade_id, comment)"
                                " VALUES ('b1', :p, :g, :c)"),
                           [{"p": c01, "g": competent, "c": "好"}, {"p": c02, "g": None, "c": None},
                            {"p": c03, "g": None, "c": None}])
        given = [(c01, "integrity", 10), (c01, "politics", 3), (c01, "results", 6),
                 (c01, "diligence", 5), (c03, "ability", 0)]
        db.session.execute(text("INSERT INTO item_ratings (ballot_id, participation_id, item_id,"
                                " value) VALUES ('b1', :p, :i, :v)"),
                           [{"p": p, "i": items[key], "v": v} for p, key, v in given])
        db.session.commit()
        upgrade()
        scores = dict(db.session.execute(text(
            "SELECT participation_id, scores FROM ratings")).all())
        assert unpack(scores[c01]) == [10, 6, 5, None, 3]
        assert unpack(scores[c02]) == [None] * 5
        assert unpack(scores[c03]) == [None, None, None, 0, None]
        assert list(_ballot_documents(db.session, round_.id)) == [(
            "AAAA-BBBB-CCCC",
            '{"paper":false,"ratings":{"0":["competent","好",{"diligence":5,"integrity":10,'
            '"politics":3,"results":6}],"1":["dont_know","",{}],"2":["dont_know","",'
            '{"ability":0}]},"valid":true}')]
        db.session.remove()
        downgrade(revision="0006_used_invitations")
        back = db.session.execute(text("SELECT participation_id, item_id, value FROM item_ratings"))
        assert sorted(back.all()) == sorted((p, items[key], v) for p, key, v in given)
        db.session.remove()
        db.engine.dispose()


def test_an_item_score_of_another_rounds_item_stops_0007_before_it_changes_anything(
        empty_database, tmp_path):
    """Such a score cannot be placed in its rating's packed scores (the old schema allowed it;
    the application never wrote one)."""
    from sqlalchemy import text

    with two_rounds_at_0004(empty_database, tmp_path) as (config, first, second):
        upgrade(revision="0006_used_invitations")
        db.session.execute(text(
            "INSERT INTO ballots (id, round_id, group_id, receipt, cast_on, is_paper, is_valid)"
            " VALUES ('b1', :r, :g, 'R1', :d, false, true)"),
            {"r": first.id, "g": first.groups[0].id, "d": dt.date(2026, 1, 5)})
        db.session.execute(text("INSERT INTO ratings (ballot_id, participation_id) VALUES ('b1', :p)"),
                           {"p": first.participations[0].id})
        db.session.execute(text("INSERT INTO item_ratings VALUES ('b1', :p, :i, 7)"),
                           {"p": first.participations[0].id, "i": second.items[0].id})
        refused_until_fixed(
            config, "0006_used_invitations",
            lambda schema: "scores" not in {c["name"] for c in schema.get_columns("ratings")},
            "DELETE FROM item_ratings")  # the stray score was the reason


def test_the_index_of_used_invitations_waiting_for_a_mix_holds_only_those(empty_database,
                                                                          tmp_path):
    """The partial index's condition, which compare_metadata does not compare."""
    from sqlalchemy import text

    config = Config.from_env({}, instance_path=tmp_path, database_url=empty_database, testing=True)
    with create_app(config).app_context():
        upgrade()
        if empty_database.startswith("sqlite"):
            sql = "SELECT sql FROM sqlite_master WHERE name = 'ix_used_invitations_unmixed'"
        else:
            sql = "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_used_invitations_unmixed'"
        definition = db.session.scalar(text(sql))
        assert definition.replace("(", "").replace(")", "").endswith("WHERE NOT mixed")
        db.session.remove()
        db.engine.dispose()


def test_0008_counts_what_the_mixes_need_and_the_downgrade_gives_back_mixed_count(
        empty_database, tmp_path):
    """0008, PostgreSQL: the used invitations of a sealed round come out mixed, as its closing mix
    left them; an open round's wait, so that its next cast brings a mix. SQLite: every row is
    mixed (its rows carry no transaction id), and each round's ballots are counted on its row.
    The downgrade gives each round its count at the latest mix back (SQLite kept none)."""
    from sqlalchemy import text

    with two_rounds_at_0004(empty_database, tmp_path) as (_config, sealed, open_):
        upgrade(revision="0007_packed_item_scores")
        for round_, status, used in ((sealed, "closed", 3), (open_, "open", 2)):
            db.session.execute(text("UPDATE rounds SET status = :s, frozen_spec = '{}',"
                                    " fingerprint = :f WHERE id = :r"),
                               {"s": status, "f": "f" * 64, "r": round_.id})
            for k in range(used + 1):  # one more invitation, not used
                key = f"{round_.id}-{k}".ljust(64, "x")
                db.session.add(Invitation(round_id=round_.id, group_id=round_.groups[0].id,
                                          token_hash=key, code_hash=key,
                                          issued_on=dt.date(2026, 1, 5)))
                if k < used:
                    db.session.execute(text(
                        "INSERT INTO ballots (id, round_id, group_id, receipt, cast_on, is_paper,"
                        " is_valid) VALUES (:b, :r, :g, :b, :d, false, true)"),
                        {"b": key[:32], "r": round_.id, "g": round_.groups[0].id,
                         "d": dt.date(2026, 1, 5)})
            db.session.flush()
            db.session.execute(text(
                "INSERT INTO used_invitations (round_id, invitation_id) SELECT round_id, id"
                " FROM invitations WHERE round_id = :r ORDER BY id LIMIT :n"),
                {"r": round_.id, "n": used})
        db.session.execute(text("UPDATE rounds SET seal_head = :h WHERE id = :r"),
                           {"h": "e" * 64, "r": sealed.id})
        db.session.commit()
        upgrade()
        sqlite = empty_database.startswith("sqlite")
        marks = text("SELECT round_id, mixed, count(*) FROM used_invitations"
                     " GROUP BY round_id, mixed ORDER BY round_id")
        assert [(r, bool(m), n) for r, m, n in db.session.execute(marks)] == [
            (sealed.id, True, 3), (open_.id, sqlite, 2)]
        counts = text("SELECT id, sqlite_cast_count FROM rounds ORDER BY id")
        assert db.session.execute(counts).all() == (
            [(sealed.id, 3), (open_.id, 2)] if sqlite else [(sealed.id, 0), (open_.id, 0)])
        db.session.remove()
        downgrade(revision="0007_packed_item_scores")
        counts = text("SELECT id, mixed_count FROM rounds ORDER BY id")
        assert db.session.execute(counts).all() == (
            [(sealed.id, 0), (open_.id, 0)] if sqlite else [(sealed.id, 3), (open_.id, 0)])
        assert db.session.scalar(text("SELECT count(*) FROM ballots")) == 5
        assert db.session.scalar(text("SELECT count(*) FROM used_invitations")) == 5
        if sqlite:  # rebuilt by the downgrade, still without rowids
            table = db.session.scalar(text(
                "SELECT sql FROM sqlite_master WHERE name = 'used_invitations'"))
            assert table.rstrip().endswith("WITHOUT ROWID")
        db.session.remove()


def test_0009_drops_the_index_of_ratings_by_cadre_and_the_downgrade_builds_it_again(
        empty_database, tmp_path):
    config = Config.from_env({}, instance_path=tmp_path, database_url=empty_database, testing=True)
    with create_app(config).app_context():
        def rating_indexes():
            db.session.remove()
            return {ix["name"] for ix in inspect(db.engine).get_indexes("ratings")}

        upgrade(revision="0008_cheaper_mix_counts")
        assert "ix_ratings_participation_id" in rating_indexes()
        upgrade()
        assert "ix_ratings_participation_id" not in rating_indexes()
        downgrade(revision="0008_cheaper_mix_counts")
        assert "ix_ratings_participation_id" in rating_indexes()
        db.session.remove()
        db.engine.dispose()
