"""A clip longer than the model's window, served: cut by VAD, each piece through the batcher, timestamped.

Uses the main test server (tiny-whisper CT2 at a 5 s window, conftest.py): the served text and pieces
equal ``export.longform.transcribe_long`` offline, and srt / vtt carry one cue per piece.
"""
from __future__ import annotations

import json

import pytest

pytest.importorskip("ctranslate2")

from lorakit_nb.serve.client import wav_bytes  # noqa: E402
from tests.serve.helpers import MAX_AUDIO_SECONDS, WINDOW, long_clip, post_file  # noqa: E402


def test_clip_over_window_is_cut_and_equals_offline(client, clips, tiny_ct2, tmp_path):
    """Served verbose_json == transcribe_long offline (text and piece times) == lorakit evaluate's hypothesis."""
    from transformers import WhisperProcessor

    from lorakit_nb.export.ct2 import load_ct2
    from lorakit_nb.export.longform import transcribe_long
    from lorakit_nb.export.score import evaluate_manifest
    from lorakit_nb.serve.audio import decode_audio
    from lorakit_nb.speech.window import set_processor_window

    _, audios = clips
    audio = long_clip(audios)
    assert WINDOW < len(audio) / 16000 < MAX_AUDIO_SECONDS
    processor = WhisperProcessor.from_pretrained(tiny_ct2)
    set_processor_window(processor, WINDOW)
    data = wav_bytes(audio)
    samples, _ = decode_audio(data, MAX_AUDIO_SECONDS)  # what the server decodes: the WAV's 16-bit samples
    offline = transcribe_long(load_ct2(tiny_ct2, "int8", 1), processor, samples, WINDOW)
    assert len(offline["segments"]) >= 2
    r = post_file(client, data, {"model": "whisper-1", "response_format": "verbose_json"})
    assert r.status_code == 200, r.text
    body = json.loads(r.text)
    assert body["text"] == offline["text"]
    assert [(s["start"], s["end"], s["text"]) for s in body["segments"]] == \
        [(s["start"], s["end"], s["text"]) for s in offline["segments"]]
    (tmp_path / "long.wav").write_bytes(data)
    (tmp_path / "long.jsonl").write_text(json.dumps({"audio": "long.wav", "text": "参考"}) + "\n")
    scored = evaluate_manifest(tiny_ct2, tmp_path / "long.jsonl", tmp_path / "eval.json")
    assert scored["audio_seconds"] == WINDOW and scored["utterances"][0]["hypothesis"] == body["text"]
    srt = post_file(client, data, {"model": "whisper-1", "response_format": "srt"}).text
    assert srt.count(" --> ") == len(offline["segments"])
