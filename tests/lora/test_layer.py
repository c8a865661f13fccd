"""LoRA invariants, each checked on numbers we can derive by hand."""
import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from lorakit_nb.lora.layer import (
    LoRALinear,
    copy_lora_weights,
    count_lora_params,
    inject_lora,
    lora_params_for_linear,
    merge_lora,
    trainable_parameters,
)
from lorakit_nb.lora.lowrank import low_rank, svd_reconstruction_error


class OneLayer(nn.Module):
    def __init__(self, d_in=12, d_out=10):
        super().__init__()
        self.q_proj = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.q_proj(x)


def test_output_equals_base_at_init():
    """B = 0 at init, so B(Ax) = 0 and the layer returns exactly W0 x + b (bit-for-bit)."""
    torch.manual_seed(0)
    base = nn.Linear(16, 8)
    layer = LoRALinear(base, r=4, alpha=8, dropout=0.3).train()  # dropout on: still exact
    x = torch.randn(3, 16)
    assert torch.equal(layer(x), base(x))


def test_scaling_standard_and_rslora():
    """alpha / r = 16 / 4 = 4; rsLoRA alpha / sqrt(r) = 16 / 2 = 8."""
    base = nn.Linear(4, 4)
    assert LoRALinear(base, r=4, alpha=16).scaling == 4.0
    assert LoRALinear(base, r=4, alpha=16, use_rslora=True).scaling == 8.0


def test_hand_computed_forward():
    """W0 = 0, A = [[1, 0]], B = [[2], [3]], alpha = r = 1: h = B(Ax) = [2 x0, 3 x0]."""
    base = nn.Linear(2, 2, bias=False)
    nn.init.zeros_(base.weight)
    layer = LoRALinear(base, r=1, alpha=1)
    with torch.no_grad():
        layer.lora_A.copy_(torch.tensor([[1.0, 0.0]]))
        layer.lora_B.copy_(torch.tensor([[2.0], [3.0]]))
    out = layer(torch.tensor([[5.0, 7.0]]))
    assert out.tolist() == [[10.0, 15.0]]


def test_merged_equals_unmerged_with_nonzero_b():
    """Merging folds scaling * B @ A into W0; outputs must not change (B random, not zero)."""
    torch.manual_seed(1)
    layer = LoRALinear(nn.Linear(12, 10), r=3, alpha=6)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 12)
    before = layer(x)
    assert (before - layer.base(x)).abs().max() > 1e-2  # the adapter really does something
    merged = layer.merged_linear()
    torch.testing.assert_close(merged(x), before)
    layer.merge()
    torch.testing.assert_close(layer(x), before)
    layer.unmerge()
    torch.testing.assert_close(layer(x), before)


def test_parity_with_peft_before_and_after_merge():
    """Same W0, A, B (non-zero) in ours and peft's lora.Linear: equal outputs, then equal merged weights."""
    torch.manual_seed(2)
    base = OneLayer()
    ours = copy.deepcopy(base)
    inject_lora(ours, ["q_proj"], r=4, alpha=8)
    with torch.no_grad():
        ours.q_proj.lora_B.normal_()
    peft_model = get_peft_model(copy.deepcopy(base), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    copy_lora_weights(ours.q_proj, peft_model.base_model.model.q_proj)
    x = torch.randn(5, 12)
    torch.testing.assert_close(peft_model(x), ours(x))
    merged_peft = peft_model.merge_and_unload()
    merged_ours = merge_lora(ours)
    assert type(merged_ours.q_proj) is nn.Linear
    torch.testing.assert_close(merged_ours.q_proj.weight, merged_peft.q_proj.weight)
    torch.testing.assert_close(merged_ours(x), merged_peft(x))


def test_inject_freezes_base_and_counts_trainable():
    """Two 12->10 layers adapted at r=4: 2 * 4 * (12 + 10) = 176 trainable parameters."""
    model = nn.ModuleDict({"q_proj": nn.Linear(12, 10), "v_proj": nn.Linear(12, 10), "o_proj": nn.Linear(10, 10)})
    replaced = inject_lora(model, ["q_proj", "v_proj"], r=4, alpha=8)
    assert sorted(replaced) == ["q_proj", "v_proj"]
    trainable, total = trainable_parameters(model)
    assert trainable == 176
    assert total == 2 * (12 * 10 + 10) + (10 * 10 + 10) + 176


def test_inject_typo_lists_real_names():
    model = nn.ModuleDict({"q_proj": nn.Linear(4, 4)})
    with pytest.raises(ValueError, match=r"q_proj"):
        inject_lora(model, ["qproj"])


def test_llama2_7b_count_is_4194304():
    """32 layers x {q,v} x 8 x (4096 + 4096) = 64 x 65,536 = 4,194,304 (the seed said ~600 k)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    assert lora_params_for_linear(4096, 4096, 8) == 65_536
    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                             num_attention_heads=32, num_key_value_heads=32, vocab_size=32000))
    counts = count_lora_params(model, ("q_proj", "v_proj"), r=8)
    assert counts["modules"] == 64
    assert counts["lora_params"] == 4_194_304


def test_whisper_small_r64_qv_count():
    """Encoder 12 x {q,v} + decoder 12 x {self q,v + cross q,v} = 72 layers of 768x768;
    72 x 64 x (768 + 768) = 7,077,888 (the seed said 1.2 M). peft must agree."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(WhisperConfig(
            d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
            decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072, vocab_size=51865))
    counts = count_lora_params(model, ("q_proj", "v_proj"), r=64)
    assert counts["modules"] == 72 and counts["lora_params"] == 7_077_888
    peft_model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    assert peft_model.get_nb_trainable_parameters()[0] == 7_077_888


def test_svd_error_on_diagonal():
    """diag(3, 4): singular values (4, 3); rank-1 error sqrt(9) / sqrt(25) = 0.6; rank-2 error 0."""
    errs = svd_reconstruction_error(torch.diag(torch.tensor([3.0, 4.0])), [1, 2])
    assert math.isclose(errs[0], 0.6, rel_tol=1e-6) and errs[1] == pytest.approx(0.0, abs=1e-7)
    # the best rank-1 matrix keeps the larger singular direction: diag(0, 4), at the error computed above
    best = low_rank(torch.diag(torch.tensor([3.0, 4.0])), 1)
    torch.testing.assert_close(best, torch.diag(torch.tensor([0.0, 4.0])))
    assert math.isclose(float((torch.diag(torch.tensor([3.0, 4.0])) - best).norm() / 5), errs[0], rel_tol=1e-6)
