"""Tests for speech.whisper / speech.train / speech.evaluate on tiny-whisper (random weights, seconds to build).

tiny-whisper: d_model 64, 2 encoder + 2 decoder layers, ffn 128, 80 mel bins, 30 s window
(1500 encoder positions). Audio here is quiet noise: nothing is expected to be transcribed well,
only shapes, masks, parameter counts and a finite, trainable loss.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lorakit_nb.adapter_files import SpeechSidecar, save_adapter
from lorakit_nb.export.score import load_for_eval
from lorakit_nb.lora.layer import trainable_parameters
from lorakit_nb.speech.cost import measure_step
from lorakit_nb.speech.evaluate import (
    max_new_tokens_for,
    transcribe,
)
from lorakit_nb.speech.train import train_asr
from lorakit_nb.speech.whisper import (
    ALL_TARGETS,
    WhisperCollator,
    add_lora,
    featurize,
    load_asr_model,
    lora_param_count,
    shrink_audio_context,
    try_task_type,
)


def noise(seconds, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.05 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]


def test_shrink_audio_context_shapes_and_rows():
    """5 s window: 5 * 100 = 500 mel frames (hop 160 at 16 kHz), conv2 stride 2 -> 250 positions.

    The kept position rows are the first 250 of the original 1500, bit for bit; 3000-frame input
    is now refused by the encoder's length check, 500-frame input is accepted, and generate()
    still returns valid token ids.
    """
    model, processor = load_asr_model("tiny-whisper")
    before = model.get_encoder().embed_positions.weight.detach().clone()  # (1500, 64)
    assert shrink_audio_context(model, processor, 5) == 250
    assert model.config.max_source_positions == 250
    torch.testing.assert_close(model.get_encoder().embed_positions.weight, before[:250], rtol=0, atol=0)
    feats = featurize(processor, noise([1.0, 3.5]))
    assert feats[0]["input_features"].shape == (80, 500) and feats[1]["seconds"] == 3.5
    x = torch.as_tensor(np.stack([f["input_features"] for f in feats]))  # (2, 80, 500)
    with torch.no_grad():
        assert model.get_encoder()(x).last_hidden_state.shape == (2, 250, 64)
        with pytest.raises(ValueError, match="500"):
            model.get_encoder()(torch.zeros(1, 80, 3000))
        out = model.generate(input_features=x, language="zh", task="transcribe", max_new_tokens=3, do_sample=False)
    assert out.shape[0] == 2 and 0 <= int(out.min()) and int(out.max()) < model.config.vocab_size
    with pytest.raises(ValueError, match="AUDIO_SECONDS"):
        shrink_audio_context(model, processor, 31)


def test_collator_masks_padding_and_strips_start_token():
    """Labels = tokenizer(text) = [SOT, zh, transcribe, notimestamps, text..., EOT].

    The collator drops SOT (the model prepends decoder_start_token_id itself) and pads the shorter
    row with -100, found from the attention mask: EOT (50257) is also the pad id, and the real
    EOT must stay. Expected row i = ids_i[1:] + [-100] * (longest - len(ids_i)).
    """
    _, processor = load_asr_model("tiny-whisper")
    tok = processor.tokenizer
    sot, eot = tok.convert_tokens_to_ids("<|startoftranscript|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    texts = ["今天开会", "请把周报在周五之前交上来"]
    ids = [tok(t).input_ids for t in texts]
    assert ids[0][:4] == [sot, *tok.convert_tokens_to_ids(["<|zh|>", "<|transcribe|>", "<|notimestamps|>"])]
    feats = featurize(processor, noise([1.0, 2.0]), texts)
    batch = WhisperCollator(processor, sot)(feats)
    longest = max(len(i) for i in ids) - 1
    expected = torch.tensor([i[1:] + [-100] * (longest - len(i) + 1) for i in ids])
    assert torch.equal(batch["labels"], expected)
    assert (batch["labels"] == eot).sum() == 2  # one real end-of-text per row survives the masking
    assert batch["input_features"].shape == (2, 80, 3000)
    # rows that do not all start with SOT are left alone
    feats[1]["labels"] = feats[1]["labels"][1:]
    assert WhisperCollator(processor, sot)(feats)["labels"][0, 0] == sot


def test_lora_trainable_count_matches_hand_formula():
    """LoRA adds r * (in + out) parameters per adapted Linear. tiny-whisper: d = 64, ffn = 128, r = 4.

    q,v only: q_proj/v_proj are 64 -> 64, so 4 * 128 = 512 each; the encoder has 2 layers x 1
    attention x 2 targets = 4 Linears, the decoder 2 layers x 2 attentions (self + cross) x 2 = 8:
    12 * 512 = 6,144.
    All six targets: per attention 4 * 512 = 2,048; fc1 and fc2 add 4 * (64 + 128) = 768 each.
    Encoder 2 * (2,048 + 1,536) = 7,168; decoder 2 * (2 * 2,048 + 1,536) = 11,264; total 18,432.
    """
    for targets, hand in ((("q_proj", "v_proj"), 6_144), (ALL_TARGETS, 18_432)):
        model, _ = load_asr_model("tiny-whisper")
        assert lora_param_count(model.config, 4, targets) == hand
        peft_model = add_lora(model, r=4, alpha=8, targets=targets, checkpointing=False)
        assert trainable_parameters(peft_model)[0] == hand
    # whisper-small from its published dimensions (d 768, 12 + 12 layers), r = 64 on q,v:
    # 64 * 1536 * (12 * 2 + 12 * 4) = 7,077,888 -- not the "1.2M" some articles print.
    from transformers import WhisperConfig

    small = WhisperConfig(d_model=768, encoder_layers=12, decoder_layers=12, encoder_ffn_dim=3072,
                          decoder_ffn_dim=3072)
    assert lora_param_count(small, 64) == 7_077_888


@pytest.mark.parametrize("task_type", ["SEQ_2_SEQ_LM", "CAUSAL_LM"])
def test_task_type_breaks_whisper_forward(task_type):
    """Why add_lora leaves task_type unset: the task wrappers pass input_ids themselves and Whisper's
    training forward (input_features + labels) fails; the plain PeftModel (add_lora) computes a loss."""
    from peft import LoraConfig, get_peft_model

    model, processor = load_asr_model("tiny-whisper")
    batch = WhisperCollator(processor, model.config.decoder_start_token_id)(featurize(processor, noise([1.0]), ["你好"]))
    wrapped = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type=task_type))
    with pytest.raises(TypeError, match="input_ids"):
        wrapped(**batch)
    plain, _ = load_asr_model("tiny-whisper")
    assert math.isfinite(float(add_lora(plain, r=4, checkpointing=False)(**batch).loss))
    # the notebook's demonstration of the same fact (one forward per task_type, on a fresh model each)
    feats = featurize(processor, noise([1.0]), ["你好"])
    broken = try_task_type("tiny-whisper", feats, task_type)
    assert not broken["ok"] and "input_ids" in broken["result"] and broken["wrapper"].startswith("PeftModelFor")
    unset = try_task_type("tiny-whisper", feats, None)
    assert unset["ok"] and unset["wrapper"] == "PeftModel" and unset["result"].startswith("loss ")


def test_qlora_steps_on_cpu_train_and_survive_evaluation(tmp_path):
    """NF4 base + LoRA, a few Seq2SeqTrainer steps with the dev-CER callback between epochs.

    Checks: the Linears really are 4-bit, the loss is finite, LoRA B (zero at init) has moved,
    the frozen 4-bit weights have not, and training continues after a generate() evaluation
    (bitsandbytes' eval-only CPU repacking would otherwise break the next backward pass).
    """
    import bitsandbytes as bnb

    model, processor = load_asr_model("tiny-whisper", quantize=True, audio_seconds=2)
    assert isinstance(model.get_encoder().layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    frozen = model.get_encoder().layers[0].fc1.weight.detach().clone()  # packed uint8 storage
    model = add_lora(model, r=4, alpha=8)
    texts = ["今天开会", "三点出发", "请稍等", "谢谢大家"]
    feats = featurize(processor, noise([1.0, 1.5, 1.2, 1.8]), texts)
    res = train_asr(model, processor, feats, dev_audios=noise([1.0], seed=1), dev_texts=["今天开会"],
                    output_dir=tmp_path, epochs=2, batch_size=2, learning_rate=1e-2, warmup_steps=0, logging_steps=1)
    assert res.steps == 4 and len(res.train_losses) == 4 and all(math.isfinite(loss) for _, loss in res.train_losses)
    assert [h["epoch"] for h in res.dev_history] == [1.0, 2.0]
    # the model handed back is the best-dev epoch's: greedy decoding of the dev clip again gives its dev CER
    from lorakit_nb.metrics import cer
    from lorakit_nb.speech.train import best_dev_entry
    again = cer(["今天开会"], transcribe(model, processor, noise([1.0], seed=1), progress=False))
    assert best_dev_entry(res.dev_history)["dev_cer"] == pytest.approx(again)
    # every adapted layer learned, encoder and decoder alike: with checkpointing on and no input-grad
    # hooks this holds only because the checkpoint is the non-re-entrant one
    b = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert b and all(p.abs().sum() > 0 for p in b.values()), [n for n, p in b.items() if p.abs().sum() == 0]
    fc1 = model.get_encoder().layers[0].fc1
    assert torch.equal(fc1.weight.detach(), frozen) and fc1.weight.quant_state.nested  # double quant is back


def test_time_budget_stops_after_one_step_and_scores_the_partial_epoch(tmp_path):
    """A zero-second budget is exceeded by the first step: 1 step, stopped early, and the dev-CER
    callback scores that partial epoch once (so the steps the budget allowed can be kept)."""
    model, processor = load_asr_model("tiny-whisper", audio_seconds=2)
    model = add_lora(model, r=4, alpha=8)
    feats = featurize(processor, noise([1.0, 1.5, 1.2, 1.8]), ["今天开会", "三点出发", "请稍等", "谢谢大家"])
    res = train_asr(model, processor, feats, dev_audios=noise([1.0], seed=1), dev_texts=["今天开会"],
                    epochs=3, batch_size=2, time_budget_s=0, logging_steps=1)
    assert (res.steps, res.stopped_early) == (1, True)
    assert [(h["step"], h["partial"]) for h in res.dev_history] == [(1, True)]


def test_save_and_reload_adapter_gives_same_transcripts(tmp_path):
    """The saved adapter (safetensors) + recorded window rebuild the same model: same greedy tokens."""
    model, processor = load_asr_model("tiny-whisper", audio_seconds=2)
    model = add_lora(model, r=4, alpha=8, checkpointing=False)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)  # a zero B would make any loading bug invisible
    audios = noise([1.0, 1.7])
    n_bytes = save_adapter(model, tmp_path / "adapter", processor=processor,
                           sidecar=SpeechSidecar(base_model="tiny-whisper", audio_seconds=2))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size == n_bytes > 6_144 * 4
    assert json.loads((tmp_path / "adapter" / "lorakit_asr.json").read_text())["audio_seconds"] == 2
    kind, again, processor2, seconds = load_for_eval(tmp_path / "adapter", longest_seconds=1.7)
    assert (kind, seconds) == ("hf", 2)
    assert processor2.feature_extractor.nb_max_frames == 200
    kw = {"max_new_tokens": 4, "progress": False}
    assert transcribe(model, processor, audios, **kw) == transcribe(again, processor2, audios, **kw)


def test_max_new_tokens_cap():
    """4 tokens of slack + 6 per second, rounded up: 3.2 s -> 4 + ceil(19.2) = 24; 0 s -> 4."""
    assert max_new_tokens_for(3.2) == 24 and max_new_tokens_for(0) == 4


def test_measure_step_reports_time_memory_and_counts():
    """One LoRA (r=8, q,v) step on tiny-whisper at a 1 s window, in a child process.

    Trainable count by hand: 12 adapted 64 x 64 Linears (see above) x 8 * (64 + 64) = 12,288.
    """
    row = measure_step("lora", 1, model_name="tiny-whisper", batch_size=2, steps=1, r=8)
    assert row["trainable_params"] == 12_288 and row["frames"] == 100
    # the training peak holds at least the model's own weights; the step time is a real, finite number
    assert row["peak_gb"] * 1e3 >= row["weights_mb"] and math.isfinite(row["s_per_step"]) and math.isfinite(row["loss"])
    with pytest.raises(ValueError, match="kind"):
        measure_step("int8")
    # the two switches notebook 03 measures: checkpointing off, and AMP (bf16 autocast on a CPU)
    off = measure_step("lora", 1, model_name="tiny-whisper", batch_size=2, steps=1, r=8, checkpointing=False)
    amp = measure_step("lora", 1, model_name="tiny-whisper", batch_size=2, steps=1, r=8, amp=True)
    assert row["checkpointing"] and not off["checkpointing"] and row["amp"] is None and amp["amp"] == "bfloat16"
    # same batch, same init: bf16 matmuls change the loss a little, not a lot; no checkpointing, not at all
    assert off["loss"] == pytest.approx(row["loss"], rel=1e-5) and amp["loss"] == pytest.approx(row["loss"], rel=0.05)


def test_every_whisper_entry_point_puts_a_qlora_adapter_on_nf4(tmp_path, monkeypatch):
    """A QLoRA adapter (trained on 4-bit NF4) is a different function on an fp32 base, so every way
    the kit loads one (notebook 04 and `lorakit evaluate` both go through ``load_for_eval``, the
    CLI through ``evaluate_manifest``) must rebuild the NF4 base it was trained on."""
    import bitsandbytes as bnb

    from lorakit_nb import cli
    from lorakit_nb.export import score

    model, processor = load_asr_model("tiny-whisper", quantize=True, audio_seconds=2)
    model = add_lora(model, r=4, alpha=8, checkpointing=False)
    save_adapter(model, tmp_path / "adapter", processor=processor,
                 sidecar=SpeechSidecar(base_model="tiny-whisper", audio_seconds=2, quantized=True))
    loaded = []
    real = score.load_for_eval

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        loaded.append(out[1])
        return out

    monkeypatch.setattr(score, "load_for_eval", spy)
    _, direct, _, _ = real(tmp_path / "adapter", longest_seconds=1.0)
    manifest = tmp_path / "m.jsonl"
    import soundfile as sf
    sf.write(tmp_path / "a.wav", noise([1.0])[0], 16_000)
    manifest.write_text(json.dumps({"audio": "a.wav", "text": "你好"}) + "\n", encoding="utf-8")
    assert cli.main(["evaluate", "--adapter", str(tmp_path / "adapter"), "--data", str(manifest),
                     "--out", str(tmp_path / "eval.json")]) == 0
    for m in [direct, *loaded]:
        n4 = sum(isinstance(x, bnb.nn.Linear4bit) for x in m.modules())
        assert n4 > 0, "the adapter was put on a full-precision base, not the NF4 base it was trained on"
    assert len(loaded) == 1
