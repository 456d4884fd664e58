"""Settings, read once from the environment (and an optional .env file) into a frozen object."""

from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from limits import parse_many

#: The placeholder keys that must never protect a production instance.
INSECURE_KEYS = frozenset({"", "dev", "change-me", "changeme", "secret", "pingyi-dev-key"})
DEV_SECRET_KEY = "pingyi-dev-key"
#: The languages of the pages; the first is the default.
LOCALES = ("zh", "en")


class ConfigError(RuntimeError):
    """The environment describes a configuration Pingyi refuses to run with."""


def normalise_database_url(url: str) -> str:
    """Map plain postgres:// and postgresql:// URLs onto the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@dataclass(frozen=True)
class Config:
    """Typed settings for one app instance."""

    instance_path: Path
    database_url: str
    secret_key: str
    secret_key_fallbacks: tuple[str, ...] = ()
    is_production: bool = False
    redis_url: str | None = None
    mail_server: str | None = None
    mail_port: int = 25
    mail_username: str | None = None
    mail_password: str | None = None
    mail_use_tls: bool = False
    mail_sender: str = "pingyi@localhost"
    #: Where REDIS_URL is set: the prefix of this instance's keys there (rate limits, the mail
    #: queue). Give each Pingyi instance that shares a Redis server a prefix of its own.
    redis_prefix: str = "pingyi"
    #: Werkzeug hash method for staff passwords; tests lower its cost.
    password_hash_method: str = "scrypt"
    login_rate_limit: str = "10 per minute"
    #: Invalid ballot links or codes one address may try; genuine links and ballots are never
    #: limited (a meeting room shares one address).
    link_rate_limit: str = "60 per minute"
    #: Behind a reverse proxy: trust its X-Forwarded-For/-Proto (one hop), for rate limits and HTTPS.
    proxy_fix: bool = False
    #: Where ballot links point (no trailing slash).
    base_url: str = "http://127.0.0.1:5000"
    #: While a round is open, its invitations are rewritten after every this many ballots.
    mix_every: int = 20
    #: How long a SQLite writer waits for the lock before giving up, in milliseconds.
    sqlite_busy_timeout_ms: int = 10_000
    #: Largest ballot body accepted, in bytes (a CJK character costs 9 bytes form-encoded).
    max_ballot_bytes: int = 1024 * 1024
    #: Largest request body accepted, in bytes (imports included).
    max_content_length: int = 4 * 1024 * 1024
    testing: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Config":
        """Build the settings from environment variables; keyword overrides win."""
        env = dict(os.environ if env is None else env)
        instance = Path(env.get("INSTANCE_PATH") or Path.cwd() / "instance").resolve()
        is_production = env.get("PINGYI_ENV", "").lower() == "production"
        secret = env.get("SECRET_KEY", "")
        if not secret and not is_production:
            secret = DEV_SECRET_KEY
        values = dict(
            instance_path=instance,
            database_url=normalise_database_url(
                env.get("DATABASE_URL") or f"sqlite:///{instance / 'pingyi.db'}"),
            secret_key=secret,
            secret_key_fallbacks=_split(env.get("SECRET_KEY_FALLBACKS")),
            is_production=is_production,
            redis_url=env.get("REDIS_URL") or None,
            mail_server=env.get("MAIL_SERVER") or None,
            mail_port=int(env.get("MAIL_PORT") or 25),
            mail_username=env.get("MAIL_USERNAME") or None,
            mail_password=env.get("MAIL_PASSWORD") or None,
            mail_use_tls=env.get("MAIL_USE_TLS", "").lower() in ("1", "true", "yes"),
            mail_sender=env.get("MAIL_SENDER") or "pingyi@localhost",
            redis_prefix=env.get("PINGYI_REDIS_PREFIX") or "pingyi",
            base_url=(env.get("PINGYI_BASE_URL") or "http://127.0.0.1:5000").rstrip("/"),
            mix_every=int(env.get("PINGYI_MIX_EVERY") or 20),
            link_rate_limit=env.get("PINGYI_LINK_RATE_LIMIT") or "60 per minute",
            proxy_fix=env.get("PINGYI_PROXY_FIX", "").lower() in ("1", "true", "yes"),
        )
        values.update(overrides)
        if "database_url" in overrides:
            values["database_url"] = normalise_database_url(values["database_url"])
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Refuse settings that are unsafe for the environment, or that cannot work."""
        for name in ("link_rate_limit", "login_rate_limit"):
            try:
                parse_many(getattr(self, name))
            except ValueError:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not a rate limit "
                                  "(for example: 60 per minute)") from None
        if self.is_production and (self.secret_key in INSECURE_KEYS or len(self.secret_key) < 32):
            raise ConfigError(
                "PINGYI_ENV=production needs a real SECRET_KEY of at least 32 characters "
                f"(for example: {secrets.token_urlsafe(32)})")

    @property
    def mail_queue(self) -> str:
        """Name of the Redis queue for mail (RQ's keys carry it; Pingyi's own keys start with it)."""
        return f"{self.redis_prefix}-mail"

    def replace(self, **changes) -> "Config":
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)
