"""Ship a LoRA run: the adapter alone, a merged full-precision model, a model card.

Covers:
- ``check_adapter_base``: refuse an adapter whose tensors do not fit the base (``ExportError``
  naming both models) before peft fails deep inside with a size mismatch.
- ``merge_adapter``: reload the base in fp32 (also for a QLoRA adapter), ``merge_and_unload``,
  save safetensors + tokenizer/processor atomically; Whisper keeps its normal 30 s window.
- ``write_model_card`` (README.md of an export folder), ``dir_bytes`` / ``weights_bytes`` (size on disk).

Does NOT cover: writing or reading the adapter alone (``io.save_adapter`` / ``io.read_adapter``), the cost of the other merge recipes (``qlora_merge.py``), CTranslate2 conversion,
parity and speed (``export/ct2.py``), scoring a manifest (``export/score.py``), training.
"""
from __future__ import annotations

import re
import shutil
from datetime import date
from pathlib import Path

import torch

from lorakit_nb.adapter_files import ExportSidecar, SpeechSidecar, read_adapter
from lorakit_nb.errors import ExportError
from lorakit_nb.io import atomic_dir, write_text_atomic

NOTICE_FILES = ("LICENSE*", "LICENCE*", "NOTICE*", "*TERMS*")  # copied from the base folder into a merge
LICENCES = {
    "whisper": "MIT (OpenAI Whisper weights: https://github.com/openai/whisper/blob/main/LICENSE)",
    "gemma": "Gemma Terms of Use (https://ai.google.dev/gemma/terms); use is also bound by the Gemma "
             "Prohibited Use Policy (https://ai.google.dev/gemma/prohibited_use_policy)",
}


_LORA_KEY = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")


def check_adapter_base(model, adapter_dir, base_name: str = "") -> int:
    """Check every LoRA tensor fits a Linear of ``model``; return how many modules were checked.

    lora_A is (r, in_features) and lora_B is (out_features, r) for the module they adapt, so the
    shapes pin the base architecture down even when ``base_model_name_or_path`` is just a path.
    Example: a whisper-base adapter (d_model 512) on tiny-whisper (d_model 64) -> ExportError
    "...trained on '.../whisper-base' ... merging into 'tiny-whisper' ... lora_A (16, 512) needs
    in_features 512, the base has 64".
    """
    cfg, shapes = read_adapter(adapter_dir)
    trained_on = cfg.get("base_model_name_or_path") or "an unrecorded base"
    here = f"{base_name or type(model).__name__} ({model.config.model_type})"
    checked = set()
    for key, shape in shapes.items():
        m = _LORA_KEY.match(key)
        if not m:
            continue
        problem = None
        try:
            module = model.get_submodule(m["module"])
        except AttributeError:
            problem = f"it has no module {m['module']!r}"
        else:
            n_in, n_out = getattr(module, "in_features", None), getattr(module, "out_features", None)
            if m["ab"] == "A" and n_in is not None and shape[1] != n_in:
                problem = f"lora_A {shape} of {m['module']} needs in_features {shape[1]}, the base has {n_in}"
            if m["ab"] == "B" and n_out is not None and shape[0] != n_out:
                problem = f"lora_B {shape} of {m['module']} needs out_features {shape[0]}, the base has {n_out}"
        if problem:
            raise ExportError(f"{adapter_dir}: this adapter was trained on {trained_on!r}, but you are merging it "
                              f"into {here}: {problem}. Pass the base model the adapter was trained on "
                              f"(base_model_name_or_path in {Path(adapter_dir) / 'adapter_config.json'}).")
        checked.add(m["module"])
    if not checked:
        raise ExportError(f"{adapter_dir}: no LoRA tensors (…lora_A.weight / …lora_B.weight) in "
                          "adapter_model.safetensors; is this a LoRA adapter?")
    return len(checked)


def load_base_fp32(name_or_dir):
    """(model, processor or tokenizer) in float32 for "whisper-base", "gemma-3-270m", tiny-* or a folder."""
    from lorakit_nb.models.resolve import load_causal_lm, load_whisper, resolve_model

    kind = resolve_model(name_or_dir, quiet=True).kind
    if kind == "whisper":
        return load_whisper(str(name_or_dir), dtype=torch.float32)
    return load_causal_lm(str(name_or_dir), dtype=torch.float32)


def merge_adapter(base_name_or_dir, adapter_dir, out_dir, *, audio_seconds: int | None = None,
                  base_weights: str = "auto") -> Path:
    """Merge a LoRA adapter into a full-precision copy of its base and save it as safetensors.

    The base is always reloaded in full precision, also for a QLoRA adapter (trained on 4-bit NF4):
    - Merging in 4-bit (peft's merge on a ``Linear4bit``) computes dequant(W_nf4) + scale * B @ A and
      RE-QUANTIZES it to NF4's 16 levels per 64-weight block. dequant(NF4(W)) sits exactly on that
      grid, so each element's update is either dropped (under half a step) or replaced by a whole
      step: small updates vanish, larger ones come back with rounding noise about their own size
      (``qlora_merge.requant_curve``; peft warns "may get different generations due to rounding errors").
    - ``base_weights="auto"`` (default): "nf4" when the adapter's ``lorakit_asr.json`` says it was trained
      on a 4-bit base (QLoRA), else "fp32": the merge reproduces the model that was trained and scored.
    - ``base_weights="fp32"``: W_fp32 + scale * B @ A, the real base plus the update; no
      NF4 rounding error (several % of each weight matrix) is baked into the published weights. But
      the adapter was trained against dequant(NF4(W)), so this is not exactly the trained function:
      the update may have learned to offset NF4's rounding.
    - ``base_weights="nf4"``: dequant(NF4(W)) + scale * B @ A, stored in fp32: exactly the QLoRA model
      that was trained and scored, with NF4's rounding baked in.
    ``export.recipes`` compares all three on dev clips (notebook 04): check, don't assume.

    Whisper audio window: LoRA matrices act per position, so they do not depend on how many encoder
    positions training used (a shrunk window only slices the fixed sinusoidal ``embed_positions``).
    The merged model therefore keeps whisper-base's full 30 s window - what faster-whisper and
    ``pipeline("automatic-speech-recognition")`` expect. ``audio_seconds=5`` shrinks the export
    instead (HF-only short-clip deployments). The training window is recorded in ``lorakit_export.json``.

    Example: merge_adapter("whisper-base", "runs/03/adapter", "runs/04/merged") -> Path("runs/04/merged")
    with model.safetensors (~290 MB fp32), config, generation config (zh, transcribe), processor.
    """
    from peft import PeftModel

    from lorakit_nb.models.resolve import resolve_model

    adapter_dir = Path(adapter_dir)
    cfg, _ = read_adapter(adapter_dir)
    trained_info = SpeechSidecar.load(adapter_dir)
    trained = trained_info.to_dict() if trained_info else {}
    if base_weights not in ("auto", "fp32", "nf4"):
        raise ExportError(f"base_weights must be 'auto', 'fp32' or 'nf4', got {base_weights!r}")
    if base_weights == "auto":  # reproduce what was trained: a QLoRA adapter saw dequant(NF4(W))
        base_weights = "nf4" if trained.get("quantized") or trained.get("quantized_training") else "fp32"
    model, proc = load_base_fp32(base_name_or_dir)
    base_path = Path(resolve_model(base_name_or_dir, quiet=True).path)
    check_adapter_base(model, adapter_dir, str(base_name_or_dir))
    if base_weights == "nf4":  # the weights a QLoRA adapter saw in training (lora.quant.nf4_config's recipe)
        from lorakit_nb.export.qlora_merge import nf4_roundtrip, quantized_linear_names

        with torch.no_grad():
            for name in quantized_linear_names(model):
                weight = model.get_submodule(name).weight
                weight.copy_(nf4_roundtrip(weight))
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()  # W + (alpha / r) * B @ A
    is_whisper = merged.config.model_type == "whisper"
    if is_whisper:
        from lorakit_nb.speech.whisper import set_language_prefix, shrink_audio_context

        set_language_prefix(merged, proc, trained.get("language", "zh"))  # generate() defaults to zh/transcribe
        if audio_seconds:
            shrink_audio_context(merged, proc, audio_seconds)
    record = ExportSidecar(base_model=str(base_name_or_dir), adapter=str(adapter_dir), base_weights=base_weights,
                           trained_with=trained,
                           extra={"adapter_base_model_name_or_path": cfg.get("base_model_name_or_path"),
                                  "lora_r": cfg.get("r"), "lora_alpha": cfg.get("lora_alpha"),
                                  "target_modules": sorted(cfg.get("target_modules") or []), "dtype": "float32"})
    if is_whisper:
        from lorakit_nb.speech.window import window_seconds

        record.audio_seconds = window_seconds(merged)  # the window this folder's encoder is built for
    with atomic_dir(out_dir) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        proc.save_pretrained(tmp)
        if is_whisper:  # faster-whisper reads preprocessor_config.json; transformers 5 writes processor_config.json
            proc.feature_extractor.to_json_file(tmp / "preprocessor_config.json")
        record.save(tmp)
        for pattern in NOTICE_FILES:  # terms that must travel with the weights (e.g. Gemma's NOTICE)
            for f in base_path.glob(pattern):
                shutil.copy2(f, tmp / f.name)
    return Path(out_dir)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def write_model_card(out_dir, base_model: str, data: str, metrics: dict, licence: str, *, title: str | None = None,
                     usage: str | None = None, notes=()) -> Path:
    """Write ``out_dir/README.md``: what the model is, what it was trained on, its scores, its licence.

    ``licence`` is the licence of the *weights* (a merged model inherits the base's terms): use
    ``LICENCES["whisper"]`` (MIT) or ``LICENCES["gemma"]`` (Gemma Terms of Use).
    Example: write_model_card("runs/04/ct2_int8", "whisper-base", "460 synthetic Mandarin clips",
    {"CER (test, 40 clips)": 0.12}, LICENCES["whisper"]) -> runs/04/ct2_int8/README.md
    """
    if not licence or not licence.strip():
        raise ExportError(f"{out_dir}: a model card needs the licence of the weights (e.g. LICENCES['whisper'])")
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir}: no such export folder; export the model first, then write its card")
    rows = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in metrics.items())
    files = "\n".join(f"- `{p.name}` ({p.stat().st_size:,} bytes)" for p in sorted(out_dir.iterdir())
                      if p.is_file() and p.name != "README.md")
    text = (f"# {title or out_dir.name}\n\nFine-tuned from **{base_model}** with LoRA (lorakit-nb).\n\n"
            f"## Training data\n\n{data}\n\n## Evaluation\n\n| metric | value |\n|---|---|\n{rows}\n\n"
            + (f"## Usage\n\n```python\n{usage.strip()}\n```\n\n" if usage else "")
            + ("## Notes and limitations\n\n" + "\n".join(f"- {n}" for n in notes) + "\n\n" if notes else "")
            + f"## Files\n\n{files}\n\n## Licence\n\n{licence}\n\n"
            f"_Card written {date.today().isoformat()}; every number above was computed by the exporting run._\n")
    return write_text_atomic(out_dir / "README.md", text)
