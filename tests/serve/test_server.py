"""``lorakit serve`` answers correctly: transcripts equal the kit's offline decoding, batched, in every
response format, through the ``openai`` client, resampled like offline reading; logs hold no secrets.

The servers (REAL processes, tiny-whisper in CTranslate2) come from ``conftest.py``.
"""
from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ctranslate2")
httpx = pytest.importorskip("httpx")

from lorakit_nb.serve.client import b64  # noqa: E402
from tests.serve.helpers import KEY_A, KEY_B, KEY_C, TRANSCRIBE, WINDOW, WRONG, offline, post_file  # noqa: E402


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


def test_logs_hold_no_keys_or_audio_and_no_temp_files(server, clips):
    log = server.log()
    assert "/v1/audio/transcriptions 200" in log  # the access log is there ...
    for secret in (KEY_A, KEY_B, KEY_C, WRONG, b64(clips[0][0])[:40]):
        assert secret not in log  # ... without keys or audio
    assert sorted(p.name for p in server.tmpdir.iterdir()) == server.tmp_before
