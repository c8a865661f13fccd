"""A repetition guard for Whisper decoding: spot a looping transcript and decode that clip again another way.

Covers:
- ``compression_ratio``: UTF-8 bytes / zlib-compressed bytes, OpenAI Whisper's loop signal (its
  ``compression_ratio_threshold`` is 2.4; faster-whisper keeps it).
- ``is_repetitive``: that ratio above a threshold OR some character n-gram occurring ``max_repeats``
  times (``metrics.max_ngram_repeats``). The n-gram rule matters for Chinese: a 3-second clip gives
  ~15 characters, too few bytes for zlib to find a loop that the token cap has already cut short.
- ``replace_repetitive``: THE guard's rule, for any engine and result shape: the repetitive rows of a
  batch are decoded again in one call, and a retry replaces its row when it is not repetitive or
  repeats less; counts what it did in ``stats``. ``export.ct2.ct2_decode_batch`` (the server, long
  clips) calls it on (text, token ids) rows.
- ``guarded``: wrap any engine's ``decode(features, cap)`` (the kit's ``transcribe_loop`` contract) so
  rows that come back repetitive are decoded again by ``fallback(features, cap)`` (e.g. greedy with
  ``no_repeat_ngram_size``), by ``replace_repetitive``.

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
    Surrounding whitespace is not part of a transcript (decoders differ in whether they strip it).
    """
    text = text.strip()
    return compression_ratio(text) > threshold or max_ngram_repeats(text, ngram) >= max_repeats


STAT_KEYS = ("clips", "fired", "replaced")


def replace_repetitive(results, redo, *, text=None, stats: dict | None = None, **rule) -> list:
    """``results`` (one per row) with each repetitive row replaced by its retry when the retry is better.

    ``redo(rows)``: the retries for those row indices, in that order (called once, only if a row loops).
    A retry is kept when its text is not repetitive, or repeats less (its largest n-gram count is lower);
    otherwise the first result stays. ``text(result)``: a result's transcript (default: the result itself,
    e.g. ``lambda r: r[0]`` for (text, ids) pairs, so ids travel with their text). ``stats`` (if given)
    gains "clips", "fired" (rows found repetitive) and "replaced". ``rule``: ``is_repetitive``'s keywords.
    Example: replace_repetitive(["我们我们我们我们", "好的"], lambda rows: ["我们走吧"]) -> ["我们走吧", "好的"]
    """
    text = text or (lambda r: r)
    counts = stats if stats is not None else {}
    for key in STAT_KEYS:
        counts.setdefault(key, 0)
    out = list(results)
    bad = [i for i, r in enumerate(out) if is_repetitive(text(r), **rule)]
    counts["clips"] += len(out)
    counts["fired"] += len(bad)
    if bad:
        ngram = rule.get("ngram", NGRAM)
        for i, retry in zip(bad, redo(bad)):
            new, old = text(retry), text(out[i])
            if not is_repetitive(new, **rule) or max_ngram_repeats(new, ngram) < max_ngram_repeats(old, ngram):
                out[i] = retry
                counts["replaced"] += 1
    return out


def guarded(decode, fallback, *, stats: dict | None = None, **rule):
    """``decode(features, cap)`` that re-decodes the repetitive rows with ``fallback`` (same signature).

    The rule (which rows, which text is kept, what ``stats`` counts) is ``replace_repetitive``'s;
    ``rule``: ``is_repetitive``'s keyword arguments.
    Example: guarded(lambda f, c: ["我们我们我们我们"], lambda f, c: ["我们走吧"])(x, 10) -> ["我们走吧"]
    """
    def decode_guarded(features, cap):
        return replace_repetitive(decode(features, cap),
                                  lambda rows: fallback(np.asarray(features)[rows], cap),  # (len(rows), n_mels, frames)
                                  stats=stats, **rule)

    return decode_guarded
