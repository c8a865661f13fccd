"""OpenAI's ``prompt`` field: Whisper's previous-text prompt reaches the CTranslate2 decoder as token ids.

Uses the tiny-whisper CT2 export of conftest.py (in-process engine and the main test server).
"""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("ctranslate2")

from lorakit_nb.serve.client import wav_bytes  # noqa: E402
from tests.serve.helpers import WINDOW, post_file  # noqa: E402

TERMS = "季度 缺陷"


class Recorder:
    """A CTranslate2 Whisper that records the prompts and max_length it is given."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def generate(self, x, prompts, **kw):
        self.calls.append((prompts, kw["max_length"]))
        return self.model.generate(x, prompts, **kw)


def _tokenizer(tiny_ct2):
    from transformers import WhisperProcessor

    return WhisperProcessor.from_pretrained(tiny_ct2).tokenizer


def test_prompt_ids_put_previous_text_before_the_transcript_prompt(tiny_ct2):
    from lorakit_nb.export.ct2 import MAX_PROMPT_TOKENS, prompt_ids

    tok = _tokenizer(tiny_ct2)
    plain = prompt_ids(tok, "zh")
    assert plain == tok.convert_tokens_to_ids(["<|startoftranscript|>", "<|zh|>", "<|transcribe|>", "<|notimestamps|>"])
    assert prompt_ids(tok, "zh", None) == prompt_ids(tok, "zh", "  ") == plain
    ids = prompt_ids(tok, "zh", TERMS)
    assert ids == [tok.convert_tokens_to_ids("<|startofprev|>"), *tok.encode(" " + TERMS, add_special_tokens=False),
                   *plain]
    long = prompt_ids(tok, "zh", "词" * 1000)
    assert len(long) == 1 + MAX_PROMPT_TOKENS + len(plain)  # the LAST tokens of a long prompt are kept


def test_engine_sends_the_prompt_ids_and_a_cap_that_counts_them(tiny_ct2):
    """The prompt rides with its clip through the batcher; without one the decoder gets exactly today's call."""
    from lorakit_nb.export.ct2 import prompt_ids
    from lorakit_nb.serve.engine import Engine
    from lorakit_nb.speech.evaluate import max_new_tokens_for

    engine = Engine(tiny_ct2, threads=1, max_wait_ms=50)
    engine.model = rec = Recorder(engine.model)
    clip = (0.1 * np.random.default_rng(0).standard_normal(16000 * 2)).astype(np.float32)

    async def go():
        await engine.start()
        try:
            return await asyncio.gather(engine.transcribe(clip), engine.transcribe(clip, TERMS))
        finally:
            await engine.stop()

    plain, prompted = asyncio.run(go())
    tok, cap = engine.processor.tokenizer, max_new_tokens_for(2.0)
    want = prompt_ids(tok, "zh", TERMS)
    calls = rec.calls[1:]  # [0]: the warm-up decode
    assert ([prompt_ids(tok, "zh")], 2 * cap) in calls  # the plain call: unchanged
    assert ([want], max(2 * cap, cap + len(want) - 1)) in calls
    assert len(plain.tokens) <= cap and len(prompted.tokens) <= cap


def test_served_prompt_equals_offline_prompted_decoding(client, clips, tiny_ct2):
    from transformers import WhisperProcessor

    from lorakit_nb.export.ct2 import ct2_transcribe, load_ct2
    from lorakit_nb.serve.audio import decode_audio
    from lorakit_nb.speech.window import set_processor_window

    data = wav_bytes(clips[1][0])
    samples, _ = decode_audio(data, WINDOW)
    processor = WhisperProcessor.from_pretrained(tiny_ct2)
    set_processor_window(processor, WINDOW)
    model = load_ct2(tiny_ct2, "int8", 1)
    want = ct2_transcribe(model, processor, [samples], batch_size=1, prompt_text=TERMS)[0]
    r = post_file(client, data, {"model": "whisper-1", "prompt": TERMS})
    assert r.status_code == 200, r.text  # was 400 unsupported_prompt
    assert r.json()["text"] == want
    r = post_file(client, data, {"model": "whisper-1"})
    assert r.json()["text"] == ct2_transcribe(model, processor, [samples], batch_size=1)[0]


def test_transcribe_files_sends_the_prompt_and_keeps_the_input_order(server, client, clips):
    """Notebook 05's dev comparison sends clips concurrently: each text must be its own clip's, prompt included."""
    from lorakit_nb.serve.loadtest import run_sync, transcribe_files
    from tests.serve.helpers import KEY_A

    data = clips[0][:4]
    want_plain = [post_file(client, d).json()["text"] for d in data]
    want_prompted = [post_file(client, d, {"model": "whisper-1", "prompt": TERMS}).json()["text"] for d in data]
    assert run_sync(transcribe_files(server.url, KEY_A, data, concurrency=4)) == want_plain
    assert run_sync(transcribe_files(server.url, KEY_A, data, prompt=TERMS, concurrency=4)) == want_prompted
    with pytest.raises(RuntimeError, match="answered 401"):
        run_sync(transcribe_files(server.url, None, data[:1]))
