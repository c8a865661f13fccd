"""Training memory: a back-of-envelope estimator, and a measurement to check it against.

Covers the memory that scales with parameters: weights, gradients and Adam's two moment buffers,
for full fine-tuning, LoRA and QLoRA (NF4 with double quantization).
`memory_report` prints the per-method table notebook 01 shows for a real model's shapes.
Does not: model activations (they scale with batch x sequence length and are what gradient
checkpointing trades for compute), CUDA context, allocator fragmentation, or paged optimizers.

Bytes per parameter used here (Adam keeps two fp32 moments = 8 bytes):
    full, fp32           4 weight + 4 grad + 8 Adam                          = 16
    full, bf16 mixed     2 weight + 2 grad + 4 fp32 master + 8 Adam           = 16
    LoRA                 frozen: 2 (bf16) or 4 (fp32); trainable: 4 + 4 + 8   = 16
    QLoRA                frozen Linear weights: 4 bits + 0.127 bits of double-quantized block
                         constants (QLoRA paper, block 64) = 0.516 bytes; other frozen weights 2 bytes
"""
from __future__ import annotations

from torch import nn

BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "nf4": (4 + 0.127) / 8}
GIB = 1024 ** 3


def split_params(model: nn.Module) -> dict:
    """Parameters in nn.Linear layers that bitsandbytes quantizes vs the rest (embeddings, norms, ...).

    Tied weights are counted once. A Linear whose weight is an embedding's (a tied output head such
    as Whisper's ``proj_out``) or the model's output embeddings is NOT quantizable: transformers keeps
    it in full precision when it loads a model in 4 bits, so it counts as "other". Works on a model
    built on the meta device (no memory used). Example: Embedding(10, 4) tied to a Linear(4, 10) head
    plus a Linear(4, 4) with bias -> {"linear": 16, "other": 44, "total": 60} (biases stay full precision).
    """
    seen, linear, other = set(), 0, 0
    keep_full = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is not None:
        keep_full.add(id(out.weight))
    linear_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)} - keep_full
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in linear_ids:
            linear += p.numel()
        else:
            other += p.numel()
    return {"linear": linear, "other": other, "total": linear + other}


def estimate_memory(linear_params: int, other_params: int, method: str, trainable: int = 0,
                    dtype: str = "bf16") -> dict:
    """Bytes for weights, gradients and Adam states. method: "full" | "lora" | "qlora".

    Example: a 1,000-parameter model, full fine-tuning in fp32:
    weights 4,000 + gradients 4,000 + Adam 8,000 = 16,000 bytes.
    """
    n = linear_params + other_params
    if method == "full":
        master = 4 * n if dtype != "fp32" else 0  # mixed precision keeps an fp32 copy
        parts = {"weights": BYTES[dtype] * n + master, "gradients": BYTES[dtype] * n, "optimizer": 8 * n}
    elif method in ("lora", "qlora"):
        frozen = (BYTES["nf4"] * linear_params + BYTES[dtype] * other_params if method == "qlora"
                  else BYTES[dtype] * n)
        parts = {"weights": frozen + 4 * trainable, "gradients": 4 * trainable, "optimizer": 8 * trainable}
    else:
        raise ValueError(f"method must be 'full', 'lora' or 'qlora', not {method!r}")
    parts["total"] = sum(parts.values())
    return parts


def memory_table(linear_params: int, other_params: int, lora_trainable: int, dtype: str = "bf16") -> list[dict]:
    """One row per method, in GiB, ready for a pandas-free table."""
    rows = []
    for method, trainable in (("full", 0), ("lora", lora_trainable), ("qlora", lora_trainable)):
        est = estimate_memory(linear_params, other_params, method, trainable, dtype)
        rows.append({"method": method, **{k: round(v / GIB, 3) for k, v in est.items()}})
    return rows


def memory_report(name: str, model: nn.Module, lora_trainable: int, dtype: str = "bf16") -> tuple[list[dict], str]:
    """`memory_table` for `model`'s shapes, and the text table to print: (rows, text).

    Example: a Linear(4, 4) without bias and 8 LoRA parameters ->
    text "m: 0.000 B parameters (100% in Linear layers), LoRA trainable 8; bf16, GiB, activations excluded"
    then a header line and one line per method (full, lora, qlora); rows as `memory_table` returns them.
    """
    sp = split_params(model)
    lines = [f"{name}: {sp['total'] / 1e9:.3f} B parameters ({sp['linear'] / sp['total']:.0%} in Linear layers), "
             f"LoRA trainable {lora_trainable:,}; {dtype}, GiB, activations excluded",
             f"  {'method':<7}{'weights':>9}{'grads':>9}{'Adam':>9}{'total':>9}"]
    rows = memory_table(sp["linear"], sp["other"], lora_trainable, dtype=dtype)
    for row in rows:
        lines.append(f"  {row['method']:<7}{row['weights']:>9.2f}{row['gradients']:>9.2f}{row['optimizer']:>9.2f}"
                     f"{row['total']:>9.2f}")
    return rows, "\n".join(lines)


def _measure_here(method: str, width: int, blocks: int) -> dict:
    """Two Adam steps of a `blocks` x (q_proj, v_proj, fc) stack; resident-memory growth (the child side)."""
    import torch

    from lorakit_nb.lora.layer import inject_lora
    from lorakit_nb.meter import rss_bytes

    torch.manual_seed(0)
    before = rss_bytes()
    model = nn.Sequential(*[nn.ModuleDict({"q_proj": nn.Linear(width, width), "v_proj": nn.Linear(width, width),
                                           "fc": nn.Linear(width, width)}) for _ in range(blocks)])
    if method == "lora":
        inject_lora(model, ("q_proj", "v_proj"), r=8, alpha=16)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-4)
    x = torch.randn(4, width)  # tiny batch: activations are negligible next to the weights
    peak = 0
    for _ in range(2):
        h = x
        for blk in model:
            h = torch.relu(blk["fc"](blk["v_proj"](blk["q_proj"](h))))
        opt.zero_grad()
        h.pow(2).mean().backward()
        opt.step()
        peak = max(peak, rss_bytes())
    return {"method": method, "params": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in params), "measured_mb": (peak - before) / 2 ** 20}


def measure_training_memory(method: str, width: int = 1024, blocks: int = 12) -> dict:
    """Run two Adam steps in a fresh Python process and return the resident-memory growth in MB.

    A fresh process (``meter.run_fresh``) keeps the measurement clean of whatever the notebook already
    allocated. The model is `blocks` x (q_proj, v_proj, fc), each a width x width fp32 Linear with
    bias: 12 x 3 x 1,049,600 = 37.8 M parameters at the defaults.
    """
    from lorakit_nb.meter import run_fresh

    if method not in ("full", "lora"):
        raise ValueError(f"method must be 'full' or 'lora', not {method!r}")
    result = run_fresh("lorakit_nb.lora.memory", {"method": method, "width": width, "blocks": blocks})
    n, t = result["params"], result["trainable"]
    frozen = n if method == "full" else n - t
    predicted = estimate_memory(frozen, 0, "full" if method == "full" else "lora", t, dtype="fp32")
    result["predicted_mb"] = predicted["total"] / 2 ** 20
    return result


if __name__ == "__main__":  # the child process of measure_training_memory
    from lorakit_nb.meter import child_main

    child_main(_measure_here)
