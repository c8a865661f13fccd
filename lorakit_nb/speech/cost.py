"""What one Whisper training step costs: seconds and peak memory, LoRA fp32 vs QLoRA NF4 vs full.

Covers: ``measure_step`` -- a few optimizer steps of one setup at one audio window, in a fresh Python
process (``meter.run_fresh``) so each setup's peak memory is its own; the peak is ``meter.peak_bytes``
(``torch.cuda.max_memory_allocated`` on a CUDA machine, the process's peak RSS otherwise).
``peak_split`` reads a LoRA / QLoRA / full table of such rows: what NF4 saved on weights, what QLoRA's
peak holds on top of its weights compared with LoRA's, and the step-time ratios.
Does NOT cover: estimates from parameter counts (``lora/memory.py``, ``speech/sizing.py``), training to convergence
(``speech/train.py``), host memory on a GPU run.

Where the bytes go (whisper-base, 72.6 M parameters): fp32 weights ~290 MB; NF4 stores the Linear
weights in ~0.5 byte each but keeps the 26.6 M-parameter token embedding (tied to the output head),
the convolutions and the norms in fp32; activations grow with batch x window and do not shrink with
QLoRA (each 4-bit matmul even adds a transient dequantized copy of its weight); full fine-tuning adds
a gradient and two Adam moments per parameter (12 bytes each).
"""
from __future__ import annotations

import time

import torch

from lorakit_nb.lora.layer import trainable_parameters
from lorakit_nb.meter import child_main, peak_bytes, reset_peak, run_fresh


def _weight_bytes(model) -> int:
    """Bytes actually held by parameters and buffers (a 4-bit weight: its packed uint8 storage)."""
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def _amp_dtype(cuda: bool):
    """The autocast dtype AMP uses here: bf16 on CPU and on bf16-capable GPUs, fp16 on older GPUs."""
    if cuda and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _measure_here(kind, seconds, model_name, manifest, batch_size, steps, r, checkpointing, amp=False) -> dict:
    from lorakit_nb.speech.data import load_manifest, read_audio
    from lorakit_nb.speech.whisper import (
        WhisperCollator,
        add_lora,
        enable_checkpointing,
        featurize,
        load_asr_model,
    )

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    model, processor = load_asr_model(model_name, quantize=kind == "qlora", audio_seconds=seconds)
    if kind == "full":
        if checkpointing:
            enable_checkpointing(model)
        model.requires_grad_(True)
        model.get_encoder().embed_positions.requires_grad_(False)  # fixed sinusoids, never trained
    else:
        model = add_lora(model, r=r, checkpointing=checkpointing)
    if cuda and kind != "qlora":
        model.to("cuda")  # a 4-bit model is already placed on the GPU by from_pretrained
    rows = load_manifest(manifest)[:batch_size]
    feats = featurize(processor, [read_audio(row["audio"]) for row in rows], [row["text"] for row in rows])
    device = model.get_encoder().conv1.weight.device
    batch = {k: v.to(device) for k, v in WhisperCollator(processor, model.config.decoder_start_token_id)(feats).items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    model.train()

    amp_dtype = _amp_dtype(cuda) if amp else None

    def step():
        # AMP: matmuls in bf16/fp16 under autocast, weights and optimizer stay fp32 (Trainer's bf16=True)
        with torch.autocast("cuda" if cuda else "cpu", dtype=amp_dtype, enabled=amp):
            loss = model(**batch).loss  # batch: input_features (b, 80, seconds*100), labels (b, tokens)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    step()  # warm-up: allocates Adam's moments and the allocator's pools
    reset = reset_peak()
    t0 = time.perf_counter()
    losses = [step() for _ in range(steps)]
    peak = peak_bytes()  # synchronizes a GPU before reading
    dt = (time.perf_counter() - t0) / steps
    return {"setup": {"lora": "LoRA fp32", "qlora": "QLoRA NF4", "full": "full fine-tune"}[kind], "kind": kind,
            "audio_seconds": seconds, "frames": seconds * 100, "batch_size": batch_size,
            "s_per_step": round(dt, 3), "peak_gb": round(peak / 1e9, 3),
            "memory": "CUDA allocated" if cuda else "process RSS", "peak_is_training_only": reset,
            "weights_mb": round(_weight_bytes(model) / 1e6, 1), "trainable_params": trainable_parameters(model)[0],
            "checkpointing": checkpointing, "amp": str(amp_dtype).replace("torch.", "") if amp else None,
            "loss": losses[-1]}


def measure_step(kind: str, seconds: int = 5, *, model_name: str = "whisper-base",
                 manifest="data/zh_speech/train.jsonl", batch_size: int = 4, steps: int = 2, r: int = 8,
                 checkpointing: bool = True, amp: bool = False, timeout: int = 900) -> dict:
    """Time `steps` optimizer steps of `kind` ("lora" | "qlora" | "full") at a `seconds` audio window.

    Runs in a fresh Python process so each setup's peak memory is its own (a process's peak never
    goes down). One warm-up step comes first (it allocates Adam's state); then the kernel's peak-RSS
    counter is reset, so ``peak_gb`` is the steady training peak: weights + gradients + Adam states
    + activations (with checkpointing) -- not the one-off peak of loading and quantizing.
    checkpointing=False keeps every activation instead of recomputing it; amp=True runs the forward
    under autocast (bf16 on CPU, fp16/bf16 on a GPU) as Trainer's bf16/fp16 flags do.
    Example: measure_step("qlora", 5) -> {"setup": "QLoRA NF4", "s_per_step": 1.5, "peak_gb": 1.7, ...}
    """
    if kind not in ("lora", "qlora", "full"):
        raise ValueError(f"kind must be 'lora', 'qlora' or 'full', got {kind!r}")
    args = {"kind": kind, "seconds": int(seconds), "model_name": model_name, "manifest": str(manifest),
            "batch_size": batch_size, "steps": steps, "r": r, "checkpointing": checkpointing, "amp": amp}
    return run_fresh("lorakit_nb.speech.cost", args, timeout=timeout)


def peak_split(table: list[dict]) -> dict:
    """Split measured peaks into weights and "everything else", LoRA fp32 vs QLoRA NF4, plus step-time ratios.

    `table`: ``measure_step`` rows with kinds "lora", "qlora" and "full" (MB for weights, GB for peaks).
    Returns saved_mb (LoRA's weights minus QLoRA's), rest_mb per kind (peak minus weights), extra_mb
    (QLoRA's rest minus LoRA's), net_gb (QLoRA's peak minus LoRA's), qlora_time (QLoRA's s/step over LoRA's)
    and lora_speedup (full's s/step over LoRA's).
    Example: peak_split([{"kind": "lora", "weights_mb": 290, "peak_gb": 1.18, "s_per_step": 1.8},
                         {"kind": "qlora", "weights_mb": 136, "peak_gb": 1.33, "s_per_step": 1.9},
                         {"kind": "full", "weights_mb": 288, "peak_gb": 2.18, "s_per_step": 2.2}])
             -> saved_mb 154, rest_mb {"lora": 890, "qlora": 1194}, extra_mb 304, net_gb 0.15, lora_speedup 1.22
    """
    kinds = {r["kind"]: r for r in table}
    rest = {k: kinds[k]["peak_gb"] * 1000 - kinds[k]["weights_mb"] for k in ("lora", "qlora")}
    return {"saved_mb": kinds["lora"]["weights_mb"] - kinds["qlora"]["weights_mb"], "rest_mb": rest,
            "extra_mb": rest["qlora"] - rest["lora"], "net_gb": kinds["qlora"]["peak_gb"] - kinds["lora"]["peak_gb"],
            "qlora_time": kinds["qlora"]["s_per_step"] / kinds["lora"]["s_per_step"],
            "lora_speedup": kinds["full"]["s_per_step"] / kinds["lora"]["s_per_step"]}


if __name__ == "__main__":  # the child process of measure_step
    child_main(_measure_here)
