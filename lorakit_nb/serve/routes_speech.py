"""The speech routes of ``lorakit serve``: audio in, transcript out.

Covers: ``router`` with ``POST /v1/audio/transcriptions`` (OpenAI-compatible multipart: ``file``,
``model``, ``language``, ``response_format`` = json | text | verbose_json | srt | vtt, ``temperature``
0 only) and ``POST /inference`` (``{"audio": "<base64 WAV/FLAC>"}`` -> ``{"text": ...}``);
``format_transcript`` (one transcript in an OpenAI ``response_format``); ``transcribe`` (bytes ->
transcript, the audio decoded in a worker thread so the event loop keeps answering, e.g. ``/health``).
A new speech route is one more function on ``router``.

Does not: decode audio itself (``audio``), batch (``engine``), return timestamps
(``verbose_json``/``srt``/``vtt`` carry one segment spanning the clip), or translate.
"""
from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request  # module level: FastAPI resolves the route annotations from here
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from lorakit_nb.serve import audio
from lorakit_nb.serve.context import read_json, require_content_type, served
from lorakit_nb.serve.errors import ServeError

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
ALIASES = ("whisper-1",)  # what OpenAI examples pass as ``model``: accepted as this service's model

router = APIRouter()


def _timestamp(t: float, sep: str) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def format_transcript(fmt: str, text: str, seconds: float, tokens: list[int], language: str):
    """(body, media type) for one transcript in an OpenAI ``response_format``.

    Example: format_transcript("srt", "你好", 3.2, [1], "zh")[0] == "1\\n00:00:00,000 --> 00:00:03,200\\n你好\\n\\n"
    """
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


def check_model(engine, name) -> None:
    """404 unless ``name`` is empty, the engine's name or an OpenAI alias."""
    if name and name != engine.name and name not in ALIASES:
        raise ServeError(404, "model_not_found", f"model {name!r} is not served here; use {engine.name!r} "
                         f"(or {ALIASES[0]!r}), see GET /v1/models")


async def transcribe(request: Request, data: bytes):
    """The engine's transcript of the uploaded bytes; 504 after ``request_timeout`` seconds."""
    srv = served(request)
    engine = srv.speech()
    samples, facts = await run_in_threadpool(audio.decode_audio, data, engine.window)  # CPU-bound: off the loop
    request.state.audio_seconds = facts["seconds"]
    timeout = srv.settings.request_timeout
    try:
        return await asyncio.wait_for(engine.transcribe(samples), timeout)
    except (asyncio.TimeoutError, TimeoutError):
        raise ServeError(504, "decode_timeout", f"no transcript within {timeout:g} s; the server is overloaded, "
                         "retry later", {"Retry-After": str(engine.retry_after())}) from None


@router.post("/v1/audio/transcriptions")
async def transcriptions(request: Request):
    srv = served(request)
    srv.authorize(request)
    ctype = require_content_type(request, "multipart/form-data", "multipart/form-data with a `file` part "
                                 "(curl -F file=@clip.wav -F model=whisper-1)")
    fields, files = await run_in_threadpool(audio.parse_multipart, await request.body(), ctype)
    fmt = fields.get("response_format") or "json"
    if fmt not in RESPONSE_FORMATS:
        raise ServeError(400, "invalid_response_format", f"response_format {fmt!r} is not supported; "
                         f"use one of {', '.join(RESPONSE_FORMATS)}")
    engine = srv.speech()
    check_model(engine, fields.get("model"))
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
    result = await transcribe(request, files["file"])
    body, media = format_transcript(fmt, result.text, result.seconds, result.tokens, engine.language)
    return Response(body, media_type=media)


@router.post("/inference")
async def inference(request: Request):
    srv = served(request)
    srv.authorize(request)
    require_content_type(request, "application/json", 'application/json like {"audio": "<base64 of a WAV/FLAC file>"}')
    payload = await read_json(request, '{"audio": "<base64>"}')
    if "audio" not in payload:
        raise ServeError(400, "missing_audio", 'the JSON needs a field "audio": {"audio": "<base64 WAV/FLAC>"}')
    engine = srv.speech()
    check_model(engine, payload.get("model"))
    data = await run_in_threadpool(audio.decode_base64, payload["audio"])
    result = await transcribe(request, data)
    return JSONResponse({"text": result.text, "duration": round(result.seconds, 3), "model": engine.name})
