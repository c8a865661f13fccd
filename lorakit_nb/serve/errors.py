"""The one error shape every refusal of the service uses, OpenAI style.

Covers: ``ServeError`` (status, type, code, message, extra headers such as Retry-After) and
``error_body`` / ``error_response``, which turn it into ``{"error": {"message", "type", "code"}}``.
Does not: decide when to refuse (``audio``, ``security``, ``limits``, ``app`` do).
"""
from __future__ import annotations

import json

from lorakit_nb.errors import LorakitError


class ServeError(LorakitError):
    """A request the service refuses: HTTP ``status``, OpenAI-style ``type`` and ``code``.

    Example: ServeError(413, "audio_too_long", "clip is 7.2 s; the limit is 5 s ...")
    """

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "not_found_error", 408: "timeout_error", 413: "invalid_request_error",
             415: "invalid_request_error", 429: "rate_limit_error", 503: "server_overloaded",
             504: "timeout_error"}

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.type = self.TYPES.get(status, "server_error")
        self.headers = dict(headers or {})


def error_body(status: int, code: str, message: str) -> bytes:
    """UTF-8 JSON bytes of ``{"error": {"message", "type", "code"}}``."""
    err = {"message": message, "type": ServeError.TYPES.get(status, "server_error"), "code": code}
    return json.dumps({"error": err}, ensure_ascii=False).encode("utf-8")


def error_response(exc: ServeError):
    """A starlette ``Response`` carrying ``exc`` (status, JSON body, its headers)."""
    from starlette.responses import Response

    return Response(error_body(exc.status, exc.code, exc.message), status_code=exc.status,
                    headers=exc.headers, media_type="application/json")
