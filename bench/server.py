"""The WSGI app the ballot benchmark serves: Pingyi, plus a bare Flask "ok" under /bare."""

from flask import Flask
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from wsgi import create_app

bare = Flask("bare")


@bare.get("/")
def ok():
    """The yardstick: the least a Flask endpoint can do."""
    return "ok"


pingyi = create_app()
app = DispatcherMiddleware(pingyi, {"/bare": bare})
