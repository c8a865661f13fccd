"""Import a learner's own speech data: decode it to 16 kHz mono clips plus the kit's JSONL manifests.

Covers three source layouts, one function each, and ``import_dataset`` that detects the layout:
- ``import_folder``: audio files (WAV/FLAC/MP3/OGG) each with a same-named ``.txt`` transcript, or one
  ``name<TAB>text`` file (``SRC`` itself, or ``transcripts.tsv`` / ``transcripts.txt`` in the folder).
- ``import_commonvoice``: a Common Voice language folder (``train.tsv``/``dev.tsv``/``test.tsv``/
  ``validated.tsv`` with ``path`` and ``sentence`` columns, MP3 clips under ``clips/``).
- ``import_aishell``: an AISHELL-style transcript (``UTTID word word ...`` per line) with the audio
  found as ``**/UTTID.wav`` under a ``wav/`` folder (``wav/train``, ``wav/dev``, ``wav/test`` = splits).
Every clip goes through ``speech.data.read_audio`` (mix-down, soxr resampling, the 30 s limit) and is
written as 16-bit FLAC (or WAV) to ``OUT/audio/<split>/``; the manifest is ``OUT/<split>.jsonl``, so
notebook 03's ``DATA_DIR = OUT`` reads it. A row with missing or unreadable audio, an empty transcript
or a too-long clip is skipped and reported (file, line, reason, fix; all of them in
``OUT/skipped_rows.tsv``); if a split keeps no row at all, one ``DataError`` is raised and nothing is
written. Clip folders and manifests are built in temp paths and renamed into place.
Transcripts are kept as given (whitespace stripped); only AISHELL's spaces between Chinese
characters are removed (``join_cjk``).
Does NOT cover: splitting one folder into train/dev/test (import each split with ``split=``), text
normalisation for scoring (``metrics.py``), cutting long recordings into clips.
"""
from __future__ import annotations

import glob
import json
import os
import re
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lorakit_nb.errors import AudioError, DataError
from lorakit_nb.io import atomic_dir, atomic_file
from lorakit_nb.speech.audio import AudioDecodeError
from lorakit_nb.speech.data import AUDIO_EXTS, MAX_SECONDS, TARGET_SR, read_audio
from lorakit_nb.speech.data import audio_index as _audio_index

FORMATS = ("folder", "commonvoice", "aishell")
CV_SPLITS = ("train", "dev", "test")  # imported when no split is named; validated.tsv only if none exist
SKIPPED_FILE = "skipped_rows.tsv"  # every skipped row of the latest import into a folder
_MISSING_FIX = "put the audio file there or delete the row"


@dataclass
class BadRow:
    """One source row that was not imported. ``line`` is None for a per-file ``.txt`` transcript."""

    file: str
    line: int | None
    kind: str  # short category for the summary: "missing audio", "empty transcript", "too long", ...
    reason: str
    fix: str
    split: str | None = None

    def __str__(self) -> str:
        return f"{self.file}{f':{self.line}' if self.line else ''}: {self.reason}; {self.fix}"


@dataclass
class _Row:
    """One transcript row of a source, before decoding; ``problem`` is (kind, reason, fix) if known bad."""

    file: str
    line: int | None
    audio: Path | None
    text: str
    name: str  # output clip name (no extension) under audio/<split>/
    problem: tuple[str, str, str] | None = None


@dataclass
class ImportReport:
    """What an import wrote (per split: manifest, rows, seconds of audio) and every row it skipped."""

    src: Path
    out_dir: Path
    fmt: str
    manifests: dict[str, Path] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped: list[BadRow] = field(default_factory=list)
    skipped_path: Path | None = None

    def summary(self, limit: int = 10) -> str:
        total, secs = sum(self.rows.values()), sum(self.seconds.values())
        kinds = Counter(b.kind for b in self.skipped)
        out = [f"{self.src} ({self.fmt}) -> {self.out_dir}"]
        out += [f"  {s}: {self.rows[s]} rows, {self.seconds[s]:.1f} s of audio -> {p}" for s, p in self.manifests.items()]
        out.append(f"imported {total} rows ({secs:.1f} s = {secs / 60:.1f} min of 16 kHz mono audio); "
                   f"skipped {len(self.skipped)}" + (" (" + ", ".join(f"{k}: {n}" for k, n in kinds.most_common())
                                                     + ")" if kinds else ""))
        out += [f"  {b}" for b in self.skipped[:limit]]
        if len(self.skipped) > limit:
            out.append(f"  ... and {len(self.skipped) - limit} more")
        if self.skipped_path:
            out.append(f"every skipped row: {self.skipped_path}")
        return "\n".join(out)

    __str__ = summary


def join_cjk(text: str) -> str:
    """Drop the spaces that AISHELL puts between words, except between two non-Chinese words.

    Example: "而 对 楼市 成交" -> "而对楼市成交"; "我 用 iPhone 手机" -> "我用iPhone手机"; "hello world" stays.
    """
    words = text.split()
    out = words[0] if words else ""
    for w in words[1:]:
        out += ("" if _is_cjk(out[-1]) or _is_cjk(w[0]) else " ") + w
    return out


def _is_cjk(c: str) -> bool:  # CJK punctuation, kana, ideographs, full-width forms, extension planes
    return "\u3000" <= c <= "\u9fff" or "\uf900" <= c <= "\ufaff" or "\uff00" <= c <= "\uffef" or c >= "\U00020000"


def _lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, line) for every non-blank line of a UTF-8 text file (a BOM is dropped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8 "
                        f"(e.g. `iconv -f GBK -t UTF-8 {path.name} > fixed.txt`).") from None
    return [(n, ln.rstrip("\r")) for n, ln in enumerate(text.split("\n"), 1) if ln.strip()]


def _missing(name: str, where: Path) -> tuple[str, str, str]:
    return "missing audio", f"no audio file {name!r} under {where}", _MISSING_FIX


def _orphan(txt: Path) -> tuple[str, str, str]:
    """The problem of a .txt with no readable audio next to it (e.g. a phone's .m4a: not decodable here)."""
    other = next((p for p in sorted(txt.parent.glob(glob.escape(txt.stem) + ".*")) if p != txt), None)
    if other is None:
        return _missing(txt.stem + ".*", txt.parent)
    return ("unsupported format", f"{other.name} is not {'/'.join(e[1:].upper() for e in AUDIO_EXTS)}",
            f"convert it: `ffmpeg -i {other.name} -ar 16000 -ac 1 {txt.stem}.wav`")


def _folder_rows(src: Path, split: str | None, skip: Path) -> dict:
    """Rows of a folder of audio + same-named .txt files, or of a ``name<TAB>text`` transcripts file."""
    split = split or "train"
    tsv = src if src.is_file() else next((src / n for n in ("transcripts.tsv", "transcripts.txt")
                                          if (src / n).is_file()), None)
    if tsv is not None:
        base, index, rows = tsv.parent, None, []
        for n, line in _lines(tsv):
            name, tab, text = line.partition("\t")
            name, text = name.strip(), text.strip()
            path = base / name
            if not path.is_file():
                index = _audio_index(base, skip=skip) if index is None else index
                hits = index.get(name, [])
                path = hits[0] if len(hits) == 1 else None
            rel = (path.with_suffix("").relative_to(base).as_posix() if path and path.is_relative_to(base)
                   else Path(name).stem)  # an absolute path or one outside the folder: its name only
            problem = (("bad line", "no TAB between file name and transcript", "write it as name<TAB>text")
                       if not tab else None if path else _missing(name, base))
            rows.append(_Row(str(tsv), n, path, text, rel, problem))
        return {split: rows}
    by_txt: dict[Path, list[Path]] = {}
    for f in sorted({p for ps in _audio_index(src, skip=skip).values() for p in ps}):
        by_txt.setdefault(f.with_suffix(".txt"), []).append(f)
    if not by_txt:
        raise DataError(f"{src}: no audio files ({'/'.join(AUDIO_EXTS)}) here; put each clip next to a "
                        "same-named .txt transcript, or pass a name<TAB>text file.")
    rows = [_Row(str(t), None, None, "", t.stem, _orphan(t))
            for t in sorted(src.rglob("*.txt")) if t not in by_txt and skip not in t.resolve().parents]
    for txt, files in by_txt.items():
        text, problem = "", None
        if not txt.is_file():
            problem = ("no transcript", f"no transcript {txt.name} next to it",
                       "write the text into a same-named .txt file, or move the audio out")
        else:
            try:
                text = " ".join(txt.read_text(encoding="utf-8-sig").split("\n")).strip()
            except UnicodeDecodeError:
                problem = ("not UTF-8", "the transcript is not UTF-8 text", "save it as UTF-8")
        for i, f in enumerate(files):
            dup = ("duplicate", f"{files[0].name} and {f.name} share {txt.name}", "keep one of them") if i else None
            rows.append(_Row(str(f if problem and problem[0] == "no transcript" else txt), None, f, text,
                             f.relative_to(src).with_suffix("").as_posix(), problem or dup))
    return {split: rows}


def _commonvoice_rows(src: Path, split: str | None) -> dict:
    """Rows of a Common Voice folder: one split per ``<split>.tsv``, audio ``clips/<path>``."""
    names = [split] if split else [s for s in CV_SPLITS if (src / f"{s}.tsv").is_file()] or ["validated"]
    out = {}
    for s in names:
        tsv = src / f"{s}.tsv"
        if not tsv.is_file():
            have = sorted(p.stem for p in src.glob("*.tsv"))
            raise DataError(f"{tsv}: not found; this folder holds {have or 'no .tsv files'}. Point at the "
                            "Common Voice language folder (e.g. cv-corpus-17.0/zh-CN) or pick --split from those.")
        lines = _lines(tsv)
        header = lines[0][1].split("\t") if lines else []
        if "path" not in header or "sentence" not in header:
            raise DataError(f"{tsv}:1: header {header} lacks column 'path' or 'sentence'; use a Common Voice "
                            "release .tsv (or --format folder for a name<TAB>text file).")
        ip, it = header.index("path"), header.index("sentence")
        rows = []
        for n, line in lines[1:]:
            cols = line.split("\t")
            name = cols[ip].strip() if len(cols) > ip else ""
            audio = src / "clips" / name
            if not audio.is_file() and not audio.suffix:
                audio = audio.with_name(audio.name + ".mp3")  # early releases list paths without ".mp3"
            found = bool(name) and audio.is_file()
            rows.append(_Row(str(tsv), n, audio if found else None, cols[it].strip() if len(cols) > it else "",
                             Path(name).stem, None if found else _missing(name, src / "clips")))
        out[s] = rows
    return out


def _aishell_rows(src: Path, split: str | None, audio_dir=None) -> dict:
    """Rows of an AISHELL transcript; a row's split is the ``wav/<split>/`` folder its WAV lies in."""
    if src.is_dir():
        found = sorted((src / "transcript").glob("*.txt"))
        if len(found) != 1:
            raise DataError(f"{src}/transcript: expected one transcript .txt, found {len(found)}; pass the file itself.")
        transcript, root = found[0], src / "wav"
    else:
        transcript = src
        root = next((d for d in (src.parent.parent / "wav", src.parent / "wav") if d.is_dir()), src.parent)
    root = Path(audio_dir) if audio_dir else root
    index = _audio_index(root, exts=(".wav",))
    if not index:
        tars = sorted(root.rglob("*.tar.gz"))
        raise DataError(f"{root}: no .wav files" + (
            f"; {len(tars)} .tar.gz archives are still packed: extract them first "
            f"(`cd {root} && for f in *.tar.gz; do tar xzf \"$f\"; done`)" if tars else
            "; the audio must be UTTID.wav files under a wav/ folder next to transcript/"))
    split_dirs = {d.name for d in root.iterdir() if d.is_dir()} & {"train", "dev", "test"}
    if split and split_dirs and split not in split_dirs:
        raise DataError(f"{root}: no {split}/ folder; splits here: {sorted(split_dirs)}.")
    out: dict = {}
    for n, line in _lines(transcript):
        uttid, words = (line.split(maxsplit=1) + [""])[:2]  # "ID word word ..." (a TAB after ID works too)
        hits = index.get(uttid, [])
        where = hits[0].relative_to(root).parts[0] if hits and split_dirs else None
        s = where if where in split_dirs else None if split_dirs else (split or "train")  # None: unknown
        if split and s not in (split, None):
            continue  # another split's row
        problem = (None if len(hits) == 1 else _missing(uttid + ".wav", root) if not hits else
                   ("duplicate", f"{uttid}.wav is in {len(hits)} places under {root}", "keep one copy"))
        out.setdefault(s, []).append(_Row(str(transcript), n, hits[0] if hits else None, join_cjk(words),
                                          uttid, problem))
    return out


def _check_mp3(rows) -> None:
    import soundfile as sf

    mp3 = next((r.audio for r in rows if r.audio and r.audio.suffix.lower() == ".mp3"), None)
    if mp3 is not None and "MP3" not in sf.available_formats():
        raise AudioError(f"{mp3}: this soundfile's libsndfile ({sf.__libsndfile_version__}) cannot read MP3; "
                         "upgrade it with `pip install -U soundfile` (its wheels bundle libsndfile >= 1.1, which "
                         "reads MP3) or convert first: `ffmpeg -i IN.mp3 -ar 16000 -ac 1 OUT.wav`.")


_KINDS = {"too_long": "too long", "corrupt": "unreadable audio", "unsupported_format": "unreadable audio",
          "empty": "empty audio", "rate_too_low": "sample rate too low", "truncated": "truncated audio",
          "too_large": "too large", "not_finite": "NaN samples", "missing": "missing audio"}
# speech.audio.AudioDecodeError.kind -> summary category


def _decode(row: _Row, dst: Path, max_seconds: float) -> float | tuple[str, str, str]:
    """Write ``row``'s audio as a 16 kHz mono clip at ``dst``; its seconds, or (kind, reason, fix)."""
    import soundfile as sf

    try:
        x = read_audio(row.audio, TARGET_SR, max_seconds)  # (n_samples,) float32, 16 kHz mono
    except AudioDecodeError as e:  # one kind per refusal, owned by speech.audio.decode
        kind = _KINDS.get(e.kind, "unusable audio")
        return kind, (e.reason if row.file == str(row.audio) else f"{row.audio.name}: {e.reason}"), e.fix
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dst), np.clip(x, -1.0, 1.0), TARGET_SR, subtype="PCM_16")  # resampling may overshoot 1.0
    return len(x) / TARGET_SR


def _import_split(split: str, rows: list[_Row], tmp: Path, audio_format: str, max_seconds: float):
    """Decode one split's rows into ``tmp``: (manifest rows, seconds of audio, [BadRow])."""
    good, bad, secs, seen, used = [], [], 0.0, {}, set()
    for r in rows:
        key = r.audio.resolve() if r.audio else None
        problem = r.problem or (
            ("empty transcript", "empty transcript", "write the transcript or delete the row") if not r.text else
            ("duplicate", f"same audio as {seen[key]}", "delete one of the two rows") if key in seen else None)
        name = r.name if ".." not in Path(r.name).parts and not Path(r.name).is_absolute() else Path(r.name).name
        while name in used:  # a.wav and a.mp3 both become a.flac otherwise
            name += "_2"
        got = problem or _decode(r, tmp / f"{name}.{audio_format}", max_seconds)
        if not isinstance(got, float):
            bad.append(BadRow(r.file, r.line, *got, split=split))
            continue
        used.add(name)
        seen[key] = f"{r.file}:{r.line}" if r.line else r.file
        secs += got
        good.append({"audio": f"audio/{split}/{name}.{audio_format}", "text": r.text,
                     "source": str(r.audio.resolve())})
    return good, secs, bad


def _write(src: Path, out_dir: Path, fmt: str, parsed: dict, audio_format: str, max_seconds: float) -> ImportReport:
    """Decode every split into temp paths; only if each split kept a row, rename them all into place.

    Per split the clip folder is swapped in first, then its manifest (``atomic_dir``, ``atomic_file``).
    """
    if audio_format not in ("flac", "wav"):
        raise DataError(f"audio_format must be 'flac' or 'wav', not {audio_format!r}")
    _check_mp3(r for rows in parsed.values() for r in rows)
    report = ImportReport(src, out_dir, fmt)
    created = [d for d in (out_dir, out_dir / "audio") if not d.exists()]
    try:
        with ExitStack() as stack:  # leaving it renames everything; an exception inside discards everything
            for split, rows in parsed.items():
                if split is None:  # AISHELL rows whose audio is in no split folder: reported only
                    report.skipped += [BadRow(r.file, r.line, *r.problem) for r in rows]
                    continue
                manifest = out_dir / f"{split}.jsonl"
                fh = stack.enter_context(atomic_file(manifest))
                tmp = stack.enter_context(atomic_dir(out_dir / "audio" / split))
                good, secs, bad = _import_split(split, rows, tmp, audio_format, max_seconds)
                report.skipped += bad
                if not good:
                    raise DataError(f"{src}: none of the {len(rows)} row(s) of split {split!r} could be imported; "
                                    "nothing was written:\n  " + "\n  ".join(str(b) for b in bad[:10])
                                    + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""))
                fh.writelines(json.dumps(g, ensure_ascii=False) + "\n" for g in good)
                report.manifests[split], report.rows[split], report.seconds[split] = manifest, len(good), secs
            skipped = out_dir / SKIPPED_FILE
            if report.skipped:
                f = stack.enter_context(atomic_file(skipped))
                f.write("split\tfile\tline\tkind\treason\tfix\n")
                f.writelines(f"{b.split or ''}\t{b.file}\t{b.line or ''}\t{b.kind}\t{b.reason}\t{b.fix}\n"
                             for b in report.skipped)
                report.skipped_path = skipped
            else:
                skipped.unlink(missing_ok=True)  # an older import's list would describe other rows
    except BaseException:
        for d in reversed(created):  # folders this call made, empty again once the temps are gone
            if d.is_dir() and not any(d.iterdir()):
                os.rmdir(d)
        raise
    return report


def _prepare(src, out_dir, split) -> tuple[Path, Path]:
    src, out_dir = Path(src).expanduser(), Path(out_dir).expanduser()
    if not src.exists():
        raise DataError(f"{src}: no such file or folder; give the folder (or transcript file) to import.")
    if split is not None and not re.fullmatch(r"[\w.-]+", split):
        raise DataError(f"split {split!r} must be a plain name such as train, dev or test")
    return src, out_dir


def import_folder(src, out_dir, split=None, audio_format="flac", max_seconds=MAX_SECONDS) -> ImportReport:
    """Folder of clips + same-named .txt (or one ``name<TAB>text`` file) -> ``out_dir/<split>.jsonl``.

    Example: my_wavs/{a.wav, a.txt "你好"} -> out/train.jsonl {"audio": "audio/train/a.flac", "text": "你好", ...}
    """
    src, out_dir = _prepare(src, out_dir, split)
    return _write(src, out_dir, "folder", _folder_rows(src, split, out_dir.resolve()), audio_format, max_seconds)


def import_commonvoice(src, out_dir, split=None, audio_format="flac", max_seconds=MAX_SECONDS) -> ImportReport:
    """Common Voice folder -> ``out_dir/{train,dev,test}.jsonl`` (or just ``split``, e.g. "validated").

    Example: cv/zh-CN/test.tsv row "... common_voice_zh-CN_1.mp3  你好 ..." -> out/test.jsonl
    {"audio": "audio/test/common_voice_zh-CN_1.flac", "text": "你好", ...}
    """
    src, out_dir = _prepare(src, out_dir, split)
    return _write(src, out_dir, "commonvoice", _commonvoice_rows(src, split), audio_format, max_seconds)


def import_aishell(src, out_dir, split=None, audio_dir=None, audio_format="flac",
                   max_seconds=MAX_SECONDS) -> ImportReport:
    """AISHELL folder (``transcript/*.txt`` + ``wav/``) or transcript file -> one manifest per split.

    Example: "BAC009S0002W0122 而 对 楼市" + wav/train/S0002/BAC009S0002W0122.wav -> out/train.jsonl
    {"audio": "audio/train/BAC009S0002W0122.flac", "text": "而对楼市", ...}
    """
    src, out_dir = _prepare(src, out_dir, split)
    return _write(src, out_dir, "aishell", _aishell_rows(src, split, audio_dir), audio_format, max_seconds)


def detect_format(src) -> str:
    """"commonvoice" (clips/ + a split .tsv), "aishell" (transcript/ + wav/, or a file without TABs), else "folder"."""
    src = Path(src)
    if src.is_file():
        first = next((ln for _, ln in _lines(src)), "")
        return "folder" if "\t" in first else "aishell"
    if (src / "clips").is_dir() and any((src / f"{s}.tsv").is_file() for s in (*CV_SPLITS, "validated")):
        return "commonvoice"
    if (src / "transcript").is_dir() and (src / "wav").is_dir():
        return "aishell"
    return "folder"


def import_dataset(src, out_dir, fmt: str = "auto", split: str | None = None, audio_format: str = "flac",
                   max_seconds: float = MAX_SECONDS) -> ImportReport:
    """Import ``src`` (layout ``fmt``, or detected with ``detect_format``) into ``out_dir``; see the module doc.

    Example: print(import_dataset("cv-corpus-17.0/zh-CN", "data/cv")) -> per-split rows and seconds,
    the skipped rows with reasons; then notebook 03 with DATA_DIR = "../data/cv" (from notebooks/).
    """
    if fmt not in ("auto", *FORMATS):
        raise DataError(f"unknown format {fmt!r}; use one of auto, {', '.join(FORMATS)}")
    src, _ = _prepare(src, out_dir, split)
    fmt = detect_format(src) if fmt == "auto" else fmt
    importer = {"folder": import_folder, "commonvoice": import_commonvoice, "aishell": import_aishell}[fmt]
    return importer(src, out_dir, split=split, audio_format=audio_format, max_seconds=max_seconds)
