"""Notebook 04's figures: each takes the numbers a cell computed and returns a matplotlib Figure.

Covers: ``normalizer_bars`` (one CER per normalizer), ``requant_figure`` (the 4-bit merge curve and our
adapter's layers), ``recipe_figure`` (the merge recipes on dev: CER and the paired interval of each
difference), ``error_figure`` (CER by length, per-utterance zero-shot vs fine-tuned), ``speed_size_figure``.
Does NOT cover: computing any of the numbers (``metrics``, ``cer_analysis``, ``export.*``).
"""
from __future__ import annotations

GREY, GREEN = "#bbb", "#2b7"


def _plt():
    import matplotlib.pyplot as plt

    return plt


def normalizer_bars(cers: dict, n_clips: int, highlight: str = "lorakit normalize_zh"):
    """Horizontal bars, one per normalizer. Example: normalizer_bars({"none": 0.9, "lorakit normalize_zh": 0.6}, 40)"""
    fig, ax = _plt().subplots(figsize=(7, 2.6))
    ax.barh(list(cers), list(cers.values()), color=[GREEN if k == highlight else GREY for k in cers])
    ax.set_xlabel(f"zero-shot CER on the same {n_clips} transcripts")
    ax.invert_yaxis()
    ax.set_title("Same model, same outputs - only the normalizer changes")
    return fig


def requant_figure(curve: list[dict], lora_rows: list[dict]):
    """Kept share and error of a 4-bit merge vs update size: random updates (line) and our layers (dots).

    ``curve``: ``qlora_merge.requant_curve`` rows; ``lora_rows``: ``merge_variants`` rows with ``lora`` True.
    """
    fig, axes = _plt().subplots(1, 2, figsize=(11, 3.2))
    for ax, key, row_key, label in ((axes[0], "kept", "delta_kept_4bit", "share of dW kept by the 4-bit merge"),
                                    (axes[1], "error_over_delta", "err_4bit_over_delta", "4-bit merge error / ||dW||")):
        ax.plot([r["delta_rel"] for r in curve], [r[key] for r in curve], "k.-", label="random rank-16 updates")
        ax.scatter([r["delta_rel"] for r in lora_rows], [r[row_key] for r in lora_rows], s=14, color=GREEN,
                   label="our adapter's layers")
        ax.set_xscale("log"), ax.set_xlabel("update size ||dW|| / ||W||"), ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    axes[1].axhline(0, color=GREY, lw=0.8)
    fig.suptitle("Merging into 4 bits: small updates vanish, larger ones come back with rounding noise")
    fig.tight_layout()
    return fig


def recipe_figure(comparison: dict):
    """Left: dev CER per recipe. Right: CER(recipe) - CER(reference) with its paired 95 % interval.

    ``comparison``: ``export.recipes.compare_recipes``. An interval crossing the dashed 0 line is
    "no difference shown". Example: recipe_figure(compare_recipes(dev_refs, dev_hyps))
    """
    fig, axes = _plt().subplots(1, 2, figsize=(11, 2.8))
    names = list(comparison["cer"])
    ref = comparison["reference"]
    axes[0].barh(names, [comparison["cer"][k] for k in names], color=[GREEN if k == ref else GREY for k in names])
    axes[0].invert_yaxis(), axes[0].set_xlabel(f"CER on {comparison['clips']} dev clips")
    others = list(comparison["vs"])
    for i, name in enumerate(others):
        c = comparison["vs"][name]
        lo, hi = c["ci95"]
        axes[1].errorbar(c["diff"], i, xerr=[[c["diff"] - lo], [hi - c["diff"]]], fmt="o", capsize=4, color="k")
    axes[1].axvline(0, color=GREY, ls="--")
    axes[1].set_yticks(range(len(others)), [f"{n} - {ref}" for n in others])
    axes[1].set_ylim(len(others) - 0.5, -0.5)  # first recipe on top, half a row of margin
    axes[1].set_xlabel("CER difference, paired 95 % interval (crossing 0: no difference shown)")
    fig.suptitle("Merge recipes on dev")
    fig.tight_layout()
    return fig


def error_figure(by_len: list[dict], by_len_zs: list[dict], utt_zs: list[float], utt_ft: list[float]):
    """CER by reference length (zero-shot vs fine-tuned) and one dot per utterance (below the diagonal: improved).

    ``by_len*``: ``cer_analysis.cer_by_length`` rows; ``utt_*``: per-utterance CERs in the same order.
    """
    import numpy as np

    fig, axes = _plt().subplots(1, 2, figsize=(11, 3.2))
    x = np.arange(len(by_len))
    axes[0].bar(x - 0.2, [r["cer"] or 0 for r in by_len_zs], 0.4, label="zero-shot", color=GREY)
    axes[0].bar(x + 0.2, [r["cer"] or 0 for r in by_len], 0.4, label="fine-tuned", color=GREEN)
    axes[0].set_xticks(x, [f"{r['bin']} chars\n(n={r['n']})" for r in by_len])
    axes[0].set_ylabel("CER"), axes[0].legend(), axes[0].set_title("CER by reference length")
    axes[1].scatter(utt_zs, utt_ft, s=18)
    top = max(max(utt_zs), max(utt_ft), 1.0)
    axes[1].plot([0, top], [0, top], "k--", lw=0.8)
    axes[1].set_xlabel("zero-shot CER"), axes[1].set_ylabel("fine-tuned CER")
    axes[1].set_title("per utterance (below the diagonal: improved)")
    fig.tight_layout()
    return fig


def speed_size_figure(seconds: dict, n_clips: int, frames: int, sizes: dict):
    """Batch-1 seconds per engine (left) and MB on disk per shipping form, log scale (right).

    Example: speed_size_figure({"transformers fp32": 12.0, "CT2 int8": 3.1}, 12, 500, {"adapter only": 15e6, ...})
    """
    fig, ax = _plt().subplots(1, 2, figsize=(10, 3))
    ax[0].bar(list(seconds), list(seconds.values()), color=[GREY] * (len(seconds) - 1) + [GREEN])
    ax[0].set_ylabel(f"seconds for {n_clips} clips"), ax[0].set_title(f"speed, batch 1 ({frames} frames)")
    ax[1].barh(list(sizes), [v / 1e6 for v in sizes.values()])
    ax[1].set_xlabel("MB on disk (log scale)"), ax[1].set_xscale("log"), ax[1].set_xlim(left=0.5)
    ax[1].invert_yaxis(), ax[1].set_title("size")
    for i, v in enumerate(sizes.values()):
        ax[1].text(v / 1e6, i, f" {v / 1e6:.1f} MB", va="center", fontsize=8)
    fig.tight_layout()
    return fig
