"""Tests for export.merge (adapter, merge, model card), export.qlora_merge, export.ct2 and export.score on tiny-whisper.

tiny-whisper: d_model 64, 2 encoder + 2 decoder layers, 4 heads, random weights (seconds to build).
Every LoRA here gets a NON-ZERO B: at init B = 0 and "merged == unmerged" would hold trivially.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lorakit_nb.errors import ExportError

pytest.importorskip("ctranslate2")

ROOT = Path(__file__).resolve().parents[2]
TEST_MANIFEST = ROOT / "data" / "zh_speech" / "test.jsonl"


def tiny(**kwargs):
    from lorakit_nb.models.resolve import load_whisper

    model, processor = load_whisper("tiny-whisper", **kwargs)
    return model.eval(), processor


def lora_with_nonzero_b(model, r=4, alpha=8):
    """peft LoRA on q_proj, v_proj with B ~ N(0, 0.5) so the update scale * B @ A is far from zero."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj", "v_proj"]))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return peft_model.eval()


def features(processor, seconds=(1.0, 2.0), seed=0):
    """Log-mels of quiet noise clips, (len(seconds), 80, frames) where frames is the processor's window."""
    rng = np.random.default_rng(seed)
    audios = [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in seconds]
    return processor.feature_extractor(audios, sampling_rate=16000, return_tensors="pt").input_features


@functools.cache
def decoder_prompt() -> tuple:
    """<|startoftranscript|><|zh|><|transcribe|><|notimestamps|> + the tokens of " 你", looked up."""
    from lorakit_nb.export.ct2 import prompt_ids

    tok = tiny()[1].tokenizer
    return tuple(prompt_ids(tok, "zh") + tok(" 你", add_special_tokens=False).input_ids)


def decoder_logits(model, feats):
    ids = torch.tensor([list(decoder_prompt())] * feats.shape[0])  # prompt + text tokens
    with torch.no_grad():
        return model(input_features=feats, decoder_input_ids=ids).logits  # (batch, 6, vocab)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """adapter (fp32 tiny base, non-zero B) -> merged folder; also the peft model's logits."""
    from lorakit_nb.adapter_files import save_adapter
    from lorakit_nb.export.merge import merge_adapter

    tmp = tmp_path_factory.mktemp("export")
    base, processor = tiny()
    feats = features(processor)
    base_logits = decoder_logits(base, feats)
    peft_model = lora_with_nonzero_b(base)
    size = save_adapter(peft_model, tmp / "adapter")
    merged_dir = merge_adapter("tiny-whisper", tmp / "adapter", tmp / "merged")
    return {"tmp": tmp, "feats": feats, "base_logits": base_logits, "peft_logits": decoder_logits(peft_model, feats),
            "adapter_bytes": size, "merged_dir": merged_dir}


def test_adapter_only_file_holds_just_the_lora_values(exported):
    """12 adapted Linears (2 encoder layers x q,v + 2 decoder layers x 2 attentions x q,v), each
    r * (64 + 64) = 512 values at r=4 -> 6,144 fp32 values = 24,576 bytes, plus a JSON header of
    24 tensor entries (< 8 KiB). The base model's 3.5 M parameters are not in it."""
    assert 24_576 < exported["adapter_bytes"] < 24_576 + 8_192


def test_merged_equals_unmerged_with_nonzero_b(exported):
    """merge_and_unload folds W + (alpha / r) * B @ A into each Linear: the merged model reloaded from
    safetensors must give the peft model's logits, and both must differ from the base's."""
    from transformers import WhisperForConditionalGeneration

    merged = WhisperForConditionalGeneration.from_pretrained(exported["merged_dir"]).eval()
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    merged_logits = decoder_logits(merged, exported["feats"])
    torch.testing.assert_close(merged_logits, exported["peft_logits"], atol=1e-4, rtol=1e-4)
    assert (exported["peft_logits"] - exported["base_logits"]).abs().max() > 1e-2  # B != 0 really changed it
    assert merged.config.max_source_positions == 1500  # a normal 30 s Whisper
    for name in ("model.safetensors", "tokenizer.json", "preprocessor_config.json", "lorakit_export.json"):
        assert (exported["merged_dir"] / name).is_file(), name
    assert not list(exported["merged_dir"].glob("*.bin"))  # safetensors only


def test_merge_of_qlora_adapter_uses_fp32_base(tmp_path):
    """Train-time base: 4-bit NF4 (bitsandbytes on CPU). Merge must start from the fp32 weights:
    merged q_proj = W_fp32 + (alpha / r) * B @ A exactly (alpha 8, r 4 -> scale 2), a plain nn.Linear,
    and NOT dequant(NF4(W)) + update. Also checks that ``nf4_roundtrip`` reproduces the 4-bit layer's
    weights (so notebook 04's merge-recipe study measures what QLoRA trained against), and that
    base_weights="nf4" gives dequant(NF4(W)) + update, which behaves like the QLoRA model itself."""
    import bitsandbytes as bnb

    from lorakit_nb.adapter_files import save_adapter
    from lorakit_nb.export.merge import merge_adapter
    from lorakit_nb.export.qlora_merge import nf4_roundtrip
    from lorakit_nb.lora.quant import nf4_config

    q_base, _ = tiny(quantization_config=nf4_config())
    name = "model.encoder.layers.0.self_attn.q_proj"
    layer4 = q_base.get_submodule(name)
    assert isinstance(layer4, bnb.nn.Linear4bit)
    w4 = bnb.functional.dequantize_4bit(layer4.weight.data, layer4.weight.quant_state).float()
    peft_model = lora_with_nonzero_b(q_base)
    save_adapter(peft_model, tmp_path / "adapter")
    lora = peft_model.get_submodule("base_model.model." + name)
    delta = 2.0 * lora.lora_B["default"].weight @ lora.lora_A["default"].weight  # (64, 64)

    merge_adapter("tiny-whisper", tmp_path / "adapter", tmp_path / "merged")
    from transformers import WhisperForConditionalGeneration

    fp32_base, _ = tiny()
    merged = WhisperForConditionalGeneration.from_pretrained(tmp_path / "merged").eval()
    layer = merged.get_submodule(name)
    assert type(layer) is nn.Linear and layer.weight.dtype == torch.float32
    w = fp32_base.get_submodule(name).weight.detach()
    torch.testing.assert_close(layer.weight.detach(), w + delta.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(nf4_roundtrip(w), w4)
    assert (w4 - w).abs().max() > 1e-3  # NF4 rounding is real, so the two recipes differ

    # base_weights="nf4": dequant(NF4(W)) + update, i.e. the function the QLoRA model computes.
    merge_adapter("tiny-whisper", tmp_path / "adapter", tmp_path / "merged_nf4", base_weights="nf4")
    merged_nf4 = WhisperForConditionalGeneration.from_pretrained(tmp_path / "merged_nf4").eval()
    torch.testing.assert_close(merged_nf4.get_submodule(name).weight.detach(), w4 + delta.detach(),
                               atol=1e-6, rtol=1e-5)
    # Its logits match the QLoRA model's up to the 4-bit kernel's own rounding (measured ~3e-3 on logits
    # of mean size ~0.13); the fp32 merge is ~30x further away: it is a different function.
    feats = features(tiny()[1])
    qlora_logits = decoder_logits(peft_model, feats)
    gap_nf4 = (decoder_logits(merged_nf4, feats) - qlora_logits).abs().max()
    gap_fp32 = (decoder_logits(merged, feats) - qlora_logits).abs().max()
    assert gap_nf4 < 1e-2 and gap_fp32 > 10 * gap_nf4


def test_merge_variants_rows(exported):
    """On the merged tiny model: every quantized Linear has a row; the 12 LoRA layers have a non-zero
    update; deq-NF4 differs from fp32 merge by exactly the NF4 rounding of W."""
    from transformers import WhisperForConditionalGeneration

    from lorakit_nb.export.qlora_merge import (
        merge_variants,
        nf4_roundtrip,
        quantized_linear_names,
        summarize_rows,
    )

    base, _ = tiny()
    merged = WhisperForConditionalGeneration.from_pretrained(exported["merged_dir"]).eval()
    variants, rows = merge_variants(base, merged)
    # per encoder layer q,k,v,out,fc1,fc2 = 6; per decoder layer + cross-attention q,k,v,out = 10; 2 + 2 layers
    assert len(rows) == len(quantized_linear_names(base)) == 2 * 6 + 2 * 10
    assert sum(r["lora"] for r in rows) == 12
    name = "model.decoder.layers.1.encoder_attn.v_proj"
    w = base.get_submodule(name).weight.detach()
    dw = merged.get_submodule(name).weight.detach() - w
    torch.testing.assert_close(variants["deq-nf4"].get_submodule(name).weight.detach(), nf4_roundtrip(w) + dw)
    s = summarize_rows(rows)
    assert s["lora_layers"] == 12 and 0 < s["nf4_rel_error"] < 0.2


def test_requant_stats_erased_update():
    """If the 4-bit merge rounds back to W~ exactly, none of the update is kept and the merge's error
    is the whole update: kept = <0, dW> / ||dW||^2 = 0, error = ||W~ - (W~ + dW)|| / ||dW|| = 1."""
    from lorakit_nb.export.qlora_merge import _requant_stats

    wq, dw = torch.ones(4, 4), torch.full((4, 4), 0.01)
    assert _requant_stats(wq, dw, wq) == {"kept": 0.0, "error_over_delta": pytest.approx(1.0)}
    half = _requant_stats(wq, dw, wq + dw / 2)   # half the update survives: kept 0.5, error 0.5
    assert half == {"kept": pytest.approx(0.5, abs=1e-5), "error_over_delta": pytest.approx(0.5, abs=1e-5)}


def test_requant_curve_small_updates_vanish_large_ones_survive():
    """W~ = dequant(NF4(W)) lies on the NF4 grid, so an element moves only if its share of dW exceeds
    half a grid step. Gaussian (512, 512) weight, NF4 relative error ~0.09 (grid step ~0.3 sigma):
    an update of 1 % of ||W|| is rounded away; one of 30 % survives, leaving NF4-sized noise."""
    from lorakit_nb.export.qlora_merge import requant_curve

    torch.manual_seed(0)
    w = torch.randn(512, 512) * 0.05
    small, large = requant_curve(w, sizes=(0.01, 0.3))
    assert small["kept"] < 0.1 and small["error_over_delta"] > 0.95
    assert large["kept"] > 0.9 and large["error_over_delta"] < 0.5
    assert requant_curve(w, sizes=(0.01,)) == [small]   # deterministic for a seed


def test_adapter_on_wrong_base_is_refused(exported, tmp_path):
    """A d_model-32 Whisper cannot take lora_A of shape (4, 64); a Gemma has no encoder modules at all.
    Both must raise ExportError naming the adapter's base and the given one, and write nothing."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    from lorakit_nb.export.merge import merge_adapter

    base, processor = tiny()
    cfg = WhisperConfig(**{**base.config.to_dict(), "d_model": 32, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64})
    other = tmp_path / "whisper-d32"
    WhisperForConditionalGeneration(cfg).save_pretrained(other)
    processor.save_pretrained(other)
    adapter = exported["tmp"] / "adapter"
    with pytest.raises(ExportError, match=r"tiny-whisper.*whisper-d32.*needs in_features 64, the base has 32"):
        merge_adapter(str(other), adapter, tmp_path / "out")
    with pytest.raises(ExportError, match=r"tiny-gemma.*has no module"):
        merge_adapter("tiny-gemma", adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def ct2_ready(exported):
    """The merged tiny model with every special/timestamp token suppressed (a random model would
    otherwise emit timestamps, which transformers turns into segments), exported as CT2 float32 + int8."""
    from transformers import WhisperTokenizer

    from lorakit_nb.export.ct2 import export_ct2

    merged_dir = exported["merged_dir"]
    gen_path = merged_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    tok = WhisperTokenizer.from_pretrained(merged_dir)
    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    gen["suppress_tokens"] = list(range(eot + 1, len(tok)))  # every special token after <|endoftext|>
    gen_path.write_text(json.dumps(gen))
    tmp = exported["tmp"]
    return {"merged": merged_dir, "f32": export_ct2(merged_dir, tmp / "ct2_f32", "float32"),
            "int8": export_ct2(merged_dir, tmp / "ct2_int8", "int8")}


def _hf_tokens(model, feats, cap):
    with torch.no_grad():
        out = model.generate(input_features=feats, language="zh", task="transcribe", max_new_tokens=cap,
                             do_sample=False, num_beams=1)  # (batch, new tokens), end-of-text then padding
    return [[t for t in row.tolist()] for row in out]


@pytest.mark.parametrize("seconds", [30, 5])
def test_ct2_greedy_tokens_equal_transformers(ct2_ready, seconds):
    """Identical log-mels + prompt -> identical greedy tokens, at the full window (3000 frames) and a
    5 s window (500 frames: transformers needs shrink_audio_context, CT2 takes it as is). The random
    model rarely stops, so the 12-token cap is hit: this also pins CT2's max_length = 2 x new tokens."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from lorakit_nb.export.ct2 import ct2_generate, load_ct2, prompt_ids
    from lorakit_nb.speech.whisper import shrink_audio_context

    model = WhisperForConditionalGeneration.from_pretrained(ct2_ready["merged"]).eval()
    processor = WhisperProcessor.from_pretrained(ct2_ready["merged"])
    if seconds != 30:
        shrink_audio_context(model, processor, seconds)
    feats = features(processor, (1.0, 2.5, 4.0))
    assert feats.shape[-1] == seconds * 100
    cap = 12
    eot = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    hf = [[t for t in row if t != eot] for row in _hf_tokens(model, feats, cap)]  # drop end-of-text/padding
    ct2 = ct2_generate(load_ct2(ct2_ready["f32"], "float32"), feats.numpy(), prompt_ids(processor.tokenizer), cap)
    assert ct2 == hf
    assert max(len(t) for t in hf) == cap


def test_speed_check_times_every_engine_in_one_rotation(ct2_ready):
    """speed_check with `also`: transformers, CT2 int8 and CT2 float32 each decode every clip once (after the
    warm-up); the ratio is transformers over the main engine, and every engine's seconds are reported."""
    import numpy as np
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from lorakit_nb.export.ct2 import speed_check

    model = WhisperForConditionalGeneration.from_pretrained(ct2_ready["merged"]).eval()
    processor = WhisperProcessor.from_pretrained(ct2_ready["merged"])
    audios = [np.zeros(16000, np.float32), np.zeros(8000, np.float32)]
    r = speed_check(model, processor, ct2_ready["int8"], audios, max_new_tokens=4, also={"float32": ct2_ready["f32"]})
    assert set(r["seconds"]) == {"hf_fp32", "ct2_int8", "ct2_float32"} and r["n_clips"] == 2
    assert all(v > 0 for v in r["seconds"].values())
    assert r["ratio"] == r["seconds"]["hf_fp32"] / r["seconds"]["ct2_int8"] == r["hf_seconds"] / r["ct2_seconds"]


def test_ct2_int8_loads_in_faster_whisper(ct2_ready):
    """The int8 folder is what faster-whisper expects: model.bin + tokenizer.json + preprocessor_config.json,
    and WhisperModel loads it; int8 weights take ~1 byte per Linear weight vs 4 in float32."""
    from faster_whisper import WhisperModel

    from lorakit_nb.io import dir_bytes

    for name in ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (ct2_ready["int8"] / name).is_file(), name
    model = WhisperModel(str(ct2_ready["int8"]), device="cpu", compute_type="int8")
    assert model.feature_extractor.nb_max_frames == 3000
    assert dir_bytes(ct2_ready["int8"] / "model.bin") < dir_bytes(ct2_ready["f32"] / "model.bin")


def test_model_card(tmp_path):
    from lorakit_nb.export.merge import LICENCES, write_model_card

    (tmp_path / "model.bin").write_bytes(b"x" * 10)
    card = write_model_card(tmp_path, "whisper-base", "40 synthetic clips", {"CER": 0.125}, LICENCES["whisper"],
                            usage="print('hi')")
    text = card.read_text()
    assert "whisper-base" in text and "MIT" in text and "| CER | 0.125 |" in text
    assert "`model.bin` (10 bytes)" in text
    with pytest.raises(ExportError, match="licence"):
        write_model_card(tmp_path, "whisper-base", "d", {}, "")


def _tiny_manifest(tmp_path, n=2):
    """First n rows of the real test manifest, with absolute audio paths."""
    rows = [json.loads(line) for line in TEST_MANIFEST.read_text("utf-8").splitlines()[:n]]
    for r in rows:
        r["audio"] = str(TEST_MANIFEST.parent / r["audio"])
    path = tmp_path / "mini.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path, rows


@pytest.mark.skipif(not TEST_MANIFEST.is_file(), reason="speech data not generated")
def test_evaluate_manifest_json(ct2_ready, tmp_path):
    """JSON fields and their arithmetic: per utterance edits = S + D + I and cer = edits / ref_chars;
    corpus cer = total edits / total ref chars. The first test sentence 下个季度的目标是用户翻一番
    has 13 characters and no punctuation, so its normalized form is itself and ref_chars is 13.
    CT2 float32 must give the same transcripts as transformers at the same window."""
    from lorakit_nb.export.score import evaluate_manifest
    from lorakit_nb.normalize import normalize_zh

    manifest, rows = _tiny_manifest(tmp_path)
    out = evaluate_manifest(str(ct2_ready["merged"]), manifest, tmp_path / "hf.json", audio_seconds=5)
    saved = json.loads((tmp_path / "hf.json").read_text("utf-8"))
    assert saved["cer"] == out["cer"] and saved["engine"] == "transformers" and saved["audio_seconds"] == 5
    u = saved["utterances"]
    assert [x["reference"] for x in u] == [r["text"] for r in rows]
    assert u[0]["reference_normalized"] == normalize_zh(rows[0]["text"])
    if rows[0]["text"] == "下个季度的目标是用户翻一番":
        assert u[0]["ref_chars"] == 13
    for x in u:
        assert x["hypothesis_normalized"] == normalize_zh(x["hypothesis"])
        assert x["edits"] == x["substitutions"] + x["deletions"] + x["insertions"]
        assert x["cer"] == pytest.approx(x["edits"] / x["ref_chars"])
    assert saved["cer"] == pytest.approx(sum(x["edits"] for x in u) / sum(x["ref_chars"] for x in u))
    ct2 = evaluate_manifest(str(ct2_ready["f32"]), manifest, tmp_path / "ct2.json", audio_seconds=5,
                            compute_type="float32")
    assert ct2["engine"] == "ctranslate2"
    assert [x["hypothesis"] for x in ct2["utterances"]] == [x["hypothesis"] for x in u]


def test_text_adapter_merge_and_missing_run(tmp_path):
    """tiny-gemma + LoRA (non-zero B) saved under a fake run folder: merge_text_adapter finds it, the
    merged model's logits equal base + adapter (fp32 rounding only), and the run's chrF is carried
    over for the card (train_seconds is not a score). A run folder without an adapter returns None
    (the notebook skips the part); notebook 02's layout resolves to mandarin/adapter."""
    from peft import LoraConfig, get_peft_model

    from lorakit_nb.adapter_files import save_adapter
    from lorakit_nb.export.text import merge_text_adapter
    from lorakit_nb.models.resolve import load_causal_lm

    model, _ = load_causal_lm("tiny-gemma")
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    run = tmp_path / "run02"
    save_adapter(peft_model, run / "adapter")
    (run / "adapter" / "lorakit_train.json").write_text(json.dumps({"base_model": "tiny-gemma"}))
    (run / "metrics.json").write_text(json.dumps({"chrf_after": 41.5, "train_seconds": 3.0}))
    (run / "mandarin" / "checkpoint-3").mkdir(parents=True)  # trainer checkpoints are never picked
    save_adapter(peft_model, run / "mandarin" / "checkpoint-3" / "x")
    res = merge_text_adapter(run, tmp_path / "merged")
    assert res["adapter_dir"] == str(run / "adapter")
    assert res["base_model"] == "tiny-gemma" and res["scores"] == {"chrf_after": 41.5}
    assert res["max_abs_logit_diff"] < 1e-4
    assert res["merged_bytes"] > res["adapter_bytes"] > 0
    assert merge_text_adapter(tmp_path / "nothing_here", tmp_path / "merged2") is None
    from lorakit_nb.export.text import find_adapter

    nb02 = tmp_path / "nb02_layout"
    for sub in ("english/adapter", "mandarin/adapter", "mandarin_more/adapter", "mandarin/checkpoint-8"):
        (nb02 / sub).mkdir(parents=True)
        (nb02 / sub / "adapter_config.json").write_text("{}")
    assert find_adapter(nb02) == nb02 / "mandarin" / "adapter"


def test_read_predictions_formats(tmp_path):
    """Notebook 03 writes {"rows": [{"reference", "zero_shot", "hypothesis"}, ...]}; a plain list of
    strings is one system's hypotheses. Rows for other clips, a wrong count or a field a plain list
    cannot have are refused with ExportError."""
    from lorakit_nb.export.score import read_predictions

    rows = [{"reference": "你好", "zero_shot": "妳好", "hypothesis": "你好"},
            {"reference": "再见", "zero_shot": "在見", "hypothesis": "再见"}]
    p = tmp_path / "pred.json"
    p.write_text(json.dumps({"rows": rows}, ensure_ascii=False), "utf-8")
    assert read_predictions(p, n=2, references=["你好", "再见"]) == ["你好", "再见"]
    assert read_predictions(p, field="zero_shot") == ["妳好", "在見"]
    with pytest.raises(ExportError, match="row 1 is for '再见'"):
        read_predictions(p, references=["你好", "谢谢"])
    with pytest.raises(ExportError, match="2 predictions for 3"):
        read_predictions(p, n=3)
    p.write_text(json.dumps(["a", "b"]), "utf-8")
    assert read_predictions(p) == ["a", "b"]
    with pytest.raises(ExportError, match="no 'zero_shot'"):
        read_predictions(p, field="zero_shot")
