"""The speech routes of ``lorakit serve``: audio in, transcript out.

Covers: ``router`` with ``POST /v1/audio/transcriptions`` (OpenAI-compatible multipart: ``file``,
``model``, ``language``, ``prompt`` (Whisper's previous text: terms and spelling to steer toward),
``response_format`` = json | text | verbose_json | srt | vtt, ``temperature`` 0 only) and ``POST /inference`` (``{"audio": "<base64 WAV/FLAC>"}`` -> ``{"text": ...}``);
``format_transcript`` (one transcript in an OpenAI ``response_format``, one segment per piece);
``transcribe`` (bytes -> ``Heard``, the audio decoded in a worker thread so the event loop keeps
answering, e.g. ``/health``). A clip within the model's window is one engine job, one segment spanning
it; a longer one (up to ``--max-audio-seconds``) is cut by ``export.longform.vad_segments``, each
piece queued on the engine's batcher, the texts joined by ``export.longform.join_texts``, each piece
one timestamped segment. A new speech route is one more function on ``router``.

Does not: decode audio itself (``audio``), batch (``engine``), time words, or translate.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from fastapi import APIRouter, Request  # module level: FastAPI resolves the route annotations from here
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from lorakit_nb.serve import audio
from lorakit_nb.serve.context import read_json, require_content_type, served
from lorakit_nb.serve.errors import ServeError
from lorakit_nb.speech.window import SAMPLE_RATE

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
ALIASES = ("whisper-1",)  # what OpenAI examples pass as ``model``: accepted as this service's model

router = APIRouter()


@dataclass
class Heard:
    """A request's transcript: joined ``text``, clip ``seconds``, ``segments`` [{"start", "end", "text", "tokens"}]."""

    text: str
    seconds: float
    segments: list[dict]


def _timestamp(t: float, sep: str) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}{sep}{ms % 1000:03d}"


def format_transcript(fmt: str, text: str, seconds: float, tokens: list[int], language: str,
                      segments: list[dict] | None = None):
    """(body, media type) for one transcript in an OpenAI ``response_format``.

    ``segments`` [{"start", "end", "text", "tokens"}] (a long clip's pieces); default: one spanning the clip.
    Example: format_transcript("srt", "你好", 3.2, [1], "zh")[0] == "1\\n00:00:00,000 --> 00:00:03,200\\n你好\\n\\n"
    """
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    if fmt == "json":
        return json.dumps({"text": text}, ensure_ascii=False), "application/json"
    if fmt == "text":
        return text + "\n", "text/plain; charset=utf-8"
    segments = segments if segments is not None else [{"start": 0.0, "end": seconds, "text": text, "tokens": tokens}]
    if fmt == "verbose_json":
        segs = [{"id": i, "seek": 0, "start": round(g["start"], 3), "end": round(g["end"], 3), "text": g["text"],
                 "tokens": g["tokens"], "temperature": 0.0} for i, g in enumerate(segments)]
        body = {"task": "transcribe", "language": LANGUAGES.get(language, language), "duration": round(seconds, 3),
                "text": text, "segments": segs}
        return json.dumps(body, ensure_ascii=False), "application/json"
    if fmt == "srt":
        cues = [f"{i}\n{_timestamp(g['start'], ',')} --> {_timestamp(g['end'], ',')}\n{g['text']}\n\n"
                for i, g in enumerate(segments, 1)]
        return "".join(cues), "text/plain; charset=utf-8"
    cues = [f"{_timestamp(g['start'], '.')} --> {_timestamp(g['end'], '.')}\n{g['text']}\n\n" for g in segments]
    return "WEBVTT\n\n" + "".join(cues), "text/vtt; charset=utf-8"


def check_model(engine, name) -> None:
    """404 unless ``name`` is empty, the engine's name or an OpenAI alias."""
    if name and name != engine.name and name not in ALIASES:
        raise ServeError(404, "model_not_found", f"model {name!r} is not served here; use {engine.name!r} "
                         f"(or {ALIASES[0]!r}), see GET /v1/models")


def _prompt(prompt_text) -> dict:
    """The engine call's prompt argument: none at all without a prompt (the call is exactly the plain one)."""
    return {"prompt_text": prompt_text} if prompt_text else {}


async def _long(engine, samples, prompt_text=None) -> tuple[str, list[dict]]:
    """A clip over the window: VAD pieces, queued on the batcher a batch's worth at a time."""
    from lorakit_nb.export.longform import join_texts, vad_segments

    pieces = await run_in_threadpool(vad_segments, samples, engine.window)  # CPU-bound: off the loop
    results = []
    for i in range(0, len(pieces), engine.max_batch):  # never more than a batch of this clip queued at once
        results += await asyncio.gather(*(engine.transcribe(p["samples"], **_prompt(prompt_text)) for p in pieces[i:i + engine.max_batch]))
    segments = [{"start": p["start"], "end": p["end"], "text": r.text, "tokens": r.tokens}
                for p, r in zip(pieces, results)]
    return join_texts([r.text for r in results], engine.language), segments


async def transcribe(request: Request, data: bytes, prompt_text: str | None = None) -> Heard:
    """The engine's transcript of the uploaded bytes; 413 over ``max_audio_seconds``, 504 after ``request_timeout``.

    ``prompt_text``: OpenAI's ``prompt`` field, sent to the decoder as Whisper's previous text.
    """
    srv = served(request)
    engine = srv.speech()
    limit = srv.settings.max_audio_seconds
    try:
        samples, facts = await run_in_threadpool(audio.decode_audio, data, limit)  # CPU-bound: off the loop
    except ServeError as e:
        if e.code != "audio_too_long":
            raise
        raise ServeError(413, "audio_too_long", f"the clip is longer than this server's limit of {limit:g} s "
                         f"(--max-audio-seconds); cut it into parts of at most {limit:g} s and send each one (e.g. "
                         f"`ffmpeg -i IN -f segment -segment_time {limit:g} -ar 16000 -ac 1 part%03d.wav`)") from None
    request.state.audio_seconds = seconds = facts["seconds"]
    timeout = srv.settings.request_timeout
    try:
        if len(samples) <= engine.window * SAMPLE_RATE:
            result = await asyncio.wait_for(engine.transcribe(samples, **_prompt(prompt_text)), timeout)
            return Heard(result.text, result.seconds, [{"start": 0.0, "end": result.seconds, "text": result.text,
                                                        "tokens": result.tokens}])
        text, segments = await asyncio.wait_for(_long(engine, samples, prompt_text), timeout)
        return Heard(text, seconds, segments)
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
    if "file" not in files:
        raise ServeError(400, "missing_file", "the form has no `file` part; send the audio as a file "
                         "upload named `file` (curl -F file=@clip.wav)")
    result = await transcribe(request, files["file"], fields.get("prompt") or None)
    tokens = [t for g in result.segments for t in g["tokens"]]
    body, media = format_transcript(fmt, result.text, result.seconds, tokens, engine.language, result.segments)
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
