"""Merge notebook 02's text adapter (Wu -> Mandarin LoRA on gemma-3-270m) and prove the merge is exact.

Covers: ``find_adapter`` (the peft adapter folder inside a run folder) and ``merge_text_adapter``
(adapter size, fp32 merge via ``export.merge_adapter``, merged-vs-adapter logits on one prompt, the
run's own scores for the model card). A missing run is not an error: it returns None, so a notebook
can skip this optional part with a message.

Does NOT cover: training or scoring the text adapter (``text/train.py``), Whisper exports (``export/merge.py``,
``export/ct2.py``), the adapter as a llama.cpp LoRA GGUF (``export/gguf.py``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from lorakit_nb.adapter_files import read_adapter
from lorakit_nb.export.merge import load_base_fp32, merge_adapter
from lorakit_nb.io import dir_bytes, weights_bytes
from lorakit_nb.text.adapters import adapter_train_config
from lorakit_nb.text.data import DEFAULT_TEMPLATE

DEFAULT_BASE = "gemma-3-270m"


SCORE_KEYS = ("chrf_before", "chrf_after", "exact_match_before", "exact_match_after", "repetition_rate_after")
PREFERRED = ("adapter", "mandarin/adapter")  # notebook 02 saves its scored Wu -> Mandarin adapter in the second


def find_adapter(run_dir) -> Path | None:
    """The adapter folder (holding adapter_config.json) to ship from a run folder; None if there is none.

    Order: ``run_dir/adapter``, ``run_dir/mandarin/adapter`` (notebook 02's Wu -> Mandarin adapter),
    then any other ``.../adapter`` (shallowest first). Trainer checkpoints are never picked.
    Example: find_adapter("runs/02") -> Path("runs/02/mandarin/adapter")
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return None
    found = [p.parent for p in run_dir.rglob("adapter_config.json")
             if not any(part.startswith("checkpoint-") for part in p.relative_to(run_dir).parts)]

    def rank(folder: Path):
        rel = folder.relative_to(run_dir).as_posix()
        return (PREFERRED.index(rel) if rel in PREFERRED else len(PREFERRED), folder.name != "adapter",
                len(folder.parts), rel)

    return min(found, key=rank) if found else None


def _base_of(adapter_dir: Path, cfg: dict) -> str:
    """The base recorded by the run (lorakit_train.json), else by peft, else the kit's default."""
    recorded = adapter_train_config(adapter_dir).get("base_model")
    for name in (recorded, cfg.get("base_model_name_or_path")):
        if name and (not name.startswith(("/", ".", "~")) or Path(name).expanduser().is_dir()):
            return name
    return DEFAULT_BASE


WU_EXAMPLE = "侬今朝吃饭了伐？"  # "have you eaten today?" in Shanghainese


def merge_text_adapter(run_dir, out_dir, prompt: str | None = None):
    """Merge the adapter found in ``run_dir`` into its fp32 base at ``out_dir``; None if there is none.

    Returns {"adapter_dir", "base_model", "adapter_bytes", "merged_bytes", "max_abs_logit_diff",
    "scores"} where the logit difference compares the merged model with base + adapter on ``prompt``
    (fp32 rounding: ~1e-4 on gemma-3-270m; a merge error would be > 1e-2); the prompt defaults to the
    adapter's own template (lorakit_train.json) around a Wu sentence. ``scores`` are the run's own
    metrics.json numbers (chrF, exact match of the Wu -> Mandarin adapter) for the model card.
    Example: merge_text_adapter("runs/02", "runs/04/text_merged")["merged_bytes"] -> ~1.07e9 (fp32)
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir = find_adapter(run_dir)
    if adapter_dir is None:
        return None
    cfg, _ = read_adapter(adapter_dir)
    base = _base_of(adapter_dir, cfg)
    meta = adapter_train_config(adapter_dir)
    prompt = prompt or (meta.get("prompt_template") or DEFAULT_TEMPLATE).format(wu=WU_EXAMPLE)
    model, tokenizer = load_base_fp32(base)
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        before = PeftModel.from_pretrained(model, adapter_dir).eval()(**inputs).logits  # (1, tokens, vocab)
    del model
    merge_adapter(base, adapter_dir, out_dir)
    merged = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32, use_safetensors=True).eval()
    with torch.no_grad():
        after = merged(**inputs).logits
    metrics_path = Path(run_dir) / "metrics.json"
    run_metrics = json.loads(metrics_path.read_text("utf-8")) if metrics_path.is_file() else {}
    scored = meta.get("target", "mandarin") == "mandarin"  # 02's metrics.json scores the Mandarin adapter
    scores = {k: run_metrics[k] for k in SCORE_KEYS if k in run_metrics} if scored else {}
    return {"adapter_dir": str(adapter_dir), "base_model": base,
            "adapter_bytes": dir_bytes(adapter_dir / "adapter_model.safetensors"),
            "merged_bytes": weights_bytes(out_dir),
            "max_abs_logit_diff": float((after - before).abs().max()), "scores": scores}
