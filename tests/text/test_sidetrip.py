"""Tests for the helpers notebooks 02 / 02b call: `learned_words`, `mandarin_identity`, the strength curve's
outputs and intervals (`plot_strength_curve`), `train_variants` and `DevScorer` (exercise 02.4's scorer),
on hand-made numbers or tiny-gemma (2 layers, random weights)."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from lorakit_nb.metrics import chrf  # noqa: E402
from lorakit_nb.models.resolve import load_causal_lm  # noqa: E402
from lorakit_nb.text.evaluate import learned_words, mandarin_identity, strength_curve  # noqa: E402
from lorakit_nb.text.plot import plot_strength_curve  # noqa: E402
from lorakit_nb.text.train import attach_lora  # noqa: E402
from lorakit_nb.text.variants import DevScorer, train_variants  # noqa: E402

from .test_variants import _config  # noqa: E402


def test_learned_words_uses_the_stated_share():
    """阿拉: 2 hits of 4 = 0.5 < 0.75 -> not learned; 3 of 4 = 0.75 -> learned (the bound is inclusive);
    侬: 7 of 8 = 0.875 -> learned. At a share of 0.5 the 2-of-4 word counts as learned."""
    rows = [{"wu": "阿拉", "n": 4, "hits": 2}, {"wu": "伐", "n": 4, "hits": 3}, {"wu": "侬", "n": 8, "hits": 7}]
    assert learned_words(rows) == {"阿拉": False, "伐": True, "侬": True}
    assert learned_words(rows, 0.5)["阿拉"] is True
    assert learned_words([{"wu": "勿", "n": 5, "hits_lora": 1}], column="hits_lora") == {"勿": False}


def test_strength_curve_keeps_outputs_and_the_plot_gives_intervals_around_them():
    """With `known` results nothing is generated; each row carries its outputs, and each point's bootstrap
    interval (resampled sentences) contains the point itself (chrF of the full set)."""
    refs = ["你好", "我们走了", "今天下雨", "不知道"]
    half = {"chrf": chrf(refs, ["你好", "我们走", "今朝落雨", "不晓得"]), "exact_match": 0.25, "repetition_rate": 0.0,
            "outputs": ["你好", "我们走", "今朝落雨", "不晓得"]}
    full = {"chrf": 100.0, "exact_match": 1.0, "repetition_rate": 0.0, "outputs": list(refs)}
    curve = strength_curve(None, None, [], (0.5, 1.0), known={0.5: half, 1.0: full})
    assert [r["outputs"] for r in curve] == [half["outputs"], refs]
    intervals = plot_strength_curve(curve, refs, chosen=1.0)
    lo, hi = intervals[0.5]
    assert lo <= curve[0]["chrf"] <= hi and lo < hi  # the half-right outputs vary under resampling
    assert intervals[1.0] == (100.0, 100.0)  # every resample of a perfect set is perfect


def test_mandarin_identity_at_scale_zero_is_the_base(tmp_path):
    """The base (scale 0) and an adapter whose B is still zero (fresh LoRA) give the same outputs: the
    `unchanged` share and chrF agree at both scales; each row keeps its examples with the input as reference."""
    model, tok = load_causal_lm("tiny-gemma", offline=True)
    model = attach_lora(model, _config(tmp_path))
    pairs = [{"wu": "侬好", "mandarin": "你好", "english": "hi"}, {"wu": "谢谢侬", "mandarin": "谢谢你", "english": "x"}]
    rows = mandarin_identity(model, tok, pairs, [0.0, 1.0], "Translate: {wu}\nMandarin:", max_new_tokens=4)
    assert [r["scale"] for r in rows] == [0.0, 1.0]
    assert rows[0]["unchanged"] == rows[1]["unchanged"] and rows[0]["chrf_vs_input"] == rows[1]["chrf_vs_input"]
    assert [e["wu"] for e in rows[0]["examples"]] == [e["reference"] for e in rows[0]["examples"]] == ["你好", "谢谢你"]


def test_train_variants_and_the_dev_scorer(tmp_path):
    """Two 2-step variants on one tiny base: one row each with the run's step count, both adapters in one
    PeftModel, DoRA's file larger (a magnitude per output row). The scorer reuses a known score for the
    config's own values (no run), trains once for new values and caches that result; unknown keys fail."""
    cfg = _config(tmp_path)
    base, tok = load_causal_lm("tiny-gemma", offline=True)
    dev = [{"wu": "勿晓得", "mandarin": "不知道", "english": "x"}, {"wu": "伊拉来了", "mandarin": "他们来了", "english": "y"}]
    ev = dict(template=cfg.template, target="mandarin", max_new_tokens=4)
    rows, outputs, model = train_variants(cfg, base, tok, {"plain": {}, "dora": {"use_dora": True}}, dev,
                                          tmp_path / "variants", **ev)
    assert [r["variant"] for r in rows] == ["plain", "dora"] and all(r["steps"] == 2 for r in rows)
    assert set(model.peft_config) == {"plain", "dora"} and rows[1]["adapter_mb"] > rows[0]["adapter_mb"]
    assert set(outputs) == {"plain", "dora"} and all(len(o) == 2 for o in outputs.values())

    scorer = DevScorer(cfg, model, tok, dev, steps=2, output_dir=tmp_path / "tune", known={(4, 8, 1e-2): 42.0}, **ev)
    assert scorer({}) == 42.0 and scorer({"lora_rank": 4}) == 42.0 and scorer.runs == 0
    got = scorer({"learning_rate": 1e-3})
    assert 0 <= got <= 100 and scorer.runs == 1 and scorer({"learning_rate": 0.001}) == got and scorer.runs == 1
    with pytest.raises(KeyError, match="dropout"):
        scorer({"dropout": 0.1})
