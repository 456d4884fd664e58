"""The request class reads urlencoded forms exactly as Werkzeug's own parser does."""

from __future__ import annotations

import io
import random
import urllib.parse

import pytest
from werkzeug.wrappers import Request as WerkzeugRequest

from core.requests import Request, parse_urlencoded


def _environ(body: bytes, content_type: str = "application/x-www-form-urlencoded") -> dict:
    return {"REQUEST_METHOD": "POST", "CONTENT_TYPE": content_type,
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
            "SERVER_NAME": "localhost", "SERVER_PORT": "80", "wsgi.url_scheme": "http"}


def _forms(body: bytes, content_type: str = "application/x-www-form-urlencoded"):
    """The form as ours and as Werkzeug's parse the same body: lists of (name, value)."""
    ours = Request(_environ(body, content_type)).form
    theirs = WerkzeugRequest(_environ(body, content_type)).form
    return list(ours.items(multi=True)), list(theirs.items(multi=True))


BODIES = [
    b"", b"&", b"&&", b"=", b"==", b"a", b"a=", b"=b", b"a=1&&b=2", b"a=1&a=2", b"a=b=c",
    b"grade-c01=excellent&item-c01-i1=3&comment-c01=", b"&a=1&", b"a;b=1",
    b"a=%E5%90%8C%E6%84%8F", b"a=1+2", b"a+b=c", b"a=%", b"a=%zz", b"a=%E5%90", b"%41=%42",
    b"a=%2B&b=+", b"csrf_token=IjE2Yj.aUqB-Cg_x&a=1", b"a=\xe5\x90\x8c", b"a=\xff",
    b"a=1\r\n&b=2", b"\xe5\x90\x8c=1",
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: repr(b)[:40])
def test_a_body_gives_the_form_werkzeug_gives(body):
    ours, theirs = _forms(body)
    assert ours == theirs


def test_random_bodies_give_the_forms_werkzeug_gives():
    rng = random.Random(20261128)
    alphabet = "ab-_.~=&%+2E5 \u540c"
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 24)))
        ours, theirs = _forms(text.encode("utf-8"))
        assert ours == theirs, text


def test_a_ballot_is_split_without_unquoting_and_a_quoted_one_unquoted():
    fields = [("csrf_token", "IjE2Yj.aUqB-Cg_x"), ("grade-c01", "excellent"),
              ("item-c01-i1", "3"), ("comment-c01", "")]
    assert parse_urlencoded(urllib.parse.urlencode(fields)) == fields
    commented = fields + [("comment-c02", "工作 认真+负责 100%")]
    assert parse_urlencoded(urllib.parse.urlencode(commented)) == commented


def test_other_bodies_are_left_to_werkzeug():
    body = b"--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--x--\r\n"
    ours, theirs = _forms(body, "multipart/form-data; boundary=x")
    assert ours == theirs == [("a", "1")]
    assert _forms(b"a=1", "text/plain") == ([], [])
