"""The repetition guard on the served path: ``ct2_decode_batch(repetition_guard=True)`` and the engine.

Uses the tiny-whisper CT2 export of conftest.py (random weights, in-process, no server): greedy decoding of
ANY input loops on one token ("hac hac hac ..."), so every row fires, and the fallback (no repeated 3-gram)
writes a text that is not repetitive: the guard visibly changes every row.
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("ctranslate2")

from tests.serve.helpers import WINDOW  # noqa: E402

SR = 16_000


def _inputs():
    """Clips of different lengths (different token caps): silence, -50 dBFS noise (notebook 04's loop), noise, a tone."""
    rng = np.random.default_rng(0)
    t = np.arange(int(2.5 * SR)) / SR
    return [np.zeros(SR, np.float32), (10 ** (-50 / 20) * rng.standard_normal(3 * SR)).astype(np.float32),
            (0.1 * rng.standard_normal(int(1.5 * SR))).astype(np.float32),
            (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)]


@pytest.fixture(scope="module")
def loaded(tiny_ct2):
    from transformers import WhisperProcessor

    from lorakit_nb.export.ct2 import load_ct2
    from lorakit_nb.speech.window import set_processor_window

    processor = WhisperProcessor.from_pretrained(tiny_ct2)
    set_processor_window(processor, WINDOW)
    return load_ct2(tiny_ct2, "int8", 1), processor


def test_batch_guard_replaces_looping_rows_as_offline_per_clip_decoding_does(loaded):
    """Every plain row loops; with the guard each row becomes exactly what the offline path
    (``ct2_transcribe(batch_size=1, repetition_guard=True)``: ``speech.repetition.guarded``, the clip alone at
    its own cap) gives, although here the retries run as ONE batch at the longest cap. Token ids decode to the
    kept text and stay within the clip's cap."""
    from lorakit_nb.export.ct2 import ct2_decode_batch, ct2_transcribe, prompt_ids
    from lorakit_nb.speech.evaluate import max_new_tokens_for
    from lorakit_nb.speech.repetition import is_repetitive

    model, processor = loaded
    tok, audios = processor.tokenizer, _inputs()
    prompt = prompt_ids(tok, "zh")
    plain = ct2_decode_batch(model, processor, audios, prompt)
    assert all(is_repetitive(text) for text, _ in plain), [t for t, _ in plain]  # the premise: the model loops
    stats = {}
    kept = ct2_decode_batch(model, processor, audios, prompt, repetition_guard=True, guard_stats=stats)
    assert stats == {"clips": 4, "fired": 4, "replaced": 4}
    for audio, (text, ids), (before, _) in zip(audios, kept, plain):
        assert text != before and not is_repetitive(text)
        assert text == ct2_transcribe(model, processor, [audio], batch_size=1, repetition_guard=True)[0]
        assert tok.decode(ids, skip_special_tokens=True).strip() == text
        assert len(ids) <= max_new_tokens_for(len(audio) / SR)
    assert [t for t, _ in plain] == [ct2_transcribe(model, processor, [a], batch_size=1)[0] for a in audios]


@pytest.mark.parametrize("guard", [False, True])
def test_engine_passes_the_guard_to_the_decoder_and_counts_it(tiny_ct2, guard):
    """``Engine(repetition_guard=...)``: on, the batch of two requests gets a second ``generate`` call with
    ``no_repeat_ngram_size=3`` (only), the transcripts are ``ct2_decode_batch``'s with the guard, and /metrics
    counts 2 fired and 2 replaced; off, no such call, the plain transcripts, counters at 0."""
    from lorakit_nb.export.ct2 import FALLBACK_NO_REPEAT_NGRAM, ct2_decode_batch
    from lorakit_nb.serve.engine import Engine
    from lorakit_nb.serve.metrics import ServeMetrics

    class Recorder:
        def __init__(self, model):
            self.model, self.options = model, []

        def generate(self, x, prompts, **kw):
            self.options.append(kw.get("no_repeat_ngram_size"))
            return self.model.generate(x, prompts, **kw)

    engine = Engine(tiny_ct2, threads=1, max_wait_ms=200, repetition_guard=guard)
    metrics = ServeMetrics()
    engine.model = rec = Recorder(engine.model)
    engine.on_batch = metrics.observe_batch
    audios = _inputs()[1:3]

    async def go():
        await engine.start()
        rec.options.clear()  # the warm-up decode
        try:
            return await asyncio.gather(*(engine.transcribe(a) for a in audios))
        finally:
            await engine.stop()

    got = asyncio.run(go())
    assert engine.batches == 1 and got[0].batch_size == 2
    assert rec.options == ([None, FALLBACK_NO_REPEAT_NGRAM] if guard else [None])
    want = ct2_decode_batch(rec.model, engine.processor, audios, engine.prompt, repetition_guard=guard)
    assert [(t.text, t.tokens) for t in got] == want
    text = metrics.render().decode()
    n = 2 if guard else 0
    assert f"lorakit_repetition_guard_fired_total {n:.1f}" in text
    assert f"lorakit_repetition_guard_replaced_total {n:.1f}" in text


def test_evaluate_and_long_clips_use_the_same_guard(loaded, tiny_ct2, clips, tmp_path, capsys):
    """``lorakit evaluate --repetition-guard`` on the export writes the guarded transcripts (those of
    ``ct2_transcribe(repetition_guard=True)``, its decoding) and what the guard did; a clip over the window
    (``transcribe_long``, the served long-clip path) gets each VAD piece guarded as that piece alone.
    On a text CSV the flag is one error line."""
    import json

    from lorakit_nb import cli
    from lorakit_nb.export.ct2 import ct2_transcribe
    from lorakit_nb.export.longform import transcribe_long, vad_segments
    from lorakit_nb.speech.data import load_manifest
    from tests.serve.helpers import TEST_MANIFEST, long_clip

    model, processor = loaded
    rows = [{"audio": str(r["audio"]), "text": r["text"]} for r in load_manifest(TEST_MANIFEST)[:3]]
    manifest, out = tmp_path / "three.jsonl", tmp_path / "eval.json"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    assert cli.main(["evaluate", "--adapter", str(tiny_ct2), "--data", str(manifest), "--out", str(out),
                     "--repetition-guard"]) == 0
    saved = json.loads(out.read_text("utf-8"))
    want = ct2_transcribe(model, processor, clips[1][:3], repetition_guard=True)
    assert [u["hypothesis"] for u in saved["utterances"]] == want
    assert want != ct2_transcribe(model, processor, clips[1][:3])
    assert saved["repetition_guard"] == {"clips": 3, "fired": 3, "replaced": 3}

    audio, stats = long_clip(clips[1], n=4), {}
    pieces = [s["samples"] for s in vad_segments(audio, WINDOW)]
    got = transcribe_long(model, processor, audio, WINDOW, repetition_guard=True, guard_stats=stats)
    assert len(pieces) >= 2 and stats["fired"] == len(pieces)
    assert [s["text"] for s in got["segments"]] == [ct2_transcribe(model, processor, [p], batch_size=1,
                                                                   repetition_guard=True)[0] for p in pieces]

    csv_file = tmp_path / "x.csv"
    csv_file.write_text("wu,mandarin,english\n侬好,你好,hello\n", encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", "tiny-gemma", "--data", str(csv_file), "--repetition-guard"]) == 1
    assert "--repetition-guard is for speech" in capsys.readouterr().err
