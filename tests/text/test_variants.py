"""Tests for the adapter-variant keys of a text config (DoRA, rsLoRA, PiSSA / OLoRA init, LoRA+, all-linear)
as `text/train.py` hands them to peft, on tiny-gemma (2 layers, hidden 64, random weights).

Each test checks the thing the key is meant to change, against the plain-LoRA value: a magnitude
vector per adapted layer (DoRA), the scaling (rsLoRA), the base weights and the step-0 output (PiSSA),
the optimizer's learning rates (LoRA+), the number of adapted layers (all-linear).
"""
import json
import math

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer
from transformers import TrainerCallback

from lorakit_nb.errors import ConfigError
from lorakit_nb.models.resolve import load_causal_lm
from lorakit_nb.text.adapters import lora_scalings
from lorakit_nb.text.config import config_from_dict
from lorakit_nb.text.train import attach_lora, train_from_config

PAIRS = [("侬好", "你好"), ("谢谢侬", "谢谢你"), ("阿拉走了", "我们走了"), ("今朝落雨", "今天下雨"),
         ("勿晓得", "不知道"), ("伊拉来了", "他们来了")]


def _config(tmp_path, **keys):
    """A 2-step run: 4 training pairs, batch 2, no dropout (so two runs see the same numbers)."""
    d = tmp_path / "wu"
    d.mkdir(exist_ok=True)
    rows = lambda rs: "wu,mandarin,english\n" + "".join(f"{w},{m},x\n" for w, m in rs)
    (d / "train.csv").write_text(rows(PAIRS[:4]), "utf-8")
    (d / "dev.csv").write_text(rows(PAIRS[4:]), "utf-8")
    raw = {"base_model": "tiny-gemma", "train_data_dir": str(d), "lora_rank": 4, "lora_alpha": 8, "dropout": 0.0,
           "batch_size": 2, "max_steps": 2, "save_steps": 2, "logging_steps": 1, "learning_rate": 1e-2,
           "early_stopping_patience": 0, "output_dir": str(tmp_path / "out"), "adapter_name": "mandarin", **keys}
    return config_from_dict(raw)


def _lora_layers(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def test_dora_rslora_all_linear_reach_peft(tmp_path):
    """On [q_proj, v_proj] x 2 layers = 4 LoRA layers, r = 4, alpha = 8:
    plain: scaling alpha / r = 2, no magnitude vectors;
    use_rslora: scaling alpha / sqrt(r) = 8 / 2 = 4 (the same as plain here only if r were 1);
    use_dora: one trainable lora_magnitude_vector per layer, one entry per output row (out_features);
    all-linear: every nn.Linear in the blocks, q,k,v,o,gate,up,down = 7 x 2 layers = 14, the head left out."""
    plain = attach_lora(load_causal_lm("tiny-gemma", offline=True)[0], _config(tmp_path))
    assert len(_lora_layers(plain)) == 4 and set(lora_scalings(plain)) == {2.0}
    assert not any("lora_magnitude_vector" in n for n, _ in plain.named_parameters())

    rs = attach_lora(load_causal_lm("tiny-gemma", offline=True)[0], _config(tmp_path, use_rslora=True))
    assert lora_scalings(rs) == pytest.approx([8 / math.sqrt(4)] * 4)

    dora = attach_lora(load_causal_lm("tiny-gemma", offline=True)[0], _config(tmp_path, use_dora=True))
    mags = {n: p for n, p in dora.named_parameters() if "lora_magnitude_vector" in n}
    assert len(mags) == 4 and all(p.requires_grad for p in mags.values())
    for layer in _lora_layers(dora).values():
        assert layer.lora_magnitude_vector["mandarin"].weight.shape == (layer.out_features,)

    wide = attach_lora(load_causal_lm("tiny-gemma", offline=True)[0], _config(tmp_path, target_modules="all-linear"))
    adapted = _lora_layers(wide)
    assert len(adapted) == 14 and not any("lm_head" in n for n in adapted)
    assert {n.rsplit(".", 1)[-1] for n in adapted} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                        "up_proj", "down_proj"}


def test_pissa_moves_the_top_singular_directions_and_saves_plain_lora(tmp_path):
    """PiSSA: A, B = the top-r singular directions of W (scaled), the base keeps W - scaling * B A.
    So the base weight changes (by far more than rounding), yet the output at step 0 equals the
    untouched model's: W_res + scaling * B A = W up to float32 SVD rounding (measured max |diff| of the
    logits 3.6e-7 on tiny-gemma with dropout 0; the bound 1e-4 is ~300x that, and 400x below the largest
    weight change, 0.048). With dropout > 0 in train mode the step-0 output differs (B A is not 0 here).
    After 2 steps the saved adapter is plain LoRA of rank 2r (B'A' - B0A0), which on a FRESH base gives
    the trained model's logits; a PiSSA init on a base that holds other adapters is refused."""
    ids = load_causal_lm("tiny-gemma", offline=True)[1](["侬好 hello"], return_tensors="pt")
    ref_model = load_causal_lm("tiny-gemma", offline=True)[0]
    w0 = ref_model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    with torch.no_grad():
        ref = ref_model(**ids).logits
    cfg = _config(tmp_path, init_lora_weights="pissa")
    pissa = attach_lora(load_causal_lm("tiny-gemma", offline=True)[0], cfg)
    w_res = pissa.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert (w_res - w0).abs().max() > 1e-2
    with torch.no_grad():
        torch.testing.assert_close(pissa(**ids).logits, ref, rtol=0, atol=1e-4)
    with pytest.raises(ConfigError, match="shares with its other adapters"):
        attach_lora(pissa, config_from_dict({**cfg.to_dict(), "adapter_name": "second"}))

    res = train_from_config(cfg)
    with torch.no_grad():
        trained = res.model(**ids).logits
    assert (trained - ref).abs().max() > 1e-3  # it learned something
    saved = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text("utf-8"))
    assert (saved["r"], saved["init_lora_weights"]) == (8, True)
    sidecar = json.loads((tmp_path / "out" / "adapter" / "lorakit_train.json").read_text("utf-8"))
    assert sidecar["init_lora_weights"] == "pissa" and sidecar["saved_as"].startswith("lora rank 8")
    fresh = PeftModel.from_pretrained(load_causal_lm("tiny-gemma", offline=True)[0], res.adapter_dir)
    with torch.no_grad():
        torch.testing.assert_close(fresh(**ids).logits, trained, rtol=0, atol=1e-4)


class _Groups(TrainerCallback):
    """Keeps {lr: parameter names} of the optimizer's non-empty param groups at the first step."""

    groups = None

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.groups is None:
            names = {id(p): n for n, p in model.named_parameters()}
            self.groups = {g["lr"]: [names[id(p)] for p in g["params"]] for g in optimizer.param_groups if g["params"]}


def test_loraplus_gives_b_ratio_times_the_learning_rate(tmp_path):
    """loraplus_lr_ratio 16 at learning_rate 1e-2, constant schedule: every lora_A at 1e-2, every lora_B
    at 0.16, and each trainable tensor in exactly one group; without the key Trainer's own AdamW has
    one learning rate for all. The sidecar records the ratio."""
    seen = {}
    for ratio in (None, 16.0):
        cfg = _config(tmp_path, loraplus_lr_ratio=ratio, lr_scheduler_type="constant", max_steps=1, save_steps=1,
                      output_dir=str(tmp_path / f"out{ratio}"))
        groups = _Groups()
        res = train_from_config(cfg, callbacks=[groups])
        seen[ratio] = groups.groups
        sidecar = json.loads((tmp_path / f"out{ratio}" / "adapter" / "lorakit_train.json").read_text("utf-8"))
        assert sidecar["loraplus_lr_ratio"] == ratio and res.steps == 1
    assert list(seen[None]) == [pytest.approx(1e-2)]
    lrs = sorted(seen[16.0])
    assert lrs == [pytest.approx(1e-2), pytest.approx(0.16)]
    a_names, b_names = seen[16.0][lrs[0]], seen[16.0][lrs[1]]
    assert all("lora_A" in n for n in a_names) and all("lora_B" in n for n in b_names)
    assert len(a_names) == len(b_names) == 4
