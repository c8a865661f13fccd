"""Tests for lorakit_nb.speech.importers (``lorakit data import``): folder, Common Voice and AISHELL layouts.

Every fixture is written here into tmp_path with soundfile from numpy sine waves, so expected lengths
are computed by hand: a clip of s seconds at any rate becomes round(s * 16000) samples at 16 kHz
(e.g. 1.0 s at 8 kHz = 8000 samples -> 16000; 1.5 s at 44.1 kHz = 66150 samples -> 24000).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lorakit_nb import cli
from lorakit_nb.errors import AudioError, DataError
from lorakit_nb.speech.data import load_manifest, validate_manifest
from lorakit_nb.speech.importers import SKIPPED_FILE, detect_format, import_dataset, join_cjk

HAS_MP3 = "MP3" in sf.available_formats()


def sine(path: Path, seconds: float, sr: int, freq: float = 300.0, channels: int = 1) -> Path:
    t = np.arange(round(seconds * sr)) / sr
    x = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.stack([x] * channels, axis=1) if channels > 1 else x, sr)
    return path


def text(path: Path, s: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(s, encoding="utf-8")
    return path


def clips(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"{split}.jsonl").read_text("utf-8").splitlines()]


def peak_hz(x: np.ndarray, sr: int) -> float:
    """Frequency of the largest FFT bin (bin width sr / len(x))."""
    return float(np.argmax(np.abs(np.fft.rfft(x)))) * sr / len(x)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """a.wav: 1.0 s, 8 kHz mono, 300 Hz; sub/b.flac: 1.5 s, 44.1 kHz stereo, 440 Hz; each with a .txt."""
    src = tmp_path / "mine"
    sine(src / "a.wav", 1.0, 8_000, 300)
    text(src / "a.txt", "你好\n")
    sine(src / "sub" / "b.flac", 1.5, 44_100, 440, channels=2)
    text(src / "sub" / "b.txt", "  谢谢 ")
    return src


def test_folder_import_resamples_to_16k_mono_and_keeps_text_and_length(folder: Path, tmp_path: Path):
    """Both clips come out 16 kHz mono with 16000 and 24000 samples (lengths above), the sine's
    frequency unchanged (FFT bin width 16000 / n = 1 Hz and 0.67 Hz), and the text stripped only."""
    out = tmp_path / "out"
    rep = import_dataset(folder, out)
    assert rep.fmt == "folder" and rep.rows == {"train": 2} and rep.skipped == [] and rep.skipped_path is None
    assert rep.seconds["train"] == pytest.approx(2.5, abs=1e-3)
    rows = clips(out, "train")
    assert [r["text"] for r in rows] == ["你好", "谢谢"]
    assert [r["audio"] for r in rows] == ["audio/train/a.flac", "audio/train/sub/b.flac"]
    for r, n, hz in zip(rows, (16_000, 24_000), (300, 440)):
        x, sr = sf.read(out / r["audio"], always_2d=True)
        assert (sr, x.shape[1]) == (16_000, 1) and abs(x.shape[0] - n) <= 1
        assert peak_hz(x[:, 0], sr) == pytest.approx(hz, abs=1.0)
        assert sf.info(out / r["audio"]).format == "FLAC"
    # the kit's own loader and validator accept the result as is
    assert [r["text"] for r in load_manifest(out / "train.jsonl")] == ["你好", "谢谢"]
    report = validate_manifest(out / "train.jsonl")
    assert {r["sr"] for r in report.rows} == {16_000} and {r["channels"] for r in report.rows} == {1}
    assert report.seconds == pytest.approx(2.5, abs=1e-3)


def test_folder_with_transcripts_tsv_named_split_and_wav_output(tmp_path: Path):
    """transcripts.tsv lines may name a file (a.wav), a stem found anywhere below (b -> deep/b.wav) or
    an absolute path elsewhere (kept under its name); a BOM, CRLF and spaces around the text are dropped."""
    src = tmp_path / "tsv"
    sine(src / "a.wav", 0.5, 22_050)
    sine(src / "deep" / "b.wav", 0.25, 48_000)
    elsewhere = sine(tmp_path / "elsewhere" / "c.wav", 0.25, 16_000)
    text(src / "transcripts.tsv", f"\ufeffa.wav\t 今天开会 \r\nb\t明天放假\r\n{elsewhere}\t后天\r\n")  # BOM, CRLF
    out = tmp_path / "out"
    rep = import_dataset(src, out, split="test", audio_format="wav")
    assert rep.rows == {"test": 3} and rep.seconds["test"] == pytest.approx(1.0, abs=1e-3)
    rows = clips(out, "test")
    assert [(r["audio"], r["text"]) for r in rows] == [("audio/test/a.wav", "今天开会"),
                                                        ("audio/test/deep/b.wav", "明天放假"),
                                                        ("audio/test/c.wav", "后天")]
    assert sf.info(out / rows[1]["audio"]).samplerate == 16_000 and not (out / "train.jsonl").exists()


@pytest.fixture
def commonvoice(tmp_path: Path) -> Path:
    """A Common Voice folder: one clip per split (MP3 where libsndfile writes it), plus validated.tsv."""
    src = tmp_path / "cv-corpus" / "zh-CN"
    ext = "mp3" if HAS_MP3 else "wav"
    header = "client_id\tpath\tsentence_id\tsentence\tup_votes\n"
    for i, (split, sentence) in enumerate([("train", "我们开会吧。"), ("dev", "明天见"), ("test", "谢谢你")]):
        sine(src / "clips" / f"common_voice_zh-CN_{i}.{ext}", 1.0 + i * 0.5, 48_000)
        text(src / f"{split}.tsv", header + f"c{i}\tcommon_voice_zh-CN_{i}.{ext}\ts{i}\t{sentence}\t2\n")
    text(src / "validated.tsv", header + "".join(f"c{i}\tcommon_voice_zh-CN_{i}.{ext}\ts{i}\tx{i}\t2\n"
                                                 for i in range(3)))
    return src


def test_commonvoice_imports_train_dev_test_from_mp3(commonvoice: Path, tmp_path: Path):
    """Auto-detected; train/dev/test.tsv each become a manifest (not validated.tsv, which repeats them);
    durations 1.0/1.5/2.0 s survive MP3 decoding within 50 ms; punctuation is kept as given."""
    assert detect_format(commonvoice) == "commonvoice"
    out = tmp_path / "out"
    rep = import_dataset(commonvoice, out)
    assert rep.fmt == "commonvoice" and rep.rows == {"train": 1, "dev": 1, "test": 1} and not rep.skipped
    for split, secs in (("train", 1.0), ("dev", 1.5), ("test", 2.0)):
        assert rep.seconds[split] == pytest.approx(secs, abs=0.05)
    assert clips(out, "train")[0]["text"] == "我们开会吧。"
    assert clips(out, "test")[0]["audio"] == "audio/test/common_voice_zh-CN_2.flac"
    assert not (out / "validated.jsonl").exists()
    rep = import_dataset(commonvoice, out, split="validated")
    assert rep.rows == {"validated": 3} and [r["text"] for r in clips(out, "validated")] == ["x0", "x1", "x2"]
    with pytest.raises(DataError, match=r"other\.tsv: not found.*'dev', 'test', 'train', 'validated'"):
        import_dataset(commonvoice, out, split="other")


def test_mp3_without_libsndfile_support_names_the_file_and_the_fix(commonvoice, tmp_path, monkeypatch):
    """An old libsndfile (< 1.1) lists no MP3 format: one AudioError before anything is decoded."""
    if not HAS_MP3:
        pytest.skip("libsndfile here cannot write MP3 fixtures")
    monkeypatch.setattr(sf, "available_formats", lambda: {"WAV": "WAV", "FLAC": "FLAC"})
    with pytest.raises(AudioError, match=r"common_voice_zh-CN_0\.mp3: .*cannot read MP3; .*pip install -U soundfile"):
        import_dataset(commonvoice, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_join_cjk():
    """AISHELL separates words by spaces: removed next to Chinese characters, kept between Latin words."""
    assert join_cjk("而 对 楼市 成交 抑制 作用 最 大 的 限 购") == "而对楼市成交抑制作用最大的限购"
    assert join_cjk("我 用 iPhone 手机") == "我用iPhone手机"
    assert join_cjk("hello world  ") == "hello world"
    assert join_cjk("") == ""


def test_aishell_splits_from_wav_folders_and_joins_words(tmp_path: Path):
    """wav/train/S0001/A1.wav and wav/test/S0002/A2.wav give train.jsonl and test.jsonl; A3 has no
    WAV anywhere, so it is reported (split unknown) and not imported."""
    root = tmp_path / "data_aishell"
    sine(root / "wav" / "train" / "S0001" / "A1.wav", 1.0, 16_000)
    sine(root / "wav" / "test" / "S0002" / "A2.wav", 0.5, 16_000)
    transcript = text(root / "transcript" / "aishell_transcript_v0.8.txt",
                      "A1 而 对 楼市 成交\nA2\t我 用 iPhone 手机\nA3 缺 失\n")
    assert detect_format(root) == "aishell" and detect_format(transcript) == "aishell"
    out = tmp_path / "out"
    rep = import_dataset(root, out)
    assert rep.rows == {"train": 1, "test": 1}
    assert clips(out, "train")[0] == {"audio": "audio/train/A1.flac", "text": "而对楼市成交",
                                      "source": str((root / "wav/train/S0001/A1.wav").resolve())}
    assert clips(out, "test")[0]["text"] == "我用iPhone手机"
    assert [(b.file, b.line, b.kind, b.split) for b in rep.skipped] == [(str(transcript), 3, "missing audio", None)]
    rep = import_dataset(transcript, tmp_path / "only_test", split="test")  # the file itself; one split
    assert rep.rows == {"test": 1} and [(b.line, b.split) for b in rep.skipped] == [(3, None)]
    assert not (tmp_path / "only_test" / "train.jsonl").exists()


def test_aishell_still_packed_says_to_extract(tmp_path: Path):
    """AISHELL-1 ships wav/ as one .tar.gz per speaker: the error says to extract them, naming the folder."""
    root = tmp_path / "data_aishell"
    text(root / "transcript" / "aishell_transcript_v0.8.txt", "A1 你 好\n")
    (root / "wav").mkdir()
    (root / "wav" / "S0002.tar.gz").write_bytes(b"")
    with pytest.raises(DataError, match=r"wav: no \.wav files; 1 \.tar\.gz archives are still packed: extract"):
        import_dataset(root, tmp_path / "out")


def test_bad_rows_are_skipped_and_listed(folder: Path, tmp_path: Path):
    """Missing audio, corrupt audio, empty transcript, clips over max_seconds, audio with no transcript
    and a phone's .m4a (not decodable here): each skipped with its own kind; the good row is imported."""
    text(folder / "gone.txt", "没有音频")
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    text(folder / "broken.txt", "坏文件")
    sine(folder / "quiet.wav", 0.5, 16_000)
    text(folder / "quiet.txt", "   \n")
    sine(folder / "long.wav", 1.5, 16_000)
    text(folder / "long.txt", "太长")
    sine(folder / "orphan.wav", 0.5, 16_000)
    (folder / "phone.m4a").write_bytes(b"\x00\x00\x00\x20ftypM4A ")
    text(folder / "phone.txt", "手机录音")
    out = tmp_path / "out"
    rep = import_dataset(folder, out, max_seconds=1.2)  # b.flac (1.5 s) is too long now as well
    kinds = sorted((Path(b.file).name, b.kind) for b in rep.skipped)
    assert kinds == [("b.txt", "too long"), ("broken.txt", "unreadable audio"), ("gone.txt", "missing audio"),
                     ("long.txt", "too long"), ("orphan.wav", "no transcript"), ("phone.txt", "unsupported format"),
                     ("quiet.txt", "empty transcript")]
    assert rep.rows == {"train": 1} and [r["text"] for r in clips(out, "train")] == ["你好"]
    assert all(b.reason and b.fix for b in rep.skipped)
    assert any("broken.wav" in b.reason for b in rep.skipped)  # the audio file is named, not only its .txt
    listed = (out / SKIPPED_FILE).read_text("utf-8").splitlines()
    assert listed[0].split("\t") == ["split", "file", "line", "kind", "reason", "fix"] and len(listed) == 8
    assert "ffmpeg -i phone.m4a -ar 16000 -ac 1 phone.wav" in (out / SKIPPED_FILE).read_text("utf-8")
    summary = rep.summary()
    assert "imported 1 rows" in summary and "skipped 7 (too long: 2," in summary and str(out / SKIPPED_FILE) in summary


def test_tsv_bad_lines_name_the_line(tmp_path: Path):
    """Transcript-file rows are reported as file:line."""
    src = tmp_path / "t"
    sine(src / "a.wav", 0.5, 16_000)
    tsv = text(src / "transcripts.tsv", "a.wav\t好\nnope.wav\t没有\na.wav\t重复\nno tab here\n")
    rep = import_dataset(src, tmp_path / "out")
    assert [(b.line, b.kind) for b in rep.skipped] == [(2, "missing audio"), (3, "duplicate"), (4, "bad line")]
    assert str(rep.skipped[0]).startswith(f"{tsv}:2: no audio file 'nope.wav'")


def test_all_bad_raises_and_leaves_earlier_import_untouched(folder: Path, tmp_path: Path):
    """A split with no usable row raises one DataError listing every row; nothing is written: a fresh
    output folder is not created, and an earlier import into the same folder is left as it was."""
    bad = tmp_path / "bad"
    text(bad / "x.txt", "")
    sine(bad / "x.wav", 0.5, 16_000)
    (bad / "y.wav").write_bytes(b"not audio at all")
    text(bad / "y.txt", "坏")
    with pytest.raises(DataError, match=r"none of the 2 row\(s\) of split 'train'.*\n.*x\.txt: empty transcript"
                                        r".*\n.*y\.wav: cannot decode"):
        import_dataset(bad, tmp_path / "fresh")
    assert not (tmp_path / "fresh").exists()

    out = tmp_path / "out"
    import_dataset(folder, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DataError):
        import_dataset(bad, out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and not [p for p in out.rglob(".*")]  # no temp files or folders left behind


def test_cli_end_to_end(folder: Path, tmp_path: Path, capsys):
    """`lorakit data import` prints the summary and exits 0; a bad source gives exit 1 and one message."""
    out = tmp_path / "out"
    assert cli.main(["data", "import", str(folder), "--out", str(out), "--split", "dev"]) == 0
    printed = capsys.readouterr().out
    assert "imported 2 rows (2.5 s" in printed and str(out / "dev.jsonl") in printed
    assert len(load_manifest(out / "dev.jsonl")) == 2
    assert cli.main(["data", "import", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lorakit data: ") and "nowhere: no such file or folder" in err
    # the installed module runs as a process too (what the `lorakit` console script calls)
    proc = subprocess.run([sys.executable, "-m", "lorakit_nb.cli", "data", "import", str(folder), "--out",
                           str(tmp_path / "p"), "--format", "folder"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train: 2 rows, 2.5 s of audio" in proc.stdout
