"""QLoRA's storage recipe, written once: the bitsandbytes configs every room loads a frozen base with.

Covers: ``nf4_config`` (4-bit NormalFloat, double-quantized scales, a chosen compute dtype) and
``quantization_config`` (the YAML's ``quantization: none | 8bit | 4bit`` as a ``BitsAndBytesConfig``).
Does not: load models (``models/resolve.py``), estimate memory (``lora/memory.py``) or merge a QLoRA
adapter (``export/qlora_merge.py``).
"""
from __future__ import annotations

import torch


def nf4_config(compute_dtype=torch.float32):
    """QLoRA's storage recipe: 4-bit NormalFloat weights, quantized scales, ``compute_dtype`` matmuls.

    NF4 stores each frozen Linear weight in 4 bits (plus one scale per 64 weights, itself quantized
    to 8 bits by double quantization); every matmul dequantizes a block on the fly and computes in
    ``bnb_4bit_compute_dtype`` (fp32 by default: CPUs have no fast fp16, and fp32 keeps the tiny LoRA
    updates exact). bitsandbytes >= 0.49 runs this on CPU as well as CUDA.
    """
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def quantization_config(quantization: str, compute_dtype=torch.float32):
    """``BitsAndBytesConfig`` for "8bit" or "4bit" (NF4, as ``nf4_config``); None for "none"."""
    if quantization == "none":
        return None
    if quantization == "8bit":
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(load_in_8bit=True)
    if quantization == "4bit":
        return nf4_config(compute_dtype)
    raise ValueError(f"quantization must be 'none', '8bit' or '4bit', got {quantization!r}")
