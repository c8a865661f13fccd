"""Sizing by estimate: from which Whisper QLoRA pays, whisper-large-v3 under ZeRO-3, a 7 B LLM on one card.

Covers: ``whisper_config`` (a Whisper's published dimensions as a ``WhisperConfig``), ``qlora_pays_from``
(the estimator's LoRA-fp32 vs QLoRA weight memory per Whisper size, against QLoRA's measured extra),
``zero3_full_states`` (full fine-tuning states of a model per GPU, plain, ZeRO-3 and with the optimizer
offloaded) and ``llm_7b_states`` (LoRA / QLoRA / full states of a Llama-2-7B-shaped model, the model the
seed article's VRAM table is about). All are built on the meta device: shapes only, no weights, no memory.
Does NOT cover: measured memory (``speech/cost.py``), activations (they come on top of every number here).
"""
from __future__ import annotations

import math

import torch

from lorakit_nb.lora.memory import estimate_memory, split_params

# published dimensions: d_model, layers (encoder = decoder), FFN, heads
WHISPERS = {"whisper-tiny": (384, 4, 1536, 6), "whisper-base": (512, 6, 2048, 8), "whisper-small": (768, 12, 3072, 12),
            "whisper-medium": (1024, 24, 4096, 16), "whisper-large-v3": (1280, 32, 5120, 20)}


def whisper_config(name: str):
    """The ``WhisperConfig`` of a published Whisper size (large-v3: 128 mel bins, vocabulary 51,866).

    Example: whisper_config("whisper-base").d_model -> 512
    """
    from transformers import WhisperConfig

    d, layers, ffn, heads = WHISPERS[name]
    extra = {"num_mel_bins": 128, "vocab_size": 51866} if name.endswith("v3") else {}
    return WhisperConfig(d_model=d, encoder_layers=layers, decoder_layers=layers, encoder_ffn_dim=ffn,
                         decoder_ffn_dim=ffn, encoder_attention_heads=heads, decoder_attention_heads=heads, **extra)


def _parts(config) -> dict:
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        return split_params(WhisperForConditionalGeneration(config))


def qlora_pays_from(trainable_of, extra_mb: float | None, names=tuple(WHISPERS)) -> tuple[list[dict], str | None]:
    """Per Whisper size: parameters, Linear share, LoRA-fp32 and QLoRA weight+adapter MB, the saving, and
    whether the saving exceeds `extra_mb` (QLoRA's measured extra "everything else"); and the first size
    where it does (None if none, or if `extra_mb` is None).

    `trainable_of(config)` gives the adapter's trainable count for a config (e.g. ``lora_param_count``).
    Example: rows, first = qlora_pays_from(lambda c: lora_param_count(c, 16), 309.0)
             -> first == "whisper-small" (the saving 690 MB passes 309 MB; whisper-base saves 153 MB)
    """
    rows = []
    for name in names:
        cfg = whisper_config(name)
        parts = _parts(cfg)
        est = {m: estimate_memory(parts["linear"], parts["other"], m, trainable_of(cfg), dtype="fp32")["total"] / 1e6
               for m in ("lora", "qlora")}
        row = {"model": name, "params_M": round(parts["total"] / 1e6, 1),
               "linear_share": round(parts["linear"] / parts["total"], 2), "lora_fp32_MB": round(est["lora"]),
               "qlora_MB": round(est["qlora"]), "saved_MB": round(est["lora"] - est["qlora"])}
        if extra_mb is not None:
            row["pays_after_measured_extra"] = bool(row["saved_MB"] > extra_mb)
        rows.append(row)
    first = next((r["model"] for r in rows if r.get("pays_after_measured_extra")), None)
    return rows, first


def zero3_full_states(config, gpu_gb: float = 24.0, gpus=(1, 2, 4, 8)) -> dict:
    """Full fine-tuning in bf16 mixed precision (2 weight + 2 gradient + 4 fp32 master + 8 Adam = 16 bytes per
    parameter): the states in GB, per GPU under ZeRO-3 and ZeRO-3 + optimizer offload (master and Adam on
    the CPU), what is left of a `gpu_gb` card for activations, and the fewest cards ZeRO-3 needs.

    Example: zero3_full_states(whisper_config("whisper-large-v3"))["min_gpus"] -> 2 (24.7 GB of states)
    """
    parts = _parts(config)
    full = estimate_memory(parts["linear"], parts["other"], "full", dtype="bf16")
    states_gb = full["total"] / 1e9
    offload_gb = (full["weights"] - 4 * parts["total"] + full["gradients"]) / 1e9  # master + Adam on the CPU
    rows = [{"GPUs": n, "ZeRO-3 GB per GPU": states_gb / n, "ZeRO-3 + optimizer offload GB per GPU": offload_gb / n,
             "left for activations (ZeRO-3), GB": gpu_gb - states_gb / n} for n in gpus]
    return {"params": parts["total"], "states_gb": states_gb, "min_gpus": math.ceil(states_gb / gpu_gb), "rows": rows,
            "parts": parts}


def llm_7b_states(r: int = 8, targets=("q_proj", "v_proj")) -> dict:
    """Parameter states (weights, gradients, Adam; no activations) in GB of a Llama-2-7B-shaped model for
    full fine-tuning (bf16 mixed precision), LoRA on a bf16 base and QLoRA on an NF4 base, r on `targets`.
    These are lower bounds of what training needs: activations come on top.

    Example: llm_7b_states()["lora"] -> about 13.5 (GB; the bf16 weights dominate)
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=32000)
    with torch.device("meta"):
        parts = split_params(LlamaForCausalLM(cfg))
    d = cfg.hidden_size
    trainable = cfg.num_hidden_layers * len(targets) * r * (d + d)  # q and v are d x d in Llama-2-7B
    est = {m: estimate_memory(parts["linear"], parts["other"], m, trainable if m != "full" else 0)["total"] / 1e9
           for m in ("full", "lora", "qlora")}
    return {"params": parts["total"], "trainable": trainable, **est}
