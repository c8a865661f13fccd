"""``lorakit serve`` against REAL server processes (uvicorn in a subprocess on 127.0.0.1, a free port).

Model: tiny-whisper (random weights, special tokens suppressed as in tests/test_export.py) exported
to CTranslate2 int8 with a ``lorakit_export.json`` recording a 5 s training window. Its transcripts
are garbage, but deterministic: enough to check that served text equals the kit's offline decoding.

Two servers start together: ``server`` (API keys, small limits so each refusal is cheap to trigger)
and ``tight`` (no keys, queue of 1 and 3 uploads in flight, for overload). Each bad input asserts
its status AND its JSON error code; the last test checks the server still transcribes correctly.
"""
from __future__ import annotations

import asyncio
import json
import math
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ctranslate2")
httpx = pytest.importorskip("httpx")

from lorakit_nb.serve.client import ServerProcess, b64, wav_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TEST_MANIFEST = ROOT / "data" / "zh_speech" / "test.jsonl"
KEY_A, KEY_B = "test-key-a-" + "a" * 24, "test-key-b-" + "b" * 24  # B: the rate-limit burst only
WRONG = "test-key-wrong-" + "z" * 24
WINDOW = 5
MAX_BODY_MB = 3
READ_TIMEOUT = 1.5
TRANSCRIBE = "/v1/audio/transcriptions"


@pytest.fixture(scope="module")
def tiny_ct2(tmp_path_factory):
    """tiny-whisper -> CTranslate2 int8 folder with a sidecar saying it was trained with a 5 s window."""
    import shutil

    from lorakit_nb.export.ct2 import export_ct2
    from lorakit_nb.io import ExportSidecar
    from lorakit_nb.models.resolve import resolve_model

    tmp = tmp_path_factory.mktemp("serve_model")
    hf = tmp / "hf"
    shutil.copytree(resolve_model("tiny-whisper", quiet=True).path, hf)
    gen = json.loads((hf / "generation_config.json").read_text())
    gen["suppress_tokens"] = list(range(50258, 51865))  # random weights: no timestamps / specials
    (hf / "generation_config.json").write_text(json.dumps(gen))
    ct2 = export_ct2(hf, tmp / "ct2_int8", "int8")
    ExportSidecar(base_model="tiny-whisper", audio_seconds=30,
                  trained_with={"audio_seconds": WINDOW, "language": "zh"}).save(ct2)
    return ct2


@pytest.fixture(scope="module")
def servers(tiny_ct2, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# test keys\n{KEY_A}\n\n{KEY_B}\n")
    tmpdir = tmp_path_factory.mktemp("server_tmp")
    main = ServerProcess(tiny_ct2, key_file=keys, env={"TMPDIR": str(tmpdir)},
                         args=["--max-body-mb", MAX_BODY_MB, "--read-timeout", READ_TIMEOUT, "--rate", 5,
                               "--burst", 30, "--max-wait-ms", 50, "--threads", 1])
    tight = ServerProcess(tiny_ct2, args=["--no-auth", "--max-queue", 1, "--max-batch", 1, "--max-wait-ms", 0,
                                          "--max-concurrency", 3, "--read-timeout", 5, "--rate", 0,
                                          "--threads", 1])
    main.launch(), tight.launch()
    try:
        main.wait_ready(), tight.wait_ready()
        main.tmpdir, main.tmp_before = tmpdir, sorted(p.name for p in tmpdir.iterdir())
        yield main, tight
    finally:
        main.stop(), tight.stop()


@pytest.fixture(scope="module")
def server(servers):
    return servers[0]


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def clips():
    """(bytes of the first 8 test clips as stored (FLAC), their decoded 16 kHz samples)."""
    from lorakit_nb.speech.data import load_manifest, read_audio

    if not TEST_MANIFEST.is_file():
        pytest.skip("speech data not generated")
    rows = load_manifest(TEST_MANIFEST)[:8]
    return [Path(r["audio"]).read_bytes() for r in rows], [read_audio(r["audio"]) for r in rows]


def tone(seconds, sr=16000, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def post_file(client, data, fields=None, **kw):
    return client.post(TRANSCRIBE, files={"file": ("clip.wav", data)}, data=fields or {"model": "whisper-1"}, **kw)


def assert_error(response, status, code):
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    assert body["error"]["code"] == code, body
    assert len(body["error"]["message"]) > 20  # says what to send, not just a code
    return body["error"]


def offline(tiny_ct2, audios):
    """The kit's offline decoding of each clip alone: ct2_transcribe at the export's 5 s window."""
    from transformers import WhisperProcessor

    from lorakit_nb.export.ct2 import ct2_transcribe, load_ct2
    from lorakit_nb.speech.window import set_processor_window

    processor = WhisperProcessor.from_pretrained(tiny_ct2)
    set_processor_window(processor, WINDOW)
    return ct2_transcribe(load_ct2(tiny_ct2, "int8", 1), processor, audios, batch_size=1)


# ---- the happy path -------------------------------------------------------------------------

def test_health_ready_models(server, client):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/ready").json()
    assert ready["status"] == "ready" and ready["queue_depth"] == 0
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [ready["model"]]


def test_served_transcripts_equal_offline_and_are_batched(server, tiny_ct2, clips):
    """8 clips sent at once over HTTP -> decoded in fewer than 8 batches, texts identical to offline."""
    data, audios = clips

    def batches():
        text = httpx.get(server.url + "/metrics").text
        return tuple(float(re.search(rf"^lorakit_batch_size_{k} (\S+)$", text, re.M).group(1)) for k in ("count", "sum"))

    async def send_all():
        async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {KEY_A}"},
                                     timeout=60) as ac:
            return await asyncio.gather(*[ac.post(TRANSCRIBE, files={"file": ("c.flac", d)}, data={"model": "whisper-1"})
                                          for d in data])

    n0, s0 = batches()
    responses = asyncio.run(send_all())
    n1, s1 = batches()
    assert [r.status_code for r in responses] == [200] * len(data)
    served = [r.json()["text"] for r in responses]
    assert served == offline(tiny_ct2, audios)
    assert all(served)  # special tokens are suppressed: every clip yields text
    assert s1 - s0 == len(data) and n1 - n0 < len(data), "concurrent clips should share CTranslate2 batches"
    b64_served = client_inference(server, data[0])
    assert b64_served == served[0]


def client_inference(server, data):
    r = httpx.post(server.url + "/inference", json={"audio": b64(data)}, headers={"Authorization": f"Bearer {KEY_A}"})
    assert r.status_code == 200, r.text
    return r.json()["text"]


def test_every_response_format(client, clips):
    data = clips[0][0]
    base = post_file(client, data, {"model": "whisper-1"})
    text = base.json()["text"]
    assert base.headers["content-type"].startswith("application/json") and base.json() == {"text": text}
    verbose = post_file(client, data, {"response_format": "verbose_json"}).json()
    seconds = verbose["duration"]
    assert verbose["text"] == text and verbose["language"] == "chinese" and 0 < seconds <= WINDOW
    assert verbose["segments"][0]["start"] == 0 and verbose["segments"][0]["end"] == seconds
    assert verbose["segments"][0]["text"] == text and verbose["segments"][0]["tokens"]
    ms = int(round(seconds * 1000))
    stamp = f"00:00:{ms // 1000:02d}"
    plain = post_file(client, data, {"response_format": "text"})
    assert plain.text == text + "\n" and plain.headers["content-type"].startswith("text/plain")
    srt = post_file(client, data, {"response_format": "srt"}).text
    assert srt == f"1\n00:00:00,000 --> {stamp},{ms % 1000:03d}\n{text}\n\n"
    vtt = post_file(client, data, {"response_format": "vtt"})
    assert vtt.text == f"WEBVTT\n\n00:00:00.000 --> {stamp}.{ms % 1000:03d}\n{text}\n\n"
    assert vtt.headers["content-type"].startswith("text/vtt")


def test_openai_client_unchanged(server, client, clips):
    openai = pytest.importorskip("openai")
    data = clips[0][0]
    expected = post_file(client, data).json()["text"]
    oa = openai.OpenAI(base_url=server.base_url, api_key=KEY_A, max_retries=0)
    got = oa.audio.transcriptions.create(model="whisper-1", file=("clip.flac", data))
    assert got.text == expected
    verbose = oa.audio.transcriptions.create(model="whisper-1", file=("clip.flac", data), response_format="verbose_json")
    assert verbose.text == expected and verbose.duration > 0
    assert oa.audio.transcriptions.create(model="whisper-1", file=("clip.flac", data), response_format="text").strip() == expected
    assert [m.id for m in oa.models.list().data] == [client.get("/v1/models").json()["data"][0]["id"]]
    with pytest.raises(openai.PermissionDeniedError):
        openai.OpenAI(base_url=server.base_url, api_key=WRONG, max_retries=0).models.list()


def test_resamples_and_mixes_down_like_offline_reading(client, tiny_ct2, tmp_path):
    """A 48 kHz stereo float WAV (1.9 MB, over starlette's 1 MB spool size) is served like the same
    file read by speech.data.read_audio, and nothing is written to the server's TMPDIR."""
    import soundfile as sf

    from lorakit_nb.speech.data import read_audio

    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal((48000 * 5 - 4800, 2))).astype(np.float32)
    path = tmp_path / "st48.wav"
    sf.write(path, x, 48000, subtype="FLOAT")
    assert path.stat().st_size > 1 << 20
    r = post_file(client, path.read_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["text"] == offline(tiny_ct2, [read_audio(path)])[0]


# ---- the bad-input matrix -------------------------------------------------------------------

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
    err = assert_error(post_file(client, wav_bytes(tone(WINDOW + 1))), 413, "audio_too_long")
    assert f"{WINDOW} s" in err["message"] and "cut it" in err["message"]


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


# ---- after all of that ----------------------------------------------------------------------

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


def test_logs_hold_no_keys_or_audio_and_no_temp_files(server, clips):
    log = server.log()
    assert "/v1/audio/transcriptions 200" in log  # the access log is there ...
    for secret in (KEY_A, KEY_B, WRONG, b64(clips[0][0])[:40]):
        assert secret not in log  # ... without keys or audio
    assert sorted(p.name for p in server.tmpdir.iterdir()) == server.tmp_before
