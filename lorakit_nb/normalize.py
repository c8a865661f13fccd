"""The one text normalizer for Chinese scores: what `normalize_zh` does to a sentence before CER, and why.

Covers:
- ``normalize_zh``: the canonical form applied identically to references and hypotheses before CER
  (width, Traditional->Simplified, case, numbers read as spoken Mandarin, punctuation, whitespace).
- ``light_normalize``: width, case and punctuation only (chrF and exact match of the Wu -> Mandarin task).

Does NOT cover: the scores themselves (``metrics``: CER, chrF, exact match, bootstrap), full text
normalization for TTS (dates, times ``10:30``, money, fractions ``1/2``, negative numbers and
phone-number heuristics beyond the simple rules below are not handled).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

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
