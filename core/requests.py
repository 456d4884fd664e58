"""Flask's request, reading plain urlencoded forms without unquoting every field.

A ballot posts some eighty fields of ASCII names and values ("grade-c01=excellent", "3"), which
need no unquoting: Werkzeug's parser (urllib's parse_qsl) still runs each name and value
through it, 148 µs for the example ballot on this machine against 19 µs for splitting it.
A body with any "%" or "+" in it, a comment in Chinese say, goes through parse_qsl as before.
Either way the form is the same (tests/test_requests.py compares them on all sorts of bodies).
"""

from __future__ import annotations

import typing as t
from urllib.parse import parse_qsl

from flask import Request as FlaskRequest
from werkzeug.formparser import FormDataParser as WerkzeugFormDataParser


def parse_urlencoded(text: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of an urlencoded body, as parse_qsl(text, keep_blank_values=True,
    errors="werkzeug.url_quote") gives them, which is what Werkzeug's form parser calls."""
    if "%" in text or "+" in text:
        return parse_qsl(text, keep_blank_values=True, errors="werkzeug.url_quote")
    pairs = []
    for part in text.split("&"):
        if part:  # parse_qsl skips empty parts ("a=1&&b=2")
            name, _eq, value = part.partition("=")  # "a" alone is a blank value
            pairs.append((name, value))
    return pairs


class FormDataParser(WerkzeugFormDataParser):
    """Werkzeug's form parser with parse_urlencoded for urlencoded bodies."""

    def _parse_urlencoded(self, stream: t.IO[bytes], mimetype: str,
                          content_length: int | None, options: dict[str, str]):
        # As Werkzeug's: the stream is already limited to the request's maximum size, and a
        # body that is not UTF-8 raises ValueError, which parse() turns into an empty form.
        return stream, self.cls(parse_urlencoded(stream.read().decode())), self.cls()


class Request(FlaskRequest):
    form_data_parser_class = FormDataParser
