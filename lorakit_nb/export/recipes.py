"""Which merge of a QLoRA adapter to ship, decided on dev with a paired bootstrap interval.

A QLoRA adapter can be merged three ways (``qlora_merge``): into the real fp32 base ("fp32"), into the
dequantized NF4 weights it was trained on ("deq-nf4": the very function notebook 03 scored) or in 4 bits
("4-bit": re-rounded, the trap). This module builds the three in memory, transcribes the DEV clips with
each, compares every recipe with deq-NF4 on the same clips (``metrics.compare_systems``: both CERs, the
paired 95 % interval of the difference, "no difference shown" where it holds 0) and applies one rule:

    ship deq-NF4 (the model that was evaluated) unless fp32 is SHOWN better on dev.

The 4-bit merge is measured for the lesson and never shipped. The test split plays no part here.

Covers: ``build_recipes``, ``transcribe_recipes``, ``compare_recipes``, ``choose_merge``, ``comparison_record``.
Does NOT cover: saving the chosen merge (``export.merge.merge_adapter``), the per-layer error analysis
(``qlora_merge.merge_variants``), scoring on test (the notebook does that once, for the shipped model).
"""
from __future__ import annotations

import copy

from lorakit_nb.errors import ExportError

REFERENCE = "deq-nf4"  # the function the adapter was trained and scored with
MERGE_BASE_OF = {"deq-nf4": "nf4", "fp32": "fp32"}  # recipe -> merge_adapter(base_weights=...); 4-bit: never
CHOICES = ("auto", "nf4", "fp32")


def build_recipes(base_model: str, adapter_dir) -> tuple:
    """(fp32 base, {"fp32": model, "deq-nf4": model, "4-bit": model}, per-layer rows), all in memory, fp32.

    The fp32 merge is ``merge_and_unload`` on a copy of the fp32 base; the other two come from
    ``qlora_merge.merge_variants`` (dW = merged - base, exactly). Nothing is written to disk.
    Example: build_recipes("whisper-base", "runs/03/adapter") -> (base, {3 models}, 96 rows)
    """
    from peft import PeftModel

    from lorakit_nb.export.merge import check_adapter_base, load_base_fp32
    from lorakit_nb.export.qlora_merge import merge_variants

    base, _ = load_base_fp32(base_model)
    check_adapter_base(base, adapter_dir, str(base_model))
    merged = PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir).merge_and_unload().eval()
    variants, rows = merge_variants(base, merged)
    return base, {"fp32": merged, **variants}, rows


def transcribe_recipes(models: dict, processor, audios, *, audio_seconds: int, language: str = "zh",
                       batch_size: int = 8) -> dict[str, list[str]]:
    """Transcribe the same clips with every model, each at the window the adapter was trained with.

    Example: transcribe_recipes({"fp32": m1, "deq-nf4": m2}, processor, dev_audios, audio_seconds=5)
    -> {"fp32": [48 strings], "deq-nf4": [48 strings]}
    """
    from lorakit_nb.speech.evaluate import transcribe
    from lorakit_nb.speech.whisper import set_language_prefix, shrink_audio_context

    hyps = {}
    for name, model in models.items():
        shrink_audio_context(model, processor, audio_seconds)
        set_language_prefix(model, processor, language)
        hyps[name] = transcribe(model, processor, audios, batch_size=batch_size, desc=f"merge {name}")
    return hyps


def compare_recipes(references, hypotheses: dict, *, reference: str = REFERENCE, n: int = 1000, seed: int = 0) -> dict:
    """Every recipe against ``reference`` on the same clips: CER, paired interval, share of identical transcripts.

    Returns {"reference", "clips", "cer": {recipe: CER}, "vs": {recipe: compare_systems(...)},
    "same_as_reference": {recipe: share of clips whose normalized transcripts are identical}}.
    ``vs[r]["diff"]`` is CER(r) - CER(reference); ``vs[r]["better"]`` names the recipe shown better, or None.
    Example: refs ["今天天气很好"], {"deq-nf4": ["今天天气很好"], "fp32": ["今天天汽很好"]} ->
    cer {"deq-nf4": 0.0, "fp32": 0.167}, same_as_reference {"fp32": 0.0}, vs["fp32"]["reading"]
    "deq-nf4 better (interval excludes 0)" (one clip: every resample is that clip).
    """
    from lorakit_nb.metrics import cer, compare_systems
    from lorakit_nb.normalize import normalize_zh

    if reference not in hypotheses:
        raise ExportError(f"no transcripts for the reference recipe {reference!r}; got {sorted(hypotheses)}")
    refs, base = list(references), hypotheses[reference]
    out = {"reference": reference, "clips": len(refs), "cer": {k: cer(refs, h) for k, h in hypotheses.items()},
           "vs": {}, "same_as_reference": {}}
    for name, hyps in hypotheses.items():
        if name == reference:
            continue
        out["vs"][name] = compare_systems(cer, refs, base, hyps, names=(reference, name), higher_is_better=False,
                                          n=n, seed=seed)
        out["same_as_reference"][name] = sum(normalize_zh(a) == normalize_zh(b) for a, b in zip(base, hyps)) / len(refs)
    return out


def choose_merge(comparison: dict, merge_base: str = "auto") -> str:
    """The ``merge_adapter(base_weights=...)`` to ship: "nf4" unless fp32 is shown better on dev.

    An explicit "nf4" or "fp32" is kept as given (the learner overrides the rule knowingly).
    Example: vs["fp32"]["better"] None ("no difference shown") -> "nf4"; "fp32" -> "fp32".
    """
    if merge_base not in CHOICES:
        raise ExportError(f"MERGE_BASE must be one of {CHOICES}, got {merge_base!r}")
    if merge_base != "auto":
        return merge_base
    fp32 = comparison["vs"].get("fp32")
    return "fp32" if fp32 is not None and fp32["better"] == "fp32" else MERGE_BASE_OF[comparison["reference"]]


def comparison_record(comparison: dict) -> dict:
    """``compare_recipes``' result as one JSON-able row per recipe, for metrics.json.

    Example: -> {"deq-nf4": {"cer": 0.08}, "fp32": {"cer": 0.09, "diff": 0.01, "ci95": (-0.01, 0.03),
    "reading": "no difference shown (interval holds 0)", "better": None, "same_as_reference": 0.8}, ...}
    """
    record = {}
    for name, value in comparison["cer"].items():
        record[name] = {"cer": value}
        if name in comparison["vs"]:
            record[name].update({k: comparison["vs"][name][k] for k in ("diff", "ci95", "reading", "better")},
                                same_as_reference=comparison["same_as_reference"][name])
    return record
