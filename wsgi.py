"""The composition root: create_app(config) and the module-level app for `flask --app wsgi`."""

from __future__ import annotations

import logging
import re
import sys

from dotenv import load_dotenv
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter
from flask import Flask, current_app, render_template, request, session
from flask_babel import get_locale, lazy_gettext
from flask_login import current_user
from sqlalchemy.exc import OperationalError

import core.database  # noqa: F401 - registers the SQLite connection settings
from core.config import LOCALES, Config, ConfigError
from core.requests import Request
from core.sessions import SessionInterface
from core.extensions import babel, csrf, db, limiter, login_manager, migrate
from evaluation.invitations import Keys

LINK_PATH_RE = re.compile(r"/v/[^\s\"?]+")


class RedactLinks(logging.Filter):
    """Keep ballot-link tokens out of the development server's access log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "/v/" in message:
            record.msg, record.args = LINK_PATH_RE.sub("/v/…", message), ()
        return True


_REDACT = RedactLinks()


class DatabaseIntConverter(IntegerConverter):
    """`<int:...>` that never matches a number too large for a database integer (404, not 500)."""

    def __init__(self, map, *args, **kwargs):
        kwargs.setdefault("max", 2**31 - 1)
        super().__init__(map, *args, **kwargs)


def select_locale() -> str:
    """The language chosen with the switch, else the browser's best match."""
    chosen = session.get("lang")
    if chosen in LOCALES:
        return chosen
    return request.accept_languages.best_match(LOCALES) or "zh"


def create_app(config: Config | None = None) -> Flask:
    """Build the Pingyi app for the given settings (from the environment by default)."""
    if config is None:
        load_dotenv()
        config = Config.from_env()
    app = Flask(__name__, instance_path=str(config.instance_path), template_folder="templates")
    app.url_map.converters["int"] = DatabaseIntConverter
    app.request_class = Request
    app.session_interface = SessionInterface()
    if config.proxy_fix:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)
    config.instance_path.mkdir(parents=True, exist_ok=True)
    app.config.update(
        PINGYI=config,
        TESTING=config.testing,
        SECRET_KEY=config.secret_key,
        SECRET_KEY_FALLBACKS=list(config.secret_key_fallbacks),
        SQLALCHEMY_DATABASE_URI=config.database_url,
        SQLALCHEMY_ENGINE_OPTIONS=_engine_options(config),
        MAX_CONTENT_LENGTH=config.max_content_length,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.is_production,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SECURE=config.is_production,
        WTF_CSRF_TIME_LIMIT=None,
        BABEL_DEFAULT_LOCALE="zh",
        BABEL_TRANSLATION_DIRECTORIES="translations",
        RATELIMIT_STORAGE_URI=config.redis_url or "memory://",
        RATELIMIT_HEADERS_ENABLED=True,
    )
    _init_extensions(app)
    app.extensions["pingyi.keys"] = Keys.from_config(config)
    _register_blueprints(app)
    _register_hooks(app)
    logging.getLogger("werkzeug").addFilter(_REDACT)
    return app


def _engine_options(config: Config) -> dict:
    """Pool settings; SQLite writers wait for the lock instead of failing at once.

    hide_parameters: an error while casting must not write a ballot's values (or the invitation
    id beside them) into a log line.

    PostgreSQL: no ping before each request (it costs a round trip on every page and ballot).
    A connection lost to a server restart fails one request with the 503 "try again" page, in
    which nothing is stored, and the pool is thrown away. TCP keepalives every minute keep idle
    pooled connections alive through firewalls and NAT that drop quiet ones, and connections
    are renewed after half an hour.
    """
    if config.database_url.startswith("sqlite"):
        return {"connect_args": {"timeout": config.sqlite_busy_timeout_ms / 1000},
                "hide_parameters": True}
    return {"pool_recycle": 1800, "hide_parameters": True,
            "connect_args": {"keepalives": 1, "keepalives_idle": 60, "keepalives_interval": 10,
                             "keepalives_count": 3}}


def _init_extensions(app: Flask) -> None:
    import os

    db.init_app(app)
    # Before CSRFProtect reads the form: ballots get a much smaller body limit than imports.
    app.before_request(limit_ballot_body)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), "migrations"),
                     render_as_batch=True, compare_type=True)
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    limiter.init_app(app)
    # Templates get the lazy proxy rather than Flask-Login's context processor, which loads the
    # user for every page, the voter's included (see templates/base.html).
    login_manager.init_app(app, add_context_processor=False)
    app.context_processor(lambda: {"current_user": current_user})
    login_manager.login_view = "evaluation.sign_in"
    login_manager.login_message = lazy_gettext("Please sign in to see this page.")
    login_manager.session_protection = "strong"


def limit_ballot_body() -> None:
    """Evaluator pages accept small bodies only."""
    if request.blueprint == "survey":
        request.max_content_length = current_app.config["PINGYI"].max_ballot_bytes


def _register_blueprints(app: Flask) -> None:
    from evaluation.cli import register_cli
    from evaluation.views import bp as evaluation_bp
    from survey.views import bp as survey_bp

    app.register_blueprint(evaluation_bp)
    app.register_blueprint(survey_bp)
    register_cli(app)


def _register_hooks(app: Flask) -> None:
    @app.context_processor
    def inject_locale():
        return {"current_locale": str(get_locale() or "zh")}

    @app.after_request
    def security_headers(response):
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if app.config["PINGYI"].is_production:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.errorhandler(OperationalError)
    def database_unavailable(exc):
        db.session.rollback()
        logging.getLogger("pingyi").error("database unavailable: %s", type(exc.orig).__name__)
        return render_template("errors/error.html", code=503), 503

    for code in (400, 403, 404, 405, 413, 429, 500):
        app.register_error_handler(code, _error_page(code))


def _error_page(code: int):
    def handler(exc):
        return render_template("errors/error.html", code=code), code
    return handler


def __getattr__(name: str):
    """Build `app` lazily, so that importing wsgi for create_app reads no environment."""
    if name == "app":
        try:
            globals()["app"] = create_app()
        except ConfigError as exc:
            sys.exit(f"error: {exc}")  # one clear line on stderr, exit status 1
        return globals()["app"]
    raise AttributeError(name)
