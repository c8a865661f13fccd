"""Who may call the service, and how often: API keys and per-key token buckets.

Covers:
- ``load_api_keys``: keys from a file (one per line; blank lines and ``#`` comments ignored) and/or
  the ``LORAKIT_API_KEYS`` environment variable (comma- or whitespace-separated).
- ``ApiKeys.check``: ``Authorization: Bearer <key>`` compared with every configured key through
  ``hmac.compare_digest`` (no early exit, so the time taken does not say which key or how many
  characters matched). Missing/malformed header -> 401 ``missing_api_key``; unknown key -> 403
  ``invalid_api_key``. A caller is identified in logs and metrics by ``key_id`` (the first 8 hex
  digits of the key's SHA-256), never by the key itself.
- ``RateLimiter``: one token bucket per key id (``rate`` tokens per second, ``burst`` capacity); an
  empty bucket -> 429 with ``Retry-After`` (whole seconds until a token is back).

Does not: issue, rotate or revoke keys (edit the file and restart), authenticate users, or limit by
IP address (a reverse proxy does that better), or share buckets between processes.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import os
import threading
import time
from pathlib import Path

from lorakit_nb.errors import LorakitError
from lorakit_nb.serve.errors import ServeError

ENV_VAR = "LORAKIT_API_KEYS"
MIN_KEY_CHARS = 16


def key_id(key: str) -> str:
    """A loggable name for a key. Example: key_id("s3cret...") -> "3f9a0c1e"."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:8]


def load_api_keys(path=None, env: dict | None = None) -> list[str]:
    """Keys from ``path`` (if given) plus ``$LORAKIT_API_KEYS``; raises if a key is too short or none found.

    Example: a file "# team A\\nsk-0123456789abcdef\\n" -> ["sk-0123456789abcdef"]
    """
    env = os.environ if env is None else env
    keys = []
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise LorakitError(f"{p}: API key file not found; write one key per line "
                               "(e.g. `python -c \"import secrets; print(secrets.token_urlsafe(32))\" > keys.txt`)")
        for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                if len(line) < MIN_KEY_CHARS or any(c.isspace() for c in line):
                    raise LorakitError(f"{p}:{lineno}: an API key must be one token of at least {MIN_KEY_CHARS} "
                                       "characters; generate one with secrets.token_urlsafe(32)")
                keys.append(line)
    for k in env.get(ENV_VAR, "").replace(",", " ").split():
        if len(k) < MIN_KEY_CHARS:
            raise LorakitError(f"${ENV_VAR}: every key must have at least {MIN_KEY_CHARS} characters")
        keys.append(k)
    if not keys:
        where = f"{path} holds no keys" if path else f"no --api-key-file and ${ENV_VAR} is empty"
        raise LorakitError(f"{where}: give the service at least one API key (one per line), "
                           "or pass --no-auth to serve without keys on 127.0.0.1 only")
    return list(dict.fromkeys(keys))


class ApiKeys:
    """Bearer-token check against a fixed set of keys. ``ApiKeys([])`` with ``required=False`` lets everyone in."""

    def __init__(self, keys, required: bool = True):
        self._keys = [k.encode("utf-8") for k in keys]
        self._ids = [key_id(k) for k in keys]
        self.required = required

    def check(self, authorization: str | None) -> str:
        """The caller's key id, or raise 401 (no/malformed header) / 403 (unknown key)."""
        if not self.required:
            return "anonymous"
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ServeError(401, "missing_api_key", "no API key: send the header `Authorization: Bearer <key>` "
                             "(the openai client does this with api_key=...)", {"WWW-Authenticate": "Bearer"})
        given, found = token.encode("utf-8"), None
        for key, kid in zip(self._keys, self._ids):  # every key is compared: no early exit
            if hmac.compare_digest(given, key):
                found = kid
        if found is None:
            raise ServeError(403, "invalid_api_key", "the API key is not valid for this service; check the key "
                             "you were given", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return found

    def key_of_header(self, authorization: str | None) -> str | None:
        """``check``'s key id, or None where ``check`` would refuse (for counting uploads per key)."""
        try:
            return self.check(authorization)
        except ServeError:
            return None


class RateLimiter:
    """Token buckets per caller: ``rate`` requests/s sustained, ``burst`` at once. rate <= 0 disables it.

    Example: RateLimiter(rate=2, burst=4): 4 requests at once pass, the 5th gets 429 with Retry-After: 1.
    """

    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self.clock = float(rate), max(1, int(burst)), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # id -> (tokens, last refill time)
        self._lock = threading.Lock()

    def take(self, who: str) -> None:
        """Spend one token of ``who``'s bucket or raise 429."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self.clock()
            tokens, last = self._buckets.get(who, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[who] = (tokens - 1.0, now)
                return
            self._buckets[who] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        raise ServeError(429, "rate_limit_exceeded",
                         f"rate limit: {self.rate:g} requests/s per API key (bursts of {self.burst}); "
                         f"retry after {wait:.2f} s", {"Retry-After": str(max(1, math.ceil(wait)))})
