"""Settings from the environment."""

import pytest

from core.config import Config, ConfigError, normalise_database_url


@pytest.mark.parametrize("url, expected", [
    ("postgresql://postgres@127.0.0.1:5432/pingyi", "postgresql+psycopg://postgres@127.0.0.1:5432/pingyi"),
    ("postgres://u:p@db/x", "postgresql+psycopg://u:p@db/x"),
    ("postgresql+psycopg://u@h/x", "postgresql+psycopg://u@h/x"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
])
def test_database_url_maps_to_psycopg3(url, expected):
    assert normalise_database_url(url) == expected


def test_default_database_is_sqlite_in_the_instance_folder(tmp_path):
    config = Config.from_env({"INSTANCE_PATH": str(tmp_path)})
    assert config.database_url == f"sqlite:///{tmp_path / 'pingyi.db'}"


@pytest.mark.parametrize("key", ["", "dev", "change-me", "short-key"])
def test_production_refuses_a_missing_or_weak_secret_key(tmp_path, key):
    with pytest.raises(ConfigError, match="needs a real SECRET_KEY"):
        Config.from_env({"PINGYI_ENV": "production", "SECRET_KEY": key, "INSTANCE_PATH": str(tmp_path)})


def test_production_with_a_real_key_uses_secure_cookies(tmp_path):
    from wsgi import create_app
    config = Config.from_env({"PINGYI_ENV": "production", "SECRET_KEY": "k" * 40,
                              "SECRET_KEY_FALLBACKS": "old-one, older-one",
                              "INSTANCE_PATH": str(tmp_path)})
    app = create_app(config)
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SECRET_KEY_FALLBACKS"] == ["old-one", "older-one"]


def test_flask_cli_refuses_to_start_in_production_without_a_key(tmp_path):
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "round", "list"],
                            env={"PINGYI_ENV": "production", "INSTANCE_PATH": str(tmp_path),
                                 "PATH": "/usr/bin:/bin"},
                            capture_output=True, text=True, cwd=str(__import__("pathlib").Path(__file__).parent.parent))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: PINGYI_ENV=production needs a real SECRET_KEY")


def test_the_limit_on_bad_links_and_codes_is_a_setting_and_must_parse(tmp_path):
    env = {"INSTANCE_PATH": str(tmp_path)}
    assert Config.from_env(env).link_rate_limit == "60 per minute"
    assert Config.from_env({**env, "PINGYI_LINK_RATE_LIMIT": "300 per minute"}
                           ).link_rate_limit == "300 per minute"
    with pytest.raises(ConfigError, match="link_rate_limit: '300 a minute' is not a rate limit"):
        Config.from_env({**env, "PINGYI_LINK_RATE_LIMIT": "300 a minute"})
