"""Signed ballot links: an itsdangerous signature over (round id, invitation secret).

A signature proves only that we issued the link; whether it may still vote is the database's
business. Verification needs no database, so forged or altered links are refused before any query.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadData, URLSafeSerializer

LINK_SALT = "pingyi.ballot-link.v1"


class BadLinkError(ValueError):
    """The token was not issued by us, or was altered."""


@dataclass(frozen=True)
class LinkPayload:
    round_id: int
    secret: str


class LinkSigner:
    """Signs and verifies ballot-link tokens; old keys verify while keys rotate."""

    def __init__(self, secret_key: str, fallbacks: tuple[str, ...] = ()):
        # itsdangerous signs with the last key and verifies with any of them.
        self._serializer = URLSafeSerializer([*reversed(fallbacks), secret_key], salt=LINK_SALT)

    def dumps(self, round_id: int, secret: str) -> str:
        """The token for an invitation secret."""
        return self._serializer.dumps([round_id, secret])

    def loads(self, token: str) -> LinkPayload:
        """The payload of a genuine token; BadLinkError otherwise."""
        if not token or len(token) > 200:
            raise BadLinkError("no token")
        try:
            data = self._serializer.loads(token)
        except BadData:
            raise BadLinkError("bad signature") from None
        if (not isinstance(data, list) or len(data) != 2 or not isinstance(data[0], int)
                or isinstance(data[0], bool) or not isinstance(data[1], str)):
            raise BadLinkError("bad payload")
        return LinkPayload(round_id=data[0], secret=data[1])
