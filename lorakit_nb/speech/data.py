"""Speech data: JSONL manifests of ``{"audio": path, "text": transcript}`` rows, checked, and audio
read as 16 kHz mono float32 with soundfile + soxr.

Covers: ``load_manifest`` (parse, resolve relative paths, check keys/text/file), ``read_audio`` (decode,
mix stereo down, resample, refuse clips longer than Whisper's 30 s window), ``validate_manifest``
(decode every row and report counts, sample rates and every bad line), and ``manifest_from_folder``
(build a manifest from a folder of WAV/FLAC/MP3 files plus a transcript TSV).
Does NOT cover: log-mel features (``WhisperFeatureExtractor`` does that), synthesis (``synth.py``),
text normalisation for CER (``metrics.py``). It never uses ``datasets.Audio``: datasets 5 decodes
through torchcodec, whose wheel fails with CPU-only torch.

Using a real corpus instead of the synthetic one: convert it to this manifest format once, then
everything downstream is unchanged.

- Common Voice zh-CN (``clips/*.mp3`` + ``train.tsv``/``dev.tsv``/``test.tsv`` with ``path`` and
  ``sentence`` columns; libsndfile >= 1.1 reads MP3)::

      manifest_from_folder("cv/zh-CN/clips", "cv/zh-CN/test.tsv", "data/cv/test.jsonl",
                           audio_col="path", text_col="sentence")

- AISHELL-1 (``wav/<split>/<speaker>/<id>.wav`` + ``transcript/aishell_transcript_v0.8.txt`` whose
  lines are ``<id> <space-separated words>``): write a two-column TSV first, then::

      lines = open("aishell_transcript_v0.8.txt", encoding="utf-8").read().splitlines()
      Path("aishell.tsv").write_text("".join(
          f"{l.split()[0]}\\t{''.join(l.split()[1:])}\\n" for l in lines if l.strip()), encoding="utf-8")
      manifest_from_folder("data_aishell/wav/test", "aishell.tsv", "data/aishell/test.jsonl")

  Transcript rows whose audio is in another split's folder are reported (``skip_missing=True``
  keeps going and returns them) rather than silently dropped.
"""
from __future__ import annotations

import csv
import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lorakit_nb.errors import AudioError
from lorakit_nb.io import read_utf8
from lorakit_nb.speech.audio import MIN_SR, decode  # noqa: F401  (MIN_SR: re-exported)
from lorakit_nb.speech.window import FULL_WINDOW_SECONDS
from lorakit_nb.speech.window import SAMPLE_RATE as TARGET_SR

MAX_SECONDS = float(FULL_WINDOW_SECONDS)  # longer clips would be cut silently by the feature extractor
AUDIO_EXTS = (".wav", ".flac", ".mp3", ".ogg")


def _parse_rows(path: Path, check_files: bool) -> tuple[list[dict], list[tuple[int, str]], int]:
    """(good rows, [(line, problem)], number of non-blank lines) for one manifest."""
    rows, problems, n = [], [], 0
    for lineno, raw in enumerate(read_utf8(path).splitlines(), 1):  # not UTF-8: names the encoding
        if not raw.strip():
            continue  # a blank line (e.g. the trailing newline) is not a row
        n += 1
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            problems.append((lineno, (f"not valid JSON ({e.msg}); each line must be one object like "
                                      '{"audio": "audio/x.flac", "text": "你好"}')))
            continue
        if not isinstance(row, dict) or "audio" not in row or "text" not in row:
            problems.append((lineno, 'needs both keys "audio" and "text"'))
            continue
        if not isinstance(row["text"], str) or not row["text"].strip():
            problems.append((lineno, 'empty "text"; write the transcript or delete the line'))
            continue
        audio = Path(os.path.expanduser(str(row["audio"])))
        if not audio.is_absolute():
            audio = Path(os.path.abspath(path.parent / audio))  # relative to the manifest's folder
        if check_files and not audio.is_file():
            problems.append((lineno, (f"audio file not found: {audio}; fix the path (relative paths are "
                                      f"relative to {path.parent.resolve()}) or delete the line")))
            continue
        rows.append({**row, "audio": str(audio), "text": row["text"].strip(), "line": lineno})
    return rows, problems, n


def _format_problems(path: Path, problems: list[tuple[int, str]], n_rows: int, limit: int = 10) -> str:
    lines = [f"{path}:{ln}: {msg}" for ln, msg in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"... and {len(problems) - limit} more")
    return f"{path}: {len(problems)} bad row(s) of {n_rows}:\n  " + "\n  ".join(lines)


def load_manifest(path: str | Path, check_files: bool = True) -> list[dict]:
    """Read a JSONL manifest; return rows ``{"audio": absolute path, "text": str, "line": int, ...}``.

    Checks every line (valid JSON, both keys, non-empty text, audio file exists) and raises ONE
    ``AudioError`` listing every bad line as ``manifest:line: problem``. Audio is not decoded here
    (``validate_manifest`` does that). Extra keys in a row are kept.

    Example: data/zh_speech/test.jsonl holding {"audio": "audio/a.flac", "text": "你好"} ->
    [{"audio": "/.../data/zh_speech/audio/a.flac", "text": "你好", "line": 1}]
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: manifest not found; build one with lorakit_nb.speech.synth or "
                         "lorakit_nb.speech.data.manifest_from_folder.")
    rows, problems, n = _parse_rows(path, check_files)
    if problems:
        raise AudioError(_format_problems(path, problems, n)
                         + "\nFix those lines, or validate_manifest(path, on_error='skip') to skip them.")
    if not rows:
        raise AudioError(f"{path}: manifest holds no rows; add lines like "
                         '{"audio": "audio/x.flac", "text": "你好"}')
    return rows


def read_audio(path: str | Path, target_sr: int = TARGET_SR, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """Decode an audio file to float32 mono at ``target_sr``; shape (n_samples,).

    Stereo/multichannel is averaged to mono; any rate from 8 kHz up (8, 22.05, 44.1, 48 kHz ...) is
    resampled with soxr. Raises ``speech.audio.AudioDecodeError`` (an ``AudioError`` with a ``kind``)
    naming the file for a missing, corrupt, truncated, empty or NaN file, a rate below 8 kHz, a clip
    longer than ``max_seconds`` or too large to decode; ``speech.audio.decode`` owns those checks.

    Example: a 2 s stereo 44.1 kHz WAV -> np.ndarray of shape (32000,), dtype float32.
    """
    return decode(path, max_seconds, target_sr)[0]  # speech.audio owns every check


@dataclass
class ManifestReport:
    """What ``validate_manifest`` found: good rows, bad lines, and facts about the audio."""

    path: Path
    n_rows: int  # non-blank lines in the manifest
    rows: list[dict] = field(default_factory=list)  # good rows, each with "seconds", "sr", "channels"
    problems: list[tuple[int, str]] = field(default_factory=list)  # (1-based line, message)

    @property
    def seconds(self) -> float:
        return sum(r["seconds"] for r in self.rows)

    def summary(self) -> str:
        rates = dict(Counter(r["sr"] for r in self.rows))
        chans = dict(Counter(r["channels"] for r in self.rows))
        s = (f"{self.path}: {len(self.rows)} of {self.n_rows} rows OK, {len(self.problems)} bad; "
             f"{self.seconds / 60:.1f} min of audio; sample rates {rates}; channels {chans}")
        if self.problems:
            s += "\n" + _format_problems(self.path, self.problems, self.n_rows)
        return s

    __str__ = summary


def validate_manifest(path: str | Path, on_error: str = "raise", target_sr: int = TARGET_SR,
                      max_seconds: float = MAX_SECONDS) -> ManifestReport:
    """Check every row AND decode its audio; return a ``ManifestReport``.

    ``on_error="raise"``: any bad row raises one ``AudioError`` listing all bad lines.
    ``on_error="skip"``: bad rows are left out of ``report.rows``, listed in ``report.problems``,
    and announced with a warning giving their count and lines (never dropped silently).
    Rows needing resampling or mix-down are fine (``read_audio`` handles them) and are counted in
    the summary's sample rates / channels.

    Example: validate_manifest("data/zh_speech/test.jsonl").summary() ->
    "data/zh_speech/test.jsonl: 40 of 40 rows OK, 0 bad; 2.3 min of audio; sample rates {16000: 40}; ..."
    """
    import soundfile as sf

    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: manifest not found.")
    rows, problems, n = _parse_rows(path, check_files=True)
    report = ManifestReport(path, n)
    for row in rows:
        try:
            x = read_audio(row["audio"], target_sr, max_seconds)  # raises AudioError naming the file
        except AudioError as e:
            problems.append((row["line"], str(e)))
            continue
        info = sf.info(row["audio"])  # original rate and channels, for the summary
        report.rows.append({**row, "seconds": len(x) / target_sr, "sr": info.samplerate,
                            "channels": info.channels})
    report.problems = sorted(problems)
    if report.problems and on_error == "raise":
        raise AudioError(_format_problems(path, report.problems, n)
                         + "\nFix those lines, or pass on_error='skip' to leave them out with a report.")
    if report.problems:
        warnings.warn(f"skipping {len(report.problems)} of {n} rows of {path} (lines "
                      f"{', '.join(str(ln) for ln, _ in report.problems)}); see report.problems",
                      stacklevel=2)
    return report


def audio_index(root: Path, exts=AUDIO_EXTS, skip: Path | None = None) -> dict[str, list[Path]]:
    """File name and stem -> audio files under ``root`` (not under ``skip``, e.g. an output folder).

    The one audio-file index behind ``manifest_from_folder`` and ``speech.importers``.
    Example: audio_index(Path("wavs")) -> {"a.wav": [wavs/x/a.wav], "a": [wavs/x/a.wav], ...}
    """
    index: dict[str, list[Path]] = {}
    for f in sorted(Path(root).rglob("*")):
        if f.suffix.lower() in exts and not (skip and skip in f.resolve().parents):
            for key in {f.name, f.stem}:
                index.setdefault(key, []).append(f)
    return index


def manifest_from_folder(folder: str | Path, transcripts_tsv: str | Path, out_path: str | Path,
                         audio_col: int | str = 0, text_col: int | str = 1,
                         skip_missing: bool = False) -> dict:
    """Write a JSONL manifest for a folder of audio files described by a tab-separated transcript file.

    Each TSV row names an audio file (a path relative to ``folder``, a file name anywhere under it,
    or a name without extension) and its transcript. Columns are picked by index (no header) or by
    name (then the first line is the header, as in Common Voice's ``path``/``sentence``). Audio paths
    in the output are relative to ``out_path``'s folder; the file is written atomically.
    A row whose audio is missing or whose text is empty raises one ``AudioError`` listing every such
    line, unless ``skip_missing=True``, which leaves them out and returns them.

    Example: folder wavs/ with a.wav, b.wav and t.tsv "a.wav\\t你好\\nb\\t谢谢\\n" ->
    out.jsonl with 2 rows; returns {"rows": 2, "skipped": [], "untranscribed": 0}.
    """
    folder, tsv, out_path = Path(folder), Path(transcripts_tsv), Path(out_path)
    if not folder.is_dir():
        raise AudioError(f"{folder}: audio folder not found.")
    if not tsv.is_file():
        raise AudioError(f"{tsv}: transcript file not found.")
    index = audio_index(folder)  # file name and stem -> paths, to find nested files (AISHELL)
    with tsv.open(encoding="utf-8", newline="") as fh:
        table = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    start = 1
    if isinstance(audio_col, str) or isinstance(text_col, str):  # named columns: line 1 is a header
        header, start = table[0] if table else [], 2
        try:
            audio_col, text_col = (header.index(c) if isinstance(c, str) else c for c in (audio_col, text_col))
        except ValueError:
            raise AudioError(f"{tsv}:1: header {header} lacks column {audio_col!r} or {text_col!r}.") from None
    rows, bad, used = [], [], set()
    for lineno, rec in enumerate(table[start - 1:], start):
        if not any(c.strip() for c in rec):
            continue
        if len(rec) <= max(audio_col, text_col):
            bad.append((lineno, f"has {len(rec)} column(s); expected audio<TAB>text"))
            continue
        name, text = rec[audio_col].strip(), rec[text_col].strip()
        hits = [folder / name] if (folder / name).is_file() else index.get(name, [])
        if len(hits) != 1 or not text:
            why = ("empty transcript" if not text else f"no audio file {name!r} under {folder}" if not hits
                   else f"{name!r} matches {len(hits)} files; give the path relative to {folder}")
            bad.append((lineno, why))
            continue
        used.add(hits[0].resolve())
        rows.append({"audio": os.path.relpath(hits[0].resolve(), out_path.parent.resolve()), "text": text})
    if bad and not skip_missing:
        raise AudioError(_format_problems(tsv, bad, len(rows) + len(bad))
                         + "\nFix those lines, or pass skip_missing=True to leave them out.")
    if bad:
        warnings.warn(f"{tsv}: left out {len(bad)} row(s) (lines {', '.join(str(b[0]) for b in bad)})",
                      stacklevel=2)
    from lorakit_nb.io import atomic_file

    with atomic_file(out_path) as f:  # never leave a half-written manifest behind
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    n_audio = len({p.resolve() for ps in index.values() for p in ps})
    return {"rows": len(rows), "skipped": bad, "untranscribed": n_audio - len(used)}
