"""Tests for lorakit_nb.speech.data (manifests, audio reading) and the pure parts of lorakit_nb.speech.synth.

Test audio is written with soundfile from numpy sine waves, so every expected length and
frequency is computed by hand in the docstrings. None of these tests need espeak-ng.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lorakit_nb.errors import AudioError, LorakitError
from lorakit_nb.speech import synth
from lorakit_nb.speech.data import (
    load_manifest,
    manifest_from_folder,
    read_audio,
    validate_manifest,
)
from lorakit_nb.speech.synth import clip_params, read_sentences, split_of, trim_silence

DATA = Path(__file__).resolve().parents[2] / "data" / "zh_speech"
SPLITS = ("train", "dev", "test")


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, sr: int) -> float:
    """Frequency of the largest FFT bin (bin width sr / len(x))."""
    return float(np.argmax(np.abs(np.fft.rfft(x)))) * sr / len(x)


def write_manifest(path: Path, lines: list) -> Path:
    """Each item is a dict (dumped as JSON) or a raw string (written as is)."""
    path.write_text("".join((json.dumps(x, ensure_ascii=False) if isinstance(x, dict) else x) + "\n"
                            for x in lines), encoding="utf-8")
    return path


@pytest.fixture
def wav16k(tmp_path: Path) -> Path:
    p = tmp_path / "ok.wav"
    sf.write(p, sine(440, 1.0, 16_000), 16_000)
    return p


# ---------------------------------------------------------------- the committed corpus

def test_committed_manifests_validate_and_split_by_sentence():
    """Every committed row decodes as 16 kHz mono, <= 30 s; no sentence is in two splits; each split's
    membership is the one synth.split_of gives (so regenerating cannot leak test sentences into train)."""
    texts = {}
    for split in SPLITS:
        report = validate_manifest(DATA / f"{split}.jsonl")  # raises on any bad row
        assert report.n_rows == len(report.rows) > 0 and report.problems == []
        assert {r["sr"] for r in report.rows} == {16_000} and {r["channels"] for r in report.rows} == {1}
        assert all(0.5 < r["seconds"] <= 30 for r in report.rows)
        texts[split] = {r["text"] for r in report.rows}
        assert all(split_of(t) == split for t in texts[split])
    assert not (texts["train"] & texts["dev"] or texts["train"] & texts["test"] or texts["dev"] & texts["test"])
    sentences = read_sentences(DATA / "sentences.txt")
    assert len(sentences) >= 420 and set(sentences) == texts["train"] | texts["dev"] | texts["test"]
    assert len(texts["test"]) >= 30 and len(texts["dev"]) >= 30
    assert all(4 <= len(s) <= 20 for s in sentences)


def test_manifest_paths_resolve_against_manifest_folder(tmp_path, wav16k, monkeypatch):
    """"ok.wav" in tmp/m.jsonl means tmp/ok.wav whatever the working directory is."""
    m = write_manifest(tmp_path / "m.jsonl", [{"audio": "ok.wav", "text": "你好"}, ""])  # blank line ignored
    monkeypatch.chdir(tmp_path.parent)
    rows = load_manifest(m)
    assert rows == [{"audio": str(wav16k), "text": "你好", "line": 1}]


# ---------------------------------------------------------------- bad manifest rows

def test_load_manifest_names_every_bad_line(tmp_path, wav16k):
    """Line 2: missing file, line 3: bad JSON, line 4: empty text, line 5: no "text" key.
    One error lists all four as manifest:line, so the learner fixes them in one pass."""
    m = write_manifest(tmp_path / "m.jsonl", [
        {"audio": "ok.wav", "text": "你好"},
        {"audio": "nope.wav", "text": "再见"},
        '{"audio": "ok.wav", "text": "坏',
        {"audio": "ok.wav", "text": "   "},
        {"audio": "ok.wav"},
    ])
    with pytest.raises(AudioError) as ei:
        load_manifest(m)
    msg = str(ei.value)
    assert "4 bad row(s) of 5" in msg
    assert f"{m}:2: audio file not found" in msg and "nope.wav" in msg
    assert f"{m}:3: not valid JSON" in msg
    assert f"{m}:4: empty \"text\"" in msg
    assert f"{m}:5: needs both keys" in msg
    assert f"{m}:1:" not in msg
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, LorakitError)


def test_corrupt_audio_is_reported_with_line(tmp_path, wav16k):
    """A file of random bytes with a .wav name exists (load_manifest accepts it) but cannot be decoded:
    read_audio names the file, validate_manifest names the manifest and line 2."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF" + bytes(range(256)) * 4)
    with pytest.raises(AudioError, match=re.escape(str(bad)) + ".*cannot decode"):
        read_audio(bad)
    m = write_manifest(tmp_path / "m.jsonl", [{"audio": "ok.wav", "text": "你好"},
                                               {"audio": "bad.wav", "text": "坏了"}])
    assert len(load_manifest(m)) == 2
    with pytest.raises(AudioError, match=re.escape(f"{m}:2: {bad}: cannot decode")):
        validate_manifest(m)


def test_clip_longer_than_30s_is_rejected(tmp_path):
    """31 s > Whisper's 30 s window: refused (by header, before decoding) with the duration in the message."""
    long = tmp_path / "long.wav"
    sf.write(long, sine(300, 31.0, 8_000), 8_000)
    with pytest.raises(AudioError, match=r"31\.0 s, longer than 30 s"):
        read_audio(long)
    m = write_manifest(tmp_path / "m.jsonl", [{"audio": "long.wav", "text": "很长"}])
    with pytest.raises(AudioError, match=re.escape(f"{m}:1:")):
        validate_manifest(m)


def test_skip_reports_count_and_lines(tmp_path, wav16k):
    """on_error='skip' keeps the 2 good rows of 4, lists lines 2 and 4, and warns: never a silent drop."""
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    m = write_manifest(tmp_path / "m.jsonl", [
        {"audio": "ok.wav", "text": "一"}, {"audio": "gone.wav", "text": "二"},
        {"audio": "ok.wav", "text": "三"}, {"audio": "bad.wav", "text": "四"}])
    with pytest.warns(UserWarning, match=r"skipping 2 of 4 rows .*lines 2, 4"):
        report = validate_manifest(m, on_error="skip")
    assert [r["text"] for r in report.rows] == ["一", "三"]
    assert [ln for ln, _ in report.problems] == [2, 4]
    assert "2 of 4 rows OK, 2 bad" in report.summary()
    assert report.seconds == pytest.approx(2.0)  # two 1 s clips


# ---------------------------------------------------------------- resampling and mix-down

def test_stereo_44k1_is_mixed_down_and_resampled(tmp_path):
    """2 s stereo at 44.1 kHz: left 0.5*sin(440 Hz), right 0.1*sin(440 Hz).
    Mono = mean = 0.3*sin -> RMS 0.3/sqrt(2) = 0.2121; length 2 s * 16000 = 32000 samples; still 440 Hz."""
    left, right = sine(440, 2.0, 44_100, 0.5), sine(440, 2.0, 44_100, 0.1)
    p = tmp_path / "stereo.wav"
    sf.write(p, np.stack([left, right], axis=1), 44_100)  # (88200, 2)
    x = read_audio(p)
    assert x.dtype == np.float32 and x.shape == (32_000,)
    mid = x[1000:-1000]  # avoid the resampler's edge transients
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.01)
    assert peak_hz(x, 16_000) == pytest.approx(440, abs=0.5)  # bin width 16000/32000 = 0.5 Hz


@pytest.mark.parametrize("sr", [8_000, 22_050, 48_000])
def test_other_rates_are_resampled_to_16k(tmp_path, sr):
    """1.5 s at 8 / 22.05 / 48 kHz -> 1.5 * 16000 = 24000 samples; a 1000 Hz tone stays at 1000 Hz
    (below 8 kHz's 4 kHz Nyquist limit, so even the upsampled 8 kHz clip carries it)."""
    p = tmp_path / f"t{sr}.wav"
    sf.write(p, sine(1000, 1.5, sr), sr)
    x = read_audio(p)
    assert x.shape == (24_000,)
    assert peak_hz(x, 16_000) == pytest.approx(1000, abs=1)
    m = write_manifest(tmp_path / "m.jsonl", [{"audio": p.name, "text": "采样率"}])
    assert validate_manifest(m).rows[0]["sr"] == sr


def test_rate_below_8k_is_rejected(tmp_path):
    """4 kHz audio only holds content up to 2 kHz: upsampling cannot restore speech, so refuse it."""
    p = tmp_path / "low.wav"
    sf.write(p, sine(300, 1.0, 4_000), 4_000)
    with pytest.raises(AudioError, match="4000 Hz is below 8000 Hz"):
        read_audio(p)


# ---------------------------------------------------------------- manifest_from_folder

def test_manifest_from_folder(tmp_path):
    """a.wav by name, sub/b.wav by stem 'b' (nested, as in AISHELL); c.wav has no transcript (counted).
    The manifest in out/ refers to ../wavs/..., and load_manifest resolves it back to the real files."""
    wavs = tmp_path / "wavs"
    (wavs / "sub").mkdir(parents=True)
    for p in (wavs / "a.wav", wavs / "sub" / "b.wav", wavs / "c.wav"):
        sf.write(p, sine(440, 0.5, 16_000), 16_000)
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a.wav\t你好\nb\t谢谢\n", encoding="utf-8")
    out = tmp_path / "out" / "m.jsonl"
    assert manifest_from_folder(wavs, tsv, out) == {"rows": 2, "skipped": [], "untranscribed": 1}
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[1]) == {"audio": "../wavs/sub/b.wav",
                                                                            "text": "谢谢"}
    rows = load_manifest(out)
    assert [Path(r["audio"]).resolve() for r in rows] == [(wavs / "a.wav").resolve(),
                                                          (wavs / "sub" / "b.wav").resolve()]


def test_manifest_from_folder_missing_audio_and_named_columns(tmp_path):
    """Common Voice style header (client_id, path, sentence). Line 3 names a missing clip: an error
    naming t.tsv:3 by default; with skip_missing=True it is left out, warned about and returned."""
    wavs = tmp_path / "clips"
    wavs.mkdir()
    sf.write(wavs / "x1.wav", sine(440, 0.5, 16_000), 16_000)
    tsv = tmp_path / "t.tsv"
    tsv.write_text("client_id\tpath\tsentence\nu1\tx1.wav\t早上好\nu2\tx2.wav\t晚上好\n", encoding="utf-8")
    out = tmp_path / "m.jsonl"
    kw = {"audio_col": "path", "text_col": "sentence"}
    with pytest.raises(AudioError, match=re.escape(f"{tsv}:3: no audio file 'x2.wav'")):
        manifest_from_folder(wavs, tsv, out, **kw)
    assert not out.exists()  # nothing half-written
    with pytest.warns(UserWarning, match="left out 1 row"):
        res = manifest_from_folder(wavs, tsv, out, skip_missing=True, **kw)
    assert res["rows"] == 1 and [ln for ln, _ in res["skipped"]] == [3]
    assert load_manifest(out)[0]["text"] == "早上好"


# ---------------------------------------------------------------- synth helpers (no espeak-ng needed)

def test_read_sentences_refuses_digits_and_duplicates(tmp_path):
    """'3' is ambiguous as a reference (三 / 3), so line 2 is refused; a repeated sentence names both lines."""
    p = tmp_path / "s.txt"
    p.write_text("今天很好\n我有3个苹果\n", encoding="utf-8")
    with pytest.raises(LorakitError, match=re.escape(f"{p}:2:") + ".*三点半"):
        read_sentences(p)
    p.write_text("# comment\n今天很好\n\n今天很好\n", encoding="utf-8")
    with pytest.raises(LorakitError, match=re.escape(f"{p}:4: duplicate of line 2")):
        read_sentences(p)


def test_split_and_clip_params_depend_on_text_only():
    """Same sentence -> same split and same speed/pitch, whatever else is in the corpus; ranges hold."""
    s = "今天下午三点半开项目进度会"
    assert split_of(s) == split_of(s) and split_of(s, 0, 1) == "test" and split_of(s, 0, 0) == "train"
    assert clip_params(s, 0) == clip_params(s, 0) != clip_params(s, 0, seed=1)
    for k in range(20):
        p = clip_params(s, k)
        assert 135 <= p["speed"] <= 195 and 25 <= p["pitch"] <= 75


def test_trim_silence_keeps_padding():
    """1 s silence + 1 s tone + 1 s silence at 16 kHz, 0.15 s padding kept each side -> about 1.3 s."""
    x = np.concatenate([np.zeros(16_000), sine(440, 1.0, 16_000), np.zeros(16_000)])
    y = trim_silence(x, 16_000)
    assert abs(len(y) - int(1.3 * 16_000)) < 10  # the sine's first/last samples sit near zero


def test_missing_espeak_says_how_to_install(monkeypatch, tmp_path, capsys):
    """Without espeak-ng on PATH the command exits with status 2 and tells the user what to install."""
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(LorakitError, match="apt-get install espeak-ng"):
        synth.require_espeak()
    assert synth.main(["--sentences", str(DATA / "sentences.txt"), "--out", str(tmp_path)]) == 2
    assert "apt-get install espeak-ng" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(synth.shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_build_corpus_end_to_end(tmp_path):
    """3 sentences, all in train (fractions 0), 2 clips each -> 6 FLAC files at 16 kHz mono that the
    manifest loader accepts; a second run gives byte-identical files (seeded) and prunes a stale file."""
    s = tmp_path / "s.txt"
    s.write_text("今天天气很好\n请把会议纪要发给我\n一杯咖啡二十五块\n", encoding="utf-8")
    out = tmp_path / "corpus"
    stats = synth.build_corpus(s, out, train_clips=2, dev_fraction=0, test_fraction=0, verbose=False)
    assert stats["train"]["sentences"] == 3 and stats["train"]["clips"] == 6
    report = validate_manifest(out / "train.jsonl")
    assert len(report.rows) == 6 and {r["sr"] for r in report.rows} == {16_000}
    assert (out / "test.jsonl").read_text() == ""
    first = {f.name: f.read_bytes() for f in (out / "audio").iterdir()}
    (out / "audio" / "stale.flac").write_bytes(b"old")
    assert synth.build_corpus(s, out, train_clips=2, dev_fraction=0, test_fraction=0, verbose=False)["pruned"] == 1
    assert {f.name: f.read_bytes() for f in (out / "audio").iterdir()} == first


def test_respell_only_changes_known_polyphones():
    """银行 -> 银航 and 跨行 -> 跨航 (háng), 董事长 -> 董事掌 (zhǎng, not cháng);
    a sentence without listed words is unchanged."""
    assert synth.respell("这张银行卡可以跨行取款吗") == "这张银航卡可以跨航取款吗"
    assert synth.respell("董事长在年会上发表了讲话") == "董事掌在年会上发表了讲话"
    assert synth.respell("今天天气很好") == "今天天气很好"
