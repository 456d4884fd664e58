"""The session cookie: Flask's format and keys, with the signing set up once per set of keys."""

from __future__ import annotations

from flask import Flask, session
from flask.sessions import SecureCookieSessionInterface

from core.sessions import SessionInterface


def _app(interface, key: str, fallbacks: tuple[str, ...] = ()) -> Flask:
    app = Flask("sessions_test")
    app.secret_key = key
    app.config["SECRET_KEY_FALLBACKS"] = list(fallbacks)
    app.session_interface = interface

    @app.post("/set/<value>")
    def put(value):
        session["value"] = value
        session["ticket"] = [1, 2, 3, "a" * 64]
        return "ok"

    @app.get("/get")
    def get():
        return {"value": session.get("value"), "ticket": session.get("ticket")}

    return app


def _cookie_from(app: Flask, value: str) -> str:
    client = app.test_client()
    client.post(f"/set/{value}")
    return client.get_cookie("session").value


def _read(app: Flask, cookie: str) -> dict:
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client.get("/get").get_json()


def test_cookies_pass_both_ways_between_flask_and_ours():
    ours, flasks = _app(SessionInterface(), "k" * 40), _app(SecureCookieSessionInterface(), "k" * 40)
    assert _read(flasks, _cookie_from(ours, "x")) == {"value": "x", "ticket": [1, 2, 3, "a" * 64]}
    assert _read(ours, _cookie_from(flasks, "y")) == {"value": "y", "ticket": [1, 2, 3, "a" * 64]}


def test_a_cookie_signed_with_another_key_or_altered_is_an_empty_session():
    interface = SessionInterface()
    cookie = _cookie_from(_app(interface, "old" * 12), "x")
    assert _read(_app(interface, "new" * 12), cookie) == {"value": None, "ticket": None}
    payload, signature = cookie.rsplit(".", 1)
    forged = payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
    assert _read(_app(interface, "old" * 12), forged) == {"value": None, "ticket": None}


def test_keys_rotate_a_fallback_still_verifies_and_new_cookies_use_the_new_key():
    interface = SessionInterface()
    old_cookie = _cookie_from(_app(interface, "old" * 12), "x")
    rotated = _app(interface, "new" * 12, fallbacks=("old" * 12,))
    assert _read(rotated, old_cookie)["value"] == "x"
    new_cookie = _cookie_from(rotated, "y")
    assert _read(_app(SecureCookieSessionInterface(), "new" * 12), new_cookie)["value"] == "y"
    assert _read(_app(interface, "old" * 12), new_cookie)["value"] is None


def test_one_serializer_per_set_of_keys():
    interface = SessionInterface()
    app = _app(interface, "k" * 40)
    assert interface.get_signing_serializer(app) is interface.get_signing_serializer(app)
    app.config["SECRET_KEY_FALLBACKS"] = ["old" * 12]
    assert interface.get_signing_serializer(app) is not interface.get_signing_serializer(
        _app(interface, "k" * 40))
    assert interface.get_signing_serializer(_app(interface, "")) is None


def test_the_app_uses_it(app):
    assert isinstance(app.session_interface, SessionInterface)
