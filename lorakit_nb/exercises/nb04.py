"""Notebook 04's exercises (CER evaluation and export): reference solutions, checks, synthetic examples."""
from __future__ import annotations

from . import Exercise


def _most_helped(raw_cers: list, normalized_cers: list, references=None, hypotheses=None) -> int:
    gains = [r - n for r, n in zip(raw_cers, normalized_cers)]
    return max(range(len(gains)), key=gains.__getitem__)


def _check_most_helped(answer, raw_cers, normalized_cers, references=None, hypotheses=None):
    """Right: the index with the largest raw - normalized CER; the message then shows that utterance's texts
    (only then: an open exercise prints nothing that gives the answer away)."""
    assert isinstance(answer, int) and 0 <= answer < len(raw_cers), \
        f"answer with the index of a test utterance (0-{len(raw_cers) - 1}), not {answer!r}"
    gains = [r - n for r, n in zip(raw_cers, normalized_cers)]
    best = max(gains)
    assert gains[answer] == best, (f"utterance {answer} gains {gains[answer]:.2f} CER from normalization, another "
                                   f"gains {best:.2f}: compare raw minus normalized CER for every utterance")
    shown = f"utterance {answer}: CER {raw_cers[answer]:.2f} raw -> {normalized_cers[answer]:.2f} normalized"
    if references is not None and hypotheses is not None:
        from lorakit_nb.normalize import normalize_zh

        shown += (f"\n  reference: {references[answer]} | zero-shot: {hypotheses[answer]} | "
                  f"normalized: {normalize_zh(hypotheses[answer])}")
    return shown


def _example_most_helped():
    return ({"raw_cers": [0.1, 0.9, 0.5], "normalized_cers": [0.1, 0.2, 0.0],
             "references": ["你好", "我们有十二个人", "今天"], "hypotheses": ["你好", "我們有12個人", "今天。"]},
            2)  # 2 has the lowest normalized CER, not the largest gain


def _substitution_share(substitutions: int, deletions: int, insertions: int) -> float:
    edits = substitutions + deletions + insertions
    return substitutions / edits if edits else 0.0


def _check_substitution_share(answer, substitutions, deletions, insertions):
    assert isinstance(answer, float) and 0 <= answer <= 1, f"answer with a fraction between 0 and 1, not {answer!r}"
    edits = substitutions + deletions + insertions
    true = substitutions / edits if edits else 0.0
    hint = " (divide by all edits S + D + I, not by the reference length)" if edits and answer > true else ""
    assert abs(answer - true) < 1e-9, f"{answer:.3f} is not the share of substitutions among the edits{hint}"
    return f"{substitutions} of {edits} edits are substitutions ({answer:.1%})"


def _example_substitution_share():
    return {"substitutions": 6, "deletions": 3, "insertions": 3}, 0.6


EXERCISES = {
    "04.1": Exercise("which utterance does the normalizer help most?", solve=_most_helped,
                     check=_check_most_helped, example=_example_most_helped),
    "04.2": Exercise("the share of substitutions among the edits", solve=_substitution_share,
                     check=_check_substitution_share, example=_example_substitution_share),
}
