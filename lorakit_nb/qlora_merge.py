"""Three ways to merge a QLoRA adapter, measured: fp32 base, dequantized NF4 base, re-quantized 4-bit.

A QLoRA adapter (B @ A, scaled) was trained on top of NF4 weights: each frozen Linear weight W was
stored as 4-bit codes + one scale per 64 weights, and every forward pass used dequant(NF4(W)).
Merging means adding the update dW = scale * B @ A to *some* W:

    fp32      W + dW                       the real base + the update (what ``export.merge_adapter`` does)
    deq-NF4   dequant(NF4(W)) + dW         exactly the trained function, but with NF4's rounding baked in
    4-bit     dequant(NF4(dequant(NF4(W)) + dW))   peft's merge on a 4-bit model: re-rounded to NF4

Covers: ``nf4_roundtrip`` (bitsandbytes quantize -> dequantize, the weights QLoRA trained against),
``quantized_linear_names`` (the Linears transformers' bitsandbytes integration turns into 4-bit),
``merge_variants`` (the deq-NF4 and 4-bit models + per-layer error rows) and ``summarize_rows``.
Does NOT cover: saving (``export.merge_adapter``), scoring the variants (the notebook transcribes them).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def nf4_roundtrip(weight: torch.Tensor, blocksize: int = 64, double_quant: bool = True) -> torch.Tensor:
    """The weight a 4-bit NF4 layer actually computes with: dequant(quant(weight)), same shape, fp32.

    Same settings as ``asr_lora.nf4_config`` (NF4, blocks of 64, double quantization of the scales).
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
        dw_sq = float((dw * dw).sum())
        has_delta = dw_sq > 0
        rows.append({
            "name": name, "lora": has_delta, "numel": w.numel(),
            "nf4_rel_error": float((wq - w).norm() / w.norm()),
            "delta_rel": float(dw.norm() / w.norm()),
            "delta_kept_4bit": float(((requant - wq) * dw).sum() / dw_sq) if has_delta else None,
            "err_4bit_vs_fp32_rel": float((requant - (w + dw)).norm() / (w + dw).norm()),
        })
    return {"deq-nf4": deq, "4-bit": four}, rows


def summarize_rows(rows: list[dict]) -> dict:
    """Size-weighted summary of ``merge_variants`` rows.

    Example: {"layers": 96, "lora_layers": 36, "nf4_rel_error": 0.095, "delta_rel_mean": 0.02,
    "delta_kept_4bit_mean": 0.15}
    """
    lora = [r for r in rows if r["lora"]]
    total = sum(r["numel"] for r in rows)
    return {
        "layers": len(rows), "lora_layers": len(lora),
        "nf4_rel_error": sum(r["nf4_rel_error"] * r["numel"] for r in rows) / total,
        "delta_rel_mean": sum(r["delta_rel"] for r in lora) / max(len(lora), 1),
        "delta_kept_4bit_mean": sum(r["delta_kept_4bit"] for r in lora) / max(len(lora), 1),
    }
