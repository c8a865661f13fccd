"""DoRA and rsLoRA invariants: the hand-built DoRALinear against peft's use_dora layer, and the update's size vs rank.

Shapes are non-square (d_in = 12, d_out = 10) so a norm over the wrong axis cannot pass by accident, B and the
magnitude are perturbed away from their init so the DoRA factor m / ‖W0 + s·B A‖ is not 1, and the base has a
bias (DoRA must not rescale it).
"""
import copy
import doctest
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

import lorakit_nb.lora.dora as dora_module
from lorakit_nb.lora.dora import DoRALinear, copy_dora_weights, inject_dora
from lorakit_nb.lora.layer import merge_lora
from lorakit_nb.lora.lowrank import update_norm_vs_rank

D_IN, D_OUT, R, ALPHA = 12, 10, 4, 8


class OneLayer(nn.Module):
    def __init__(self, linear):
        super().__init__()
        self.q_proj = linear

    def forward(self, x):
        return self.q_proj(x)


def dora_pair(dropout=0.0, use_rslora=False, seed=0):
    """(ours, peft_model, peft_layer) on the same W0, b, A, B, m, with B != 0 and m != ‖W0‖."""
    torch.manual_seed(seed)
    base = nn.Linear(D_IN, D_OUT)
    ours = DoRALinear(copy.deepcopy(base), r=R, alpha=ALPHA, dropout=dropout, use_rslora=use_rslora)
    with torch.no_grad():
        ours.lora_B.normal_(std=0.5)
        ours.magnitude.mul_(torch.rand(D_OUT) + 0.5)  # each row rescaled by 0.5 .. 1.5
    config = LoraConfig(r=R, lora_alpha=ALPHA, lora_dropout=dropout, use_dora=True, use_rslora=use_rslora,
                        target_modules=["q_proj"])
    peft_model = get_peft_model(OneLayer(copy.deepcopy(base)), config)
    peft_layer = peft_model.base_model.model.q_proj
    copy_dora_weights(ours, peft_layer)
    return ours, peft_model, peft_layer


def test_docstring_examples():
    assert doctest.testmod(dora_module).failed == 0


def test_magnitude_init_is_row_norms_and_matches_peft():
    """m starts at ‖W0‖ per OUTPUT row: [[3, 4, 0], [0, 0, 2]] -> [5, 2] (column norms would be [3, 4, 2])."""
    base = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]]))
    assert DoRALinear(base, r=1, alpha=1).magnitude.tolist() == [5.0, 2.0]

    torch.manual_seed(0)
    base = nn.Linear(D_IN, D_OUT)
    ours = DoRALinear(copy.deepcopy(base), r=R, alpha=ALPHA)
    assert ours.magnitude.shape == (D_OUT,) and ours.magnitude.requires_grad
    torch.testing.assert_close(ours.magnitude.detach(), base.weight.detach().norm(dim=1))
    peft_model = get_peft_model(OneLayer(copy.deepcopy(base)),
                                LoraConfig(r=R, lora_alpha=ALPHA, use_dora=True, target_modules=["q_proj"]))
    peft_m = peft_model.base_model.model.q_proj.lora_magnitude_vector["default"].weight
    torch.testing.assert_close(peft_m.detach(), ours.magnitude.detach())


def test_output_equals_base_at_init():
    """B = 0 and m = ‖W0‖ give a DoRA factor of exactly 1: the layer computes W0 x + b, dropout or not."""
    torch.manual_seed(1)
    base = nn.Linear(D_IN, D_OUT)
    layer = DoRALinear(base, r=R, alpha=ALPHA, dropout=0.3)
    x = torch.randn(6, D_IN)
    assert torch.equal(layer.dora_factor(), torch.ones(D_OUT))
    assert torch.equal(layer.train()(x), base(x))   # base(x) + 0 * (..) + 1 * 0
    torch.testing.assert_close(layer.eval()(x), base(x))


@pytest.mark.parametrize("use_rslora", [False, True], ids=["alpha/r", "rslora"])
def test_forward_eval_equals_peft(use_rslora):
    ours, peft_model, _ = dora_pair(use_rslora=use_rslora)
    assert ours.scaling == (ALPHA / math.sqrt(R) if use_rslora else ALPHA / R)
    x = torch.randn(5, D_IN)
    ours.eval()
    peft_model.eval()
    y = ours(x)
    assert (y - ours.base(x)).abs().max() > 0.1, "the adapter really changes the output"
    torch.testing.assert_close(peft_model(x), y)
    # the same numbers from the formula W' = m ⊙ V / ‖V‖ (one norm per output row), bias added unscaled
    v = ours.base.weight + ours.scaling * ours.lora_B @ ours.lora_A                   # (d_out, d_in)
    w_prime = ours.magnitude[:, None] * v / v.norm(dim=1, keepdim=True)
    torch.testing.assert_close(y, x @ w_prime.T + ours.base.bias)


def test_train_mode_dropout_and_gradients_equal_peft():
    """Seeded alike, both layers draw the same dropout mask: outputs and all three gradients agree.

    Only the DoRA correction and the LoRA term see dropout(x) (peft's placement), and ‖V‖ is detached, so the
    norm passes no gradient to A and B; the undetached variant gives other gradients (the check can fail).
    """
    ours, peft_model, peft_layer = dora_pair(dropout=0.3)
    ours.train()
    peft_model.train()
    x = torch.randn(7, D_IN)
    torch.manual_seed(123)
    y_ours = ours(x)
    torch.manual_seed(123)
    y_peft = peft_model(x)
    torch.testing.assert_close(y_peft, y_ours)
    torch.manual_seed(124)
    assert (ours(x) - y_ours).abs().max() > 1e-3, "another seed, another mask: dropout is active"
    assert (ours.eval()(x) - y_ours).abs().max() > 1e-3, "eval mode switches dropout off"
    ours.train()

    target = torch.randn(7, D_OUT)
    (y_ours - target).pow(2).mean().backward()
    (y_peft - target).pow(2).mean().backward()
    pairs = {"A": (ours.lora_A, peft_layer.lora_A["default"].weight),
             "B": (ours.lora_B, peft_layer.lora_B["default"].weight),
             "m": (ours.magnitude, peft_layer.lora_magnitude_vector["default"].weight)}
    for name, (p_ours, p_peft) in pairs.items():
        assert p_ours.grad is not None and p_ours.grad.abs().max() > 0, name
        torch.testing.assert_close(p_peft.grad, p_ours.grad, msg=f"gradient of {name}")
    assert ours.base.weight.grad is None and peft_layer.base_layer.weight.grad is None  # W0 frozen in both

    detached_grad_b = ours.lora_B.grad.clone()
    ours.zero_grad()
    torch.manual_seed(123)
    (ours(x, detach_norm=False) - target).pow(2).mean().backward()
    assert (ours.lora_B.grad - detached_grad_b).abs().max() > 1e-4, "detaching ‖V‖ changes B's gradient"


@pytest.mark.parametrize("use_rslora", [False, True], ids=["alpha/r", "rslora"])
def test_merge_and_unmerge_equal_peft(use_rslora):
    ours, peft_model, peft_layer = dora_pair(use_rslora=use_rslora)
    ours.eval()
    peft_model.eval()
    x = torch.randn(5, D_IN)
    y = ours(x)
    w0 = ours.base.weight.detach().clone()

    # in place, both ways: merge gives W' in the Linear, unmerge gives W0 back
    ours.merge()
    peft_layer.merge()
    torch.testing.assert_close(peft_layer.base_layer.weight, ours.base.weight)
    torch.testing.assert_close(ours(x), y)
    torch.testing.assert_close(peft_model(x), y)
    torch.testing.assert_close(ours.merged_linear().weight, ours.base.weight)  # not rescaled a second time
    ours.merge()                                                                # idempotent
    torch.testing.assert_close(ours(x), y)
    ours.unmerge()
    peft_layer.unmerge()
    torch.testing.assert_close(ours.base.weight, w0)
    torch.testing.assert_close(peft_layer.base_layer.weight, w0)
    torch.testing.assert_close(ours(x), y)

    # merge_and_unload vs merged_linear: plain Linears with the same weight, the bias untouched
    merged_ours = ours.merged_linear()
    merged_peft = peft_model.merge_and_unload().q_proj
    assert type(merged_ours) is nn.Linear and type(merged_peft) is nn.Linear
    torch.testing.assert_close(merged_ours.weight, merged_peft.weight)
    torch.testing.assert_close(merged_ours.bias, ours.base.bias)
    torch.testing.assert_close(merged_ours(x), y)
    torch.testing.assert_close(merged_peft(x), y)
    assert (merged_ours.weight - w0).abs().max() > 0.1, "the merged weight really differs from W0"


def test_inject_dora_matches_peft():
    torch.manual_seed(3)
    model = nn.ModuleDict({"q_proj": nn.Linear(D_IN, D_OUT), "v_proj": nn.Linear(D_IN, D_OUT)})
    peft_base = copy.deepcopy(model)
    assert sorted(inject_dora(model, ["q_proj", "v_proj"], r=R, alpha=ALPHA)) == ["q_proj", "v_proj"]
    assert all(isinstance(model[n], DoRALinear) for n in ("q_proj", "v_proj"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 2 * (R * (D_IN + D_OUT) + D_OUT)  # A, B and one magnitude per output row
    peft_model = get_peft_model(peft_base, LoraConfig(r=R, lora_alpha=ALPHA, use_dora=True,
                                                      target_modules=["q_proj", "v_proj"]))
    assert peft_model.get_nb_trainable_parameters()[0] == trainable
    x = torch.randn(4, D_IN)
    for name in ("q_proj", "v_proj"):
        with torch.no_grad():
            model[name].lora_B.normal_()
        copy_dora_weights(model[name], peft_model.base_model.model[name])
        torch.testing.assert_close(peft_model.base_model.model[name](x), model[name](x))
    merged = merge_lora(model)
    assert type(merged["q_proj"]) is nn.Linear


def test_copy_dora_weights_refuses_a_plain_lora_layer():
    ours, _, _ = dora_pair()
    plain = get_peft_model(OneLayer(nn.Linear(D_IN, D_OUT)), LoraConfig(r=R, lora_alpha=ALPHA,
                                                                        target_modules=["q_proj"]))
    b_before = plain.base_model.model.q_proj.lora_B["default"].weight.clone()
    with pytest.raises(ValueError, match=r"use_dora=True"):
        copy_dora_weights(ours, plain.base_model.model.q_proj)
    assert torch.equal(plain.base_model.model.q_proj.lora_B["default"].weight, b_before), "nothing half-copied"


@pytest.fixture(scope="module")
def norms():
    return update_norm_vs_rank([4, 16, 64])


def test_update_norm_at_fixed_entry_size(norms):
    """B entries of size b = 0.01, A at peft's init (variance 1 / (3 d)), d = 256, alpha = 16:
    ‖s·B A‖ ≈ s·b·sqrt(d r / 3). alpha / r: 0.739 / sqrt(r / 4), i.e. ratios 1, 1/2, 1/4 at r = 4, 16, 64;
    rsLoRA: 16 · 0.01 · sqrt(256 / 3) = 1.478 at every r. An s = alpha / r^2 would give ratios 1, 1/8, 1/64 and a
    constant s ratios 1, 2, 4, so 10 % bounds tell them apart."""
    lora, rslora = norms["init"]["lora"], norms["init"]["rslora"]
    assert norms["ranks"] == [4, 16, 64]
    for r, value in zip(norms["ranks"], lora):
        assert value / lora[0] == pytest.approx(math.sqrt(4 / r), rel=0.1), r
    for value in rslora:
        assert value / rslora[0] == pytest.approx(1.0, rel=0.1)
    assert lora[0] == pytest.approx(16 / 4 * 0.01 * math.sqrt(256 * 4 / 3), rel=0.1)
    assert rslora[0] == pytest.approx(16 * 0.01 * math.sqrt(256 / 3), rel=0.1)


def test_update_norm_after_adam_steps(norms):
    """From B = 0, 20 Adam steps at lr 1e-4: with alpha / r the update at r = 64 is under half the one at r = 4
    (the fixed-entry argument predicts a quarter); with rsLoRA it does not shrink."""
    lora, rslora = norms["adam"]["lora"], norms["adam"]["rslora"]
    assert all(v > 0 for v in lora + rslora)
    assert lora[-1] < 0.5 * lora[0]
    assert rslora[-1] > 0.9 * rslora[0]
    assert rslora[-1] > 3 * lora[-1]
