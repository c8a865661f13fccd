"""Unit tests of the serve room's pure pieces: keys, token buckets, sniffing, multipart, formats (no server)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("fastapi")

from lorakit_nb.errors import LorakitError  # noqa: E402
from lorakit_nb.serve.audio import decode_audio, decode_base64, parse_multipart, sniff  # noqa: E402
from lorakit_nb.serve.client import b64, wav_bytes  # noqa: E402
from lorakit_nb.serve.errors import ServeError  # noqa: E402
from lorakit_nb.serve.security import ApiKeys, RateLimiter, key_id, load_api_keys  # noqa: E402

KEY = "k" * 20


def test_token_bucket_burst_then_refill():
    now = [100.0]
    rl = RateLimiter(rate=2, burst=3, clock=lambda: now[0])
    for _ in range(3):
        rl.take("a")
    with pytest.raises(ServeError) as e:
        rl.take("a")
    assert e.value.status == 429 and e.value.headers["Retry-After"] == "1"  # 1 token at 2/s: 0.5 s -> 1
    rl.take("b")  # buckets are per caller
    now[0] += 0.5  # one token back
    rl.take("a")
    with pytest.raises(ServeError):
        rl.take("a")
    RateLimiter(rate=0, burst=1).take("x"), RateLimiter(rate=0, burst=1).take("x")  # rate 0: no limit


def test_api_keys(tmp_path):
    f = tmp_path / "keys.txt"
    f.write_text(f"# comment\n\n{KEY}\n{KEY}\n")
    assert load_api_keys(f, env={}) == [KEY]  # duplicates dropped, comments and blanks ignored
    assert load_api_keys(None, env={"LORAKIT_API_KEYS": f"{'x' * 16}, {'y' * 16}"}) == ["x" * 16, "y" * 16]
    with pytest.raises(LorakitError, match="at least one API key"):
        load_api_keys(None, env={})
    f.write_text("short\n")
    with pytest.raises(LorakitError, match=":1: an API key must be"):
        load_api_keys(f, env={})
    keys = ApiKeys([KEY, "z" * 20])
    assert keys.check(f"Bearer {KEY}") == key_id(KEY) and len(key_id(KEY)) == 8 and KEY not in key_id(KEY)
    for header, status in ((None, 401), ("Bearer", 401), (f"Basic {KEY}", 401), ("Bearer " + "q" * 20, 403)):
        with pytest.raises(ServeError) as e:
            keys.check(header)
        assert e.value.status == status, header
    assert ApiKeys([], required=False).check(None) == "anonymous"


def test_sniff_and_decode():
    x = (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32)
    wav = wav_bytes(x)
    assert sniff(wav) == "wav" and sniff(b"fLaC\0\0") == "flac" and sniff(b"OggS") == "ogg"
    assert sniff(b"ID3\x04") == "mp3" and sniff(b"hello world") is None
    y, facts = decode_audio(wav, max_seconds=5)
    assert facts == {"format": "wav", "sample_rate": 16000, "channels": 1, "seconds": 0.5}
    np.testing.assert_allclose(y, x, atol=1 / 32768)  # 16-bit PCM round trip
    y8, facts8 = decode_audio(wav_bytes(np.stack([x, x], 1), 8000), max_seconds=5)  # stereo 8 kHz -> mono 16 kHz
    assert facts8["channels"] == 2 and facts8["sample_rate"] == 8000 and len(y8) == 2 * len(x)
    with pytest.raises(ServeError) as e:
        decode_audio(wav, max_seconds=0.4)
    assert e.value.status == 413 and "0.4 s" in e.value.message


def test_base64_and_multipart():
    assert decode_base64(b64(b"RIFFxxxx")) == b"RIFFxxxx"
    assert decode_base64("data:audio/wav;base64," + b64(b"abc")) == b"abc"
    for bad in ("", "%%%", 42):
        with pytest.raises(ServeError):
            decode_base64(bad)
    body = (b"--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n"
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\nRIFF\x00\x01\r\n--XyZ--\r\n")
    fields, files = parse_multipart(body, "multipart/form-data; boundary=XyZ")
    assert fields == {"model": "whisper-1"} and files == {"file": b"RIFF\x00\x01"}
    with pytest.raises(ServeError) as e:
        parse_multipart(body, "application/json")
    assert e.value.status == 415


def test_subtitle_formats():
    from lorakit_nb.serve.routes_speech import format_transcript

    assert format_transcript("srt", "你好", 3.2, [1], "zh")[0] == "1\n00:00:00,000 --> 00:00:03,200\n你好\n\n"
    assert format_transcript("vtt", "你好", 61.05, [1], "zh")[0] == "WEBVTT\n\n00:00:00.000 --> 00:01:01.050\n你好\n\n"
    assert format_transcript("text", "你好", 1, [], "zh") == ("你好\n", "text/plain; charset=utf-8")


def _form(audio: bytes) -> bytes:
    return (b'--XX\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n--XX\r\nContent-Disposition: '
            b'form-data; name="file"; filename="a.wav"\r\nContent-Type: audio/wav\r\n\r\n' + audio + b"\r\n--XX--\r\n")


def test_cut_upload_is_refused_not_half_transcribed():
    """An upload cut mid-file, and a complete form carrying a cut WAV, are 400 truncated_audio (not 200)."""
    wav = wav_bytes(np.full(32000, 0.1))
    body = _form(wav)
    for form in (body[: len(body) // 2], _form(wav[: len(wav) // 2])):
        _, files = parse_multipart(form, "multipart/form-data; boundary=XX")
        with pytest.raises(ServeError) as e:
            decode_audio(files["file"], 30)
        assert (e.value.status, e.value.code) == (400, "truncated_audio"), e.value
        assert "cut short" in str(e.value) and "\n" not in str(e.value)
    x, facts = decode_audio(parse_multipart(body, "multipart/form-data; boundary=XX")[1]["file"], 30)
    assert x.shape == (32000,) and facts["seconds"] == 2.0


def test_cut_flac_refused_and_streamed_flac_accepted_as_upload():
    """A FLAC upload cut in half is 400 truncated_audio naming both frame counts (was invalid_audio); a FLAC
    whose STREAMINFO declares 0 samples (streamed) is transcribable (was 413: '576460752303423.50 s')."""
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.full(32000, 0.1, np.float32), 16000, format="FLAC")
    flac = buf.getvalue()
    with pytest.raises(ServeError) as e:
        decode_audio(flac[: len(flac) // 2], 30)
    assert (e.value.status, e.value.code) == (400, "truncated_audio")
    assert "header declares 32000 frames" in e.value.message and "decoded" in e.value.message
    streamed = bytearray(flac)
    streamed[21] &= 0xF0
    streamed[22:26] = b"\0\0\0\0"  # STREAMINFO's 36-bit total-samples field = 0: unknown length
    assert sf.info(io.BytesIO(bytes(streamed))).frames > 10**15  # libsndfile reads the unknown length as huge
    x, facts = decode_audio(bytes(streamed), 30)
    assert x.shape == (32000,) and facts["seconds"] == 2.0
