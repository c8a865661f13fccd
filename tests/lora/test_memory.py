"""The memory estimator's arithmetic, checked against bytes counted by hand."""
import pytest
from torch import nn

from lorakit_nb.lora.memory import BYTES, estimate_memory, split_params


def test_full_fp32_is_16_bytes_per_param():
    """1,000 params: 4,000 weights + 4,000 grads + 8,000 Adam = 16,000 bytes."""
    est = estimate_memory(1000, 0, "full", dtype="fp32")
    assert est == {"weights": 4000, "gradients": 4000, "optimizer": 8000, "total": 16000}


def test_lora_only_trainable_params_carry_grads_and_adam():
    """900 frozen bf16 (1,800 B) + 100 trainable fp32 (400 + 400 + 800): total 3,400 bytes."""
    est = estimate_memory(900, 0, "lora", trainable=100, dtype="bf16")
    assert est["total"] == 1800 + 400 + 400 + 800


def test_qlora_quantizes_linear_weights_only():
    """1,000 Linear params at 4.127 bits + 200 other params at 2 bytes, no trainable params."""
    est = estimate_memory(1000, 200, "qlora", trainable=0, dtype="bf16")
    assert est["weights"] == pytest.approx(1000 * 4.127 / 8 + 400)
    assert BYTES["nf4"] < BYTES["int8"]


def test_split_params_counts_tied_weights_once():
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied, as in many LMs
    model = nn.ModuleDict({"emb": emb, "head": head, "proj": nn.Linear(4, 4)})
    sp = split_params(model)
    assert sp["total"] == 40 + 16 + 4
    # the tied head shares the embedding's fp32 weight: bitsandbytes never quantizes it
    assert (sp["linear"], sp["other"]) == (16, 40 + 4)  # biases stay full precision too


def test_unknown_method():
    with pytest.raises(ValueError, match="full"):
        estimate_memory(1, 1, "adapter")


def test_memory_report_prints_one_line_per_method():
    """A Linear(4, 4) without bias: 16 Linear parameters, table rows full, lora, qlora."""
    from lorakit_nb.lora.memory import memory_report, memory_table

    rows, text = memory_report("m", nn.Linear(4, 4, bias=False), lora_trainable=8)
    assert rows == memory_table(16, 0, 8, dtype="bf16")
    lines = text.splitlines()
    assert lines[0] == "m: 0.000 B parameters (100% in Linear layers), LoRA trainable 8; bf16, GiB, activations excluded"
    assert lines[1].split() == ["method", "weights", "grads", "Adam", "total"]
    assert [line.split()[0] for line in lines[2:]] == ["full", "lora", "qlora"]
