"""Synthesize the small Mandarin speech corpus in ``data/zh_speech`` with espeak-ng.

Covers: reading a sentence list, a stable train/dev/test split BY SENTENCE, one or more clips per
sentence with seeded random speed and pitch, 16 kHz mono FLAC files and JSONL manifests in the kit's
format ``{"audio": "audio/xxx.flac", "text": "..."}`` (paths relative to the manifest's folder).
Does NOT cover: reading or validating manifests for training (``lorakit_nb.speech.data`` does that), real
recordings, or any voice but espeak-ng's Mandarin.

Run it (needs the Debian/Ubuntu package ``espeak-ng``: ``sudo apt-get install espeak-ng``)::

    python -m lorakit_nb.speech.synth --sentences data/zh_speech/sentences.txt --out data/zh_speech

Why ``cmn-latn-pinyin``: espeak-ng 1.51 (Debian bookworm) has two Mandarin voices. ``cmn`` reads its
internal pinyin tone digits as English numbers ("jin one tian one"); ``cmn-latn-pinyin`` reads the
Chinese characters as Mandarin syllables with tones.

Why the split hashes each sentence: a sentence's split depends on its text only, so appending new
sentences to ``sentences.txt`` never moves an old sentence between train and test.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from lorakit_nb.errors import LorakitError
from lorakit_nb.io import atomic_file
from lorakit_nb.speech.window import SAMPLE_RATE as TARGET_SR


def write_bytes_atomic(path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)

VOICE = "cmn-latn-pinyin"
SPEED_RANGE = (135, 195)  # espeak-ng words per minute; its default is 175
PITCH_RANGE = (25, 75)  # espeak-ng pitch 0..99; its default is 50
SPLITS = ("train", "dev", "test")
# Characters a sentence may hold: CJK ideographs plus Chinese punctuation. ASCII digits and Latin
# letters are refused because the reference text would be ambiguous ("3" vs "三").
_ALLOWED = re.compile(r"[\u4e00-\u9fff，。？！、；：“”‘’《》…]+")

# espeak-ng gives most characters ONE reading; only words in its small dictionary get another. So
# it misreads polyphones: 银行 as yin-XING, 队长 as dui-CHANG, 睡觉 as shui-JUE, 重新 as ZHONG-xin.
# For synthesis only, such words are respelled with a homophone it reads right (checked with
# `espeak-ng -v cmn-latn-pinyin -x -q WORD`); the manifest keeps the real text. Extend it when you
# add sentences: compare `-x` output with the pinyin you expect.
RESPELL = {
    "重新": "虫新", "重启": "虫启", "更新": "耕新", "变更": "变耕", "更换": "耕换",
    "应用": "映用", "供应": "供映", "反应": "反映", "要求": "腰求", "系好": "记好", "济南": "挤南",
    "睡觉": "睡叫", "队长": "队掌", "董事长": "董事掌", "家长": "家掌", "增长": "增掌", "校长": "校掌",
    "长大": "涨大", "空调": "空条", "调理": "条理", "下调": "下条", "行业": "航业", "银行": "银航",
    "跨行": "跨航", "干了": "赣了", "彩虹": "彩红", "咳嗽": "壳嗽", "油炸": "油闸", "弹钢琴": "谈钢琴",
    "弹性": "谈性", "划算": "华算", "暑假": "暑架", "年假": "年架", "请假": "请架", "出差": "出拆",
    "西藏": "西葬", "业绩": "业计", "音乐": "音月", "量一下": "粮一下", "空腹": "控腹", "种的": "众的",
    "种菜": "众菜", "便宜": "骈宜", "首都": "首嘟", "还钱": "环钱", "头发": "头珐",
}
_RESPELL_RE = re.compile("|".join(sorted(map(re.escape, RESPELL), key=len, reverse=True)))


def respell(text: str) -> str:
    """The text espeak-ng is given: polyphones replaced by homophones it reads correctly.

    Example: respell("这张银行卡可以跨行取款吗") -> "这张银航卡可以跨航取款吗" (háng, not xíng).
    """
    return _RESPELL_RE.sub(lambda m: RESPELL[m.group(0)], text)


def read_sentences(path: str | Path) -> list[str]:
    """Read one sentence per line; skip blank lines and ``#`` comments; refuse bad lines.

    Example: a file "你好世界\\n\\n# note\\n谢谢你的帮助\\n" -> ["你好世界", "谢谢你的帮助"].
    """
    path = Path(path)
    if not path.is_file():
        raise LorakitError(f"{path}: sentence file not found; pass --sentences with one sentence a line.")
    seen: dict[str, int] = {}
    out = []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if not _ALLOWED.fullmatch(s):
            raise LorakitError(
                f"{path}:{lineno}: {s!r} holds characters other than Chinese characters and Chinese "
                "punctuation; write numbers as characters (三点半, 二十五块) and drop Latin letters.")
        if s in seen:
            raise LorakitError(f"{path}:{lineno}: duplicate of line {seen[s]} ({s!r}); delete one of them.")
        seen[s] = lineno
        out.append(s)
    return out


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(map(str, parts)).encode("utf-8")).digest()


def split_of(sentence: str, dev_fraction: float = 0.09, test_fraction: float = 0.09) -> str:
    """The split of a sentence, fixed by a hash of its text (not by its position in the file).

    Example: split_of("今天下午三点半开项目进度会") is the same on every machine and run.
    """
    u = int.from_bytes(_digest("split", sentence)[:8], "big") / 2**64  # uniform in [0, 1)
    if u < test_fraction:
        return "test"
    if u < test_fraction + dev_fraction:
        return "dev"
    return "train"


def clip_params(sentence: str, k: int, seed: int = 0) -> dict:
    """Speed and pitch of clip ``k`` of a sentence, drawn from a generator seeded by (seed, text, k).

    Seeding per clip keeps every clip reproducible even when sentences are added or reordered.
    """
    rng = random.Random(_digest(seed, sentence, k))
    return {"speed": rng.randint(*SPEED_RANGE), "pitch": rng.randint(*PITCH_RANGE)}


def require_espeak() -> str:
    """Path of the espeak-ng executable, or a clear error saying how to install it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise LorakitError(
            "espeak-ng was not found on PATH. Install it (Debian/Ubuntu: `sudo apt-get install espeak-ng`; "
            "macOS: `brew install espeak-ng`), or use the committed clips in data/zh_speech as they are.")
    return exe


def espeak(text: str, speed: int = 175, pitch: int = 50, voice: str = VOICE) -> np.ndarray:
    """Speak ``text`` with espeak-ng; return float32 mono samples at 16 kHz, shape (n_samples,)."""
    import soundfile as sf
    import soxr

    exe = require_espeak()
    proc = subprocess.run([exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                          capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise LorakitError(f"espeak-ng failed on {text!r}: {proc.stderr.decode(errors='replace').strip()}")
    wav, sr = sf.read(io.BytesIO(proc.stdout), dtype="float32")  # espeak-ng writes 22.05 kHz mono
    return trim_silence(soxr.resample(wav, sr, TARGET_SR).astype(np.float32), TARGET_SR)


def trim_silence(x: np.ndarray, sr: int, threshold: float = 0.01, pad_s: float = 0.15) -> np.ndarray:
    """Cut leading/trailing silence but keep ``pad_s`` seconds around the speech.

    espeak-ng ends every clip with ~0.5 s of silence; trimming it keeps the corpus small.
    Example: 1 s of zeros + 1 s tone + 1 s zeros at 16 kHz -> 1.3 s (0.15 s kept each side).
    """
    loud = np.flatnonzero(np.abs(x) > threshold)
    if loud.size == 0:
        return x
    pad = int(pad_s * sr)
    return x[max(loud[0] - pad, 0): loud[-1] + 1 + pad]




def write_flac(path: Path, samples: np.ndarray, sr: int = TARGET_SR) -> None:
    """Write 16-bit mono FLAC atomically (temp file in the same folder, then rename)."""
    import soundfile as sf

    buf = io.BytesIO()
    # compression_level=1.0 is FLAC's strongest setting: ~5 % smaller files, same samples.
    sf.write(buf, samples, sr, format="FLAC", subtype="PCM_16", compression_level=1.0)
    write_bytes_atomic(path, buf.getvalue())


def build_corpus(sentences: str | Path, out: str | Path, seed: int = 0, train_clips: int = 1,
                 eval_clips: int = 1, dev_fraction: float = 0.09, test_fraction: float = 0.09,
                 prune: bool = True, verbose: bool = True) -> dict:
    """Synthesize every sentence and write ``out/audio/*.flac`` and ``out/{train,dev,test}.jsonl``.

    ``train_clips``/``eval_clips``: clips per train / per dev-or-test sentence, each with its own
    speed and pitch. ``prune`` deletes ``out/audio/*.flac`` files no manifest refers to any more.
    Returns counts and durations, e.g. {"train": {"sentences": 380, "clips": 380, "seconds": 1140.2}, ...}.
    """
    require_espeak()
    out = Path(out)
    audio_dir = out / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {s: [] for s in SPLITS}
    stats = {s: {"sentences": 0, "clips": 0, "seconds": 0.0} for s in SPLITS}
    texts = read_sentences(sentences)
    for i, text in enumerate(texts):
        split = split_of(text, dev_fraction, test_fraction)
        stats[split]["sentences"] += 1
        for k in range(train_clips if split == "train" else eval_clips):
            p = clip_params(text, k, seed)
            samples = espeak(respell(text), p["speed"], p["pitch"])
            # Name = split + hash of the text + clip index: stable across runs and sentence order.
            name = f"{split}_{_digest('name', text).hex()[:10]}_{k}.flac"
            write_flac(audio_dir / name, samples)
            rows[split].append({"audio": f"audio/{name}", "text": text})
            stats[split]["clips"] += 1
            stats[split]["seconds"] += len(samples) / TARGET_SR
        if verbose and (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(texts)} sentences", flush=True)
    for split in SPLITS:  # manifests last: they only ever point at files that exist
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows[split])
        write_bytes_atomic(out / f"{split}.jsonl", body.encode("utf-8"))
    if prune:
        keep = {Path(r["audio"]).name for split in SPLITS for r in rows[split]}
        stale = [f for f in audio_dir.glob("*.flac") if f.name not in keep]
        for f in stale:
            f.unlink()
        stats["pruned"] = len(stale)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lorakit_nb.speech.synth", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", required=True, help="text file, one sentence per line")
    ap.add_argument("--out", required=True, help="output folder (audio/ and *.jsonl go here)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the speed/pitch draws")
    ap.add_argument("--train-clips", type=int, default=1, help="clips per train sentence")
    ap.add_argument("--eval-clips", type=int, default=1, help="clips per dev/test sentence")
    ap.add_argument("--dev-fraction", type=float, default=0.09)
    ap.add_argument("--test-fraction", type=float, default=0.09)
    ap.add_argument("--no-prune", action="store_true", help="keep audio files no manifest uses")
    a = ap.parse_args(argv)
    try:
        stats = build_corpus(a.sentences, a.out, a.seed, a.train_clips, a.eval_clips,
                             a.dev_fraction, a.test_fraction, prune=not a.no_prune)
    except LorakitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split in SPLITS:
        s = stats[split]
        print(f"{split:5s}: {s['sentences']} sentences, {s['clips']} clips, {s['seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
