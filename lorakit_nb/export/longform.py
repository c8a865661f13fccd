"""Audio longer than the model's window: cut by voice activity, decode the pieces as a batch, join.

Covers:
- ``plan_pieces``: speech regions (from any VAD, in samples) -> pieces no longer than the window:
  adjacent regions merged while they fit, a region longer than the window split into equal parts.
- ``vad_segments``: the Silero VAD that the installed faster-whisper wheel ships
  (``faster_whisper/assets/silero_vad_v6.onnx``, no download) + ``plan_pieces`` ->
  ``[{"start", "end", "samples"}]`` (seconds, seconds, the piece's 16 kHz float32 samples).
- ``join_texts``: the one rule that joins piece transcripts (no space for zh/ja/ko, else one space).
- ``transcribe_long``: a clip of any length -> ``{"text", "segments": [{"start", "end", "text"}]}``,
  all pieces decoded as one batch by ``export.ct2.ct2_decode_batch`` (each piece with its own token
  cap: the server's engine decodes with the same function, so offline and served texts are identical).

Does not: decode a clip that fits the window differently (callers send those as they are), stream,
or align words (a segment's times are its VAD piece's).
"""
from __future__ import annotations

import math

import numpy as np

from lorakit_nb.speech.window import SAMPLE_RATE

# Silero's defaults with faster-whisper's 2 s minimum silence shortened: a pause between sentences
# is a cut point, and each side keeps 0.2 s of padding so no syllable is clipped.
VAD_DEFAULTS = {"min_silence_duration_ms": 500, "speech_pad_ms": 200}
NO_SPACE_LANGUAGES = ("zh", "ja", "ko", "yue", "th")


def plan_pieces(regions, max_len: int) -> list[tuple[int, int]]:
    """Speech regions [(start, end)] (sorted, any unit) -> pieces [(start, end)], each at most ``max_len``.

    Example: plan_pieces([(0, 2), (3, 4), (6, 14)], 5) -> [(0, 4), (6, 10), (10, 14)]
    """
    if max_len <= 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    parts = []
    for start, end in regions:
        n = max(1, math.ceil((end - start) / max_len))  # a region over the window: n equal parts
        bounds = [start + (end - start) * k // n for k in range(n + 1)]
        parts += list(zip(bounds[:-1], bounds[1:]))
    pieces: list[list[int]] = []
    for start, end in parts:
        if pieces and end - pieces[-1][0] <= max_len:
            pieces[-1][1] = end  # the gap between them rides along: it is silence
        else:
            pieces.append([start, end])
    return [(s, e) for s, e in pieces]


def vad_segments(audio, window: float, *, vad_options: dict | None = None) -> list[dict]:
    """16 kHz mono ``audio`` -> [{"start", "end", "samples"}] speech pieces of at most ``window`` seconds.

    Example: vad_segments(twenty_clips_with_pauses, 5) -> [{"start": 0.31, "end": 3.02, "samples": ...}, ...]
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    audio = np.asarray(audio, dtype=np.float32)
    regions = get_speech_timestamps(audio, VadOptions(**{**VAD_DEFAULTS, **(vad_options or {})}))
    regions = [(max(0, r["start"]), min(len(audio), r["end"])) for r in regions]
    return [{"start": s / SAMPLE_RATE, "end": e / SAMPLE_RATE, "samples": audio[s:e]}
            for s, e in plan_pieces(regions, int(window * SAMPLE_RATE))]


def join_texts(texts, language: str = "zh") -> str:
    """Example: join_texts(["你好", "世界"]) -> "你好世界"; join_texts(["hi", "there"], "en") -> "hi there"."""
    sep = "" if language in NO_SPACE_LANGUAGES else " "
    return sep.join(t.strip() for t in texts if t.strip())


def transcribe_long(ct2_model, processor, audio, window: float, *, per_second: float = 6.0,
                    language: str = "zh", vad_options: dict | None = None, prompt_text: str | None = None,
                    repetition_guard: bool = False, guard_stats: dict | None = None) -> dict:
    """A clip longer than ``window`` seconds -> {"text", "segments": [{"start", "end", "text"}]}.

    ``processor`` must already pad to the model's window (``speech.window.set_processor_window``);
    ``prompt_text``: Whisper's previous-text prompt for every piece (``export.ct2.prompt_ids``);
    ``repetition_guard`` / ``guard_stats``: ``ct2_decode_batch``'s, as the server's ``--repetition-guard``.
    Example: transcribe_long(load_ct2("runs/04/ct2_int8"), processor, sixty_seconds, 5)["text"] -> "下个季度..."
    """
    from lorakit_nb.export.ct2 import ct2_decode_batch, prompt_ids

    segments = vad_segments(audio, window, vad_options=vad_options)
    if not segments:
        return {"text": "", "segments": []}
    decoded = ct2_decode_batch(ct2_model, processor, [s["samples"] for s in segments],
                               prompt_ids(processor.tokenizer, language, prompt_text), per_second=per_second,
                               repetition_guard=repetition_guard, guard_stats=guard_stats)
    out = [{"start": round(s["start"], 3), "end": round(s["end"], 3), "text": text}
           for s, (text, _) in zip(segments, decoded)]
    return {"text": join_texts([s["text"] for s in out], language), "segments": out}
