"""A repetition guard for Whisper decoding: spot a looping transcript and decode that clip again another way.

Covers:
- ``compression_ratio``: UTF-8 bytes / zlib-compressed bytes, OpenAI Whisper's loop signal (its
  ``compression_ratio_threshold`` is 2.4; faster-whisper keeps it).
- ``is_repetitive``: that ratio above a threshold OR some character n-gram occurring ``max_repeats``
  times (``metrics.max_ngram_repeats``). The n-gram rule matters for Chinese: a 3-second clip gives
  ~15 characters, too few bytes for zlib to find a loop that the token cap has already cut short.
- ``guarded``: wrap any engine's ``decode(features, cap)`` (the kit's ``transcribe_loop`` contract) so
  rows that come back repetitive are decoded again by ``fallback(features, cap)`` (e.g. greedy with
  ``no_repeat_ngram_size``), keeping the less repetitive text; counts what it did in ``stats``.

Does NOT cover: the engines' fallback options themselves (``export.ct2.ct2_decoder`` passes
CTranslate2's ``no_repeat_ngram_size``), temperature sampling (non-deterministic: the kit's offline
and served transcripts must stay identical), whether the guard is on by default (measured in
``benchmarks/repetition_guard.py``).
"""
from __future__ import annotations

import zlib

import numpy as np

from lorakit_nb.metrics import max_ngram_repeats

COMPRESSION_RATIO_THRESHOLD = 2.4  # OpenAI Whisper / faster-whisper default
NGRAM = 2  # characters: a Chinese loop is usually a word (two characters) or a phrase
MAX_REPEATS = 4  # that many occurrences of one character n-gram in one clip's transcript is a loop


def compression_ratio(text: str) -> float:
    """UTF-8 bytes over zlib-compressed bytes (higher = more repetitive). Example: "" -> 0.0;
    "翻一番" * 20 (180 bytes) -> ~9; a normal 12-character sentence (36 bytes) -> ~0.8 (zlib adds overhead).
    """
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def is_repetitive(text: str, *, threshold: float = COMPRESSION_RATIO_THRESHOLD, ngram: int = NGRAM,
                  max_repeats: int = MAX_REPEATS) -> bool:
    """True when ``text`` looks like a decoding loop.

    Example: is_repetitive("用户翻一番翻一番翻一番翻一番") -> True (一番 four times);
    is_repetitive("先把最紧急的缺陷修掉再说") -> False (every 2-gram once).
    """
    return compression_ratio(text) > threshold or max_ngram_repeats(text, ngram) >= max_repeats


def guarded(decode, fallback, *, stats: dict | None = None, **rule):
    """``decode(features, cap)`` that re-decodes the repetitive rows with ``fallback`` (same signature).

    The fallback's text replaces the first one when it is not repetitive, or repeats less (its largest
    n-gram count is lower); otherwise the first stays. ``stats`` (if given) gains "clips", "fired"
    (rows found repetitive) and "replaced". ``rule``: ``is_repetitive``'s keyword arguments.
    Example: guarded(lambda f, c: ["我们我们我们我们"], lambda f, c: ["我们走吧"])(x, 10) -> ["我们走吧"]
    """
    counts = stats if stats is not None else {}
    for key in ("clips", "fired", "replaced"):
        counts.setdefault(key, 0)
    ngram = rule.get("ngram", NGRAM)

    def decode_guarded(features, cap):
        texts = list(decode(features, cap))
        bad = [i for i, t in enumerate(texts) if is_repetitive(t, **rule)]
        counts["clips"] += len(texts)
        counts["fired"] += len(bad)
        if bad:
            retry = fallback(np.asarray(features)[bad], cap)  # (len(bad), n_mels, frames)
            for i, text in zip(bad, retry):
                if not is_repetitive(text, **rule) or max_ngram_repeats(text, ngram) < max_ngram_repeats(texts[i], ngram):
                    texts[i] = text
                    counts["replaced"] += 1
        return texts

    return decode_guarded
