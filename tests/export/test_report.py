"""Tests for notebook 04's helpers: the merge-recipe choice on dev (export.recipes), the speed / size tables
and model cards (export.report), the figures (export.plot), CER under four normalizers (cer_analysis).

Hand-worked examples; the tiny-whisper ones build real merges from an adapter with a non-zero B.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lorakit_nb.errors import ExportError

ROOT = Path(__file__).resolve().parents[2]
REFS = ["今天天气很好", "我们有十二个人", "你好"]


# --- export.recipes: the choice on dev -------------------------------------------------------------

def test_compare_recipes_hand_example():
    """3 references of 6 + 7 + 2 = 15 characters. deq-NF4 is perfect (CER 0). fp32 substitutes one
    character (气 -> 汽): CER 1/15, same transcript on 2 of 3 clips. 4-bit deletes 十二 and misses 好:
    3 edits, CER 3/15. Each paired difference is >= 0 on every resample and > 0 on most."""
    from lorakit_nb.export.recipes import compare_recipes

    hyps = {"deq-nf4": list(REFS), "fp32": ["今天天汽很好", "我们有十二个人", "你好"],
            "4-bit": ["今天天气很好", "我们有个人", "你"]}
    c = compare_recipes(REFS, hyps)
    assert c["cer"] == {"deq-nf4": 0.0, "fp32": pytest.approx(1 / 15), "4-bit": pytest.approx(3 / 15)}
    assert c["same_as_reference"] == {"fp32": pytest.approx(2 / 3), "4-bit": pytest.approx(1 / 3)}
    assert c["vs"]["fp32"]["diff"] == pytest.approx(1 / 15) and c["vs"]["fp32"]["ci95"][0] == 0.0
    assert c["vs"]["fp32"]["better"] is None and "no difference shown" in c["vs"]["fp32"]["reading"]
    assert set(c["vs"]) == {"fp32", "4-bit"} and c["clips"] == 3
    with pytest.raises(ExportError, match="reference recipe"):
        compare_recipes(REFS, {"fp32": list(REFS)})


def test_choose_merge_ships_the_evaluated_model_unless_fp32_is_shown_better():
    from lorakit_nb.export.recipes import choose_merge

    def comparison(better):
        return {"reference": "deq-nf4", "vs": {"fp32": {"better": better}, "4-bit": {"better": "deq-nf4"}}}

    assert choose_merge(comparison(None)) == "nf4"          # no difference shown: the evaluated model
    assert choose_merge(comparison("deq-nf4")) == "nf4"
    assert choose_merge(comparison("fp32")) == "fp32"       # shown better on dev: the rule allows it
    assert choose_merge(comparison("fp32"), "nf4") == "nf4" and choose_merge(comparison(None), "fp32") == "fp32"
    with pytest.raises(ExportError, match="MERGE_BASE"):
        choose_merge(comparison(None), "4-bit")


def test_comparison_record_is_json_able():
    from lorakit_nb.export.recipes import compare_recipes, comparison_record

    record = comparison_record(compare_recipes(REFS, {"deq-nf4": list(REFS), "fp32": ["今天天汽很好", *REFS[1:]]}))
    assert record["deq-nf4"] == {"cer": 0.0}
    assert record["fp32"]["same_as_reference"] == pytest.approx(2 / 3) and record["fp32"]["better"] is None
    json.dumps(record)


def test_build_recipes_on_tiny_whisper(tmp_path):
    """fp32 = W + dW (the peft merge); deq-NF4 = NF4(W) + dW, the same dW; 4-bit differs from deq-NF4;
    the base is left untouched; every quantized Linear has a row. Then each recipe transcribes a clip."""
    from lorakit_nb.adapter_files import save_adapter
    from lorakit_nb.export.qlora_merge import nf4_roundtrip
    from lorakit_nb.export.recipes import build_recipes, transcribe_recipes
    from lorakit_nb.models.resolve import load_whisper
    from tests.export.test_merge_ct2 import lora_with_nonzero_b, tiny

    base0, processor = tiny()
    w0 = base0.get_submodule("model.encoder.layers.0.self_attn.q_proj").weight.detach().clone()
    save_adapter(lora_with_nonzero_b(base0), tmp_path / "adapter")
    base, models, rows = build_recipes("tiny-whisper", tmp_path / "adapter")
    assert set(models) == {"fp32", "deq-nf4", "4-bit"} and len(rows) == 2 * 6 + 2 * 10
    name = "model.encoder.layers.0.self_attn.q_proj"
    w = base.get_submodule(name).weight.detach()
    torch.testing.assert_close(w, w0)  # the base is not merged into
    dw = models["fp32"].get_submodule(name).weight.detach() - w
    assert dw.abs().max() > 0
    torch.testing.assert_close(models["deq-nf4"].get_submodule(name).weight.detach(), nf4_roundtrip(w) + dw)
    assert not torch.equal(models["4-bit"].get_submodule(name).weight, models["deq-nf4"].get_submodule(name).weight)
    _, processor = load_whisper("tiny-whisper")
    audio = (0.1 * torch.randn(16000, generator=torch.Generator().manual_seed(0))).numpy()
    hyps = transcribe_recipes({"fp32": models["fp32"]}, processor, [audio], audio_seconds=2)
    assert list(hyps) == ["fp32"] and len(hyps["fp32"]) == 1 and isinstance(hyps["fp32"][0], str)


def test_merge_adapter_auto_reproduces_the_trained_model(tmp_path):
    """base_weights="auto": an adapter whose lorakit_asr.json says quantized (QLoRA) is merged into
    dequant(NF4(W)), the weights it was trained against; one without that record into W. Checked weight
    for weight against the explicit recipes, and recorded in lorakit_export.json."""
    from lorakit_nb.adapter_files import ExportSidecar, SpeechSidecar, save_adapter
    from lorakit_nb.export.merge import merge_adapter
    from tests.export.test_merge_ct2 import lora_with_nonzero_b, tiny

    peft_model = lora_with_nonzero_b(tiny()[0])
    save_adapter(peft_model, tmp_path / "qlora", sidecar=SpeechSidecar(base_model="tiny-whisper", quantized=True))
    save_adapter(peft_model, tmp_path / "plain")
    name = "model.decoder.layers.0.self_attn.v_proj.weight"

    def weight(folder):
        from safetensors import safe_open

        with safe_open(folder / "model.safetensors", framework="pt") as f:
            return f.get_tensor(name)

    folders = {}
    for adapter, recipe in (("qlora", "auto"), ("qlora", "nf4"), ("plain", "auto"), ("plain", "fp32")):
        folders[adapter, recipe] = merge_adapter("tiny-whisper", tmp_path / adapter, tmp_path / f"{adapter}-{recipe}",
                                                 base_weights=recipe)
    assert torch.equal(weight(folders["qlora", "auto"]), weight(folders["qlora", "nf4"]))
    assert torch.equal(weight(folders["plain", "auto"]), weight(folders["plain", "fp32"]))
    assert not torch.equal(weight(folders["qlora", "auto"]), weight(folders["plain", "auto"]))
    assert ExportSidecar.load(folders["qlora", "auto"]).base_weights == "nf4"
    with pytest.raises(ExportError, match="base_weights"):
        merge_adapter("tiny-whisper", tmp_path / "plain", tmp_path / "x", base_weights="4-bit")


# --- export.report --------------------------------------------------------------------------------

def test_speed_table_splits_engine_and_quantization():
    """Batch 1: HF 12 s, CT2 float32 6 s, CT2 int8 3 s -> engine x2, quantization x2, int8 x4 vs HF."""
    from lorakit_nb.export.report import speed_table

    speed = {"n_clips": 4, "seconds": {"hf_fp32": 12.0, "ct2_float32": 6.0, "ct2_int8": 3.0}}
    rows, engine, quant = speed_table(speed, {"hf_fp32": 20.0, "ct2_float32": 10.0, "ct2_int8": 8.0},
                                      {"hf_fp32": 0.1, "ct2_float32": 0.1, "ct2_int8": 0.12}, batch_size=8, n_batched=40)
    assert engine == 2.0 and quant == 2.0
    int8 = next(r for r in rows if r["engine"] == "ct2_int8")
    assert int8["x vs HF (batch 1)"] == 4.0 and int8["x vs HF (batch 8)"] == 2.5 and int8["CER"] == 0.12
    assert int8["batch 1, 4 clips (s)"] == 3.0 and int8["batch 8, 40 clips (s)"] == 8.0
    with pytest.raises(ExportError, match="float32"):
        speed_table({"n_clips": 4, "seconds": {"hf_fp32": 1.0, "ct2_int8": 1.0}}, {}, {}, batch_size=8, n_batched=4)


def test_size_table_against_float32_and_float16():
    """int8 80 of float32 320 -> 75 % smaller; of float16 160 -> 50 % smaller: the baseline decides."""
    from lorakit_nb.export.report import size_table

    assert size_table({"ct2_int8": 80, "ct2_float32": 320, "ct2_float16": 160}) == \
        {"int8_vs_float32": 0.75, "int8_vs_float16": 0.5}


def test_subset_manifests(tmp_path):
    from lorakit_nb.export.report import subset_manifests
    from lorakit_nb.speech.data import load_manifest

    src = ROOT / "data" / "zh_speech" / "dev.jsonl"
    written = subset_manifests({"dev": src}, tmp_path / "small", 3)
    rows, full = load_manifest(written["dev"]), load_manifest(src)
    assert [r["text"] for r in rows] == [r["text"] for r in full[:3]]


def test_whisper_cards_lead_with_their_own_cer(tmp_path):
    from lorakit_nb.export.report import WHISPER_NOTES, whisper_cards

    folders = {}
    for kind in ("merged", "int8"):
        folders[kind] = tmp_path / kind
        folders[kind].mkdir()
        (folders[kind] / "model.bin").write_bytes(b"x")
    cards = whisper_cards(folders, {"merged": 0.081, "int8": 0.093}, {"CER zero-shot": 0.5}, base_model="whisper-base",
                          data_note="d", notes=["merged into nf4"], audio_seconds=5, n_test=40)
    merged, int8 = (c.read_text("utf-8") for c in cards)
    first_row = [line for line in int8.splitlines() if line.startswith("| CER")][0]
    assert first_row == "| CER on the 40 test clips, this folder (CTranslate2 int8, normalize_zh) | 0.093 |"
    assert "this folder (transformers fp32, normalize_zh) | 0.081 |" in merged and "MIT" in merged
    assert "lorakit serve --model int8" in int8 and "shrink_audio_context(model, processor, 5)" in merged
    assert "merged into nf4" in int8 and WHISPER_NOTES[0] in int8
    # the title names the base the adapter was trained on, whichever it is
    tiny = whisper_cards({"int8": folders["int8"]}, {"int8": 0.5}, {}, base_model="tiny-whisper", data_note="d",
                         notes=[], audio_seconds=5, n_test=8)[0].read_text("utf-8")
    assert "tiny-whisper + Mandarin LoRA, CTranslate2 int8" in tiny and "whisper-base +" not in tiny


def test_text_card(tmp_path):
    from lorakit_nb.export.report import text_card

    (tmp_path / "m").mkdir()
    card = text_card(tmp_path / "m", {"base_model": "gemma-3-270m", "scores": {"chrf_after": 52.5}})
    text = card.read_text("utf-8")
    assert "Gemma Terms of Use" in text and "| chrf_after | 52.5 |" in text and 'from_pretrained("m")' in text


def test_converted_bytes_float16_is_half_of_float32(tmp_path):
    """Every weight at 2 bytes instead of 4: the float16 model.bin is about half the float32 one (the
    small header and vocabulary aside); nothing is left on disk."""
    pytest.importorskip("ctranslate2")
    from lorakit_nb.export.ct2 import converted_bytes
    from tests.export.test_merge_ct2 import tiny

    model, processor = tiny()
    model.save_pretrained(tmp_path / "hf")
    processor.save_pretrained(tmp_path / "hf")
    f16, f32 = converted_bytes(tmp_path / "hf", "float16"), converted_bytes(tmp_path / "hf", "float32")
    assert 0.45 < f16 / f32 < 0.55
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]
    with pytest.raises(ExportError, match="quantization"):
        converted_bytes(tmp_path / "hf", "int3")


# --- cer_analysis.cer_by_normalizer, qlora_merge.kept_in_words ------------------------------------

def test_cer_by_normalizer_hand_example():
    """我们有十二个人。 vs 我們有12個人 (8 and 6 characters). Raw: 們/们 and 個/个 substitutions, 十二 -> 12 two
    substitutions, 。 deleted = 5 edits / 8 = 0.625. Whisper basic and light drop 。 only: 4 / 7.
    normalize_zh also folds Traditional and reads 12 as 十二: 0."""
    from lorakit_nb.cer_analysis import cer_by_normalizer

    cers = cer_by_normalizer(["我们有十二个人。"], ["我們有12個人"])
    assert list(cers) == ["none (raw text)", "Whisper basic", "light (width, case, punct.)", "lorakit normalize_zh"]
    assert cers["none (raw text)"] == pytest.approx(5 / 8)
    assert cers["Whisper basic"] == pytest.approx(4 / 7) and cers["light (width, case, punct.)"] == pytest.approx(4 / 7)
    assert cers["lorakit normalize_zh"] == 0.0


def test_kept_in_words():
    from lorakit_nb.export.qlora_merge import kept_in_words

    assert [kept_in_words(k) for k in (0.02, 0.2, 0.5, 0.8, 0.99)] == \
        ["well under half", "well under half", "about half", "about half", "about all of it"]


# --- export.plot -----------------------------------------------------------------------------------

def test_recipe_figure_draws_each_difference_with_its_interval():
    import matplotlib

    matplotlib.use("Agg")
    from lorakit_nb.export.plot import recipe_figure
    from lorakit_nb.export.recipes import compare_recipes

    fig = recipe_figure(compare_recipes(REFS, {"deq-nf4": list(REFS), "fp32": ["今天天汽很好", *REFS[1:]],
                                               "4-bit": ["今天", *REFS[1:]]}))
    bars, forest = fig.axes
    assert [t.get_text() for t in bars.get_yticklabels()] == ["deq-nf4", "fp32", "4-bit"]
    assert [t.get_text() for t in forest.get_yticklabels()] == ["fp32 - deq-nf4", "4-bit - deq-nf4"]
    assert len(forest.containers) == 2  # one errorbar per difference


def test_other_figures_build():
    import matplotlib

    matplotlib.use("Agg")
    from lorakit_nb.export import plot

    assert len(plot.normalizer_bars({"none": 0.9, "lorakit normalize_zh": 0.5}, 40).axes) == 1
    curve = [{"delta_rel": 0.01, "kept": 0.02, "error_over_delta": 1.0}, {"delta_rel": 0.3, "kept": 0.99,
                                                                          "error_over_delta": 0.3}]
    assert len(plot.requant_figure(curve, [{"delta_rel": 0.02, "delta_kept_4bit": 0.1,
                                            "err_4bit_over_delta": 0.9}]).axes) == 2
    rows = [{"bin": "1-9", "n": 2, "cer": 0.1}, {"bin": "10+", "n": 1, "cer": None}]
    assert len(plot.error_figure(rows, rows, [0.5, 0.2], [0.1, 0.3]).axes) == 2
    fig = plot.speed_size_figure({"HF": 2.0, "CT2 int8": 1.0}, 2, 500, {"adapter": 1e6, "CT2 int8": 8e7})
    assert [t.get_text() for t in fig.axes[1].texts] == [" 1.0 MB", " 80.0 MB"]
