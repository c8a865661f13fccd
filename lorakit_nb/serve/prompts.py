"""OpenAI's ``prompt`` field for the served Whisper: which prompt (if any) to ship, and what it did, term by term.

Covers:
- ``compare_prompts``: candidate prompts' transcripts of the same clips against no prompt
  (``export.recipes.compare_recipes``: CER, paired interval, share of identical transcripts).
- ``choose_prompt``: the rule, fixed before any run: a prompt ships only if the clips (dev) show it
  better than no prompt; among several, the lowest CER. Otherwise none ships.
- ``terms_of``: a prompt's terms (split at Chinese and ASCII list punctuation).
- ``term_effects``: per clip and term, what the prompt did to it: ``fixed`` (in the reference, missed
  without the prompt, written with it), ``missed`` (missed either way: what a prompt cannot fix),
  ``broken`` (written without the prompt, lost with it) and ``intruded`` (written with the prompt where
  the reference does not have it: the prompt's words pull the decoder toward them).

Does not: send requests (``loadtest.transcribe_files``), build the decoder prompt (``export.ct2.prompt_ids``),
or look at the test clips (the caller scores test once, for what ships).
"""
from __future__ import annotations

import re

NONE = "none"  # the name of "no prompt" in a comparison


def compare_prompts(references, hypotheses: dict, *, n: int = 1000, seed: int = 0) -> dict:
    """``hypotheses`` {"none": [...], name: [...]} of the same clips -> ``compare_recipes``' result against "none".

    Example: compare_prompts(dev_refs, {"none": plain, "terms": prompted})["vs"]["terms"]["reading"]
    -> "no difference shown (interval holds 0)"
    """
    from lorakit_nb.export.recipes import compare_recipes

    return compare_recipes(references, hypotheses, reference=NONE, n=n, seed=seed)


def choose_prompt(comparison: dict) -> str | None:
    """The candidate to ship: shown better than no prompt (interval excludes 0), lowest CER; else None.

    Example: vs {"terms": better "terms", "names": better None} -> "terms"; nothing shown better -> None.
    """
    shown = [name for name, c in comparison["vs"].items() if c["better"] == name]
    return min(shown, key=lambda name: comparison["cer"][name]) if shown else None


def terms_of(prompt: str) -> list[str]:
    """Example: terms_of("项目例会：需求、上线、缺陷。") -> ["项目例会", "需求", "上线", "缺陷"]."""
    return [t for t in (part.strip() for part in re.split(r"[、，。：；！？,.;:!?\s]+", prompt or "")) if t]


def term_effects(references, plain, prompted, terms) -> dict:
    """What a prompt did to each of its ``terms``, clip by clip (texts compared after ``normalize_zh``).

    Returns {"fixed", "missed", "broken", "intruded"}: lists of {"clip", "term", "reference", "plain", "prompted"}.
    Example: refs ["两个模块"], plain ["两个魔块"], prompted ["两个模块"], terms ["模块", "评审"]
    -> fixed [{"clip": 0, "term": "模块", ...}], the other lists empty.
    """
    from lorakit_nb.normalize import normalize_zh

    if not len(references) == len(plain) == len(prompted):
        raise ValueError(f"references, plain and prompted differ in length: {len(references)}, {len(plain)}, "
                         f"{len(prompted)}; pass the same clips' transcripts")
    out = {"fixed": [], "missed": [], "broken": [], "intruded": []}
    norm_terms = [(t, normalize_zh(t)) for t in terms]
    for i, (ref, a, b) in enumerate(zip(references, plain, prompted)):
        ref_n, a_n, b_n = normalize_zh(ref), normalize_zh(a), normalize_zh(b)
        for term, t in norm_terms:
            if not t:
                continue
            if t in ref_n:
                kind = ("broken" if t not in b_n else None) if t in a_n else ("fixed" if t in b_n else "missed")
            else:
                kind = "intruded" if t in b_n and t not in a_n else None
            if kind:
                out[kind].append({"clip": i, "term": term, "reference": ref, "plain": a, "prompted": b})
    return out
