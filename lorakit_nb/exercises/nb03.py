"""Notebook 03's exercises (Whisper QLoRA): reference solutions, checks, synthetic examples."""
from __future__ import annotations

from . import Exercise

SAMPLE_RATE, HOP, CONV2_STRIDE = 16_000, 160, 2


def _all_linear_count(d_model: int, ffn: int, encoder_layers: int, decoder_layers: int, r: int, peft_count: int) -> int:
    attention = 4 * r * (d_model + d_model)  # q, k, v, out: each r * (d_in + d_out)
    mlp = 2 * r * (d_model + ffn)            # fc1 (d -> ffn) and fc2 (ffn -> d)
    return encoder_layers * (attention + mlp) + decoder_layers * (2 * attention + mlp)  # decoder: self + cross


def _check_all_linear(answer, d_model, ffn, encoder_layers, decoder_layers, r, peft_count):
    assert isinstance(answer, int), f"answer with a whole number of parameters, not {answer!r}"
    if answer == peft_count:
        return f"{answer:,} trainable parameters, as peft counts them"
    per_layer_hint = ""
    if answer == (encoder_layers + decoder_layers) * (4 * r * 2 * d_model + 2 * r * (d_model + ffn)):
        per_layer_hint = " — the decoder has TWO attentions per layer (self and cross), each with 4 projections"
    raise AssertionError(f"{answer:,} != {peft_count:,} (peft's count for r={r} on all six Linears){per_layer_hint}; "
                         "each adapted Linear adds r * (d_in + d_out)")


def _example_all_linear():
    # a toy Whisper: d 64, FFN 128, 2 + 2 layers, r 4 (tests/speech/test_whisper.py counts it by hand: 18,432)
    inputs = {"d_model": 64, "ffn": 128, "encoder_layers": 2, "decoder_layers": 2, "r": 4, "peft_count": 18_432}
    return inputs, (2 + 2) * (4 * 4 * 128 + 2 * 4 * 192)  # forgot the cross-attention


def _window_shapes(seconds: int, mel_frames: int, encoder_positions: int) -> tuple[int, int]:
    frames = seconds * SAMPLE_RATE // HOP  # one log-mel frame per hop of 160 samples: 100 per second
    return frames, frames // CONV2_STRIDE  # conv2 has stride 2: 50 encoder positions per second


def _check_window_shapes(answer, seconds, mel_frames, encoder_positions):
    assert isinstance(answer, tuple) and len(answer) == 2, f"answer with (mel_frames, encoder_positions), not {answer!r}"
    assert answer[0] == mel_frames, (f"{answer[0]} mel frames, but the feature extractor pads to {mel_frames}: "
                                     "one frame per hop of 160 samples at 16 kHz")
    assert answer[1] == encoder_positions, (f"{answer[1]} positions, but the encoder outputs {encoder_positions}: "
                                            "conv2 has stride 2")
    return f"{seconds} s -> {mel_frames} mel frames -> {encoder_positions} encoder positions"


def _example_window_shapes():
    return {"seconds": 5, "mel_frames": 500, "encoder_positions": 250}, (500, 500)


def _keep_epoch(dev_history: list) -> float:
    return min(dev_history, key=lambda h: h["dev_cer"])["epoch"]  # the lowest dev CER (earliest of equal ones)


def _check_keep_epoch(answer, dev_history):
    assert isinstance(answer, (int, float)) and not isinstance(answer, bool), \
        f"answer with an epoch number (e.g. 2), not {answer!r}"
    best = _keep_epoch(dev_history)
    if answer == best:
        return f"epoch {best:g}: dev CER {min(h['dev_cer'] for h in dev_history):.3f}, the lowest on the curve"
    hint = (" — the last epoch is not always the best: training on goes on lowering the train loss, not "
            "necessarily the dev CER" if answer == dev_history[-1]["epoch"] else "")
    raise AssertionError(f"epoch {answer:g} is not the one with the lowest dev CER{hint}; dev CER by epoch: "
                         + ", ".join(f"{h['epoch']:g}: {h['dev_cer']:.3f}" for h in dev_history))


def _example_keep_epoch():
    # dev CER by epoch of an earlier 4-epoch CPU run: the third is the lowest, the last is not
    history = [{"epoch": 1.0, "dev_cer": 0.109}, {"epoch": 2.0, "dev_cer": 0.113},
               {"epoch": 3.0, "dev_cer": 0.102}, {"epoch": 4.0, "dev_cer": 0.105}]
    return {"dev_history": history}, 4


EXERCISES = {
    "03.1": Exercise("LoRA r=8 on all six Linears of whisper-base, by hand", solve=_all_linear_count,
                     check=_check_all_linear, example=_example_all_linear),
    "03.2": Exercise("mel frames and encoder positions of a shrunk window", solve=_window_shapes,
                     check=_check_window_shapes, example=_example_window_shapes),
    "03.3": Exercise("which epoch to keep, from the dev CER curve", solve=_keep_epoch,
                     check=_check_keep_epoch, example=_example_keep_epoch),
}
