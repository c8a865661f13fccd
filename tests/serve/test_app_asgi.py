"""The app in-process (ASGI, no model, no sockets): settings have one source, audio decodes off the event
loop, a hang-up mid-upload is 499, and the completions body is checked by its pydantic model."""
from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from lorakit_nb.cli import build_parser  # noqa: E402
from lorakit_nb.serve import audio  # noqa: E402
from lorakit_nb.serve.app import create_app  # noqa: E402
from lorakit_nb.serve.client import b64, wav_bytes  # noqa: E402
from lorakit_nb.serve.errors import ServeError  # noqa: E402
from lorakit_nb.serve.limits import LimitsMiddleware  # noqa: E402
from lorakit_nb.serve.routes_text import completion_request  # noqa: E402
from lorakit_nb.serve.settings import ServeSettings, flag_of  # noqa: E402


class FakeEngine:
    """What the speech routes use of ``serve.engine.Engine``: a name, a window, a batch size, ``transcribe``."""

    name, language, window, max_batch, pending, max_queue, ready = "fake", "zh", 5, 8, 0, 4, True

    async def transcribe(self, samples, prompt_text=None):
        return SimpleNamespace(text="你好", seconds=len(samples) / 16000, tokens=[1])

    def retry_after(self):
        return 1


def test_every_setting_is_a_flag_with_the_same_default():
    """``lorakit serve`` with no flags gives ServeSettings() exactly; each field has its --flag, and a value
    given on the command line reaches the settings (``--max-prompt-chars`` had no flag before)."""
    parser = build_parser()
    serve_parser = parser._subparsers._group_actions[0].choices["serve"]
    flags = {opt for action in serve_parser._actions for opt in action.option_strings}
    assert {flag_of(f.name) for f in dataclasses.fields(ServeSettings)} <= flags
    assert ServeSettings.from_args(parser.parse_args(["serve"])) == ServeSettings()
    args = parser.parse_args(["serve", "--max-prompt-chars", "123", "--upload-timeout", "7.5", "--threads", "2"])
    got = ServeSettings.from_args(args)
    assert (got.max_prompt_chars, got.upload_timeout, got.threads) == (123, 7.5, 2)
    assert ServeSettings.from_args(parser.parse_args(["serve", "--repetition-guard"])).repetition_guard is True
    assert ServeSettings(max_body_mb=0.5).max_body_bytes == 1 << 19


def test_health_answers_while_a_decode_is_running(monkeypatch):
    """The decoder is held inside its call until /health has answered. Run on the event loop (as before),
    it would block /health for the whole decode; in a worker thread /health answers at once."""
    started, release, seen = threading.Event(), threading.Event(), {}
    real = audio.decode_audio

    def slow_decode(data, max_seconds):
        seen["thread"] = threading.current_thread().name
        started.set()
        release.wait(5)  # a heavy decode, held until the test lets go (on the loop: 5 s, then on)
        seen["done"] = True
        return real(data, max_seconds)

    monkeypatch.setattr(audio, "decode_audio", slow_decode)
    app = create_app(FakeEngine())

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            upload = asyncio.create_task(ac.post("/inference", json={"audio": b64(wav_bytes(np.zeros(1600)))}))
            while not started.is_set():
                await asyncio.sleep(0.01)
            t0 = time.perf_counter()
            health = await ac.get("/health")
            waited, still_decoding = time.perf_counter() - t0, "done" not in seen
            release.set()
            return health, waited, still_decoding, await upload

    health, waited, still_decoding, upload = asyncio.run(go())
    assert health.status_code == 200 and still_decoding, f"/health waited {waited:.1f} s for the decode to finish"
    assert upload.status_code == 200 and upload.json()["text"] == "你好"
    assert seen["thread"] != threading.main_thread().name


def test_hang_up_mid_upload_is_499_not_500(caplog):
    """The ASGI server reports ``http.disconnect`` before the body is complete: 499 is recorded, nothing
    is sent, nothing raises (before: starlette's ClientDisconnect reached the 500 handler)."""
    observed, sent = [], []
    app = LimitsMiddleware(create_app(FakeEngine()).app, max_body_bytes=1 << 20, read_timeout=5, max_concurrency=2,
                           upload_paths={"/inference"}, observe=lambda *a: observed.append(a[:2]))
    messages = [{"type": "http.request", "body": b'{"audio": "AAAA', "more_body": True}, {"type": "http.disconnect"}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/inference", "headers": [(b"content-type", b"application/json")],
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
             "http_version": "1.1"}
    with caplog.at_level("INFO"):
        asyncio.run(app(scope, receive, send))
    assert observed == [("/inference", 499)] and sent == [] and app.in_flight == 0
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_upload_deadline_counts_from_the_headers_not_between_bytes():
    """A body arriving one chunk per 0.1 s never trips a 1 s gap timeout, but the 0.5 s deadline ends it."""
    observed, sent = [], []
    app = LimitsMiddleware(create_app(FakeEngine()).app, max_body_bytes=1 << 20, read_timeout=1, upload_timeout=0.5,
                           max_concurrency=2, upload_paths={"/inference"}, observe=lambda *a: observed.append(a[:2]))

    async def receive():
        await asyncio.sleep(0.1)
        return {"type": "http.request", "body": b" ", "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/inference", "headers": [(b"content-type", b"application/json")],
             "query_string": b"", "root_path": "", "scheme": "http", "server": ("t", 80), "client": ("c", 1),
             "http_version": "1.1"}
    t0 = time.perf_counter()
    asyncio.run(app(scope, receive, send))
    assert observed == [("/inference", 408)] and b"upload_timeout" in sent[1]["body"]
    assert 0.45 < time.perf_counter() - t0 < 2 and app.in_flight == 0


LLM = SimpleNamespace(names=["gemma-3-270m", "wu"], base_name="gemma-3-270m")


@pytest.mark.parametrize("body, status, code", [
    ({"prompt": "hi"}, 400, "missing_model"),
    ({"model": 3, "prompt": "hi"}, 400, "missing_model"),
    ({"model": "nope", "prompt": "hi"}, 404, "model_not_found"),
    ({"model": "wu", "prompt": ["a", "b"]}, 400, "invalid_prompt"),
    ({"model": "wu", "prompt": 5}, 400, "invalid_prompt"),
    ({"model": "wu", "prompt": " "}, 400, "empty_prompt"),
    ({"model": "wu", "prompt": "x" * 11}, 413, "prompt_too_large"),
    ({"model": "wu", "prompt": "hi", "max_tokens": True}, 400, "invalid_max_tokens"),
    ({"model": "wu", "prompt": "hi", "max_tokens": 1.0}, 400, "invalid_max_tokens"),
    ({"model": "wu", "prompt": "hi", "temperature": 3}, 400, "invalid_temperature"),
    ({"model": "wu", "prompt": "hi", "stop": ["a", ""]}, 400, "invalid_stop"),
    ({"model": "wu", "prompt": "hi", "strength": "0.8"}, 400, "invalid_strength"),
    ({"model": "gemma-3-270m", "prompt": "hi", "strength": 0.5}, 400, "invalid_strength"),
    ({"model": "wu", "prompt": "hi", "n": 2}, 400, "unsupported_n"),
    ({"model": "wu", "prompt": "hi", "suffix": "x"}, 400, "unsupported_suffix"),
])
def test_completion_body_refusals_keep_their_codes(body, status, code):
    with pytest.raises(ServeError) as err:
        completion_request(body, LLM, max_prompt_chars=10)
    assert (err.value.status, err.value.code) == (status, code)
    assert len(err.value.message) > 20


def test_completion_body_defaults():
    assert completion_request({"model": "wu", "prompt": ["hi"], "stop": "\n"}, LLM, 10) == {
        "prompt": "hi", "model": "wu", "strength": 1.0, "max_tokens": 16, "stop": ["\n"], "temperature": 0.0}
    assert completion_request({"model": "gemma-3-270m", "prompt": "hi", "temperature": 1}, LLM, 10)["strength"] == 0.0
