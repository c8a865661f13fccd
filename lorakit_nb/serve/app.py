"""The HTTP routes of ``lorakit serve`` and the function that runs them under uvicorn.

Covers:
- ``create_app(engine, settings, keys)``: a FastAPI app wrapped in ``limits.LimitsMiddleware``:
  ``POST /v1/audio/transcriptions`` (OpenAI-compatible multipart: ``file``, ``model``, ``language``,
  ``response_format`` = json | text | verbose_json | srt | vtt, ``temperature`` 0 only),
  ``POST /inference`` (``{"audio": "<base64 WAV/FLAC>"}`` -> ``{"text": ...}``), ``GET /health``
  (the process answers), ``GET /ready`` (model loaded and queue not full, else 503),
  ``GET /v1/models``, ``GET /metrics`` (Prometheus text), and with a text engine (``serve/llm.py``)
  ``POST /v1/completions`` (OpenAI-compatible text completion: ``model`` names the adapter or the
  bare base, ``strength`` sets the adapter's strength per request). Every error is
  ``{"error": {"message", "type", "code"}}``; the model routes need ``Authorization: Bearer <key>``.
- ``serve(model_dir, ...)``: load the engine(s), build the app, run uvicorn (127.0.0.1 by default).

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

UPLOAD_ROUTES = ("/v1/audio/transcriptions", "/inference", "/v1/completions")  # bodies capped, concurrency bounded
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
    max_prompt_chars: int = 8000    # longest completion prompt, in characters -> 413 beyond



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


def completion_request(payload: dict, llm, settings: ServeSettings) -> dict:
    """The checked arguments of ``TextEngine.complete`` from an OpenAI ``/v1/completions`` body; 4xx on bad fields."""
    from lorakit_nb.serve.llm import MAX_STOP, MAX_STRENGTH, MAX_TOKENS

    def bad(code, message, status=400):
        return ServeError(status, code, message)

    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise bad("missing_model", f'the JSON needs "model": one of {", ".join(llm.names)} (GET /v1/models)')
    if model not in llm.names:
        raise bad("model_not_found", f"model {model!r} is not served here; use one of {', '.join(llm.names)} "
                  "(GET /v1/models)", 404)
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad("invalid_prompt", '"prompt" must be one string (one completion per request)')
    if not prompt.strip():
        raise bad("empty_prompt", '"prompt" is empty; send the text to continue, e.g. '
                  '"Translate Wu dialect to Mandarin: 侬好\nMandarin:"')
    if len(prompt) > settings.max_prompt_chars:
        raise bad("prompt_too_large", f"the prompt has {len(prompt)} characters; the limit is "
                  f"{settings.max_prompt_chars}", 413)
    for field, allowed in (("stream", (None, False)), ("echo", (None, False)), ("n", (None, 1)),
                           ("best_of", (None, 1)), ("logprobs", (None, 0)), ("suffix", (None,))):
        if payload.get(field) not in allowed:
            raise bad(f"unsupported_{field}", f'"{field}" is not supported by this service; omit it')
    max_tokens = payload.get("max_tokens", 16)
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_TOKENS:
        raise bad("invalid_max_tokens", f'"max_tokens" must be an integer from 1 to {MAX_TOKENS}')
    temperature = payload.get("temperature", 0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise bad("invalid_temperature", '"temperature" must be a number from 0 (greedy, the default) to 2')
    stop = payload.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > MAX_STOP or not all(isinstance(x, str) and x for x in stop):
        raise bad("invalid_stop", f'"stop" must be a string or a list of at most {MAX_STOP} non-empty strings')
    is_base = model == llm.base_name
    strength = payload.get("strength", 0.0 if is_base else 1.0)
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= MAX_STRENGTH:
        raise bad("invalid_strength", f'"strength" must be a number from 0 (the base model) to {MAX_STRENGTH}')
    if is_base and strength != 0:
        raise bad("invalid_strength", f"model {model!r} is the base model and has no adapter to scale; omit "
                  f"\"strength\" or name an adapter ({', '.join(llm.names[1:]) or 'none loaded'})")
    return {"prompt": prompt, "model": model, "strength": float(strength), "max_tokens": max_tokens,
            "stop": stop, "temperature": float(temperature)}


def create_app(engine=None, settings: ServeSettings | None = None, keys: ApiKeys | None = None, metrics=None,
               text_engine=None):
    """The ASGI application (FastAPI inside ``LimitsMiddleware``). Example: uvicorn.run(create_app(engine), ...).

    ``engine``: the speech engine (``serve.engine.Engine``) or None; ``text_engine``: a ``serve.llm.TextEngine``
    or None; at least one. A route whose engine is absent answers 404 saying which model this server has.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response

    from lorakit_nb.serve.limits import LimitsMiddleware
    from lorakit_nb.serve.metrics import ServeMetrics

    if engine is None and text_engine is None:
        raise ValueError("create_app needs a speech engine, a text engine, or both")
    settings = settings or ServeSettings()
    keys = keys if keys is not None else ApiKeys([], required=False)
    limiter = RateLimiter(settings.rate, settings.burst)
    holder = {}
    engines = [e for e in (engine, text_engine) if e is not None]
    metrics = metrics or ServeMetrics(queue_depth=lambda: sum(e.pending for e in engines),
                                      in_flight=lambda: holder["limits"].in_flight if "limits" in holder else 0,
                                      extra=text_engine.metrics_text if text_engine is not None else None)
    if engine is not None:
        engine.on_batch = metrics.observe_batch
    if text_engine is not None:
        text_engine.on_complete = metrics.observe_completion

    @asynccontextmanager
    async def lifespan(_app):
        for e in engines:
            await e.start()
        yield
        for e in engines:
            await e.stop()

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

    def speech_engine():
        if engine is None:
            raise ServeError(404, "model_not_found", "this server has no speech model; it serves "
                             f"{', '.join(text_engine.names)} on POST /v1/completions")
        return engine

    def check_model(name) -> None:
        speech_engine()
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
        for e in engines:
            if not e.ready:
                raise ServeError(503, "not_ready", f"not ready: {e.pending} requests queued or running "
                                 f"(limit {e.max_queue})", {"Retry-After": str(e.retry_after())})
        served = ([engine.name] if engine is not None else []) + (text_engine.names if text_engine else [])
        return {"status": "ready", "model": served[0], "models": served,
                "queue_depth": sum(e.pending for e in engines)}

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        data = []
        if engine is not None:
            created = int(engine.folder.joinpath("model.bin").stat().st_mtime)
            data.append({"id": engine.name, "object": "model", "created": created, "owned_by": "lorakit"})
        if text_engine is not None:
            created = int(text_engine.base_gguf.stat().st_mtime)
            data += [{"id": name, "object": "model", "created": created, "owned_by": "lorakit",
                      "kind": "base" if name == text_engine.base_name else "lora-adapter"}
                     for name in text_engine.names]
        return {"object": "list", "data": data}

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
        language = fields.get("language") or engine.language  # check_model made sure the engine exists
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

    def text():
        if text_engine is None:
            name = engine.name if engine is not None else "none"
            raise ServeError(404, "model_not_found", f"this server has no text model; it serves {name!r} on "
                             "POST /v1/audio/transcriptions (start lorakit serve with --llm/--adapter for text)")
        return text_engine

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        llm = text()
        require_content_type(request, "application/json", 'application/json like {"model": "wu-mandarin", '
                             '"prompt": "...", "max_tokens": 40, "strength": 0.8}')
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise ServeError(400, "invalid_json", "the body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise ServeError(400, "invalid_request", 'send a JSON object: {"model": ..., "prompt": ...}')
        req = completion_request(payload, llm, settings)
        try:
            out = await asyncio.wait_for(llm.complete(req.pop("prompt"), **req), settings.request_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise ServeError(504, "generation_timeout", f"no completion within {settings.request_timeout:g} s; the "
                             "server is overloaded, retry later", {"Retry-After": str(llm.retry_after())}) from None
        request.state.tokens = out["usage"]["completion_tokens"]
        return JSONResponse(out)

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


def serve(model_dir=None, *, host: str = "127.0.0.1", port: int = 8000, api_key_file=None, no_auth: bool = False,
          compute_type: str = "int8", threads: int | None = None, max_batch: int = 8, max_wait_ms: float = 10.0,
          max_queue: int = 32, model_name: str | None = None, settings: ServeSettings | None = None,
          log_level: str = "info", llm=None, adapters: dict | None = None, parallel: int = 4,
          ctx_per_slot: int = 512) -> None:
    """Load the model(s) and serve until interrupted.

    ``model_dir``: a CTranslate2 Whisper folder (the speech routes). ``llm`` / ``adapters``: the text route
    (``llm=True`` or a GGUF path; ``adapters={"wu-mandarin": "runs/02/mandarin/adapter"}``). At least one.
    Example: serve("runs/04/ct2_int8", api_key_file="keys.txt", adapters={"wu-mandarin": "runs/02/mandarin/adapter"})
    """
    import uvicorn

    from lorakit_nb.errors import LorakitError
    from lorakit_nb.serve.security import load_api_keys

    if model_dir is None and llm is None and not adapters:
        raise LorakitError("nothing to serve: pass --model CT2_FOLDER (speech), --llm [GGUF] / --adapter NAME=DIR "
                           "(text), or both")
    loopback = host in ("127.0.0.1", "localhost", "::1")
    if no_auth and not loopback:
        raise LorakitError(f"--no-auth with --host {host}: serving without keys is allowed on 127.0.0.1 only")
    keys = ApiKeys([], required=False) if no_auth else ApiKeys(load_api_keys(api_key_file))
    settings = settings or ServeSettings()
    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    engine = text_engine = None
    if model_dir is not None:
        from lorakit_nb.serve.engine import Engine

        t0 = time.perf_counter()
        engine = Engine(model_dir, compute_type=compute_type, threads=threads, max_batch=max_batch,
                        max_wait_ms=max_wait_ms, max_queue=max_queue, name=model_name)
        print(f"lorakit serve: {engine.name} from {engine.folder} ({engine.compute_type}, {engine.threads} threads, "
              f"{engine.window} s window, batches of <= {max_batch} within {max_wait_ms:g} ms, queue {max_queue}) "
              f"loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    if llm is not None or adapters:
        from lorakit_nb.serve.llm import TextEngine

        text_engine = TextEngine(None if llm in (None, True) else llm, adapters or {}, threads=threads,
                                 n_parallel=parallel, ctx_per_slot=ctx_per_slot, max_queue=max_queue)
        sizes = ", ".join(f"{n} ({a['bytes'] / 1e6:.1f} MB)" for n, a in text_engine.adapters.items()) or "none"
        print(f"lorakit serve: text models {', '.join(text_engine.names)} on {text_engine.base_gguf.name} "
              f"(llama.cpp, {parallel} parallel slots of {ctx_per_slot} tokens); adapters: {sizes}; "
              f"loaded in {text_engine.load_seconds:.1f} s", file=sys.stderr, flush=True)
    print(f"lorakit serve: {'NO API keys' if no_auth else 'API keys required'}; http://{host}:{port}",
          file=sys.stderr, flush=True)
    if os.environ.get("LORAKIT_SERVE_EXIT_WITH_PARENT") == "1":  # set by client.ServerProcess
        _exit_with_parent()
    if not loopback:
        print(f"lorakit serve: listening on {host} in plain HTTP: put a TLS-terminating reverse proxy in front "
              "(see README)", file=sys.stderr, flush=True)
    uvicorn.run(create_app(engine, settings, keys, text_engine=text_engine), host=host, port=port,
                log_level="warning", access_log=False, timeout_keep_alive=5, server_header=False)
