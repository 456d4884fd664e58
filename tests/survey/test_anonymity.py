"""Anonymity as tests: nothing in the schema, the data, the logs or the physical order of rows
lets a reader link a ballot to an invitation once the round is closed."""

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr
from sqlalchemy import DateTime, inspect, select, text

from core.extensions import db
from evaluation.models import Ballot, Invitation, UsedInvitation
from evaluation.rounds import transition_round
from tests.survey.conftest import RECEIPT_RE, full_ballot, link_path

BALLOT_TABLES = ("ballots", "ratings")
#: Who may vote, and who has: the other side, never joined to the ballots.
LEDGER_TABLES = ("invitations", "used_invitations")


def test_ballot_tables_share_no_key_with_invitations(app):
    with app.app_context():
        inspector = inspect(db.engine)
        for table in BALLOT_TABLES:
            for fk in inspector.get_foreign_keys(table):
                assert fk["referred_table"] not in LEDGER_TABLES, (table, fk)
            assert not any("invitation" in c["name"] for c in inspector.get_columns(table))
        for ledger in LEDGER_TABLES:
            for fk in inspector.get_foreign_keys(ledger):
                assert fk["referred_table"] not in BALLOT_TABLES, (ledger, fk)
        # a ballot's key is a random string, not a number drawn from a sequence
        assert str(inspector.get_columns("ballots")[0]["type"]).startswith("VARCHAR")


@pytest.mark.parametrize("table", [Ballot.__table__, Invitation.__table__])
def test_no_time_finer_than_the_day(table):
    assert not [c.name for c in table.columns if isinstance(c.type, DateTime)]


def cast_many(app, round_, issue, n, group="public"):
    """Cast n ballots in order through the web flow; ballot k carries the comment "#k" on c01."""
    links = issue(round_, group, n)
    receipts = []
    for k, link in enumerate(links):
        phone = app.test_client()
        phone.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
        assert phone.get(link_path(link)).status_code == 302
        from tests.conftest import csrf_token
        data = {**full_ballot(round_, group), "comment-c01": f"#{k}", "csrf_token": csrf_token(phone)}
        assert phone.post("/ballot", data=data).status_code == 302
        receipts.append(RECEIPT_RE.search(phone.get("/receipt").get_data(as_text=True)).group(1))
    return links, receipts


def test_database_holds_no_working_link_or_code(app, session, make_round, issue, keys):
    round_ = make_round("open")
    links, _receipts = cast_many(app, round_, issue, 3)
    unused = issue(round_, "peer", 2)
    with app.app_context():
        raw = db.engine.raw_connection()
        try:
            cursor = raw.cursor()
            dump = []
            for table in db.metadata.sorted_tables:
                cursor.execute(f'SELECT * FROM "{table.name}"')
                dump.extend(repr(row) for row in cursor.fetchall())
        finally:
            raw.close()
    everything = "\n".join(dump)
    for link in links + unused:
        secret = keys.signer.loads(link.token).secret
        assert secret not in everything and link.token not in everything
        assert link.code not in everything and link.display_code not in everything


def test_no_log_line_carries_a_token_or_code(app, client, post, make_round, issue, caplog, keys):
    caplog.set_level(logging.DEBUG)
    round_ = make_round("open")
    by_link, by_code = issue(round_, "public", 2)
    client.get(link_path(by_link))
    post("/ballot", full_ballot(round_))
    other = app.test_client()
    from tests.conftest import csrf_token
    other.post("/code", data={"code": by_code.display_code, "csrf_token": csrf_token(other)})
    other.post("/ballot", data={**full_ballot(round_), "csrf_token": csrf_token(other)})
    client.get(link_path(by_link))  # a used link, refused
    client.get("/v/forged-token")
    secrets = [by_link.token, by_code.token, by_link.code, by_code.code, by_code.display_code,
               keys.signer.loads(by_link.token).secret]
    for record in caplog.records:
        line = record.getMessage()
        assert not any(s in line for s in secrets), line


def test_development_server_access_log_hides_link_tokens():
    from wsgi import RedactLinks
    record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1,
                               '%s - - [%s] "%s" %s %s',
                               ("127.0.0.1", "now", "GET /v/WzEsIm.abc-DEF HTTP/1.1", "302", "-"), None)
    RedactLinks().filter(record)
    assert "WzEsIm" not in record.getMessage()
    assert "GET /v/… HTTP/1.1" in record.getMessage()


def orders_seen(session):
    """Every ordering of the ballots a database reader can get, as lists of vote numbers."""
    def numbers(sql):
        return [int(c[1:]) for c in session.execute(text(sql)).scalars() if c and c.startswith("#")]

    base = ("SELECT r.comment FROM ratings r JOIN participations p ON p.id = r.participation_id "
            "JOIN cadres c ON c.id = p.cadre_id AND c.key = 'c01'")
    orders = {"ratings natural": numbers(f"SELECT comment FROM ratings WHERE comment LIKE '#%'"),
              "by ballot id": numbers(base + " ORDER BY r.ballot_id")}
    ballot_join = ("SELECT r.comment FROM ballots b JOIN ratings r ON r.ballot_id = b.id "
                   "WHERE r.comment LIKE '#%' ORDER BY ")
    if session.get_bind().dialect.name == "postgresql":
        orders["ballots ctid"] = numbers(ballot_join + "b.ctid")
        orders["ratings ctid"] = numbers(base + " ORDER BY r.ctid")
        orders["ballots xmin"] = numbers(ballot_join + "b.xmin::text::bigint, b.ctid")
    else:
        with pytest.raises(Exception, match="rowid"):
            session.execute(text("SELECT rowid FROM ballots"))
        session.rollback()
    return orders


def correlation(order):
    return abs(spearmanr(np.arange(len(order)), order).statistic)


def test_no_physical_order_relinks_ballots_after_close(app, session, make_round, issue):
    round_ = make_round("open")
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)  # only the mix at close
    n = 60
    cast_many(app, round_, issue, n)
    session.expire_all()
    before = orders_seen(session)
    if "ballots ctid" in before:  # the window before the mix is real: the test can see it
        assert correlation(before["ballots ctid"]) > 0.9
    transition_round(session, round_, "close", "test")
    for name, order in orders_seen(session).items():
        assert sorted(order) == list(range(n)), name
        assert correlation(order) < 0.5, (name, correlation(order))


def test_xmin_join_links_nothing_after_close(app, session, make_round, issue):
    round_ = make_round("open")
    if session.get_bind().dialect.name == "sqlite":
        with pytest.raises(Exception, match="xmin"):  # SQLite rows carry no transaction id
            session.execute(text("SELECT xmin FROM ballots"))
        return
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)
    cast_many(app, round_, issue, 8)
    sql = text("SELECT b.id, count(i.invitation_id) FROM ballots b LEFT JOIN used_invitations i "
               "ON i.xmin = b.xmin AND i.round_id = b.round_id WHERE b.round_id = :r GROUP BY b.id")
    before = dict(session.execute(sql, {"r": round_.id}).all())
    assert set(before.values()) == {1}  # before the mix each ballot shares xmin with its invitation
    session.rollback()
    transition_round(session, round_, "close", "test")
    after = dict(session.execute(sql, {"r": round_.id}).all())
    total = session.scalar(select(db.func.count()).select_from(UsedInvitation).where(
        UsedInvitation.round_id == round_.id))
    assert set(after.values()) <= {0, total}  # everything or nothing: no one-to-one link


def test_mix_every_n_ballots_while_open(app, session, make_round, issue):
    round_ = make_round("open")
    n = 40
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=n)
    issue(round_, "peer", 5)  # links nobody uses: no cast writes them, the mix leaves them be
    links, _receipts = cast_many(app, round_, issue, n)
    if session.get_bind().dialect.name == "sqlite":
        # the write-ahead log holds pages in commit order: the mix step empties it
        wal = Path(session.get_bind().url.database + "-wal")
        assert not wal.exists() or wal.stat().st_size == 0
        return
    used = session.execute(text(
        "SELECT invitation_id, xmin::text FROM used_invitations WHERE round_id = :r ORDER BY ctid"),
        {"r": round_.id}).all()
    assert len({xmin for _id, xmin in used}) == 1  # every used invitation rewritten by one mix
    for ledger in ("used_invitations", "invitations"):
        linked = session.scalar(text(f"SELECT count(*) FROM ballots b JOIN {ledger} i ON i.xmin = b.xmin"))
        assert linked == 0, ledger
    # on disk, used invitations no longer lie in the order they were used
    cast_order = {link.invitation_id: k for k, link in enumerate(links)}
    assert sorted(cast_order[i] for i, _x in used) == list(range(n))
    assert correlation([cast_order[i] for i, _x in used]) < 0.5


def test_invitation_order_before_a_mix_follows_casting(app, session, make_round, issue):
    """The leak the mix closes is real (PostgreSQL), so the test above can see it."""
    round_ = make_round("open")
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)
    links, _receipts = cast_many(app, round_, issue, 12)
    if session.get_bind().dialect.name == "sqlite":
        with pytest.raises(Exception, match="ctid"):
            session.execute(text("SELECT ctid FROM used_invitations"))
        return
    used = session.execute(text(
        "SELECT invitation_id FROM used_invitations WHERE round_id = :r ORDER BY ctid"),
        {"r": round_.id}).scalars().all()
    cast_order = {link.invitation_id: k for k, link in enumerate(links)}
    assert correlation([cast_order[i] for i in used]) > 0.9


def test_a_cast_marks_its_invitation_used_in_a_row_of_its_own(app, session, make_round, issue):
    """A cast writes a used-invitation row beside its ballot and leaves the invitation's own row
    as it was issued (PostgreSQL: no version of it carries a cast's transaction id), so mixes
    rewrite those narrow rows only."""
    round_ = make_round("open")
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)
    links, _receipts = cast_many(app, round_, issue, 5)
    used = set(session.scalars(select(UsedInvitation.invitation_id).where(
        UsedInvitation.round_id == round_.id)))
    assert used == {link.invitation_id for link in links}
    if session.get_bind().dialect.name == "sqlite":
        return
    casts = cast_xids(session, round_)
    assert len(casts) == 5 and casts <= versions_on_disk(session, "used_invitations")
    assert not casts & versions_on_disk(session, "invitations")


def test_bulletin_lists_receipts_count_seal_and_fingerprint(app, client, session, make_round, issue):
    round_ = make_round("open")
    _links, receipts = cast_many(app, round_, issue, 4)
    assert client.get(f"/bulletin/{round_.id}").status_code == 404  # not before close
    transition_round(session, round_, "close", "test")
    html = client.get(f"/bulletin/{round_.id}").get_data(as_text=True)
    listed = re.findall(r"<li><code>([^<]+)</code></li>", html)
    assert listed == sorted(receipts)
    assert f'<dd id="count">4</dd>' in html
    assert round_.seal_head in html and round_.fingerprint in html


def test_periodic_mixes_keep_up_with_concurrent_casts(app, session, make_round, issue):
    """PostgreSQL casts commit side by side and see counts that repeat or skip; counting the used
    invitations waiting for a mix keeps those below N plus the casts in flight, and exactly
    those ballots are linkable by xmin."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from tests.conftest import csrf_token
    every, threads, n = 10, 8, 60
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=every)
    round_ = make_round("open")
    phones = []
    for link in issue(round_, "public", n):
        phone = app.test_client()
        assert phone.get(link_path(link)).status_code == 302
        phones.append((phone, {**full_ballot(round_), "csrf_token": csrf_token(phone)}))
    barrier = threading.Barrier(threads)

    def cast(job):
        index, (phone, form) = job
        if index < threads:
            barrier.wait()
        return phone.post("/ballot", data=form).status_code

    with ThreadPoolExecutor(threads) as pool:
        assert list(pool.map(cast, enumerate(phones))) == [302] * n
    if session.get_bind().dialect.name == "sqlite":
        return  # one writer at a time: the count is exact, a mix at every multiple of N
    count, waiting = ballots_and_waiting(session, round_)
    assert count == n
    assert waiting < every + threads, (count, waiting)
    assert linked_by_xmin(session, round_) == waiting  # exactly those cast since the latest mix


def ballots_and_waiting(session, round_) -> tuple[int, int]:
    """(the round's ballots, its used invitations waiting for a mix)."""
    return session.execute(text(
        "SELECT (SELECT count(*) FROM ballots WHERE round_id = :r),"
        " (SELECT count(*) FROM used_invitations WHERE round_id = :r AND NOT mixed)"),
        {"r": round_.id}).one()


def linked_by_xmin(session, round_) -> int:
    """PostgreSQL: how many of the round's ballots share a transaction id with a used invitation."""
    return session.scalar(text(
        "SELECT count(*) FROM ballots b JOIN used_invitations i ON i.xmin = b.xmin "
        "WHERE b.round_id = :r"), {"r": round_.id})


def test_a_mix_is_due_after_n_ballots_even_when_the_multiple_was_skipped(app, session, make_round,
                                                                         issue):
    """PostgreSQL: a cast that saw 13 ballots waiting mixes (no cast saw 10); a second cast with
    the same stale view counts again under the round's lock and does nothing."""
    from evaluation.ballot_box import Cast
    from evaluation.mixing import maybe_mix
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)
    round_ = make_round("open")
    cast_many(app, round_, issue, 13)
    with app.app_context():
        assert not maybe_mix(session, round_.id, 10, Cast("r", mix_due=False))
        if session.get_bind().dialect.name == "sqlite":  # exact counts: a due mix is a mix
            assert maybe_mix(session, round_.id, 10, Cast("r", mix_due=True))
            return
        assert ballots_and_waiting(session, round_) == (13, 13)
        session.rollback()
        assert maybe_mix(session, round_.id, 10, Cast("r", mix_due=True))
        assert not maybe_mix(session, round_.id, 10, Cast("r", mix_due=True))
    assert ballots_and_waiting(session, round_) == (13, 0)
    assert linked_by_xmin(session, round_) == 0


def test_a_mix_is_due_after_every_n_ballots_whatever_the_round_holds(app, session, make_round,
                                                                   issue, monkeypatch):
    """With N = 3, seven ballots one after the other find a mix due at the third and the sixth:
    a cast counts the ballots since the latest mix (PostgreSQL: the used invitations waiting
    for one; SQLite: the round's ballots, on the round row), not all the round holds."""
    from evaluation import voting
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=3)
    casts, real_cast_ballot = [], voting.cast_ballot

    def recorded(*args, **kwargs):
        casts.append(real_cast_ballot(*args, **kwargs))
        return casts[-1]

    monkeypatch.setattr(voting, "cast_ballot", recorded)
    round_ = make_round("open")
    cast_many(app, round_, issue, 7)
    assert [c.mix_due for c in casts] == [False, False, True, False, False, True, False]
    count, waiting = ballots_and_waiting(session, round_)
    assert count == 7
    # SQLite's rows are written mixed: no flag in its file tells the latest ballots apart.
    assert waiting == (1 if session.get_bind().dialect.name == "postgresql" else 0)


def test_closing_mixes_every_ballot_still_waiting(app, session, make_round, issue):
    """PostgreSQL: ballots cast since the latest mix wait (mixed false) until the closing mix
    covers them: after close, no row says anything about when it was cast. SQLite's are written
    mixed."""
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=3)
    round_ = make_round("open")
    cast_many(app, round_, issue, 4)
    waiting = 1 if session.get_bind().dialect.name == "postgresql" else 0  # the fourth ballot
    assert ballots_and_waiting(session, round_) == (4, waiting)
    transition_round(session, round_, "close", "test")
    assert ballots_and_waiting(session, round_) == (4, 0)
    assert round_.sealed_count == 4


def versions_on_disk(session, table: str) -> set[str]:
    """The xmin of every row version in a table's data file, dead ones included (pageinspect)."""
    session.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
    blocks = session.scalar(text("SELECT pg_relation_size(CAST(:t AS regclass)) / "
                                 "current_setting('block_size')::int"), {"t": table})
    return set(session.execute(text(
        "SELECT DISTINCT t_xmin::text FROM generate_series(0, CAST(:n AS int) - 1) AS b, "
        "heap_page_items(get_raw_page(:t, b)) WHERE t_xmin IS NOT NULL"),
        {"t": table, "n": blocks}).scalars())


def cast_xids(session, round_) -> set[str]:
    return set(session.execute(text("SELECT DISTINCT xmin::text FROM ballots WHERE round_id = :r"),
                               {"r": round_.id}).scalars())


class OlderSession:
    """Another session of the database, begun before the mix: a long report (a snapshot) or an
    idle writer (a transaction id, no snapshot). It touches none of the round's tables, so
    nothing but the wait after the mix can make the mix wait for it."""

    def __init__(self, app, kind: str):
        with app.app_context():
            self.conn = db.engine.connect().execution_options(
                isolation_level="REPEATABLE READ" if kind == "reader" else "READ COMMITTED")
        self.conn.begin()
        if kind == "reader":
            self.conn.execute(text("SELECT 1")).scalar()  # takes the snapshot
        else:
            self.conn.execute(text("CREATE TEMP TABLE scratch (x int)"))
            self.conn.execute(text("INSERT INTO scratch VALUES (1)"))  # takes a transaction id

    def finish_later(self, seconds: float):
        import threading
        timer = threading.Timer(seconds, self.finish)
        timer.start()
        return timer

    def finish(self):
        self.conn.rollback()
        self.conn.close()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_the_closing_vacuum_waits_for_older_sessions_so_no_cast_xmin_stays_on_disk(
        app, session, make_round, issue, kind):
    """VACUUM FULL copies the row versions that an older session may still see into its new
    files; had it not waited, the casts' xmin would stay in the files after close."""
    import time
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)
    round_ = make_round("open")
    cast_many(app, round_, issue, 6)
    casts = cast_xids(session, round_)
    assert len(casts) == 6 and casts <= versions_on_disk(session, "used_invitations")  # the leak is real
    session.rollback()
    older = OlderSession(app, kind)
    timer = older.finish_later(0.8)
    start = time.monotonic()
    transition_round(session, round_, "close", "test")
    waited = time.monotonic() - start
    timer.join()
    assert waited >= 0.7  # the close waited for the older session
    for table in ("used_invitations", "invitations", *BALLOT_TABLES):
        assert not casts & versions_on_disk(session, table), table


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_the_vacuum_after_an_open_mix_waits_for_older_sessions(app, session, make_round, issue,
                                                               kind):
    from evaluation.ballot_box import Cast
    from evaluation.mixing import maybe_mix
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)
    round_ = make_round("open")
    cast_many(app, round_, issue, 5)
    casts = cast_xids(session, round_)
    assert casts <= versions_on_disk(session, "used_invitations")
    session.rollback()
    older = OlderSession(app, kind)
    timer = older.finish_later(0.3)
    with app.app_context():
        assert maybe_mix(session, round_.id, 5, Cast("r", mix_due=True))
    timer.join()
    assert not casts & versions_on_disk(session, "used_invitations")


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_close_does_not_hang_on_a_session_that_outlasts_the_wait(app, session, make_round, issue,
                                                                  monkeypatch, caplog):
    """The close gives up waiting, says what to run later, and skips VACUUM FULL (which would
    only copy the old versions again); nothing else waits for it."""
    import time

    from evaluation import mixing
    monkeypatch.setattr(mixing, "SNAPSHOT_WAIT_CLOSE", 0.3)
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)
    round_ = make_round("open")
    cast_many(app, round_, issue, 3)
    session.rollback()
    older = OlderSession(app, "reader")
    try:
        start = time.monotonic()
        with caplog.at_level("WARNING", logger="pingyi"):
            transition_round(session, round_, "close", "test")
        assert time.monotonic() - start < 3
    finally:
        older.finish()
    assert round_.status == "closed" and round_.seal_head
    assert "VACUUM FULL ballots, ratings, used_invitations, invitations" in caplog.text


def _pg_driver(app):
    """A psycopg connection of its own to the test's PostgreSQL database."""
    import psycopg
    with app.app_context():
        url = db.engine.url.set(drivername="postgresql")
    return psycopg.connect(url.render_as_string(hide_password=False))


def test_an_open_rounds_mix_does_not_hold_up_casts(app, session, make_round, issue):
    """PostgreSQL: while a periodic mix is rewriting the used invitations, a voter's cast goes
    through at once; the ballot is neither rewritten nor counted by that mix, so it is among
    the ballots a later mix must cover."""
    import threading

    from sqlalchemy.orm import Session as OrmSession

    from evaluation.mixing import mix_round
    from tests.conftest import csrf_token
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)  # no mix but the test's
    round_ = make_round("open")
    cast_many(app, round_, issue, 3)
    if session.get_bind().dialect.name == "sqlite":
        return  # no row locks: SQLite's writers take turns for every write anyway
    (late,) = issue(round_, "public", 1)
    phone = app.test_client()
    assert phone.get(link_path(late)).status_code == 302
    form = {**full_ballot(round_), "csrf_token": csrf_token(phone)}
    with app.app_context(), OrmSession(db.engine) as mixer:
        assert mix_round(mixer, round_.id, full=False, every=1)  # holds its locks until commit
        statuses = []
        voter = threading.Thread(target=lambda: statuses.append(
            phone.post("/ballot", data=form).status_code))
        voter.start()
        voter.join(timeout=10)
        cast_while_mixing = not voter.is_alive()
        mixer.commit()
        voter.join(timeout=30)
    assert cast_while_mixing, "the cast waited for the mix"
    assert statuses == [302]
    assert ballots_and_waiting(session, round_) == (4, 1)
    assert linked_by_xmin(session, round_) == 1


def test_a_mix_that_finds_another_running_gives_up_at_once(app, session, make_round, issue):
    """PostgreSQL: a second mix of the round does not wait for the one running, and changes
    nothing; the ballot that came meanwhile waits for the next mix, which covers it."""
    import threading

    from sqlalchemy.orm import Session as OrmSession

    from evaluation.mixing import mix_round
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)  # no mix but the test's
    round_ = make_round("open")
    cast_many(app, round_, issue, 3)
    if session.get_bind().dialect.name == "sqlite":
        return  # SQLite's mix writes nothing (its rows are written mixed)
    with app.app_context(), OrmSession(db.engine) as first, OrmSession(db.engine) as second:
        assert mix_round(first, round_.id, full=False, every=1)  # holds the round until commit
        cast_many(app, round_, issue, 1)
        results = []
        other = threading.Thread(target=lambda: results.append(
            mix_round(second, round_.id, full=False, every=1)))
        other.start()
        other.join(timeout=10)
        gave_up_at_once = not other.is_alive()
        first.commit()
        other.join(timeout=30)
        second.rollback()
        assert gave_up_at_once, "the second mix waited for the first"
        assert results == [False]
        assert ballots_and_waiting(session, round_) == (4, 1)
        assert mix_round(second, round_.id, full=False, every=1)
        second.commit()
    assert ballots_and_waiting(session, round_) == (4, 0)
    assert linked_by_xmin(session, round_) == 0


def test_closing_waits_for_a_cast_in_flight_and_seals_it(app, session, make_round, issue):
    """PostgreSQL: a cast that holds its lock on the round when the close begins commits first,
    and its ballot is mixed, counted and sealed with the rest; the close does not end before.
    Meanwhile voting has ended for everyone else: a cast that comes later is refused at once,
    so voters who keep arriving cannot keep the close waiting."""
    import threading
    import time

    from sqlalchemy.orm import Session as OrmSession
    from werkzeug.datastructures import MultiDict

    from evaluation.ballot_box import _PG_SHARE_ROUND, CastError, cast_ballot, receipts
    from evaluation.ballot_sheet import build_sheet, parse_ballot
    from evaluation.models import Round
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)
    round_ = make_round("open")
    cast_many(app, round_, issue, 2)
    if session.get_bind().dialect.name == "sqlite":
        return  # one writer at a time: the close's write waits for the cast's in SQLite itself
    issue(round_, "public", 2)
    invitation, late = session.execute(select(Invitation).where(
        Invitation.round_id == round_.id, Invitation.is_used.is_(False))).scalars().all()
    parsed = parse_ballot(build_sheet(round_, late.group_id), MultiDict(full_ballot(round_)))
    late_who = (late.id, round_.id, late.group_id, late.token_hash)
    in_flight, used, receipt = _cast_in_flight(app, session, round_, invitation)
    assert used == 1
    done = []

    def close():
        with app.app_context(), OrmSession(db.engine) as closer:
            transition_round(closer, closer.get(Round, round_.id), "close", "test")
            done.append(True)

    late_outcome = []

    def cast_late():
        with app.app_context(), OrmSession(db.engine) as voter:
            try:
                late_outcome.append(cast_ballot(voter, *late_who[:3], parsed, invalidate=False,
                                                token_hash=late_who[3]))
            except CastError as exc:
                late_outcome.append(exc.reason)

    closing = threading.Thread(target=close)
    closing.start()
    closing.join(timeout=2)
    waited = closing.is_alive()
    status_meanwhile = session.scalar(select(Round.status).where(Round.id == round_.id))
    session.rollback()
    voter = threading.Thread(target=cast_late)
    voter.start()
    voter.join(timeout=5)
    arriving = _pg_driver(app)  # a cast's first step, and its transaction left open
    locked_late = arriving.execute(_PG_SHARE_ROUND, {"r": round_.id}).fetchall()
    in_flight.commit()
    in_flight.close()
    deadline = time.monotonic() + 10  # the seal commits; the vacuum after it may wait for us
    while (held_up := session.scalar(select(Round.seal_head).where(Round.id == round_.id))
           is None) and time.monotonic() < deadline:
        session.rollback()
        time.sleep(0.05)
    session.rollback()
    arriving.rollback()
    arriving.close()
    closing.join(timeout=60)
    voter.join(timeout=60)
    assert waited, "the close did not wait for the cast in flight"
    assert status_meanwhile == "closed"
    assert locked_late == [] and not held_up, "a cast arriving after the close held it up"
    assert late_outcome == ["closed"]
    assert done == [True]
    sealed = session.execute(select(Round.status, Round.sealed_count).where(
        Round.id == round_.id)).one()
    assert tuple(sealed) == ("closed", 3)
    assert receipt in receipts(session, round_.id)
    assert session.scalar(select(db.func.count()).select_from(Invitation).where(
        Invitation.round_id == round_.id, Invitation.is_used.is_(True))) == 3


def test_every_mix_empties_sqlites_log_while_voters_cast_side_by_side(app, session, make_round,
                                                                      issue, caplog):
    """SQLite: with mixes every other ballot and voters casting from several threads, no mix
    leaves the write-ahead log (pages in commit order) behind, and it ends empty."""
    import threading

    from tests.conftest import csrf_token
    round_ = make_round("open")
    if session.get_bind().dialect.name != "sqlite":
        return  # PostgreSQL's mixes: the tests above
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=2)
    links = issue(round_, "public", 120)
    form = full_ballot(round_)
    caplog.set_level(logging.WARNING, logger="pingyi")
    statuses = []

    def voter(chunk):
        phone = app.test_client()
        for link in chunk:
            assert phone.get(link_path(link)).status_code == 302
            statuses.append(phone.post("/ballot", data={**form, "csrf_token": csrf_token(phone)}
                                       ).status_code)

    threads = [threading.Thread(target=voter, args=(links[k::6],)) for k in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [302] * 120
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    wal = Path(session.get_bind().url.database + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def test_a_casts_lock_on_its_invitation_links_nothing_after_the_next_mix(app, session, make_round,
                                                                        issue):
    """PostgreSQL: a cast writes no version of its invitation, but its foreign-key check locks
    the row, stamping the cast's transaction id in xmax; the next mix's checks stamp over it."""
    from evaluation.ballot_box import Cast
    from evaluation.mixing import maybe_mix
    app.config["PINGYI"] = app.config["PINGYI"].replace(mix_every=0)
    round_ = make_round("open")
    cast_many(app, round_, issue, 5)
    if session.get_bind().dialect.name == "sqlite":
        return  # no transaction ids in SQLite's rows
    sql = text("SELECT count(*) FROM ballots b JOIN invitations i ON i.xmax = b.xmin "
               "WHERE b.round_id = :r")
    assert session.scalar(sql, {"r": round_.id}) == 5  # the leak is real
    session.rollback()
    with app.app_context():
        assert maybe_mix(session, round_.id, 5, Cast("r", mix_due=True))
    assert session.scalar(sql, {"r": round_.id}) == 0


def _cast_in_flight(app, session, round_, invitation):
    """A PostgreSQL connection that has cast a ballot with this invitation, not yet committed;
    (the connection, 1 if the invitation was marked used, the ballot's receipt)."""
    from werkzeug.datastructures import MultiDict

    from evaluation.ballot_box import _NewBallot, _PG_CAST, _PG_SHARE_ROUND, _pg_cast_parameters
    from evaluation.ballot_sheet import build_sheet, parse_ballot
    parsed = parse_ballot(build_sheet(round_, invitation.group_id), MultiDict(full_ballot(round_)))
    who = (invitation.id, round_.id, invitation.group_id, invitation.token_hash)
    session.rollback()
    conn = _pg_driver(app)
    conn.execute(_PG_SHARE_ROUND, {"r": round_.id})
    new = _NewBallot.of(parsed, is_paper=False, is_valid=True)
    used = conn.execute(_PG_CAST, _pg_cast_parameters(who, new)).fetchone()[0]
    return conn, used, new.receipt


def _waits_for(holder, work) -> bool:
    """Run `work` in a thread while `holder` (a connection in a transaction) holds its locks;
    whether the work was still waiting after a second. Then the holder commits and closes, and
    the work is let finish."""
    import threading
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=1)
    waited = thread.is_alive()
    holder.commit()
    holder.close()
    thread.join(timeout=30)
    return waited


def test_a_reminder_waits_for_a_cast_in_flight_and_sends_nothing(app, session, make_round, issue):
    """PostgreSQL: a link re-issued (a reminder) while its ballot is being cast waits for the
    cast, then finds the invitation used: no fresh link goes to someone who has just voted."""
    import datetime as dt

    from sqlalchemy.orm import Session as OrmSession

    from evaluation.invitations import Listed, reissue_to_send
    round_ = make_round("open")
    if session.get_bind().dialect.name == "sqlite":
        return  # one writer at a time: the re-issue's write comes wholly before or after
    (link,) = issue(round_, "public", 1)
    invitation = session.get(Invitation, link.invitation_id)
    listed = Listed(invitation.id, round_.id, "voter@example.org", invitation.token_hash,
                    invitation.code_hash, invitation.last_sent_on)
    in_flight, used, _receipt = _cast_in_flight(app, session, round_, invitation)
    assert used == 1
    outcome = []

    def remind():
        with app.app_context(), OrmSession(db.engine) as mailer:
            outcome.append(reissue_to_send(mailer, listed, app.extensions["pingyi.keys"],
                                           dt.date(2026, 11, 28)))

    assert _waits_for(in_flight, remind), "the re-issue did not wait for the cast in flight"
    assert outcome == [None]
    assert session.scalar(select(Invitation.token_hash).where(
        Invitation.id == invitation.id)) == invitation.token_hash


def test_a_cast_waits_for_a_reissue_in_flight_and_refuses_the_old_link(app, session, make_round,
                                                                      issue):
    """PostgreSQL: a ballot cast with a link while that link is being re-issued waits for the
    re-issue, then is refused: the old link is void, and nothing is stored."""

    round_ = make_round("open")
    if session.get_bind().dialect.name == "sqlite":
        return  # one writer at a time: the cast's write comes wholly before or after
    (link,) = issue(round_, "public", 1)
    invitation = session.get(Invitation, link.invitation_id)
    session.rollback()
    reissue = _pg_driver(app)
    reissue.execute("UPDATE invitations SET token_hash = %s WHERE id = %s",
                    ("f" * 64, invitation.id))
    outcome = []
    waited = _waits_for(reissue, lambda: outcome.append(
        _cast_in_flight(app, session, round_, invitation)))
    conn, used, _receipt = outcome[0]
    conn.commit()
    conn.close()
    assert waited, "the cast did not wait for the re-issue in flight"
    assert used == 0
    assert session.scalar(select(db.func.count()).select_from(Ballot).where(
        Ballot.round_id == round_.id)) == 0
    assert session.scalar(select(db.func.count()).select_from(UsedInvitation)) == 0
