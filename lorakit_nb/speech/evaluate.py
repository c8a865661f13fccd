"""Whisper evaluation: capped greedy transcription, CER, adapters on disk, clips to listen to.

Covers:
- ``transcribe_loop``: the one transcription loop (features, length-sorted batches, a token cap from
  the clip length) for any engine's ``decode``; ``hf_decoder`` / ``hf_inference`` / ``transcribe``:
  that loop over transformers' ``generate()`` (greedy by default), with a progress bar.
- ``evaluate_cer``: transcribe + corpus CER through ``metrics.normalize_zh`` (Traditional->Simplified).
- ``load_clips``: a manifest's audio arrays and transcripts; ``listen_widget``: hear a clip and read
  reference / zero-shot / fine-tuned transcripts side by side.

Does NOT cover: building or training the model (``speech/whisper.py``, ``speech/train.py``), the CER
arithmetic (``metrics.py``), the step time / memory measurements (``speech/cost.py``), the
CTranslate2 engine (``export/ct2.py``, which plugs its decoder into ``transcribe_loop``).

Why capped greedy: with no cap, a confused model can repeat a phrase until the 448-token limit;
beam search makes this worse on our synthetic audio (the looping hypothesis has the higher score).
Why evaluate by ``generate()``: the arg-max of training logits is teacher-forced (every step sees the
correct previous token), so it flatters the model; ``generate`` feeds back its own tokens, as in use.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

from lorakit_nb.speech.whisper import fast_4bit_inference, featurize
from lorakit_nb.speech.window import SAMPLE_RATE


def max_new_tokens_for(seconds: float, base: int = 4, per_second: float = 6.0) -> int:
    """Generation cap for a clip: a few tokens of slack plus `per_second` tokens per second of audio.

    Mandarin speech runs ~4-5 characters/s and whisper's byte-level BPE spends ~1.2 tokens per
    character, so 6 tokens/s covers normal speech while a loop is cut off quickly.
    Example: max_new_tokens_for(3.2) -> 4 + ceil(19.2) = 24.
    """
    return int(base + math.ceil(per_second * seconds))


def _input_dtype_device(model):
    conv = model.get_encoder().conv1.weight  # never quantized: safe to read dtype/device from it
    return conv.dtype, conv.device


def transcribe_loop(decode, processor, audios, *, batch_size: int = 8, max_new_tokens=None,
                    per_second: float = 6.0, progress: bool = False, desc: str = "transcribe") -> list[str]:
    """The kit's one transcription loop, for any engine: features, length order, batches, caps.

    ``decode(features, cap)`` turns a (batch, n_mels, frames) float32 array into one string per row
    with at most ``cap`` new tokens (``hf_decoder`` here, ``export.ct2.ct2_decoder`` for CTranslate2).
    Clips are sorted by length so a batch shares a similar cap (``max_new_tokens_for`` of its
    longest clip, unless ``max_new_tokens`` is given); results come back in input order.
    """
    from tqdm.auto import tqdm

    feats = featurize(processor, audios)
    order = sorted(range(len(feats)), key=lambda i: feats[i]["seconds"])
    hyps = [None] * len(feats)
    for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress):
        idx = order[start:start + batch_size]
        x = np.stack([feats[i]["input_features"] for i in idx])  # (batch, n_mels, frames)
        cap = max_new_tokens or max_new_tokens_for(max(feats[i]["seconds"] for i in idx), per_second=per_second)
        for i, text in zip(idx, decode(x, cap)):
            hyps[i] = text.strip()
    return hyps


def hf_decoder(model, processor, *, language: str = "zh", num_beams: int = 1):
    """``decode(features, cap)`` for a transformers Whisper: greedy (or beam) ``generate()``, text out.

    Call it inside ``torch.inference_mode()`` with the model in eval mode (``transcribe`` does).
    """
    dtype, device = _input_dtype_device(model)

    def decode(features, cap):
        x = torch.as_tensor(features, dtype=dtype, device=device)
        out = model.generate(input_features=x, language=language, task="transcribe", num_beams=num_beams,
                             do_sample=False, max_new_tokens=cap, use_cache=True)  # (batch, new_tokens)
        return processor.tokenizer.batch_decode(out, skip_special_tokens=True)

    return decode


@contextmanager
def hf_inference(model):
    """Eval mode, no autograd, bitsandbytes' packed 4-bit CPU kernel, quiet generate(); all undone after.

    Training mode and the trainable 4-bit layout are restored afterwards, so it is safe inside a
    training callback. generate() would warn on every batch that max_new_tokens overrides max_length
    (intended here) and that no attention mask was given (Whisper's encoder takes none).
    """
    from transformers.utils import logging as hf_logging

    was_training, verbosity = model.training, hf_logging.get_verbosity()
    model.eval()
    hf_logging.set_verbosity_error()
    try:
        with fast_4bit_inference(model), torch.inference_mode():
            yield
    finally:
        model.train(was_training)
        hf_logging.set_verbosity(verbosity)


def transcribe(model, processor, audios, *, batch_size: int = 8, num_beams: int = 1, max_new_tokens=None,
               per_second: float = 6.0, language: str = "zh", progress: bool = True, desc: str = "transcribe"):
    """Transcribe 16 kHz mono float arrays with a transformers Whisper; one string per clip, in order.

    ``transcribe_loop`` with ``hf_decoder`` inside ``hf_inference``.
    Example: transcribe(model, processor, [read_audio("data/zh_speech/audio/test_000.flac")])
    -> ["今天的项目会议主要讨论了三个议题"] (whatever the model hears).
    """
    with hf_inference(model):
        return transcribe_loop(hf_decoder(model, processor, language=language, num_beams=num_beams), processor,
                               audios, batch_size=batch_size, max_new_tokens=max_new_tokens, per_second=per_second,
                               progress=progress, desc=desc)


def evaluate_cer(model, processor, audios, references, **kwargs) -> dict:
    """{"cer": corpus CER after normalize_zh, "hypotheses": [...]}. kwargs go to ``transcribe``.

    Example: evaluate_cer(model, processor, audios, texts)["cer"] -> 0.69 (zero-shot whisper-base).
    """
    from lorakit_nb.metrics import cer

    hyps = transcribe(model, processor, audios, **kwargs)
    return {"cer": cer(list(references), hyps), "hypotheses": hyps}




def load_clips(manifest) -> tuple[list, list]:
    """(audios, texts) for a manifest: 16 kHz mono float32 arrays (``speech.read_audio``) and transcripts.

    Example: audios, texts = load_clips("data/zh_speech/test.jsonl"); len(audios) -> 40
    """
    from lorakit_nb.speech.data import load_manifest, read_audio

    rows = load_manifest(manifest)
    return [read_audio(r["audio"]) for r in rows], [r["text"] for r in rows]


def listen_widget(audios, columns: dict, index: int = 0):
    """A clip picker: play the audio, read each transcript column side by side (ipywidgets).

    ``columns`` maps a heading to one string per clip, e.g. {"reference": refs, "zero-shot": zs,
    "fine-tuned": ft}. Built from value widgets only (Audio, HTML), no ``Output`` capture, so it is
    harmless headless (papermill just records the widget). Returns the widget.
    """
    import html
    import io

    import ipywidgets as widgets
    import soundfile as sf

    picker = widgets.IntSlider(value=index, min=0, max=len(audios) - 1, description="clip")
    player = widgets.Audio(format="wav", autoplay=False)
    text = widgets.HTML()

    def show(change=None):
        i = picker.value
        buf = io.BytesIO()
        sf.write(buf, np.asarray(audios[i], dtype=np.float32), SAMPLE_RATE, format="WAV", subtype="PCM_16")
        player.value = buf.getvalue()
        rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{html.escape(k)}</th>"
                       f"<td style='text-align:left'>{html.escape(v[i])}</td></tr>" for k, v in columns.items())
        text.value = f"<table>{rows}</table>"

    picker.observe(show, names="value")
    show()
    return widgets.VBox([picker, player, text])
