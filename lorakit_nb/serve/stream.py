"""A transcript sent as it is decoded: OpenAI's server-sent events for ``stream=true``.

Covers: the wire format the ``openai`` client parses (``Stream[TranscriptionStreamEvent]``): one
``data: <JSON>`` line and a blank line per event - ``sse`` / ``delta_event`` / ``done_event`` /
``error_event`` (``{"type": "error", "error": {"message", "type", "code"}}``, which the client raises
as ``APIError``) - and ``transcript_stream``, which turns a request's pieces, decoded a batch at a
time, into those events: one ``transcript.text.delta`` per piece as soon as its batch is done (the
deltas joined are the final text), then one ``transcript.text.done`` with the whole text. OpenAI's
transcription stream ends with ``done`` (no ``[DONE]`` line), so this one does too.

Does not: decode or cut audio or check the request (``routes_speech`` does, before the stream
starts), send logprobs or usage, or stream tokens within a piece (a piece is one CTranslate2 call).
"""
from __future__ import annotations

import json

from lorakit_nb.serve.errors import ServeError

MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # no proxy buffering: each event goes at once


def sse(payload: dict) -> bytes:
    """One server-sent event carrying ``payload`` as JSON (its newlines escaped by JSON, so one line).

    Example: sse({"type": "x"}) == b'data: {"type": "x"}\\n\\n'
    """
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode("utf-8") + b"\n\n"


def delta_event(delta: str) -> bytes:
    """Example: delta_event("你好") == 'data: {"type": "transcript.text.delta", "delta": "你好"}\\n\\n'.encode()"""
    return sse({"type": "transcript.text.delta", "delta": delta})


def done_event(text: str) -> bytes:
    """Example: done_event("你好") == 'data: {"type": "transcript.text.done", "text": "你好"}\\n\\n'.encode()"""
    return sse({"type": "transcript.text.done", "text": text})


def error_event(exc: ServeError) -> bytes:
    """The JSON error body of ``exc`` as an event: a failure after the 200 and the first events were sent.

    Example: error_event(ServeError(504, "decode_timeout", "no transcript within 60 s ..."))
    -> b'data: {"type": "error", "error": {"message": "no transcript ...", "type": "timeout_error", "code": ...}}\\n\\n'
    """
    return sse({"type": "error", "error": {"message": exc.message, "type": exc.type, "code": exc.code}})


async def transcript_stream(batches, join, state):
    """The SSE body (an async iterator of bytes) for ``batches``, after awaiting the first batch here.

    ``batches``: async iterator of lists of piece texts, in order, each list as soon as its batch is
    decoded; ``join(texts) -> text``: how pieces make the transcript (each delta is what the next piece
    adds to it, so "".join(deltas) == the done text). The first batch is awaited before the response
    starts, so its errors (queue full, timeout) are still a JSON error with its status code. A later
    ``ServeError`` becomes one error event that ends the stream, and ``state.stream_status`` (the
    request's state, read by ``metrics``) records its status; a client that leaves mid-stream, 499.
    Example: StreamingResponse(await transcript_stream(batches, join_texts, request.state), media_type=MEDIA_TYPE)
    """
    state.streamed = True
    first = await anext(batches, None)
    return _events(first, batches, join, state)


async def _events(first, batches, join, state):
    texts, sent, finished = [], "", False
    try:
        batch = first
        while batch is not None:
            for text in batch:
                texts.append(text)
                joined = join(texts)
                yield delta_event(joined[len(sent):])  # join keeps earlier text as its prefix
                sent = joined
            batch = await anext(batches, None)
        yield done_event(join(texts))
        finished = True
    except ServeError as e:
        state.stream_status, finished = e.status, True
        yield error_event(e)
    finally:
        if not finished:  # cancelled: the client closed the connection before the end
            state.stream_status = 499
