"""Scores for Chinese ASR and Chinese text generation: CER, chrF, exact match, repetition, bootstrap.

Covers:
- ``cer`` / ``cer_report`` / ``cer_per_utterance``: character error rate via jiwer's alignment.
- ``chrf`` (sacrebleu corpus chrF), ``exact_match`` and ``repetition_rate`` for the Wu -> Mandarin task;
  ``bootstrap_ci``: a percentile bootstrap interval for any of these corpus scores.

Every score compares normalized text: ``normalize_zh`` (CER) and ``light_normalize`` (chrF, exact match)
live in ``normalize``, the one normalizer.
Does NOT cover: the normalizer's rules (``normalize``), alignment display, confusion pairs and CER by
length (see ``cer_analysis``), or word-level metrics (WER).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import jiwer
import sacrebleu

from lorakit_nb.errors import ScoringError
from lorakit_nb.normalize import light_normalize, normalize_zh


def _check_pair(references, hypotheses) -> tuple[list[str], list[str]]:
    """Accept two lists (or two single strings); raise one clear error on a mismatch or a bad item."""
    refs = [references] if isinstance(references, str) else list(references)
    hyps = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    if len(refs) != len(hyps):
        raise ScoringError(
            f"got {len(refs)} references but {len(hyps)} hypotheses; they must be paired one to one "
            "(check that every clip was transcribed and that no row was dropped)"
        )
    if not refs:
        raise ScoringError("got 0 references and 0 hypotheses; nothing to score")
    for name, items in (("references", refs), ("hypotheses", hyps)):
        for i, x in enumerate(items):
            if not isinstance(x, str):
                raise ScoringError(f"{name}[{i}] is {type(x).__name__} ({x!r}), expected str; "
                                "replace missing transcripts with '' before scoring")
    return refs, hyps


def _aligned(references, hypotheses, normalize: bool = True):
    """Normalized refs, hyps and jiwer's per-utterance alignment chunks."""
    refs, hyps = _check_pair(references, hypotheses)
    prep = normalize_zh if normalize else str.strip
    refs, hyps = [prep(r) for r in refs], [prep(h) for h in hyps]
    out = jiwer.process_characters(refs, hyps)  # strip + split into characters; no-op after prep
    return refs, hyps, out.alignments


def cer_per_utterance(references, hypotheses, normalize: bool = True) -> list[dict]:
    """One dict per pair: index, normalized texts, substitutions/deletions/insertions, edits,
    ref_chars and cer (= edits / ref_chars; ``None`` when the normalized reference is empty).

    Example: ["今天天气很好"], ["今天天汽很好啊"] -> [{..., "substitutions": 1, "insertions": 1,
    "edits": 2, "ref_chars": 6, "cer": 0.333...}]
    """
    refs, hyps, alignments = _aligned(references, hypotheses, normalize)
    rows = []
    for i, (r, h, chunks) in enumerate(zip(refs, hyps, alignments)):
        count = Counter()
        for c in chunks:  # insertions are counted on the hypothesis side, the rest on the reference
            span = c.hyp_end_idx - c.hyp_start_idx if c.type == "insert" else c.ref_end_idx - c.ref_start_idx
            count[c.type] += span
        edits = count["substitute"] + count["delete"] + count["insert"]
        rows.append({"index": i, "reference": r, "hypothesis": h, "substitutions": count["substitute"],
                     "deletions": count["delete"], "insertions": count["insert"], "edits": edits,
                     "ref_chars": len(r), "cer": edits / len(r) if r else None})
    return rows


@dataclass
class CERReport:
    cer: float  # corpus CER = edits / ref_chars over utterances with a non-empty reference
    edits: int
    ref_chars: int
    substitutions: int
    deletions: int
    insertions: int
    n_utterances: int
    n_empty_ref: int  # excluded from cer; their hypothesis characters are counted below
    empty_ref_hyp_chars: int  # text produced where the reference is empty (e.g. hallucination on silence)

    def as_dict(self) -> dict:
        return asdict(self)


def cer_report(references, hypotheses, normalize: bool = True) -> CERReport:
    """Corpus CER with its counts. Empty-reference policy: a pair whose normalized reference is empty
    has no characters to divide by, so it is EXCLUDED from numerator and denominator and reported in
    ``n_empty_ref`` / ``empty_ref_hyp_chars``; if every reference is empty, ScoringError.

    Example: refs ["今天天气很好", "。"], hyps ["今天天汽很好啊", "嗯"] -> cer 2/6 = 0.333,
    n_empty_ref 1, empty_ref_hyp_chars 1.
    """
    rows = cer_per_utterance(references, hypotheses, normalize)
    scored = [r for r in rows if r["ref_chars"] > 0]
    if not scored:
        raise ScoringError(f"all {len(rows)} references are empty after normalization; CER is undefined "
                         "(check the reference column, or pass normalize=False to see the raw text)")
    total = {k: sum(r[k] for r in scored) for k in ("edits", "ref_chars", "substitutions", "deletions", "insertions")}
    empty = [r for r in rows if r["ref_chars"] == 0]
    return CERReport(cer=total["edits"] / total["ref_chars"], n_utterances=len(rows), n_empty_ref=len(empty),
                     empty_ref_hyp_chars=sum(len(r["hypothesis"]) for r in empty), **total)


def cer(references, hypotheses, normalize: bool = True) -> float:
    """Corpus CER (total edits / total reference characters), a fraction: 0.25 means 25 %.

    Example: cer(["今天天气很好"], ["今天天汽很好啊"]) == 2 / 6 (1 substitution + 1 insertion).
    See ``cer_report`` for the empty-reference policy and the counts behind the number.
    """
    return cer_report(references, hypotheses, normalize).cer


def chrf(references, hypotheses, normalize: bool = False) -> float:
    """Corpus chrF (sacrebleu defaults: character 6-grams, beta 2), on a 0-100 scale.

    sacrebleu drops whitespace itself; ``normalize=True`` also applies ``light_normalize`` to both
    sides. Example: chrf(["你好吗"], ["你好吗"]) == 100.0; a closer hypothesis scores higher.
    """
    refs, hyps = _check_pair(references, hypotheses)
    if normalize:
        refs, hyps = [light_normalize(r) for r in refs], [light_normalize(h) for h in hyps]
    return float(sacrebleu.corpus_chrf(hyps, [refs]).score)


def exact_match(references, hypotheses) -> float:
    """Fraction of pairs equal after ``light_normalize`` (punctuation, spaces, width, case ignored).

    Example: exact_match(["你好吗？", "我们走"], ["你好吗", "我走"]) == 0.5
    """
    refs, hyps = _check_pair(references, hypotheses)
    return sum(light_normalize(r) == light_normalize(h) for r, h in zip(refs, hyps)) / len(refs)


def max_ngram_repeats(text: str, n: int = 4) -> int:
    """How often the most frequent character n-gram occurs (overlapping, whitespace removed).

    Example: "我们我们我们我们", n=4 -> 4-grams 我们我们 x3, 们我们我 x2 -> 3.
    """
    chars = "".join(text.split())
    grams = Counter(chars[i:i + n] for i in range(len(chars) - n + 1))
    return max(grams.values(), default=0)


def repetition_rate(texts, n: int = 4, min_repeats: int = 3) -> float:
    """Fraction of generations that are degenerate: some character n-gram occurs >= ``min_repeats`` times.

    This catches the tiny-data failure "我们我们我们我们..." while a normal sentence scores 0.
    Example (n=4, min_repeats=3): ["今天天气很好", "我们我们我们我们"] -> 1 of 2 degenerate -> 0.5.
    Tuned for Chinese; for English output raise n (e.g. 10), since "the " recurs naturally.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ScoringError("repetition_rate got no texts; pass the list of generated outputs")
    if n < 1 or min_repeats < 2:
        raise ScoringError(f"need n >= 1 and min_repeats >= 2, got n={n}, min_repeats={min_repeats}")
    return sum(max_ngram_repeats(t, n) >= min_repeats for t in texts) / len(texts)


def _percentile_bootstrap(stat, k: int, n: int, level: float, seed: int) -> tuple:
    """Percentile interval of ``stat(idx)`` over `n` resamples of k indices drawn with replacement."""
    import random

    rng = random.Random(seed)
    stats = sorted(stat([rng.randrange(k) for _ in range(k)]) for _ in range(n))
    return float(stats[int((1 - level) / 2 * n)]), float(stats[min(n - 1, int((1 + level) / 2 * n))])


def bootstrap_ci(metric, references, hypotheses, *, n: int = 1000, level: float = 0.95, seed: int = 0) -> tuple:
    """Percentile bootstrap interval of a corpus metric: resample sentence pairs with replacement.

    ``metric(refs, hyps) -> float`` (``chrf``, ``cer``, ...). With 30 test sentences one sentence moves
    chrF by a few points, so a score without its interval invites reading noise as progress.
    Example: bootstrap_ci(chrf, refs, hyps) -> (41.2, 55.8) for a chrF of 48.9 (say).
    """
    refs, hyps = _check_pair(references, hypotheses)
    return _percentile_bootstrap(lambda idx: metric([refs[i] for i in idx], [hyps[i] for i in idx]),
                                 len(refs), n, level, seed)


def paired_bootstrap_diff(metric, references, hypotheses_a, hypotheses_b, *, n: int = 1000, level: float = 0.95,
                          seed: int = 0) -> tuple:
    """Percentile bootstrap interval of metric(b) - metric(a) on the SAME resampled sentences.

    Two systems scored on one small test set differ by a few points when only a few sentences differ;
    resampling the sentences jointly says whether that gap is larger than what the set can resolve
    (an interval that holds 0: it is not). Example: identical outputs -> (0.0, 0.0).
    """
    refs, a = _check_pair(references, hypotheses_a)
    _, b = _check_pair(references, hypotheses_b)

    def diff(idx):
        r = [refs[i] for i in idx]
        return metric(r, [b[i] for i in idx]) - metric(r, [a[i] for i in idx])

    return _percentile_bootstrap(diff, len(refs), n, level, seed)


def compare_systems(metric, references, hypotheses_a, hypotheses_b, *, names=("a", "b"),
                    higher_is_better: bool = True, n: int = 1000, seed: int = 0) -> dict:
    """Two systems on the same sentences: both scores, b - a with its paired 95 % interval, and the reading.

    The one place the course words a comparison: where the interval holds 0 the reading is
    "no difference shown" (the set cannot tell them apart), else "<name> better". Returns
    {"a", "b", "diff", "ci95", "shown", "better", "reading"} (`better`: a name or None).
    Example: compare_systems(cer, refs, hyps_30s, hyps_5s, names=("30 s", "5 s"), higher_is_better=False)
    -> {..., "ci95": (-0.04, 0.01), "shown": False, "better": None, "reading": "no difference shown"}
    """
    a, b = metric(references, hypotheses_a), metric(references, hypotheses_b)
    lo, hi = paired_bootstrap_diff(metric, references, hypotheses_a, hypotheses_b, n=n, seed=seed)
    shown = not (lo <= 0 <= hi)
    better = None
    if shown:
        better = names[1] if (lo > 0) == higher_is_better else names[0]
    reading = f"{better} better (interval excludes 0)" if shown else "no difference shown (interval holds 0)"
    return {"a": float(a), "b": float(b), "diff": float(b - a), "ci95": (lo, hi), "shown": shown,
            "better": better, "reading": reading}
