"""speech.audio.decode: one decoder and one error kind for files and uploaded bytes (tiny synthetic clips)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from lorakit_nb.speech.audio import AudioDecodeError, declared_frames, decode
from lorakit_nb.speech.data import read_audio
from lorakit_nb.speech.importers import import_folder


def clip_bytes(fmt: str, seconds: float = 2.0, sr: int = 16_000, channels: int = 1, subtype="PCM_16") -> bytes:
    t = np.arange(int(seconds * sr)) / sr
    x = np.repeat((0.3 * np.sin(2 * np.pi * 220 * t))[:, None], channels, axis=1)  # (n, channels)
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["WAV", "FLAC"])
def test_truncated_file_is_refused_by_read_audio_and_import(tmp_path, fmt):
    """A file cut in half is 'truncated', not a shorter clip stored with the whole sentence as its label."""
    data = clip_bytes(fmt)
    src = tmp_path / "src"
    src.mkdir()
    (src / f"cut.{fmt.lower()}").write_bytes(data[: len(data) // 2])
    (src / "cut.txt").write_text("你好世界", encoding="utf-8")
    (src / f"ok.{fmt.lower()}").write_bytes(data)
    (src / "ok.txt").write_text("你好", encoding="utf-8")
    with pytest.raises(AudioDecodeError, match="cut.*cut short") as e:
        read_audio(src / f"cut.{fmt.lower()}")
    assert e.value.kind == "truncated"
    report = import_folder(src, tmp_path / "out", split="train")
    assert [(b.kind, b.file.rsplit("/", 1)[-1]) for b in report.skipped] == [("truncated audio", "cut.txt")]
    assert read_audio(src / f"ok.{fmt.lower()}").shape == (32000,)


def test_decoded_size_is_capped_before_decoding():
    """192 kHz x 8 channels x 4 s = 6.1 M values: under 30 s, yet refused by size (the cap is 96 kHz stereo)."""
    data = clip_bytes("FLAC", seconds=4.0, sr=192_000, channels=8)
    with pytest.raises(AudioDecodeError, match="decodes to 25 MB") as e:
        decode(data)
    assert e.value.kind == "too_large"


def test_streamed_flac_with_unknown_length_is_decoded_and_checked():
    """A FLAC whose STREAMINFO says 0 samples (streamed) is decoded; the length limit uses the real samples."""
    data = bytearray(clip_bytes("FLAC", seconds=2.0))
    assert declared_frames(bytes(data)) == 32000
    data[21] &= 0xF0
    data[22:26] = b"\0\0\0\0"  # 36-bit total-samples field = 0: unknown
    assert declared_frames(bytes(data)) is None
    x, facts = decode(bytes(data))
    assert x.shape == (32000,) and facts["seconds"] == 2.0
    with pytest.raises(AudioDecodeError) as e:
        decode(bytes(data), max_seconds=1.0)
    assert e.value.kind == "too_long"


def test_nan_samples_are_refused_offline(tmp_path):
    x = np.zeros(16000, np.float32)
    x[100] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioDecodeError, match="nan.wav: audio holds NaN") as e:
        read_audio(path)
    assert e.value.kind == "not_finite"


def test_every_refusal_carries_a_kind(tmp_path):
    cases = {"missing": tmp_path / "nope.wav", "empty": b"", "unsupported_format": b"hello world, not audio",
             "rate_too_low": clip_bytes("WAV", sr=4000), "too_long": clip_bytes("WAV", seconds=31.0, sr=8000)}
    for kind, source in cases.items():
        with pytest.raises(AudioDecodeError) as e:
            decode(source)
        assert e.value.kind == kind, (kind, str(e.value))


def test_silence_gate_fires_on_silence_and_faint_noise_only():
    """Digital silence and -50 dBFS noise are silent; a -30 dBFS tone (quieter than any committed clip) is not."""
    from lorakit_nb.speech.audio import is_silent

    rng = np.random.default_rng(0)
    assert is_silent(np.zeros(48000, np.float32)) and is_silent(np.zeros(0, np.float32))
    assert is_silent(rng.normal(0, 10 ** (-50 / 20), 48000).astype(np.float32))
    tone = np.sin(2 * np.pi * 220 * np.arange(16000) / 16000) * 10 ** (-30 / 20) * np.sqrt(2)  # RMS -30 dBFS
    assert not is_silent(tone.astype(np.float32))


def test_silence_gate_never_fires_on_committed_clips():
    """Every committed zh_speech clip (train/dev/test) passes the gate."""
    from pathlib import Path

    from lorakit_nb.speech.audio import is_silent
    from lorakit_nb.speech.data import load_manifest

    root = Path(__file__).resolve().parents[2] / "data" / "zh_speech"
    rows = [r for s in ("train", "dev", "test") for r in load_manifest(root / f"{s}.jsonl")]
    assert rows
    assert [r["audio"] for r in rows if is_silent(read_audio(r["audio"]))] == []
