"""``lorakit serve`` refuses bad input with its status AND its JSON error code: keys, body and clip caps,
broken audio, wrong content types and fields, stalled uploads, rate limits, a full queue, full slots;
then it still transcribes correctly and ``/metrics`` counted every refusal.

The servers (REAL processes, tiny-whisper in CTranslate2) come from ``conftest.py``.
"""
from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ctranslate2")
httpx = pytest.importorskip("httpx")

from lorakit_nb.serve.client import b64, wav_bytes  # noqa: E402
from tests.serve.helpers import (  # noqa: E402
    KEY_A,
    KEY_B,
    MAX_AUDIO_SECONDS,
    MAX_BODY_MB,
    READ_TIMEOUT,
    TRANSCRIBE,
    WRONG,
    assert_error,
    offline,
    post_file,
    tone,
)


def test_no_key_401_wrong_key_403(server, clips):
    data = clips[0][0]
    r = httpx.post(server.url + TRANSCRIBE, files={"file": ("c.flac", data)})
    assert_error(r, 401, "missing_api_key")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert_error(httpx.get(server.url + "/v1/models", headers={"Authorization": "Basic abc"}), 401, "missing_api_key")
    r = httpx.post(server.url + "/inference", json={"audio": b64(data)}, headers={"Authorization": f"Bearer {WRONG}"})
    assert_error(r, 403, "invalid_api_key")


def test_oversize_body_413_before_it_is_read(server):
    """Content-Length over the cap: 413 at once. Chunked (no length): 413 once the count passes it."""
    big = MAX_BODY_MB * (1 << 20) + 1
    headers = {"Authorization": f"Bearer {KEY_A}", "content-type": "application/json"}
    t0 = time.perf_counter()
    assert_error(httpx.post(server.url + "/inference", content=b"x" * big, headers=headers), 413, "body_too_large")

    sent = {"bytes": 0}

    def chunks():
        for _ in range(64):  # up to 16 MiB, far past the cap
            sent["bytes"] += 1 << 18
            yield b"y" * (1 << 18)

    try:
        r = httpx.post(server.url + "/inference", content=chunks(), headers=headers, timeout=10)
        assert_error(r, 413, "body_too_large")
    except httpx.HTTPError:
        pass  # the server may close the connection before the client finishes writing: also a refusal
    assert sent["bytes"] < 16 << 20, "the server read the whole oversize body"
    assert time.perf_counter() - t0 < 10


def test_overlong_clip_413_names_limit_and_fix(client):
    """Over the window is cut and transcribed (tests/serve/test_longform_served.py); over --max-audio-seconds: 413."""
    err = assert_error(post_file(client, wav_bytes(tone(MAX_AUDIO_SECONDS + 1))), 413, "audio_too_long")
    assert f"{MAX_AUDIO_SECONDS} s" in err["message"] and "--max-audio-seconds" in err["message"]
    assert "cut it" in err["message"]


@pytest.mark.parametrize("case,status,code", [
    ("empty", 400, "empty_file"),
    ("zero_samples", 400, "no_samples"),
    ("corrupt", 400, "invalid_audio"),
    ("not_audio", 415, "unsupported_audio_format"),
    ("nan_samples", 400, "invalid_audio"),
    ("rate_too_low", 400, "sample_rate_too_low"),
])
def test_bad_audio(client, case, status, code):
    import soundfile as sf

    if case == "zero_samples":
        data = wav_bytes(np.zeros(0, np.float32))
    elif case == "corrupt":
        data = b"RIFF" + (1000).to_bytes(4, "little") + b"WAVE" + bytes(range(256)) * 4  # WAV magic, then noise
    elif case == "not_audio":
        data = b"\x89PNG\r\n\x1a\n" + b"\x00" * 200
    elif case == "nan_samples":
        import io

        buf = io.BytesIO()
        sf.write(buf, np.full(1600, np.nan, np.float32), 16000, format="WAV", subtype="FLOAT")
        data = buf.getvalue()
    elif case == "rate_too_low":
        data = wav_bytes(tone(1, sr=4000), 4000)
    else:
        data = b""
    assert_error(post_file(client, data), status, code)


def test_wrong_content_types_415(client):
    assert_error(client.post(TRANSCRIBE, json={"file": "x"}), 415, "unsupported_media_type")
    assert_error(client.post("/inference", content=b"audio", headers={"content-type": "text/plain"}),
                 415, "unsupported_media_type")


def test_bad_json_requests(client):
    assert_error(client.post("/inference", json={"audio": "not base64 !!"}), 400, "invalid_base64")
    assert_error(client.post("/inference", content=b"{not json", headers={"content-type": "application/json"}),
                 400, "invalid_json")
    assert_error(client.post("/inference", json={"sound": "abc"}), 400, "missing_audio")
    huge = json.dumps({"audio": "A" * (MAX_BODY_MB * (1 << 20))})
    assert_error(client.post("/inference", content=huge, headers={"content-type": "application/json"}),
                 413, "body_too_large")


def test_bad_form_fields(client, clips):
    data = clips[0][0]
    err = assert_error(post_file(client, data, {"response_format": "mp4"}), 400, "invalid_response_format")
    assert "verbose_json" in err["message"]
    assert_error(post_file(client, data, {"model": "gpt-4o-transcribe"}), 404, "model_not_found")
    assert_error(post_file(client, data, {"language": "en"}), 400, "unsupported_language")
    assert_error(client.post(TRANSCRIBE, data={"model": "whisper-1"}, files={"other": ("a", b"x")}), 400, "missing_file")
    assert_error(client.get("/v1/nothing-here"), 404, "not_found")


def test_stalled_partial_upload_times_out(server):
    """Headers promise 100 kB, 1 kB arrives, then nothing: 408 JSON within the read timeout, then close."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=READ_TIMEOUT + 5) as s:
        s.sendall((f"POST /inference HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY_A}\r\n"
                   "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n").encode() + b'{"audio": "' + b"A" * 1000)
        t0 = time.perf_counter()
        raw = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
        waited = time.perf_counter() - t0
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), raw[:200]
    assert json.loads(body)["error"]["code"] == "request_timeout"
    assert READ_TIMEOUT * 0.8 <= waited < READ_TIMEOUT + 3


def test_rate_limit_burst_429(server):
    """Key B: burst 30 at 5/s; 60 requests at once -> some 429 with Retry-After; key A is unaffected."""
    async def burst():
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {KEY_B}"}) as ac:
            return await asyncio.gather(*[ac.get("/v1/models") for _ in range(60)])

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 429} and codes.count(200) >= 30, codes
    limited = next(r for r in responses if r.status_code == 429)
    assert_error(limited, 429, "rate_limit_exceeded")
    assert int(limited.headers["retry-after"]) >= 1
    assert httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY_A}"}).status_code == 200


def test_queue_overflow_503(servers, clips):
    """Tight server (queue 1): clips sent at once -> 200 or 503 with Retry-After, never anything else."""
    tight, data = servers[1], clips[0][0]

    async def burst():
        async with httpx.AsyncClient(base_url=tight.url, timeout=30) as ac:
            return await asyncio.gather(*[ac.post(TRANSCRIBE, files={"file": ("c.flac", data)}) for _ in range(3)])

    seen = []
    for _ in range(8):
        seen += asyncio.run(burst())
        if any(r.status_code == 503 and r.json()["error"]["code"] == "queue_full" for r in seen):
            break
    codes = {r.status_code for r in seen}
    assert codes <= {200, 503} and 200 in codes, codes
    full = next((r for r in seen if r.status_code == 503 and r.json()["error"]["code"] == "queue_full"), None)
    assert full is not None, "a queue of 1 never overflowed"
    assert_error(full, 503, "queue_full")
    assert int(full.headers["retry-after"]) >= 1


def test_too_many_uploads_in_flight_503(servers, clips):
    tight = servers[1]
    socks = []
    try:
        for _ in range(3):  # --max-concurrency 3: three stalled uploads hold every slot
            s = socket.create_connection(("127.0.0.1", tight.port))
            s.sendall(b"POST /inference HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 5000\r\n\r\n{")
            socks.append(s)
        time.sleep(0.3)
        r = httpx.post(tight.url + "/inference", json={"audio": b64(clips[0][0])})
        assert_error(r, 503, "too_many_requests_in_flight")
        assert r.headers["retry-after"] == "1"
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the slots free up once the stalled clients are gone
        r = httpx.post(tight.url + "/inference", json={"audio": b64(clips[0][0])})
        if r.status_code == 200:
            break
        time.sleep(0.3)
    assert r.status_code == 200, r.text


# ---- after all of that ---------------------------------------------------------------------

def test_still_correct_after_the_abuse_and_metrics_counted_it(server, client, tiny_ct2, clips):
    data, audios = clips
    assert server.alive
    assert post_file(client, data[1]).json()["text"] == offline(tiny_ct2, audios[1:2])[0]
    metrics = httpx.get(server.url + "/metrics").text
    for status in ("200", "400", "401", "403", "404", "408", "413", "415", "429"):
        assert re.search(rf'^lorakit_requests_total{{route="[^"]+",status="{status}"}} [1-9]', metrics, re.M), status
    audio = float(re.search(r"^lorakit_audio_seconds_total (\S+)$", metrics, re.M).group(1))
    assert audio > sum(len(a) for a in audios) / 16000  # every clip of the parity test, and more
    rtf = re.search(r"^lorakit_real_time_factor_count (\S+)$", metrics, re.M)
    assert rtf and float(rtf.group(1)) > 0
    assert math.isfinite(float(re.search(r'^lorakit_queue_depth (\S+)$', metrics, re.M).group(1)))
