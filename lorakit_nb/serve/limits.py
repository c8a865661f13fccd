"""Protections that must act while the request body is still arriving: an ASGI middleware.

Covers ``LimitsMiddleware``, which wraps the whole application and, for every HTTP request:
- refuses an upload route with 503 ``too_many_requests_in_flight`` when ``max_concurrency`` uploads
  are already being received or processed (a slow client cannot tie up unbounded memory);
- refuses with 413 ``body_too_large`` when ``Content-Length`` exceeds ``max_body_bytes`` - before a
  single body byte is read - and, for chunked bodies without a length, as soon as the bytes counted
  in the ``receive()`` messages pass it (the rest is never read; the connection is closed);
- answers 408 ``request_timeout`` when the client sends no body bytes for ``read_timeout`` seconds
  (a stalled partial upload), and the server then closes the connection;
- reports (route, status, seconds, key id) of every response, including its own refusals, to
  ``observe`` (metrics and the access log).
Bodies are never copied or logged here.

Does not: time out slow *headers* (uvicorn has no header timeout: terminate connections at a
reverse proxy for that), authenticate (``security``), or cap decode time (``app`` does, with 504).
"""
from __future__ import annotations

import asyncio
import time

from lorakit_nb.serve.errors import ServeError, error_body


async def _send_error(send, status: int, code: str, message: str, headers: dict | None = None) -> None:
    body = error_body(status, code, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")] + [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class LimitsMiddleware:
    """Example: ``LimitsMiddleware(fastapi_app, max_body_bytes=4 << 20, read_timeout=10, max_concurrency=64,
    upload_paths={"/inference", "/v1/audio/transcriptions"}, routes={...}, observe=fn)``."""

    def __init__(self, app, *, max_body_bytes: int, read_timeout: float, max_concurrency: int,
                 upload_paths=(), routes=(), observe=None):
        self.app, self.max_body_bytes, self.read_timeout = app, int(max_body_bytes), float(read_timeout)
        self.max_concurrency, self.upload_paths = int(max_concurrency), set(upload_paths)
        self.routes, self.observe = set(routes) | self.upload_paths, observe
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        route = path if path in self.routes else "other"  # bounded metric labels
        started, status = time.perf_counter(), {"code": 0}
        scope.setdefault("state", {})
        upload = path in self.upload_paths and scope.get("method") == "POST"
        try:
            if upload and self.in_flight >= self.max_concurrency:
                raise ServeError(503, "too_many_requests_in_flight",
                              f"{self.in_flight} uploads are already in progress (limit {self.max_concurrency}); "
                              "retry after the Retry-After seconds", {"Retry-After": "1"})
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None:
                try:
                    n = int(length)
                except ValueError:
                    raise ServeError(400, "invalid_content_length", "the Content-Length header is not a number") from None
                if n > self.max_body_bytes:
                    raise ServeError(413, "body_too_large", self._too_large(n))
            if upload:
                self.in_flight += 1
            try:
                await self._call_limited(scope, receive, send, status)
            finally:
                if upload:
                    self.in_flight -= 1
        except ServeError as r:
            if not status["code"]:
                status["code"] = r.status
                await _send_error(send, r.status, r.code, r.message, r.headers)
        finally:
            if self.observe is not None:
                state = scope.get("state") or {}
                self.observe(route, status["code"] or 500, time.perf_counter() - started, state)

    def _too_large(self, n) -> str:
        size = f"is {n:,} bytes" if n is not None else f"passed {self.max_body_bytes:,} bytes while streaming in"
        return (f"the request body {size}; the limit is {self.max_body_bytes:,} bytes. "
                "Send a shorter clip as 16 kHz mono FLAC or WAV")

    async def _call_limited(self, scope, receive, send, status) -> None:
        seen = {"bytes": 0, "done": False}
        refused: list[ServeError] = []

        async def limited_receive():
            if seen["done"] or refused:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.read_timeout)
            except (asyncio.TimeoutError, TimeoutError):
                refused.append(ServeError(408, "request_timeout",
                                       f"no request body bytes arrived for {self.read_timeout:g} s; "
                                       "send the whole upload without pausing"))
                raise refused[-1] from None
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                seen["done"] = not message.get("more_body", False)
                if seen["bytes"] > self.max_body_bytes:
                    refused.append(ServeError(413, "body_too_large", self._too_large(None)))
                    raise refused[-1]
            return message

        async def guarded_send(message):
            if refused:  # the inner app reacting to our refusal (e.g. a 500): drop it, ours is sent instead
                return
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except ServeError:
            pass
        except Exception:
            if not refused:
                raise
        if refused and not status["code"]:
            raise refused[0]
