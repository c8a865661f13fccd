"""What every route of ``lorakit serve`` needs, in one object the app carries (``app.state.served``).

Covers: ``Served`` (the engines, the settings, the API keys and the rate limiter) with the checks
routes share: ``authorize`` (key + rate limit), ``speech`` / ``text`` (the engine, or a 404 naming
what this server does serve), ``require_content_type`` (415) and ``read_json`` (400 on a body that
is not a JSON object); and ``served(request)``, how a route finds it.

Does not: define routes (``routes_speech``, ``routes_text``, ``app``) or cap bodies (``limits``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from lorakit_nb.serve.errors import ServeError
from lorakit_nb.serve.security import ApiKeys, RateLimiter
from lorakit_nb.serve.settings import ServeSettings


@dataclass
class Served:
    """Example: Served(engine, None, ServeSettings(), ApiKeys([], required=False)).speech() is engine."""

    engine: object = None       # serve.engine.Engine: the speech routes
    text_engine: object = None  # serve.llm.TextEngine: /v1/completions
    settings: ServeSettings = field(default_factory=ServeSettings)
    keys: ApiKeys = field(default_factory=lambda: ApiKeys([], required=False))
    limiter: RateLimiter = None

    def __post_init__(self):
        if self.engine is None and self.text_engine is None:
            raise ValueError("lorakit serve needs a speech engine, a text engine, or both")
        if self.limiter is None:
            self.limiter = RateLimiter(self.settings.rate, self.settings.burst)

    @property
    def engines(self) -> list:
        return [e for e in (self.engine, self.text_engine) if e is not None]

    def authorize(self, request) -> str:
        """The caller's key id (also on ``request.state.key_id`` for the access log); 401/403/429 otherwise."""
        kid = self.keys.check(request.headers.get("authorization"))
        request.state.key_id = kid
        self.limiter.take(kid)
        return kid

    def speech(self):
        if self.engine is None:
            raise ServeError(404, "model_not_found", "this server has no speech model; it serves "
                             f"{', '.join(self.text_engine.names)} on POST /v1/completions")
        return self.engine

    def text(self):
        if self.text_engine is None:
            raise ServeError(404, "model_not_found", f"this server has no text model; it serves {self.engine.name!r}"
                             " on POST /v1/audio/transcriptions (start lorakit serve with --llm/--adapter for text)")
        return self.text_engine


def served(request) -> Served:
    """The ``Served`` of the app handling ``request``."""
    return request.app.state.served


def require_content_type(request, prefix: str, what_to_send: str) -> str:
    """The request's Content-Type if it starts with ``prefix``; else a 415 saying what to send."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith(prefix):
        raise ServeError(415, "unsupported_media_type", f"Content-Type {ctype or 'missing'!r}: send {what_to_send}")
    return ctype


async def read_json(request, example: str) -> dict:
    """The body as a JSON object; 400 ``invalid_json`` / ``invalid_request`` naming ``example`` otherwise."""
    try:
        payload = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ServeError(400, "invalid_json", f"the body is not valid JSON; send {example}") from None
    if not isinstance(payload, dict):
        raise ServeError(400, "invalid_request", f"send a JSON object: {example}")
    return payload
