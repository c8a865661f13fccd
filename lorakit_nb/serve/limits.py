"""Protections that must act while the request body is still arriving: an ASGI middleware.

Covers ``LimitsMiddleware``, which wraps the whole application and, for every HTTP request:
- refuses an upload route with 503 ``too_many_requests_in_flight`` when ``max_concurrency`` uploads
  are already being received or processed (a slow client cannot tie up unbounded memory), and with
  429 ``too_many_uploads_for_key`` when the caller's API key (``key_of``) already has ``max_per_key``
  uploads in flight (one key cannot take every slot);
- refuses with 413 ``body_too_large`` when ``Content-Length`` exceeds ``max_body_bytes`` - before a
  single body byte is read - and, for chunked bodies without a length, as soon as the bytes counted
  in the ``receive()`` messages pass it (the rest is never read; the connection is closed);
- answers 408 ``request_timeout`` when the client sends no body bytes for ``read_timeout`` seconds
  (a stalled partial upload), and 408 ``upload_timeout`` when the whole body has not arrived
  ``upload_timeout`` seconds after the headers (a client dripping a byte every few seconds); the
  server then closes the connection and the slot is free;
- a client that closes the connection mid-upload is recorded as 499 (nginx's "client closed
  request"): one access-log line, no traceback, not a 500;
- reports (route, status, seconds, key id) of every response, including its own refusals, to
  ``observe`` (metrics and the access log).
Bodies are never copied or logged here.

Does not: time out slow *headers* (uvicorn has no header timeout: terminate connections at a
reverse proxy for that), authenticate (``security``), or cap decode time (the routes do, with 504).
"""
from __future__ import annotations

import asyncio
import time

from lorakit_nb.serve.errors import ServeError, error_body

CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection before the answer"


class ClientGone(ServeError):
    """The client disconnected before its request body was complete: nothing can be sent. A ``ServeError``,
    so the app's error handler (not its 500 handler) sees it if a route was reading the body."""

    def __init__(self):
        super().__init__(CLIENT_CLOSED, "client_closed_request", "the client closed the connection mid-upload")


async def _send_error(send, status: int, code: str, message: str, headers: dict | None = None) -> None:
    body = error_body(status, code, message)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")] + [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class LimitsMiddleware:
    """Example: ``LimitsMiddleware(fastapi_app, max_body_bytes=4 << 20, read_timeout=10, upload_timeout=60,
    max_concurrency=64, max_per_key=8, key_of=keys.key_of_header, upload_paths={"/inference"}, routes={...},
    observe=fn)``. ``key_of(authorization header) -> key id or None`` (None: not counted per key)."""

    def __init__(self, app, *, max_body_bytes: int, read_timeout: float, max_concurrency: int,
                 upload_timeout: float = float("inf"), max_per_key: int = 0, key_of=None,
                 upload_paths=(), routes=(), observe=None):
        self.app, self.max_body_bytes, self.read_timeout = app, int(max_body_bytes), float(read_timeout)
        self.upload_timeout, self.max_per_key, self.key_of = float(upload_timeout), int(max_per_key), key_of
        self.max_concurrency, self.upload_paths = int(max_concurrency), set(upload_paths)
        self.routes, self.observe = set(routes) | self.upload_paths, observe
        self.in_flight = 0
        self.per_key: dict[str, int] = {}  # key id -> uploads in flight

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        route = path if path in self.routes else "other"  # bounded metric labels
        started, status = time.perf_counter(), {"code": 0}
        scope.setdefault("state", {})
        upload = path in self.upload_paths and scope.get("method") == "POST"
        headers = dict(scope.get("headers") or [])
        key = None
        if upload and self.key_of is not None and self.max_per_key > 0:
            key = self.key_of((headers.get(b"authorization") or b"").decode("latin-1"))
        try:
            if key is not None and self.per_key.get(key, 0) >= self.max_per_key:
                raise ServeError(429, "too_many_uploads_for_key",
                                 f"this API key already has {self.max_per_key} uploads in progress (the limit per "
                                 "key); wait for one to finish, then retry", {"Retry-After": "1"})
            if upload and self.in_flight >= self.max_concurrency:
                raise ServeError(503, "too_many_requests_in_flight",
                              f"{self.in_flight} uploads are already in progress (limit {self.max_concurrency}); "
                              "retry after the Retry-After seconds", {"Retry-After": "1"})
            length = headers.get(b"content-length")
            if length is not None:
                try:
                    n = int(length)
                except ValueError:
                    raise ServeError(400, "invalid_content_length", "the Content-Length header is not a number") from None
                if n > self.max_body_bytes:
                    raise ServeError(413, "body_too_large", self._too_large(n))
            if upload:
                self.in_flight += 1
            if key is not None:
                self.per_key[key] = self.per_key.get(key, 0) + 1
            try:
                await self._call_limited(scope, receive, send, status, started)
            finally:
                if upload:
                    self.in_flight -= 1
                if key is not None:
                    self.per_key[key] -= 1
                    if not self.per_key[key]:
                        del self.per_key[key]
        except ClientGone:
            status["code"] = status["code"] or CLIENT_CLOSED
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

    def _timed_out(self, gap: bool, received: int) -> ServeError:
        if gap:
            return ServeError(408, "request_timeout", f"no request body bytes arrived for {self.read_timeout:g} s; "
                              "send the whole upload without pausing")
        return ServeError(408, "upload_timeout", f"the request body did not arrive within {self.upload_timeout:g} s "
                          f"({received:,} bytes came); send the whole upload at once, or a shorter clip")

    async def _call_limited(self, scope, receive, send, status, started: float) -> None:
        seen = {"bytes": 0, "done": False}
        refused: list[Exception] = []
        deadline = started + self.upload_timeout

        async def limited_receive():
            if seen["done"] or refused:
                return await receive()
            left = deadline - time.perf_counter()
            wait = min(self.read_timeout, max(left, 0.0))
            try:
                message = await asyncio.wait_for(receive(), wait)
            except (asyncio.TimeoutError, TimeoutError):
                refused.append(self._timed_out(wait >= self.read_timeout, seen["bytes"]))
                raise refused[-1] from None
            if message["type"] == "http.disconnect":
                refused.append(ClientGone())
                raise refused[-1]
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
