"""Fixtures: an app on a fresh database per test, on SQLite and on PostgreSQL.

Every test that asks for `app` (or `client`, `runner`, `session`...) runs twice, once per
database. The PostgreSQL half uses a scratch database created for this run and dropped after it.
Where nothing answers on 127.0.0.1:5432 that half is skipped with a line saying so, except under
CI (CI=true), where the run fails instead.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from core.config import Config
from core.extensions import db
from wsgi import create_app

PG_ADMIN_URL = os.environ.get("PINGYI_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"
FAST_HASH = "pbkdf2:sha256:1000"
_pg_status: dict = {}
REDIS_TEST_URL = os.environ.get("PINGYI_TEST_REDIS", "redis://127.0.0.1:6379/0")
_redis_status: dict = {}


def pg_available() -> str | None:
    """None when PostgreSQL answers, else why not (cached)."""
    if "error" not in _pg_status:
        try:
            with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
                _pg_status["error"] = None
        except psycopg.Error as exc:
            _pg_status["error"] = str(exc).strip().splitlines()[0]
    return _pg_status["error"]


def redis_available() -> str | None:
    """None when Redis answers, else why not (cached)."""
    if "error" not in _redis_status:
        from redis import Redis
        from redis.exceptions import RedisError
        try:
            Redis.from_url(REDIS_TEST_URL, socket_connect_timeout=3).ping()
            _redis_status["error"] = None
        except RedisError as exc:
            _redis_status["error"] = str(exc).strip().splitlines()[0]
    return _redis_status["error"]


def _service_line(name: str, where: str, error: str | None, running: str, tests: str,
                  skipped: str) -> str:
    if error is None:
        return f"{name}: {where} answers; {running}"
    if IN_CI:
        return f"{name}: NOT reachable under CI ({error}); {tests} will FAIL"
    return f"{name}: not reachable ({error}); {tests} are SKIPPED{skipped}"


def pytest_report_header(config):
    return [
        _service_line("PostgreSQL", PG_ADMIN_URL, pg_available(),
                      "database tests run on SQLite and PostgreSQL", "PostgreSQL tests",
                      ", SQLite only"),
        _service_line("Redis", REDIS_TEST_URL, redis_available(), "the mail-queue tests run",
                      "the mail-queue tests", ""),
    ]


def pg_url_for(name: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def create_pg_database(prefix: str = "pingyi_test") -> str:
    """Create a scratch database and return its name."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_pg_database(name: str) -> None:
    """Drop a scratch database, closing whatever still holds it."""
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _require(service: str, where: str, error: str | None) -> None:
    """Skip (locally) or fail (under CI) when a service the test needs is not there."""
    if error is not None:
        if IN_CI:
            pytest.fail(f"{service} must be reachable under CI: {error}")
        pytest.skip(f"{service} not reachable at {where} ({error})")


def require_pg() -> None:
    _require("PostgreSQL", "127.0.0.1:5432", pg_available())


def require_redis() -> None:
    _require("Redis", REDIS_TEST_URL, redis_available())


@pytest.fixture(scope="session")
def pg_database():
    """One scratch PostgreSQL database for the run, with the schema created."""
    require_pg()
    name = create_pg_database()
    url = pg_url_for(name)
    engine = create_engine(Config.from_env({}, database_url=url).database_url)
    import evaluation.models  # noqa: F401 - registers every table on the metadata
    db.metadata.create_all(engine)
    engine.dispose()
    yield url
    drop_pg_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A fresh, empty-of-rows database with the schema, per test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    return request.getfixturevalue("pg_database")


@pytest.fixture
def config(database_url, tmp_path) -> Config:
    return Config.from_env({}, instance_path=tmp_path / "instance", database_url=database_url,
                           secret_key="test-secret-key-" + "x" * 32, testing=True,
                           password_hash_method=FAST_HASH)


@pytest.fixture
def app(config):
    """The app on a fresh database. No app context stays pushed: each request gets its own."""
    app = create_app(config)
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        if db.engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in db.metadata.sorted_tables)
            with db.engine.begin() as conn:
                conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        db.engine.dispose()


@pytest.fixture
def engine(app):
    with app.app_context():
        return db.engine


@pytest.fixture
def session(engine):
    """A database session of the test's own, apart from the sessions of requests."""
    with Session(engine) as session:
        yield session


@pytest.fixture
def client(app):
    """A browser that prefers English (the Chinese pages have tests of their own)."""
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "round.json"


@pytest.fixture
def example_spec():
    """The validated example round spec (a fresh copy each time)."""
    from evaluation.specs import load_spec
    return load_spec(EXAMPLE.read_bytes())


@pytest.fixture
def make_user(session):
    """Factory: make_user(role) -> (user, password)."""
    from evaluation.accounts import create_user
    counter = iter(range(1, 10_000))

    def make(role: str = "organiser", email: str | None = None):
        password = "correct horse battery staple"
        email = email or f"{role}{next(counter)}@example.org"
        return create_user(session, email, password, role, "test", FAST_HASH), password
    return make


@pytest.fixture
def make_round(session, example_spec):
    """Factory: make_round(status="draft", **top-level spec changes) -> Round."""
    from evaluation.rounds import create_round, transition_round
    from evaluation.specs import validate_spec

    def make(status: str = "draft", **changes):
        spec = validate_spec(example_spec | changes) if changes else example_spec
        round_ = create_round(session, spec, "test")
        path = {"draft": [], "open": ["open"], "closed": ["open", "close"],
                "published": ["open", "close", "publish"],
                "archived": ["open", "close", "archive"]}[status]
        for action in path:
            transition_round(session, round_, action, "test")
        return round_
    return make


def reverse_item_order(session: Session, round_) -> None:
    """Turn a draft round's questionnaire order around, so that the order of its item ids no
    longer follows the order of its items (as after an edit that moved items); commits."""
    n = len(round_.items)
    for position in (f"position + {n}", f"{2 * n - 1} - position"):  # no two items meet on one
        session.execute(text(f"UPDATE items SET position = {position} WHERE round_id = :r"),
                        {"r": round_.id})
    session.commit()
    session.expire(round_)


CSRF_RE = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


def csrf_token(client, path: str = "/") -> str:
    """The CSRF token of the client's session, read from a page as a browser would."""
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


@pytest.fixture
def post(client):
    """post(url, data=None, **kw): a form POST with the session's CSRF token added."""
    def do(url: str, data: dict | None = None, **kwargs):
        data = dict(data or {})
        data.setdefault("csrf_token", csrf_token(client))
        return client.post(url, data=data, **kwargs)
    return do


@pytest.fixture
def sign_in(client, make_user, post):
    """Factory: sign_in(role) signs a new user of that role in on `client`; returns the user."""
    def do(role: str = "organiser"):
        user, password = make_user(role)
        response = post("/staff/sign-in", {"email": user.email, "password": password})
        assert response.status_code == 302, response.get_data(as_text=True)
        return user
    return do
