"""``stream=true`` on /v1/audio/transcriptions: OpenAI's server-sent events, read by the real ``openai`` client.

Unit tests (no server): the wire bytes of each event, parsed back by the ``openai`` client's own SSE
decoder into its event types and read by its streaming call (an error event raises ``APIError``);
``serve.stream.transcript_stream`` over hand-made batches (a delta per piece, each batch's deltas sent
before the next batch is awaited, a mid-stream error as one error event recorded for /metrics) and over
the route's own pieces with a request_timeout that fires mid-stream. Served (conftest.py's servers): a
long clip and a short one streamed equal the same clip not streamed (prompt included); deltas arrive
as their batches finish; refusals are still JSON errors with their status, not a stream.
"""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from lorakit_nb.export.longform import join_texts
from lorakit_nb.serve.errors import ServeError
from lorakit_nb.serve.stream import delta_event, done_event, error_event, transcript_stream


def _decode_sse(raw: bytes) -> list[dict]:
    """The events as the openai client sees them: its SSEDecoder over the bytes, each ``data`` as JSON."""
    from openai._streaming import SSEDecoder

    return [e.json() for e in SSEDecoder().iter_bytes(iter([raw]))]


def test_event_bytes_are_what_the_openai_client_parses():
    """A delta holding Chinese, a quote and a newline stays ONE ``data:`` line (JSON escapes the newline),
    UTF-8 not \\u-escaped; the client's decoder gives back the same strings, typed by its own models."""
    pytest.importorskip("openai")
    from openai.types.audio import TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent

    delta = '你好"\n世界'
    assert delta_event(delta) == ('data: {"type": "transcript.text.delta", "delta": "你好\\"\\n世界"}\n\n').encode()
    raw = delta_event(delta) + delta_event("。") + done_event(delta + "。")
    events = _decode_sse(raw)
    assert [TranscriptionTextDeltaEvent.model_validate(e).delta for e in events[:2]] == [delta, "。"]
    assert TranscriptionTextDoneEvent.model_validate(events[2]).text == delta + "。"
    err = _decode_sse(error_event(ServeError(504, "decode_timeout", "no transcript within 1 s; retry later")))
    assert err == [{"type": "error", "error": {"message": "no transcript within 1 s; retry later",
                                               "type": "timeout_error", "code": "decode_timeout"}}]


def test_openai_client_yields_deltas_then_raises_on_an_error_event():
    """The client's streaming call over these exact bytes (a mock transport, no server): the delta comes
    out typed, the error event raises ``openai.APIError`` carrying our message and code."""
    openai = pytest.importorskip("openai")
    httpx2 = pytest.importorskip("httpx2")  # the HTTP library this openai client is built on

    body = delta_event("你好") + error_event(ServeError(504, "decode_timeout", "no transcript within 1 s; retry later"))
    transport = httpx2.MockTransport(lambda request: httpx2.Response(
        200, headers={"content-type": "text/event-stream"}, content=body))
    oa = openai.OpenAI(base_url="http://test/v1", api_key="k", http_client=httpx2.Client(transport=transport))
    events = iter(oa.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"x"), stream=True))
    assert next(events).delta == "你好"
    with pytest.raises(openai.APIError, match="no transcript within 1 s") as raised:
        next(events)
    assert raised.value.body["code"] == "decode_timeout"


async def _drain(batches, join, log=None):
    state = SimpleNamespace()
    body = await transcript_stream(batches, join, state)
    events = []
    async for raw in body:
        events += _decode_sse(raw)
        if log is not None:
            log.append(("sent", len(events)))
    return events, state


def test_deltas_per_piece_sent_before_the_next_batch():
    """Pieces ["你好", "", " 世界 "] in batches [2, 1], joined by join_texts (zh: no separator, stripped):
    deltas "你好", "", "世界" (one per piece, the empty one too) and done "你好世界"; the first batch's two
    deltas are out before the second batch is even asked for."""
    log = []

    async def batches():
        log.append("batch 1")
        yield ["你好", ""]
        log.append("batch 2")
        yield [" 世界 "]

    events, state = asyncio.run(_drain(batches(), join_texts, log))
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 3 + ["transcript.text.done"]
    assert [e["delta"] for e in events[:3]] == ["你好", "", "世界"] and events[3]["text"] == "你好世界"
    assert log.index(("sent", 2)) < log.index("batch 2")
    assert state.streamed and not hasattr(state, "stream_status")
    en = asyncio.run(_drain(batches(), lambda t: join_texts(t, "en")))[0]  # a spaced language: the space is in a delta
    assert "".join(e["delta"] for e in en[:3]) == en[3]["text"] == "你好 世界"


def test_error_before_and_after_the_first_events():
    """A failure in the first batch raises before any byte (the route's JSON error, its status); one in a
    later batch is ONE error event ending the stream (no done), its status kept for /metrics."""

    async def failing(at):
        for i in range(3):
            if i == at:
                raise ServeError(504, "decode_timeout", "no transcript within 1 s; retry later")
            yield [f"片{i}"]

    with pytest.raises(ServeError):
        asyncio.run(_drain(failing(0), "".join))
    events, state = asyncio.run(_drain(failing(2), "".join))
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 2 + ["error"]
    assert events[2]["error"]["code"] == "decode_timeout" and state.stream_status == 504
    from lorakit_nb.serve.metrics import ServeMetrics

    metrics = ServeMetrics()  # the middleware saw the 200 that went out; /metrics counts the failure
    metrics.observe_request("/v1/audio/transcriptions", 200, 0.5, vars(state))
    assert b'lorakit_requests_total{route="/v1/audio/transcriptions",status="504"} 1.0' in metrics.render()
    assert b'status="200"' not in metrics.render()


def test_request_timeout_mid_stream_is_an_error_event():
    """The route's own pieces -> events path (``routes_speech._Clip``) with an engine whose third piece takes
    1 s and a 0.3 s request_timeout: two deltas (batches of 1), then the 504 decode_timeout event, no done."""
    from lorakit_nb.serve.routes_speech import _Clip

    class SlowEngine:
        max_batch, language = 1, "zh"

        async def transcribe(self, seconds, prompt_text=None):
            await asyncio.sleep(seconds)
            return SimpleNamespace(text=f"{seconds:g}", tokens=[])

        def retry_after(self):
            return 1

    async def run():
        loop = asyncio.get_running_loop()
        clip = _Clip(SlowEngine(), [{"samples": 0.0}, {"samples": 0.0}, {"samples": 1.0}], True, 3.0, None,
                     loop.time() + 0.3, 0.3)
        return await _drain(clip.texts(), clip.join)

    events, state = asyncio.run(run())
    assert [e["type"] for e in events] == ["transcript.text.delta"] * 2 + ["error"]
    assert events[2]["error"]["code"] == "decode_timeout" and state.stream_status == 504


# ---- served ---------------------------------------------------------------------------------------------------

CORRUPT = b"RIFF" + (1000).to_bytes(4, "little") + b"WAVE" + bytes(range(256)) * 4  # WAV magic, then noise

def _stream(server, data, **kw):
    """Notebook 05's client call (``loadtest.timed_stream``): the deltas and the done text, arrival times in order."""
    from lorakit_nb.serve.loadtest import timed_stream
    from tests.serve.helpers import KEY_A

    arrivals = timed_stream(server.base_url, KEY_A, data, **kw)
    times, events = [t for t, _ in arrivals], [e for _, e in arrivals]
    assert times == sorted(times) and times[0] > 0
    assert [e.type for e in events[:-1]] == ["transcript.text.delta"] * (len(events) - 1)
    assert events[-1].type == "transcript.text.done"
    return [e.delta for e in events[:-1]], events[-1].text


def _requests_200(client) -> float:
    for row in client.get("/metrics").text.splitlines():
        if row.startswith('lorakit_requests_total{route="/v1/audio/transcriptions",status="200"}'):
            return float(row.split()[-1])
    return 0.0


def test_streamed_equals_not_streamed(server, client, clips):
    """Long clip (6 test clips, cut by VAD): one delta per verbose_json segment, deltas joined == done text ==
    the json text; a short clip: one delta == done == json; the prompt field still applies (same text as
    the prompted json answer); each streamed request counts once as a 200 in /metrics."""
    pytest.importorskip("openai")
    from lorakit_nb.serve.client import wav_bytes
    from tests.serve.helpers import long_clip, post_file

    data_bytes, audios = clips
    long = wav_bytes(long_clip(audios))
    verbose = json.loads(post_file(client, long, {"model": "whisper-1", "response_format": "verbose_json"}).text)
    assert len(verbose["segments"]) >= 2
    before = _requests_200(client)
    deltas, done = _stream(server, long)
    assert len(deltas) == len(verbose["segments"])
    assert "".join(deltas) == done == verbose["text"] == post_file(client, long).json()["text"]
    short = data_bytes[0]
    deltas, done = _stream(server, short, response_format="text")
    assert deltas == [done] == [post_file(client, short).json()["text"]]
    prompted = post_file(client, short, {"model": "whisper-1", "prompt": "下个季度的预算"}).json()["text"]
    assert prompted != done  # this clip's text changes with the prompt, so the next line sees it applied
    assert _stream(server, short, prompt="下个季度的预算")[1] == prompted
    assert _requests_200(client) - before == 3 + 3  # the three streams and the three plain calls among them


def test_refusals_with_stream_are_json_errors(server, client, clips):
    """stream=true does not turn a refusal into a 200 stream: corrupt audio, stream=maybe, stream with srt,
    a wrong key - each a JSON error with its status (httpx, to see the raw answer), and the openai client
    raises its status error instead of yielding events."""
    openai = pytest.importorskip("openai")
    from tests.serve.helpers import WRONG, assert_error, post_file

    short = clips[0][0]
    assert_error(post_file(client, CORRUPT, {"model": "whisper-1", "stream": "true"}), 400,
                 "invalid_audio")
    assert_error(post_file(client, short, {"model": "whisper-1", "stream": "maybe"}), 400, "invalid_stream")
    err = assert_error(post_file(client, short, {"model": "whisper-1", "stream": "TRUE", "response_format": "srt"}),
                       400, "unsupported_stream_format")
    assert "response_format=json" in err["message"]
    assert post_file(client, short, {"model": "whisper-1", "stream": "False"}).json()["text"]  # plain answer
    assert_error(post_file(client, short, {"model": "whisper-1", "stream": "true"},
                           headers={"Authorization": f"Bearer {WRONG}"}), 403, "invalid_api_key")
    with pytest.raises(openai.BadRequestError):
        _stream(server, short, response_format="vtt")


def test_deltas_arrive_as_their_batches_finish(servers, clips):
    """On the tight server (batches of 1) the long clip's 6+ pieces decode one after another: the first
    delta reaches the client at least 0.05 s before the done event (a server that buffered the answer
    would send both at once; five further batches of tiny-whisper take well over 0.05 s)."""
    import time

    import httpx

    from lorakit_nb.serve.client import wav_bytes
    from tests.serve.helpers import TRANSCRIBE, long_clip

    tight = servers[1]
    arrived = []
    with httpx.stream("POST", tight.url + TRANSCRIBE, files={"file": ("clip.wav", wav_bytes(long_clip(clips[1])))},
                      data={"model": "whisper-1", "stream": "true"}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for raw in r.iter_raw():
            arrived += [(time.perf_counter(), e["type"]) for e in _decode_sse(raw)]
    types = [t for _, t in arrived]
    assert len(types) >= 3 and types[-1] == "transcript.text.done" and "error" not in types
    assert arrived[-1][0] - arrived[0][0] > 0.05, arrived
