"""Where does the CER come from? Character alignment, its display, confusion pairs, CER by length.

Covers: ``align_chars`` (jiwer's character alignment as readable ops), ``render_alignment`` (plain
text, ANSI colour or HTML for notebooks), ``confusion_pairs``, ``cer_by_length`` and
``worst_utterances``. All of them normalize with ``metrics.normalize_zh`` by default, so the errors
shown are exactly the errors counted by ``metrics.cer``. ``cer_by_normalizer`` scores the same
transcripts under four normalizers (``scoring_normalizers``), to show how much the choice moves a CER.

Does NOT cover: computing the CER itself (``metrics``) or drawing plots (the notebook plots the rows
these functions return, e.g. ``plt.bar([r["bin"] for r in rows], [r["cer"] for r in rows])``).
"""

from __future__ import annotations

import html
from collections import Counter
from typing import NamedTuple

from lorakit_nb.metrics import ScoringError, _aligned, cer_per_utterance


class AlignOp(NamedTuple):
    op: str  # "equal" | "substitute" | "insert" | "delete"
    ref: str  # reference characters of this span ("" for an insertion)
    hyp: str  # hypothesis characters of this span ("" for a deletion)


def _ops(ref: str, hyp: str, chunks) -> list[AlignOp]:
    return [AlignOp(c.type, ref[c.ref_start_idx:c.ref_end_idx], hyp[c.hyp_start_idx:c.hyp_end_idx])
            for c in chunks]


def align_chars(ref: str, hyp: str, normalize: bool = True) -> list[AlignOp]:
    """Character alignment of one pair, as spans.

    Example: align_chars("今天天气很好", "今天天汽很好啊") ->
        [AlignOp("equal", "今天天", "今天天"), AlignOp("substitute", "气", "汽"),
         AlignOp("equal", "很好", "很好"), AlignOp("insert", "", "啊")]
    """
    refs, hyps, alignments = _aligned([ref], [hyp], normalize)
    return _ops(refs[0], hyps[0], alignments[0])


_STYLES = {
    # op: (text, ansi, html) templates; {r} = reference span, {h} = hypothesis span
    "equal": ("{r}", "{r}", "{r}"),
    "substitute": ("[{r}→{h}]", "\x1b[33m[{r}→{h}]\x1b[0m",
                   '<span style="background:#fde68a">[{r}→{h}]</span>'),
    "delete": ("[-{r}]", "\x1b[31m[-{r}]\x1b[0m",
               '<span style="background:#fecaca;text-decoration:line-through">[-{r}]</span>'),
    "insert": ("[+{h}]", "\x1b[32m[+{h}]\x1b[0m", '<span style="background:#bbf7d0">[+{h}]</span>'),
}


def render_alignment(ops: list[AlignOp], style: str = "text") -> str:
    """Show an alignment inline: ``[r→h]`` substitution, ``[-r]`` deletion, ``[+h]`` insertion.

    style: "text" (works everywhere, also headless), "ansi" (coloured in terminals and notebook
    output) or "html" (pass to ``IPython.display.HTML``).
    Example: render_alignment(align_chars("今天天气很好", "今天天汽很好啊")) -> "今天天[气→汽]很好[+啊]"
    """
    styles = ("text", "ansi", "html")
    if style not in styles:
        raise ScoringError(f"style must be one of {styles}, got {style!r}")
    k = styles.index(style)
    esc = html.escape if style == "html" else str
    return "".join(_STYLES[o.op][k].format(r=esc(o.ref), h=esc(o.hyp)) for o in ops)


def confusion_pairs(references, hypotheses, top: int = 10, normalize: bool = True) -> list[tuple[tuple[str, str], int]]:
    """Most frequent (reference char, hypothesis char) substitutions over a corpus.

    A substitution span of k characters contributes k pairs, position by position.
    Example: refs ["天气", "天气好"], hyps ["天汽", "添汽好"] -> [(("气", "汽"), 2), (("天", "添"), 1)]
    """
    refs, hyps, alignments = _aligned(references, hypotheses, normalize)
    pairs = Counter()
    for r, h, chunks in zip(refs, hyps, alignments):
        for o in _ops(r, h, chunks):
            if o.op == "substitute":
                pairs.update(zip(o.ref, o.hyp))  # Levenshtein substitution spans have equal lengths
    return pairs.most_common(top)


def cer_by_length(references, hypotheses, bins=(5, 10, 20), normalize: bool = True) -> list[dict]:
    """Corpus CER per bucket of normalized reference length.

    ``bins`` are inclusive upper edges: (5, 10, 20) -> buckets "1-5", "6-10", "11-20", "21+".
    Each row: bin, n (utterances), ref_chars, edits, cer (``None`` for an empty bucket). Empty
    references are left out, as in ``metrics.cer``.
    Example: lengths 3 and 8 with 1 and 2 edits, bins=(5,) -> [{"bin": "1-5", "cer": 1/3, ...},
    {"bin": "6+", "cer": 2/8, ...}]
    """
    edges = list(bins)
    if not edges or any(e < 1 for e in edges) or edges != sorted(set(edges)):
        raise ScoringError(f"bins must be strictly increasing positive lengths, e.g. (5, 10, 20); got {bins!r}")
    lows = [1] + [e + 1 for e in edges]
    labels = [f"{lo}-{hi}" for lo, hi in zip(lows, edges)] + [f"{lows[-1]}+"]
    rows = [{"bin": lab, "n": 0, "ref_chars": 0, "edits": 0, "cer": None} for lab in labels]
    for u in cer_per_utterance(references, hypotheses, normalize):
        if u["ref_chars"] == 0:
            continue
        b = next((i for i, e in enumerate(edges) if u["ref_chars"] <= e), len(edges))
        rows[b]["n"] += 1
        rows[b]["ref_chars"] += u["ref_chars"]
        rows[b]["edits"] += u["edits"]
    for r in rows:
        if r["ref_chars"]:
            r["cer"] = r["edits"] / r["ref_chars"]
    return rows


def worst_utterances(references, hypotheses, k: int = 5, normalize: bool = True, style: str = "text") -> list[dict]:
    """The k pairs with the highest CER (ties: more edits first), each with its rendered alignment.

    Example: refs ["你好", "今天天气很好"], hyps ["你好", "今天天汽很好啊"], k=1 ->
        [{"index": 1, "cer": 0.333..., "alignment": "今天天[气→汽]很好[+啊]", ...}]
    """
    rows = [u for u in cer_per_utterance(references, hypotheses, normalize) if u["cer"] is not None]
    rows.sort(key=lambda u: (-u["cer"], -u["edits"], u["index"]))
    for u in rows[:k]:
        u["alignment"] = render_alignment(align_chars(u["reference"], u["hypothesis"], normalize=False), style)
    return rows[:k]


def _squash(text: str) -> str:
    return "".join(text.split())  # character-level scoring: spaces are not characters of Chinese


def scoring_normalizers() -> dict:
    """Four ways to prepare text before a Chinese CER, weakest first: name -> function(str) -> str.

    "none (raw text)", "Whisper basic" (transformers' ``BasicTextNormalizer``, spaces squashed),
    "light (width, case, punct.)" (``metrics.light_normalize``) and "lorakit normalize_zh".
    Example: scoring_normalizers()["Whisper basic"]("我們有１２個ＡＰＰ！") -> "我們有12個app"
    """
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    from lorakit_nb.normalize import light_normalize, normalize_zh

    whisper_basic = BasicTextNormalizer()
    return {"none (raw text)": lambda t: t, "Whisper basic": lambda t: _squash(whisper_basic(t)),
            "light (width, case, punct.)": light_normalize, "lorakit normalize_zh": normalize_zh}


def cer_by_normalizer(references, hypotheses, normalizers: dict | None = None) -> dict:
    """Corpus CER of the same transcripts under each normalizer (applied to both sides), in order.

    Example: refs ["我们有十二个人。"], hyps ["我們有12個人"] -> {"none (raw text)": 0.625, "Whisper basic": 0.571...,
    "light (width, case, punct.)": 0.571..., "lorakit normalize_zh": 0.0}
    """
    from lorakit_nb.metrics import cer

    refs, hyps = list(references), list(hypotheses)
    return {name: cer([f(r) for r in refs], [f(h) for h in hyps], normalize=False)
            for name, f in (normalizers or scoring_normalizers()).items()}
