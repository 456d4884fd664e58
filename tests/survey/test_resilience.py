"""A database that is down or locked gives a "try again" page (503), and the app recovers."""

import sqlite3

from core.config import Config
from core.signing import LinkSigner
from tests.conftest import csrf_token
from tests.survey.conftest import full_ballot, link_path
from wsgi import create_app


def test_locked_sqlite_gives_503_then_recovers(app, config, make_round, issue):
    if not config.database_url.startswith("sqlite"):
        # PostgreSQL's version of this is the unreachable-server test below.
        assert config.database_url.startswith("postgresql")
        return
    round_ = make_round("open")
    link = issue(round_)[0]
    impatient = create_app(config.replace(sqlite_busy_timeout_ms=200))
    phone = impatient.test_client()
    phone.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    assert phone.get(link_path(link)).status_code == 302
    data = {**full_ballot(round_), "csrf_token": csrf_token(phone)}
    blocker = sqlite3.connect(config.database_url.removeprefix("sqlite:///"))
    blocker.execute("BEGIN IMMEDIATE")
    try:
        response = phone.post("/ballot", data=data)
        assert response.status_code == 503
        assert "Try again in a moment" in response.get_data(as_text=True)
    finally:
        blocker.rollback()
        blocker.close()
    assert phone.post("/ballot", data=data).status_code == 302  # nothing was stored the first time


def test_lost_postgresql_connections_give_one_503_then_recover(app, config, session, make_round,
                                                                issue):
    """A server restart cuts the pooled connections: the next ballot gets "try again" and is not
    stored; the retry casts it, once."""
    if not config.database_url.startswith("postgresql"):
        assert config.database_url.startswith("sqlite")  # no connections to lose
        return
    import psycopg
    from sqlalchemy import func, select

    from evaluation.models import Ballot
    round_ = make_round("open")
    link = issue(round_)[0]
    phone = app.test_client()
    phone.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    assert phone.get(link_path(link)).status_code == 302
    data = {**full_ballot(round_), "csrf_token": csrf_token(phone)}
    session.close()
    url = config.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as admin:
        cut = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                            ).fetchone()[0]
    assert cut >= 1
    first = phone.post("/ballot", data=data)
    assert first.status_code == 503
    assert "Try again in a moment" in first.get_data(as_text=True)
    assert phone.post("/ballot", data=data).status_code == 302
    assert session.scalar(select(func.count()).select_from(Ballot)) == 1


def test_unreachable_database_gives_503(tmp_path):
    config = Config.from_env({}, instance_path=tmp_path, testing=True,
                             database_url="postgresql://postgres@127.0.0.1:9/none")
    app = create_app(config)
    token = LinkSigner(config.secret_key).dumps(1, "some-secret")
    response = app.test_client().get(f"/v/{token}", headers={"Accept-Language": "en"})
    assert response.status_code == 503
    assert "Traceback" not in response.get_data(as_text=True)


def test_pages_carry_the_security_headers(client, make_round, issue):
    round_ = make_round("open")
    client.get(link_path(issue(round_)[0]))
    response = client.get("/ballot")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    html = response.get_data(as_text=True)
    assert "<script>" not in html and " on" + "click=" not in html


def test_numbers_too_large_for_the_database_are_not_found(client):
    assert client.get("/bulletin/99999999999999999999999999").status_code == 404
    assert client.get("/staff/rounds/99999999999999999999").status_code in (302, 404)


def test_engine_hides_statement_parameters(app):
    """A failing statement's parameters (invitation id beside the answers) stay out of any log."""
    from core.extensions import db
    with app.app_context():
        assert db.engine.hide_parameters


def test_postgresql_connections_keep_alive_without_a_ping(app, config):
    """No ping per request; TCP keepalives keep idle pooled connections from being cut."""
    if not config.database_url.startswith("postgresql"):
        assert config.database_url.startswith("sqlite")
        return
    from core.extensions import db
    with app.app_context():
        assert not db.engine.pool._pre_ping
        with db.engine.connect() as conn:
            dsn = conn.connection.driver_connection.info.dsn
    assert "keepalives=1" in dsn and "keepalives_idle=60" in dsn
