"""The HTTP routes of ``lorakit serve`` and the function that runs them under uvicorn.

Covers:
- ``create_app(engine, settings, keys)``: a FastAPI app wrapped in ``limits.LimitsMiddleware``:
  ``POST /v1/audio/transcriptions`` (OpenAI-compatible multipart: ``file``, ``model``, ``language``,
  ``response_format`` = json | text | verbose_json | srt | vtt, ``temperature`` 0 only),
  ``POST /inference`` (``{"audio": "<base64 WAV/FLAC>"}`` -> ``{"text": ...}``), ``GET /health``
  (the process answers), ``GET /ready`` (model loaded and queue not full, else 503),
  ``GET /v1/models``, ``GET /metrics`` (Prometheus text). Every error is
  ``{"error": {"message", "type", "code"}}``; the model routes need ``Authorization: Bearer <key>``.
- ``serve(model_dir, ...)``: load the engine, build the app, run uvicorn (127.0.0.1 by default).

Does not: terminate TLS, write anything to disk per request, log audio or keys, return timestamps
(``verbose_json``/``srt``/``vtt`` carry one segment spanning the clip), or translate.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import dataclass

from fastapi import Request  # at module level: FastAPI resolves the route annotations from this module

from lorakit_nb.serve.audio import decode_audio, decode_base64, parse_multipart
from lorakit_nb.serve.errors import ServeError, error_body, error_response
from lorakit_nb.serve.security import ApiKeys, RateLimiter

UPLOAD_ROUTES = ("/v1/audio/transcriptions", "/inference")
OTHER_ROUTES = ("/health", "/ready", "/v1/models", "/metrics")
RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
ALIASES = ("whisper-1",)  # what OpenAI examples pass as ``model``: accepted as this service's model


@dataclass
class ServeSettings:
    """Limits and timeouts; every one is a ``lorakit serve`` flag of the same name."""

    max_body_bytes: int = 4 << 20   # 4 MiB: a 30 s 16 kHz 16-bit WAV is ~0.96 MB, base64 adds a third
    read_timeout: float = 10.0      # seconds without a body byte -> 408
    request_timeout: float = 60.0   # seconds from admission to transcript -> 504
    max_concurrency: int = 64       # uploads being received or processed at once -> 503 beyond
    rate: float = 20.0              # requests per second per API key (0: no limit) ...
    burst: int = 40                 # ... and how many may arrive at once -> 429 beyond



def require_content_type(request, prefix: str, what_to_send: str) -> str:
    """The request's Content-Type if it starts with ``prefix``; else a 415 saying what to send."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith(prefix):
        raise ServeError(415, "unsupported_media_type", f"Content-Type {ctype or 'missing'!r}: send {what_to_send}")
    return ctype

def _timestamp(t: float, sep: str) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def format_transcript(fmt: str, text: str, seconds: float, tokens: list[int], language: str):
    """(body, media type) for one transcript in an OpenAI ``response_format``."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    if fmt == "json":
        return json.dumps({"text": text}, ensure_ascii=False), "application/json"
    if fmt == "text":
        return text + "\n", "text/plain; charset=utf-8"
    if fmt == "verbose_json":
        seg = {"id": 0, "seek": 0, "start": 0.0, "end": round(seconds, 3), "text": text, "tokens": tokens,
               "temperature": 0.0}
        body = {"task": "transcribe", "language": LANGUAGES.get(language, language), "duration": round(seconds, 3),
                "text": text, "segments": [seg]}
        return json.dumps(body, ensure_ascii=False), "application/json"
    if fmt == "srt":
        return f"1\n{_timestamp(0, ',')} --> {_timestamp(seconds, ',')}\n{text}\n\n", "text/plain; charset=utf-8"
    return f"WEBVTT\n\n{_timestamp(0, '.')} --> {_timestamp(seconds, '.')}\n{text}\n\n", "text/vtt; charset=utf-8"


def create_app(engine, settings: ServeSettings | None = None, keys: ApiKeys | None = None, metrics=None):
    """The ASGI application (FastAPI inside ``LimitsMiddleware``). Example: uvicorn.run(create_app(engine), ...)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response

    from lorakit_nb.serve.limits import LimitsMiddleware
    from lorakit_nb.serve.metrics import ServeMetrics

    settings = settings or ServeSettings()
    keys = keys if keys is not None else ApiKeys([], required=False)
    limiter = RateLimiter(settings.rate, settings.burst)
    holder = {}
    metrics = metrics or ServeMetrics(queue_depth=lambda: engine.pending,
                                      in_flight=lambda: holder["limits"].in_flight if "limits" in holder else 0)
    engine.on_batch = metrics.observe_batch

    @asynccontextmanager
    async def lifespan(_app):
        await engine.start()
        yield
        await engine.stop()

    app = FastAPI(title="lorakit serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ServeError)
    async def _serve_error(_request, exc: ServeError):
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http_error(_request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {404: "no such route; see GET /v1/models, POST /v1/audio/transcriptions, POST /inference",
                   405: "method not allowed on this route"}.get(exc.status_code, str(exc.detail))
        return Response(error_body(exc.status_code, code, message), exc.status_code, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, exc):
        return Response(error_body(400, "invalid_request", "the request is not valid"), 400,
                        media_type="application/json")

    @app.exception_handler(Exception)
    async def _crash(_request, exc):
        logging.getLogger("lorakit.serve").error("internal error: %s", type(exc).__name__)
        return Response(error_body(500, "internal_error", "internal server error"), 500, media_type="application/json")

    def authorize(request: Request) -> str:
        kid = keys.check(request.headers.get("authorization"))
        request.state.key_id = kid
        limiter.take(kid)
        return kid

    def check_model(name) -> None:
        if name and name != engine.name and name not in ALIASES:
            raise ServeError(404, "model_not_found", f"model {name!r} is not served here; use {engine.name!r} "
                             f"(or {ALIASES[0]!r}), see GET /v1/models")

    async def run(request: Request, data: bytes):
        audio, facts = decode_audio(data, engine.window)
        request.state.audio_seconds = facts["seconds"]
        try:
            return await asyncio.wait_for(engine.transcribe(audio), settings.request_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise ServeError(504, "decode_timeout", f"no transcript within {settings.request_timeout:g} s; the server "
                             "is overloaded, retry later", {"Retry-After": str(engine.retry_after())}) from None

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if not engine.ready:
            raise ServeError(503, "not_ready", f"not ready: {engine.pending} clips queued or decoding "
                             f"(limit {engine.max_queue})", {"Retry-After": str(engine.retry_after())})
        return {"status": "ready", "model": engine.name, "queue_depth": engine.pending}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        created = int(engine.folder.joinpath("model.bin").stat().st_mtime)
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": created,
                                            "owned_by": "lorakit"}]}

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        authorize(request)
        ctype = require_content_type(request, "multipart/form-data", "multipart/form-data with a `file` part "
                                     "(curl -F file=@clip.wav -F model=whisper-1)")
        fields, files = parse_multipart(await request.body(), ctype)
        fmt = fields.get("response_format") or "json"
        if fmt not in RESPONSE_FORMATS:
            raise ServeError(400, "invalid_response_format", f"response_format {fmt!r} is not supported; "
                             f"use one of {', '.join(RESPONSE_FORMATS)}")
        check_model(fields.get("model"))
        language = fields.get("language") or engine.language
        if language != engine.language:
            raise ServeError(400, "unsupported_language", f"this model transcribes {engine.language!r} only; "
                             f"omit `language` or pass {engine.language!r}")
        try:
            temperature = float(fields.get("temperature") or 0)
        except ValueError:
            temperature = float("nan")
        if temperature != 0:
            raise ServeError(400, "unsupported_temperature", "decoding is greedy: omit `temperature` or pass 0")
        if fields.get("prompt"):
            raise ServeError(400, "unsupported_prompt", "`prompt` is not supported by this service; omit it")
        if "file" not in files:
            raise ServeError(400, "missing_file", "the form has no `file` part; send the audio as a file "
                             "upload named `file` (curl -F file=@clip.wav)")
        result = await run(request, files["file"])
        body, media = format_transcript(fmt, result.text, result.seconds, result.tokens, engine.language)
        return Response(body, media_type=media)

    @app.post("/inference")
    async def inference(request: Request):
        authorize(request)
        require_content_type(request, "application/json", 'application/json like {"audio": "<base64 of a WAV/FLAC file>"}')
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ServeError(400, "invalid_json", 'the body is not valid JSON; send {"audio": "<base64>"}') from None
        if not isinstance(payload, dict) or "audio" not in payload:
            raise ServeError(400, "missing_audio", 'the JSON needs a field "audio": {"audio": "<base64 WAV/FLAC>"}')
        check_model(payload.get("model"))
        result = await run(request, decode_base64(payload["audio"]))
        return JSONResponse({"text": result.text, "duration": round(result.seconds, 3), "model": engine.name})

    limits = LimitsMiddleware(app, max_body_bytes=settings.max_body_bytes, read_timeout=settings.read_timeout,
                              max_concurrency=settings.max_concurrency, upload_paths=UPLOAD_ROUTES,
                              routes=OTHER_ROUTES, observe=metrics.observe_request)
    holder["limits"] = limits
    limits.engine, limits.metrics, limits.fastapi = engine, metrics, app
    return limits


def _exit_with_parent() -> None:
    """Stop (SIGTERM to ourselves: uvicorn shuts down cleanly) once the process that started us is gone."""
    import signal
    import threading

    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def serve(model_dir, *, host: str = "127.0.0.1", port: int = 8000, api_key_file=None, no_auth: bool = False,
          compute_type: str = "int8", threads: int | None = None, max_batch: int = 8, max_wait_ms: float = 10.0,
          max_queue: int = 32, model_name: str | None = None, settings: ServeSettings | None = None,
          log_level: str = "info") -> None:
    """Load the model and serve it until interrupted. Example: serve("runs/04/ct2_int8", api_key_file="keys.txt")."""
    import uvicorn

    from lorakit_nb.errors import LorakitError
    from lorakit_nb.serve.engine import Engine
    from lorakit_nb.serve.security import load_api_keys

    loopback = host in ("127.0.0.1", "localhost", "::1")
    if no_auth and not loopback:
        raise LorakitError(f"--no-auth with --host {host}: serving without keys is allowed on 127.0.0.1 only")
    keys = ApiKeys([], required=False) if no_auth else ApiKeys(load_api_keys(api_key_file))
    t0 = time.perf_counter()
    engine = Engine(model_dir, compute_type=compute_type, threads=threads, max_batch=max_batch,
                    max_wait_ms=max_wait_ms, max_queue=max_queue, name=model_name)
    settings = settings or ServeSettings()
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    print(f"lorakit serve: {engine.name} from {engine.folder} ({engine.compute_type}, {engine.threads} threads, "
          f"{engine.window} s window, batches of <= {max_batch} within {max_wait_ms:g} ms, queue {max_queue}) "
          f"loaded in {time.perf_counter() - t0:.1f} s; {'NO API keys' if no_auth else 'API keys required'}; "
          f"http://{host}:{port}", file=sys.stderr, flush=True)
    if os.environ.get("LORAKIT_SERVE_EXIT_WITH_PARENT") == "1":  # set by client.ServerProcess
        _exit_with_parent()
    if not loopback:
        print(f"lorakit serve: listening on {host} in plain HTTP: put a TLS-terminating reverse proxy in front "
              "(see README)", file=sys.stderr, flush=True)
    uvicorn.run(create_app(engine, settings, keys), host=host, port=port, log_level="warning", access_log=False,
                timeout_keep_alive=5, server_header=False)
