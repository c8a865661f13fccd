"""The ``lorakit serve`` application: routes put together, errors in one shape, and ``serve`` to run it.

Covers:
- ``create_app(engine, settings, keys, metrics, text_engine)``: a FastAPI app (the speech routes of
  ``routes_speech``, the text route of ``routes_text``, and here ``GET /health`` (the process answers),
  ``GET /ready`` (model loaded and queue not full, else 503), ``GET /v1/models``, ``GET /metrics``
  (Prometheus text)) wrapped in ``limits.LimitsMiddleware``; every POST route is an upload (body cap,
  deadlines, slots). Every error is ``{"error": {"message", "type", "code"}}``; the model routes need
  ``Authorization: Bearer <key>``. A new route: one more function on a module's ``router``.
- ``serve(model_dir, llm, adapters, api_key_file, no_auth, settings)``: load the engine(s), build the
  app, run uvicorn (127.0.0.1 by default) with ``protocol.JsonErrorsH11`` (malformed HTTP -> JSON 400).

Does not: terminate TLS, write anything to disk per request, log audio or keys; the settings' defaults
live in ``settings.ServeSettings`` only.
"""
from __future__ import annotations

import logging
import os
import sys
import time

from fastapi import Request  # at module level: FastAPI resolves the route annotations from this module

from lorakit_nb.serve.context import Served, served
from lorakit_nb.serve.errors import ServeError, error_body, error_response
from lorakit_nb.serve.security import ApiKeys
from lorakit_nb.serve.settings import ServeSettings

log = logging.getLogger("lorakit.serve")


def _add_info_routes(app) -> None:
    from prometheus_client import CONTENT_TYPE_LATEST
    from starlette.responses import Response

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request):
        srv = served(request)
        for e in srv.engines:
            if not e.ready:
                raise ServeError(503, "not_ready", f"not ready: {e.pending} requests queued or running "
                                 f"(limit {e.max_queue})", {"Retry-After": str(e.retry_after())})
        names = ([srv.engine.name] if srv.engine else []) + (srv.text_engine.names if srv.text_engine else [])
        return {"status": "ready", "model": names[0], "models": names,
                "queue_depth": sum(e.pending for e in srv.engines)}

    @app.get("/metrics")
    async def prometheus(request: Request):
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request):
        srv = served(request)
        srv.authorize(request)
        data = []
        if srv.engine is not None:
            created = int(srv.engine.folder.joinpath("model.bin").stat().st_mtime)
            data.append({"id": srv.engine.name, "object": "model", "created": created, "owned_by": "lorakit"})
        if srv.text_engine is not None:
            llm = srv.text_engine
            created = int(llm.base_gguf.stat().st_mtime)
            data += [{"id": name, "object": "model", "created": created, "owned_by": "lorakit",
                      "kind": "base" if name == llm.base_name else "lora-adapter"} for name in llm.names]
        return {"object": "list", "data": data}


def _add_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.responses import Response

    def json_error(status, code, message):
        return Response(error_body(status, code, message), status, media_type="application/json")

    @app.exception_handler(ServeError)
    async def _serve_error(_request, exc: ServeError):
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def _http_error(_request, exc: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = {404: "no such route; see GET /v1/models, POST /v1/audio/transcriptions, POST /inference",
                   405: "method not allowed on this route"}.get(exc.status_code, str(exc.detail))
        return json_error(exc.status_code, code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request, exc):
        return json_error(400, "invalid_request", "the request is not valid")

    @app.exception_handler(Exception)
    async def _crash(_request, exc):
        log.error("internal error: %s", type(exc).__name__)
        return json_error(500, "internal_error", "internal server error")


def create_app(engine=None, settings: ServeSettings | None = None, keys: ApiKeys | None = None, metrics=None,
               text_engine=None):
    """The ASGI application (FastAPI inside ``LimitsMiddleware``). Example: uvicorn.run(create_app(engine), ...).

    ``engine``: the speech engine (``serve.engine.Engine``) or None; ``text_engine``: a ``serve.llm.TextEngine``
    or None; at least one. A route whose engine is absent answers 404 saying which model this server has.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    from lorakit_nb.serve import routes_speech, routes_text
    from lorakit_nb.serve.limits import LimitsMiddleware
    from lorakit_nb.serve.metrics import ServeMetrics

    srv = Served(engine, text_engine, settings or ServeSettings(),
                 keys if keys is not None else ApiKeys([], required=False))
    metrics = metrics or ServeMetrics(queue_depth=lambda: sum(e.pending for e in srv.engines),
                                      in_flight=lambda: limits.in_flight,  # bound below, read at scrape time
                                      extra=text_engine.metrics_text if text_engine is not None else None)
    if engine is not None:
        engine.on_batch = metrics.observe_batch
    if text_engine is not None:
        text_engine.on_complete = metrics.observe_completion

    @asynccontextmanager
    async def lifespan(_app):
        for e in srv.engines:
            await e.start()
        try:
            yield
        finally:
            for e in srv.engines:
                await e.stop()

    app = FastAPI(title="lorakit serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served, app.state.metrics = srv, metrics
    _add_error_handlers(app)
    _add_info_routes(app)
    routers = (routes_speech.router, routes_text.router)
    for router in routers:
        app.include_router(router)
    routes = [r for router in (app.router, *routers) for r in router.routes if hasattr(r, "path")]
    uploads = {r.path for r in routes if "POST" in r.methods}
    s = srv.settings
    limits = LimitsMiddleware(app, max_body_bytes=s.max_body_bytes, read_timeout=s.read_timeout,
                              upload_timeout=s.upload_timeout, max_concurrency=s.max_concurrency,
                              max_per_key=s.max_uploads_per_key, key_of=srv.keys.key_of_header,
                              upload_paths=uploads, routes={r.path for r in routes},
                              observe=metrics.observe_request)
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


def _say(line: str) -> None:
    print(f"lorakit serve: {line}", file=sys.stderr, flush=True)


def serve(model_dir=None, *, llm=None, adapters: dict | None = None, api_key_file=None, no_auth: bool = False,
          settings: ServeSettings | None = None) -> None:
    """Load the model(s) and serve until interrupted.

    ``model_dir``: a CTranslate2 Whisper folder (the speech routes). ``llm`` / ``adapters``: the text route
    (``llm=True`` or a GGUF path; ``adapters={"wu-mandarin": "runs/02/mandarin/adapter"}``). At least one.
    Example: serve("runs/04/ct2_int8", api_key_file="keys.txt", settings=ServeSettings(port=8001))
    """
    import uvicorn

    from lorakit_nb.errors import LorakitError
    from lorakit_nb.serve.protocol import JsonErrorsH11
    from lorakit_nb.serve.security import load_api_keys

    s = settings or ServeSettings()
    if model_dir is None and llm is None and not adapters:
        raise LorakitError("nothing to serve: pass --model CT2_FOLDER (speech), --llm [GGUF] / --adapter NAME=DIR "
                           "(text), or both")
    loopback = s.host in ("127.0.0.1", "localhost", "::1")
    if no_auth and not loopback:
        raise LorakitError(f"--no-auth with --host {s.host}: serving without keys is allowed on 127.0.0.1 only")
    keys = ApiKeys([], required=False) if no_auth else ApiKeys(load_api_keys(api_key_file))
    logging.basicConfig(level=getattr(logging, s.log_level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    engine = text_engine = None
    if model_dir is not None:
        from lorakit_nb.serve.engine import Engine

        t0 = time.perf_counter()
        engine = Engine(model_dir, compute_type=s.compute_type, threads=s.threads, max_batch=s.max_batch,
                        max_wait_ms=s.max_wait_ms, max_queue=s.max_queue, name=s.model_name,
                        repetition_guard=s.repetition_guard)
        _say(f"{engine.name} from {engine.folder} ({engine.compute_type}, {engine.threads} threads, {engine.window} s "
             f"window, batches of <= {s.max_batch} within {s.max_wait_ms:g} ms, queue {s.max_queue}, repetition guard "
             f"{'on' if engine.repetition_guard else 'off'}) loaded in {time.perf_counter() - t0:.1f} s")
    if llm is not None or adapters:
        from lorakit_nb.serve.llm import TextEngine

        text_engine = TextEngine(None if llm in (None, True) else llm, adapters or {}, threads=s.threads,
                                 n_parallel=s.parallel, ctx_per_slot=s.ctx_per_slot, max_queue=s.max_queue)
        sizes = ", ".join(f"{n} ({a['bytes'] / 1e6:.1f} MB)" for n, a in text_engine.adapters.items()) or "none"
        _say(f"text models {', '.join(text_engine.names)} on {text_engine.base_gguf.name} (llama.cpp, {s.parallel} "
             f"parallel slots of {s.ctx_per_slot} tokens); adapters: {sizes}; loaded in "
             f"{text_engine.load_seconds:.1f} s")
    _say(f"{'NO API keys' if no_auth else 'API keys required'}; http://{s.host}:{s.port}; uploads: "
         f"{s.max_body_mb:g} MiB, {s.upload_timeout:g} s, {s.max_concurrency} at once, {s.max_uploads_per_key} per key")
    if os.environ.get("LORAKIT_SERVE_EXIT_WITH_PARENT") == "1":  # set by client.ServerProcess
        _exit_with_parent()
    if not loopback:
        _say(f"listening on {s.host} in plain HTTP: put a TLS-terminating reverse proxy in front (see README)")
    uvicorn.run(create_app(engine, s, keys, text_engine=text_engine), host=s.host, port=s.port, http=JsonErrorsH11,
                log_level="warning", access_log=False, timeout_keep_alive=5, server_header=False)
