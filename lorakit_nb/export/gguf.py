"""Write a trained peft LoRA adapter (notebook 02's Wu adapters) as a llama.cpp LoRA GGUF.

Covers:
- ``export_gguf_adapter(adapter_dir, out, base_gguf)``: read ``adapter_config.json`` and
  ``adapter_model.safetensors``, check every tensor against the base GGUF the adapter will run on
  (architecture, layer count, each adapted weight's shape, the rank), and write one GGUF with the
  ``gguf`` package's writer: ``general.type = adapter``, ``adapter.type = lora``,
  ``adapter.lora.alpha``, and per adapted Linear ``blk.{i}.<name>.weight.lora_a`` (peft's ``lora_A``,
  r x in) and ``.lora_b`` (``lora_B``, out x r), float32. Written to a temp file, then renamed.
- ``GGUF_NAMES``: the peft module name -> llama.cpp tensor name map for Gemma / Llama-style blocks.

llama.cpp applies ``scale * alpha / r * B A`` per adapter; the alpha written is peft's scaling x r, so
rsLoRA adapters (scaling alpha / sqrt(r)) keep their strength. Gemma's q/k need no permutation.

Does NOT: export DoRA (llama.cpp has no magnitude vector), embeddings, ``modules_to_save`` or per-module
rank/alpha patterns (each is refused with the reason), write a merged model, or run llama.cpp (``serve/llm.py``).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from lorakit_nb.adapter_files import read_adapter
from lorakit_nb.errors import ExportError, MissingFileError
from lorakit_nb.io import ensure_writable, writing

GGUF_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
              "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
              "mlp.down_proj": "ffn_down"}
_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(\w+\.\w+)\.lora_([AB])(?:\.\w+)?\.weight$")


_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}  # GGUF types


def read_gguf_header(path) -> tuple[dict, dict]:
    """({key: value}, {tensor name: dims}) of a GGUF file, arrays left out (their length is kept).

    The ``gguf`` package's reader builds every field, which for a 262,144-token vocabulary takes ~20 s;
    this reads the header only (~0.3 s): the metadata scalars and each tensor's dims (llama.cpp order,
    fastest first: a Linear's (in, out)).
    """
    import struct

    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ExportError(f"{path} is not a GGUF file (no GGUF magic at its start)")
        version, n_tensors, n_kv = struct.unpack("<IQQ", fh.read(20))

        def read(fmt):
            return struct.unpack("<" + fmt, fh.read(struct.calcsize(fmt)))[0]

        def string():
            return fh.read(read("Q")).decode("utf-8", "replace")

        def value(kind):
            if kind == 8:
                return string()
            if kind == 9:
                item, n = read("I"), read("Q")
                if item in _SCALAR:
                    fh.seek(n * struct.calcsize(_SCALAR[item]), 1)
                else:
                    for _ in range(n):
                        value(item)
                return f"<array of {n}>"
            return read(_SCALAR[kind])

        meta = {}
        for _ in range(n_kv):
            key = string()
            meta[key] = value(read("I"))
        tensors = {}
        for _ in range(n_tensors):
            name = string()
            dims = tuple(read("Q") for _ in range(read("I")))
            fh.seek(12, 1)  # type (u32) + data offset (u64)
            tensors[name] = dims
    return meta, tensors


def _read_base(base_gguf: Path) -> tuple[str, int, dict]:
    """(architecture, block count, {tensor name: (in, out)}) of the base GGUF."""
    meta, tensors = read_gguf_header(base_gguf)
    arch = meta["general.architecture"]
    return arch, int(meta[f"{arch}.block_count"]), {n: d[:2] for n, d in tensors.items() if len(d) >= 2}


def export_gguf_adapter(adapter_dir, out, base_gguf=None) -> dict:
    """Write ``adapter_dir`` (a peft LoRA folder) as a llama.cpp LoRA GGUF at ``out``, checked against ``base_gguf``.

    ``base_gguf`` defaults to the offline gemma-3-270m q4_k_m GGUF (``models.packs.gemma_gguf``).
    Returns {"path", "bytes", "tensors", "rank", "alpha", "architecture", "layers"}.
    Example: export_gguf_adapter("runs/02/mandarin/adapter", "runs/05/wu-mandarin.gguf")["tensors"] -> 252
    """
    import numpy as np
    from gguf import GGUFWriter
    from safetensors.numpy import load_file

    adapter_dir, out = Path(adapter_dir), Path(out)
    cfg_path, weights = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    cfg, _ = read_adapter(adapter_dir)  # missing or broken files: one line naming the file
    ensure_writable(out.parent)  # a read-only or full disk: say so before the tensors are converted
    if base_gguf is None:
        from lorakit_nb.models.packs import gemma_gguf

        base_gguf = gemma_gguf()
    base_gguf = Path(base_gguf)
    if not base_gguf.is_file():
        raise MissingFileError(f"base GGUF {base_gguf} not found: pass the .gguf file the adapter will run on")
    where = f"{cfg_path}"
    if cfg.get("peft_type") != "LORA":
        raise ExportError(f"{where}: peft_type {cfg.get('peft_type')!r}; only LoRA adapters export to llama.cpp")
    if cfg.get("use_dora"):
        raise ExportError(f"{where}: use_dora is true; llama.cpp LoRA adapters have no DoRA magnitude vector. "
                          "Merge the adapter (export.merge) and convert the merged model instead")
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            raise ExportError(f"{where}: {key} is set; a llama.cpp adapter has one rank and one alpha for all "
                              "layers. Retrain with a single lora_rank / lora_alpha")
    if cfg.get("modules_to_save") or cfg.get("trainable_token_indices"):
        raise ExportError(f"{where}: modules_to_save / trainable tokens are full copies of layers, not LoRA "
                          "matrices; llama.cpp adapters cannot carry them. Retrain without them")
    rank, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
    scaling = alpha / rank ** 0.5 if cfg.get("use_rslora") else alpha / rank
    arch, blocks, shapes = _read_base(base_gguf)
    state = load_file(str(weights))
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for key, tensor in state.items():
        match = _KEY.match(key)
        if not match or match.group(2) not in GGUF_NAMES:
            module = key.split(".lora_")[0]
            raise ExportError(f"{weights}: tensor {key!r} adapts {module!r}, which llama.cpp adapters cannot "
                              f"target; supported: {', '.join(GGUF_NAMES)} in each layer. Retrain with "
                              "target_modules among q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")
        layer = int(match.group(1))
        if layer >= blocks:
            raise ExportError(f"{weights}: {key!r} is in layer {layer}, but {base_gguf.name} has {blocks} layers: "
                              "the adapter was trained on another base model")
        name = f"blk.{layer}.{GGUF_NAMES[match.group(2)]}.weight"
        pairs.setdefault(name, {})[match.group(3)] = tensor.astype(np.float32)
    if not pairs:
        raise ExportError(f"{weights}: no LoRA tensors found")
    for name, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise ExportError(f"{weights}: {name} has lora_{''.join(pair)} only; the adapter file is incomplete")
        if name not in shapes:
            raise ExportError(f"{base_gguf.name} ({arch}) has no tensor {name}: the adapter was trained on another "
                              "base model")
        a, b = pair["A"], pair["B"]
        fan_in, fan_out = shapes[name]
        if a.shape[0] != rank or b.shape[1] != rank:
            raise ExportError(f"{weights}: {name} has rank {a.shape[0]} x {b.shape[1]} but adapter_config.json "
                              f"says r = {rank}; the config and weights do not belong together")
        if a.shape[1] != fan_in or b.shape[0] != fan_out:
            raise ExportError(f"{name}: the adapter maps {a.shape[1]} -> {b.shape[0]} but {base_gguf.name} has "
                              f"{fan_in} -> {fan_out}: the adapter was trained on another base model")
    gguf_alpha = scaling * rank  # llama.cpp scales by alpha / r
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")  # GGUFWriter opens by path
    os.close(fd)
    tmp = Path(tmp)
    try:
        with writing(out):
            writer = GGUFWriter(str(tmp), arch)
            writer.add_string("general.type", "adapter")
            writer.add_string("adapter.type", "lora")
            writer.add_float32("adapter.lora.alpha", gguf_alpha)
            writer.add_string("general.name", f"lorakit LoRA {adapter_dir.name}")
            for name in sorted(pairs, key=lambda n: (int(n.split(".")[1]), n)):
                writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(pairs[name]["A"]))
                writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(pairs[name]["B"]))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
            writer.close()
            tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"path": str(out), "bytes": out.stat().st_size, "tensors": 2 * len(pairs), "rank": rank,
            "alpha": gguf_alpha, "architecture": arch, "layers": blocks}
