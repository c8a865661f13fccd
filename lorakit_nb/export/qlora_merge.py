"""Three ways to merge a QLoRA adapter, measured: fp32 base, dequantized NF4 base, re-quantized 4-bit.

A QLoRA adapter (B @ A, scaled) was trained on top of NF4 weights: each frozen Linear weight W was
stored as 4-bit codes + one scale per 64 weights, and every forward pass used dequant(NF4(W)).
Merging means adding the update dW = scale * B @ A to *some* W:

    fp32      W + dW                       the real base + the update (what ``export.merge_adapter`` does)
    deq-NF4   dequant(NF4(W)) + dW         exactly the trained function, but with NF4's rounding baked in
    4-bit     dequant(NF4(dequant(NF4(W)) + dW))   peft's merge on a 4-bit model: re-rounded to NF4

How much of dW a 4-bit merge keeps is not a constant: W~ sits exactly on the NF4 grid, so an element
moves only when its share of dW exceeds half a grid step. Small updates vanish; updates comparable to
the step survive in part, with rounding noise about as large as the update added on top.
``requant_curve`` measures that on one real weight with random low-rank updates of chosen sizes.

Covers: ``nf4_roundtrip`` (bitsandbytes quantize -> dequantize, the weights QLoRA trained against),
``quantized_linear_names`` (the Linears transformers' bitsandbytes integration turns into 4-bit),
``merge_variants`` (the deq-NF4 and 4-bit models + per-layer error rows), ``summarize_rows`` and
``requant_curve`` (kept fraction and error vs update size), ``kept_in_words`` (a kept share as a
prediction's wording).
Does NOT cover: saving (``export.merge_adapter``), scoring the variants (the notebook transcribes them).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def nf4_roundtrip(weight: torch.Tensor, blocksize: int = 64, double_quant: bool = True) -> torch.Tensor:
    """The weight a 4-bit NF4 layer actually computes with: dequant(quant(weight)), same shape, fp32.

    Same settings as ``lora.quant.nf4_config`` (NF4, blocks of 64, double quantization of the scales).
    Example: for a Gaussian (512, 512) weight the relative error ||out - w|| / ||w|| is ~0.09.
    """
    import bitsandbytes.functional as bnbf

    w = weight.detach().to(torch.float32).contiguous()  # (out_features, in_features)
    codes, state = bnbf.quantize_4bit(w, blocksize=blocksize, quant_type="nf4", compress_statistics=double_quant)
    return bnbf.dequantize_4bit(codes, state).to(torch.float32).reshape(w.shape)


def quantized_linear_names(model) -> list[str]:
    """Names of the nn.Linear modules a ``BitsAndBytesConfig(load_in_4bit=True)`` load quantizes.

    transformers keeps the output head (``proj_out`` / ``lm_head``, tied to the token embeddings) in
    full precision and converts every other nn.Linear.
    Example: whisper-base -> 6 x 6 encoder + 6 x 10 decoder Linears = 96 names.
    """
    head = model.get_output_embeddings()
    return [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and mod is not head]


@torch.no_grad()
def merge_variants(base, merged, *, blocksize: int = 64) -> tuple[dict, list[dict]]:
    """Build the deq-NF4 and 4-bit merges from an fp32 ``base`` and its fp32 ``merged`` copy.

    ``merged`` must be ``merge_and_unload`` of the adapter on ``base`` (same architecture), so
    dW = merged.W - base.W exactly. Returns ({"deq-nf4": model, "4-bit": model}, rows) with one row
    per quantized Linear:
      - ``nf4_rel_error``: ||dequant(NF4(W)) - W|| / ||W|| (what deq-NF4 bakes in; same for 4-bit);
      - ``delta_rel``: ||dW|| / ||W|| (how big the learned update is next to the weight);
      - ``delta_kept_4bit``: <R - dequant(NF4(W)), dW> / ||dW||^2 where R is the 4-bit merge:
        the fraction of the update that survives re-quantization (1 = all of it, 0 = none).
    Example: rows[0] -> {"name": "model.encoder.layers.0.self_attn.q_proj", "nf4_rel_error": 0.09,
    "delta_rel": 0.01, "delta_kept_4bit": 0.1, ...}
    """
    deq, four = copy.deepcopy(merged), copy.deepcopy(merged)
    rows = []
    for name in quantized_linear_names(base):
        w = base.get_submodule(name).weight.float()  # (out, in)
        dw = merged.get_submodule(name).weight.float() - w
        wq = nf4_roundtrip(w, blocksize)
        requant = nf4_roundtrip(wq + dw, blocksize)
        deq.get_submodule(name).weight.copy_(wq + dw)
        four.get_submodule(name).weight.copy_(requant)
        has_delta = bool((dw != 0).any())
        kept = _requant_stats(wq, dw, requant) if has_delta else {"kept": None, "error_over_delta": None}
        rows.append({
            "name": name, "lora": has_delta, "numel": w.numel(),
            "nf4_rel_error": float((wq - w).norm() / w.norm()),
            "delta_rel": float(dw.norm() / w.norm()),
            "delta_kept_4bit": kept["kept"],
            "err_4bit_over_delta": kept["error_over_delta"],
            "err_4bit_vs_fp32_rel": float((requant - (w + dw)).norm() / (w + dw).norm()),
        })
    return {"deq-nf4": deq, "4-bit": four}, rows


def _requant_stats(wq: torch.Tensor, dw: torch.Tensor, requant: torch.Tensor) -> dict:
    """How a 4-bit merge ``requant = NF4(wq + dw)`` treats the update ``dw`` (all (out, in) tensors).

    kept: <requant - wq, dw> / ||dw||^2, the share of dw that survives (1 = all of it, 0 = none);
    error_over_delta: ||requant - (wq + dw)|| / ||dw||, the 4-bit merge's distance from the trained
    function, in units of the update (1.0 when the update is simply erased).
    Example: requant == wq (update rounded away) -> {"kept": 0.0, "error_over_delta": 1.0}.
    """
    dw_norm = dw.norm()
    return {"kept": float(((requant - wq) * dw).sum() / dw_norm**2),
            "error_over_delta": float((requant - (wq + dw)).norm() / dw_norm)}


def summarize_rows(rows: list[dict]) -> dict:
    """Size-weighted summary of ``merge_variants`` rows.

    NF4 error is weighted by layer size; the update figures are plain means over the LoRA layers.
    Example: {"layers": 96, "lora_layers": 36, "nf4_rel_error": 0.095, "delta_rel_mean": 0.02,
    "delta_kept_4bit_mean": 0.02, "err_4bit_over_delta_mean": 1.05}
    """
    lora = [r for r in rows if r["lora"]]
    total = sum(r["numel"] for r in rows)

    def mean(key):
        return sum(r[key] for r in lora) / max(len(lora), 1)

    return {
        "layers": len(rows), "lora_layers": len(lora),
        "nf4_rel_error": sum(r["nf4_rel_error"] * r["numel"] for r in rows) / total,
        "delta_rel_mean": mean("delta_rel"),
        "delta_kept_4bit_mean": mean("delta_kept_4bit"),
        "err_4bit_over_delta_mean": mean("err_4bit_over_delta"),
    }


@torch.no_grad()
def requant_curve(weight: torch.Tensor, sizes=(0.003, 0.01, 0.03, 0.05, 0.1, 0.2, 0.3), *, rank: int = 16,
                  blocksize: int = 64, seed: int = 0) -> list[dict]:
    """Merge random rank-``rank`` updates of each relative size into NF4(weight) in 4 bits, and measure.

    For each size s, dW = B @ A with Gaussian A, B, scaled so ||dW|| = s * ||W|| (a LoRA-shaped update);
    the row holds the ``_requant_stats`` of NF4(W~ + dW). Deterministic for a given seed.
    Example (a (512, 512) Gaussian weight, NF4 error 0.09): s=0.01 -> kept 0.02, error 1.09 x the update;
    s=0.1 -> kept 0.84, error 0.78 x; s=0.3 -> kept 0.99, error 0.32 x.
    """
    w = weight.detach().to(torch.float32)  # (out, in)
    wq = nf4_roundtrip(w, blocksize)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for size in sizes:
        dw = torch.randn(w.shape[0], rank, generator=gen) @ torch.randn(rank, w.shape[1], generator=gen)
        dw *= size * w.norm() / dw.norm()
        rows.append({"delta_rel": size, **_requant_stats(wq, dw, nf4_roundtrip(wq + dw, blocksize))})
    return rows


def kept_in_words(kept: float) -> str:
    """A kept share of the update in the words of notebook 04's prediction.

    Over 0.8: "about all of it"; over 0.2: "about half"; else "well under half".
    Example: kept_in_words(0.02) -> "well under half"; kept_in_words(0.99) -> "about all of it"
    """
    return "about all of it" if kept > 0.8 else "about half" if kept > 0.2 else "well under half"
