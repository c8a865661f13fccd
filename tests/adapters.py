"""Synthetic peft LoRA adapter folders shaped for a base GGUF, for the GGUF export and text-route tests.

Covers: `write_adapter(folder, base_gguf, ...)`: adapter_config.json written by peft's own `LoraConfig`,
adapter_model.safetensors with peft's key names and random A and B (B non-zero, so the adapter changes
the model's output), with shapes read from the base GGUF; options to break it on purpose.
Does not: train anything (notebook 02 does; its adapters are what the notebook 05 parity is measured on).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lorakit_nb.export.gguf import GGUF_NAMES  # peft module path -> llama.cpp tensor name

MODULES = {path.split(".")[1]: path for path in GGUF_NAMES}           # "q_proj" -> "self_attn.q_proj"
GGUF = {path.split(".")[1]: name for path, name in GGUF_NAMES.items()}  # "q_proj" -> "attn_q"


def base_shapes(base_gguf) -> tuple[int, dict]:
    from lorakit_nb.export.gguf import _read_base

    _, blocks, shapes = _read_base(base_gguf)
    return blocks, shapes


def write_adapter(folder, base_gguf, *, targets=("q_proj", "v_proj"), r: int = 4, alpha: float = 8, seed: int = 0,
                  b_scale: float = 0.05, layers: int | None = None, rank_in_weights: int | None = None,
                  fan_in_offset: int = 0, **config) -> Path:
    """Write a peft adapter folder; `rank_in_weights` / `fan_in_offset` make weights that disagree on purpose."""
    from peft import LoraConfig
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    blocks, shapes = base_shapes(base_gguf)
    rng = np.random.default_rng(seed)
    state = {}
    for layer in range(blocks if layers is None else layers):
        for t in targets:
            fan_in, fan_out = shapes[f"blk.{min(layer, blocks - 1)}.{GGUF[t]}.weight"]
            rk = rank_in_weights or r
            prefix = f"base_model.model.model.layers.{layer}.{MODULES[t]}"
            state[f"{prefix}.lora_A.weight"] = (rng.standard_normal((rk, fan_in + fan_in_offset)) / fan_in ** 0.5
                                                ).astype(np.float32)
            state[f"{prefix}.lora_B.weight"] = (b_scale * rng.standard_normal((fan_out, rk))).astype(np.float32)
    save_file(state, str(folder / "adapter_model.safetensors"))
    LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), task_type="CAUSAL_LM",
               base_model_name_or_path="gemma-3-270m", **config).save_pretrained(str(folder))
    return folder
