"""Scores for Chinese ASR and Chinese text generation: one normalizer, CER, chrF, exact match, repetition.

Covers:
- ``normalize_zh``: the single text normalizer applied identically to references and hypotheses
  before CER (width, Traditional->Simplified, case, numbers, punctuation, whitespace).
- ``cer`` / ``cer_report`` / ``cer_per_utterance``: character error rate via jiwer's alignment.
- ``chrf`` (sacrebleu corpus chrF), ``exact_match`` and ``repetition_rate`` for the Wu -> Mandarin task;
  ``bootstrap_ci``: a percentile bootstrap interval for any of these corpus scores.

Does NOT cover: alignment display, confusion pairs and CER by length (see ``cer_analysis``), full
text normalization for TTS (dates, times ``10:30``, money, fractions ``1/2``, negative numbers and
phone-number heuristics beyond the simple rules below are not handled), or word-level metrics (WER).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from functools import lru_cache

import jiwer
import sacrebleu

from lorakit_nb.errors import ScoringError

_DIGITS = "零一二三四五六七八九"
_SMALL_UNITS = ("千", "百", "十", "")  # positions of a 4-digit section, high -> low
_BIG_UNITS = ("", "万", "亿")  # one per 4-digit section, low -> high
_MAX_CARDINAL_DIGITS = 10  # 11+ digits (phone numbers, IDs) are read digit by digit


@lru_cache(maxsize=1)
def _t2s():
    # Building the converter loads its dictionaries; do it once per process, not once per string.
    from opencc import OpenCC

    return OpenCC("t2s")


def _section(g: int) -> str:
    """Read 1..9999 with 千百十 units. Example: 1010 -> 一千零一十, 86 -> 八十六."""
    out, pending_zero, started = "", False, False
    for unit, ch in zip(_SMALL_UNITS, f"{g:04d}"):
        d = int(ch)
        if d == 0:
            pending_zero = started  # a run of zeros between non-zero digits is read as one 零
        else:
            out += ("零" if pending_zero else "") + _DIGITS[d] + unit
            pending_zero, started = False, True
    return out


def _cardinal(n: int) -> str:
    """Read 0 <= n < 10**10 as a Chinese cardinal. Example: 10086 -> 一万零八十六, 120000 -> 十二万."""
    if n == 0:
        return "零"
    groups = []  # 4-digit sections, low -> high
    while n:
        groups.append(n % 10000)
        n //= 10000
    out = ""
    for i in reversed(range(len(groups))):
        if groups[i] == 0:
            continue
        if out and groups[i] < 1000:  # a gap inside the number: 一亿零一, 一万零八十六
            out += "零"
        out += _section(groups[i]) + _BIG_UNITS[i]
    # Spoken Mandarin says 十二 / 十二万, not 一十二, when the number starts with 1 in the tens place.
    return out[1:] if out.startswith("一十") else out


def _read_integer(s: str) -> str:
    """Digit string -> Chinese. Leading zero or 11+ digits: digit by digit ("007" -> 零零七)."""
    if (len(s) > 1 and s[0] == "0") or len(s) > _MAX_CARDINAL_DIGITS:
        return "".join(_DIGITS[int(c)] for c in s)
    return _cardinal(int(s))


def _read_number(s: str) -> str:
    """"3.5" -> 三点五 (fraction digit by digit), "12" -> 十二."""
    whole, _, frac = s.partition(".")
    return _read_integer(whole) + ("点" + "".join(_DIGITS[int(c)] for c in frac) if frac else "")


_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*%")
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")
_YEAR = re.compile(r"[0-9]{4}(?=年)")
_INTEGER = re.compile(r"[0-9]+")


def _numbers_to_chinese(text: str) -> str:
    text = _PERCENT.sub(lambda m: "百分之" + _read_number(m.group(1)), text)
    text = _DECIMAL.sub(lambda m: _read_number(m.group(0)), text)
    text = _YEAR.sub(lambda m: "".join(_DIGITS[int(c)] for c in m.group(0)), text)
    return _INTEGER.sub(lambda m: _read_integer(m.group(0)), text)


def _keep_char(ch: str) -> bool:
    # Keep letters (L*), numbers (N*) and combining marks (M*); drop punctuation (P*), symbols (S*),
    # separators/whitespace (Z*) and controls/format chars such as zero-width spaces (C*).
    return unicodedata.category(ch)[0] in "LNM"


def light_normalize(text: str) -> str:
    """NFKC, case-fold, drop punctuation/symbols/whitespace. No script or number changes.

    Example: "Ｈｅｌｌｏ，世界！ " -> "hello世界"
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if _keep_char(ch))


def normalize_zh(text: str) -> str:
    """Canonical form of Chinese text for CER; apply it to references AND hypotheses alike.

    Steps, in order:
    1. Thousands separators in digits are removed ("1,000" -> "1000"; ASCII comma only).
    2. NFKC: full-width -> half-width ("ＡＢＣ１２" -> "ABC12", "％" -> "%").
    3. Traditional -> Simplified with OpenCC t2s ("們" -> "们", "國" -> "国").
    4. Latin case-folding ("ABC" -> "abc").
    5. Numbers, ONE direction: Arabic -> Chinese numerals, read as spoken Mandarin:
       - percent:  "50%" -> 百分之五十, "3.5%" -> 百分之三点五
       - decimal:  "3.5" -> 三点五, "0.25" -> 零点二五 (fraction digit by digit)
       - year:     four digits right before 年 are read digit by digit: "2024年" -> 二零二四年
       - integer:  cardinal reading: "12" -> 十二, "10086" -> 一万零八十六, "2000" -> 二千
       - codes:    a leading zero or 11+ digits is read digit by digit: "007" -> 零零七,
                   "13812345678" -> 一三八一二三四五六七八
    6. Numeral variants folded: 两 -> 二 and 〇 -> 零, so "两千" == "2000" and "二〇二四" == "二零二四".
    7. Drop all punctuation (Chinese and ASCII), symbols and whitespace.

    Worked examples:
        "我們有１２個ＡＰＰ！"       -> "我们有十二个app"
        "2024年增长了3.5%。"        -> "二零二四年增长了百分之三点五"
        "两千 人" and "2000人"      -> both "二千人"

    Why this direction: Mandarin ASR corpora such as AISHELL-1 write transcripts in characters as
    spoken, and speech says 十二, not "12"; so the kit maps Arabic digits to what a speaker says, like
    SpeechIO's chinese_text_normalization and WeNet's WeTextProcessing TN do. Whisper's own
    BasicTextNormalizer keeps Arabic digits (and its English normalizer turns spelled numbers INTO
    digits), so CERs from different toolkits are not comparable unless the normalizer is the same.
    Trade-offs of these rules: a bare "2024" (no 年) reads as a cardinal 二千零二十四; time "10:30",
    fractions and 幺 in phone numbers are not handled; folding 两 -> 二 hides a real 两/二 error
    (二手 vs 两手) but stops "2个" vs "两个" from counting as an error, which is far more common.
    Digits inside Latin words change too ("mp3" -> "mp三"), identically on both sides.
    """
    if not isinstance(text, str):
        raise ScoringError(f"normalize_zh expects a str, got {type(text).__name__}: {text!r}")
    text = _THOUSANDS.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    text = _t2s().convert(text).casefold()
    text = _numbers_to_chinese(text)
    text = text.replace("两", "二").replace("〇", "零")
    return "".join(ch for ch in text if _keep_char(ch))


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
