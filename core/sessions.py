"""The session cookie: Flask's signed cookie, byte for byte, with its signing set up once.

Flask builds a new serializer for every request that opens or saves a session, and itsdangerous
derives the signing key from the secret key on every signature. Neither changes while the keys
stay the same, and every ballot cast opens and saves a session: here both are made once per set
of keys. Cookies signed by Flask's own interface verify here and the other way round.
"""

from __future__ import annotations

import functools
import threading

from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import TimestampSigner, URLSafeTimedSerializer, want_bytes


@functools.lru_cache(maxsize=32)
def _derived_key(secret_key: bytes, salt: bytes, key_derivation: str, digest_method) -> bytes:
    return TimestampSigner(secret_key, salt=salt, key_derivation=key_derivation,
                           digest_method=digest_method).derive_key()


class _KeyCachingSigner(TimestampSigner):
    """itsdangerous' timestamp signer, deriving each key once per process."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        return _derived_key(key, self.salt, self.key_derivation, self.digest_method)


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions (same salt, keys, fallbacks and format), with one
    serializer per set of keys instead of one per request."""

    def __init__(self) -> None:
        self._serializers: dict[tuple, URLSafeTimedSerializer] = {}
        self._lock = threading.Lock()

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        if not app.secret_key:
            return None
        fallbacks = tuple(app.config["SECRET_KEY_FALLBACKS"] or ())
        keys = (*fallbacks, app.secret_key)  # itsdangerous signs with the last one
        serializer = self._serializers.get(keys)
        if serializer is None:
            serializer = URLSafeTimedSerializer(
                list(keys), salt=self.salt, serializer=self.serializer, signer=_KeyCachingSigner,
                signer_kwargs={"key_derivation": self.key_derivation,
                               "digest_method": self.digest_method})
            with self._lock:
                if len(self._serializers) > 16:  # keys changed at run time, again and again
                    self._serializers.clear()
                self._serializers[keys] = serializer
        return serializer
