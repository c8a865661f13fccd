"""The speech routes of ``lorakit serve``: audio in, transcript out.

Covers: ``router`` with ``POST /v1/audio/transcriptions`` (OpenAI-compatible multipart: ``file``,
``model``, ``language``, ``prompt`` (Whisper's previous text: terms and spelling to steer toward),
``response_format`` = json | text | verbose_json | srt | vtt, ``temperature`` 0 only, ``stream`` =
true | false) and ``POST /inference`` (``{"audio": "<base64 WAV/FLAC>"}`` -> ``{"text": ...}``);
``format_transcript`` (one transcript in an OpenAI ``response_format``, one segment per piece);
``prepare`` (bytes -> the clip's pieces, the audio decoded in a worker thread so the event loop keeps
answering, e.g. ``/health``) and ``transcribe`` (bytes -> ``Heard``). A clip within the model's window
is one piece, one segment spanning it; a longer one (up to ``--max-audio-seconds``) is cut by
``export.longform.vad_segments``, the pieces queued on the engine's batcher a batch at a time, the
texts joined by ``export.longform.join_texts``, each piece one timestamped segment. ``stream=true``
(json or text) answers with OpenAI's server-sent events (``stream``): one ``transcript.text.delta``
per piece as soon as its batch is decoded, then ``transcript.text.done``; every check, the audio
decode and the first batch come before the 200, so a refusal is still a JSON error with its status.
A new speech route is one more function on ``router``.

Does not: decode audio itself (``audio``), batch (``engine``), format events (``stream``), time
words, or translate.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from fastapi import APIRouter, Request  # module level: FastAPI resolves the route annotations from here
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response, StreamingResponse

from lorakit_nb.serve import audio
from lorakit_nb.serve import stream as sse
from lorakit_nb.serve.context import read_json, require_content_type, served
from lorakit_nb.serve.errors import ServeError
from lorakit_nb.speech.window import SAMPLE_RATE

RESPONSE_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
STREAM_FORMATS = ("json", "text")  # what OpenAI streams (as transcript.text.* events); the others need the whole clip
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


@dataclass
class _Clip:
    """A request's audio ready to decode: its ``pieces`` [{"start", "end", "samples"}] and how to join their texts."""

    engine: object
    pieces: list[dict]
    long: bool  # cut by VAD (texts joined by export.longform.join_texts) or one piece spanning the clip
    seconds: float
    prompt_text: str | None
    deadline: float  # event-loop time at which request_timeout runs out
    timeout: float

    def join(self, texts) -> str:
        from lorakit_nb.export.longform import join_texts

        return join_texts(texts, self.engine.language) if self.long else "".join(texts)

    async def within(self, awaitable):
        """``awaitable``'s result, or 504 once ``request_timeout`` (counted from the decoded audio) is spent."""
        try:
            return await asyncio.wait_for(awaitable, max(self.deadline - asyncio.get_running_loop().time(), 0.0))
        except (asyncio.TimeoutError, TimeoutError):
            raise ServeError(504, "decode_timeout", f"no transcript within {self.timeout:g} s; the server is "
                             "overloaded, retry later", {"Retry-After": str(self.engine.retry_after())}) from None

    async def batches(self):
        """Each batch's [(piece, Transcript)], in order, as soon as that batch is decoded; never more than a
        batch of this clip queued on the engine at once."""
        step = self.engine.max_batch
        for i in range(0, len(self.pieces), step):
            chunk = self.pieces[i:i + step]
            yield list(zip(chunk, await self.within(asyncio.gather(
                *(self.engine.transcribe(p["samples"], self.prompt_text) for p in chunk)))))

    def texts(self):
        """Each batch's piece texts, as ``batches`` decodes them: what ``stream.transcript_stream`` reads."""
        return ([r.text for _, r in batch] async for batch in self.batches())


async def prepare(request: Request, data: bytes, prompt_text: str | None = None) -> _Clip:
    """The uploaded bytes decoded (413 over ``max_audio_seconds``) and cut into pieces: all before any answer.

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
    request.state.audio_seconds = facts["seconds"]
    timeout = srv.settings.request_timeout
    whole = {"start": 0.0, "end": len(samples) / SAMPLE_RATE, "samples": samples}
    long = len(samples) > engine.window * SAMPLE_RATE
    job = _Clip(engine, [whole], long, facts["seconds"] if long else whole["end"], prompt_text,
               asyncio.get_running_loop().time() + timeout, timeout)
    if long:
        from lorakit_nb.export.longform import vad_segments

        job.pieces = await job.within(run_in_threadpool(vad_segments, samples, engine.window))  # CPU-bound
    return job


async def transcribe(request: Request, data: bytes, prompt_text: str | None = None) -> Heard:
    """The engine's transcript of the uploaded bytes; 413 over ``max_audio_seconds``, 504 after ``request_timeout``."""
    job = await prepare(request, data, prompt_text)
    done = [pair async for batch in job.batches() for pair in batch]
    segments = [{"start": p["start"], "end": p["end"], "text": r.text, "tokens": r.tokens} for p, r in done]
    return Heard(job.join([g["text"] for g in segments]), job.seconds, segments)


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
    stream = (fields.get("stream") or "false").lower()
    if stream not in ("true", "false"):
        raise ServeError(400, "invalid_stream", f"stream {fields['stream']!r} is not a boolean; pass true or false")
    if stream == "true" and fmt not in STREAM_FORMATS:
        raise ServeError(400, "unsupported_stream_format", f"response_format {fmt!r} cannot be streamed (OpenAI "
                         "streams json and text only); pass response_format=json with stream=true, or omit stream")
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
    if stream == "true":
        clip = await prepare(request, files["file"], fields.get("prompt") or None)
        body = await sse.transcript_stream(clip.texts(), clip.join, request.state)
        return StreamingResponse(body, media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
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
