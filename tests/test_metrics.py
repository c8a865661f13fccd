"""Tests for lorakit_nb.metrics and lorakit_nb.cer_analysis, with hand-computed expectations."""

import jiwer
import pytest

from lorakit_nb.cer_analysis import (
    AlignOp,
    align_chars,
    cer_by_length,
    confusion_pairs,
    render_alignment,
    worst_utterances,
)
from lorakit_nb.errors import LorakitError
from lorakit_nb.metrics import (
    ScoringError,
    cer,
    cer_per_utterance,
    cer_report,
    chrf,
    exact_match,
    max_ngram_repeats,
    repetition_rate,
)
from lorakit_nb.normalize import light_normalize, normalize_zh

# ---------------------------------------------------------------- normalizer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("12", "十二"),  # 1 ten + 2; a leading 一十 is spoken as 十
        ("10", "十"),
        ("110", "一百一十"),  # 一十 only drops its 一 at the very start
        ("1010", "一千零一十"),  # the zero hundreds -> one 零, the trailing zero is silent
        ("1001", "一千零一"),  # two zeros in a row -> still one 零
        ("2000", "二千"),
        ("10086", "一万零八十六"),  # sections [1][0086]: 一万, then 0086 < 1000 -> 零八十六
        ("120000", "十二万"),  # sections [12][0000] -> 一十二万 -> 十二万
        ("100000001", "一亿零一"),  # sections [1][0000][0001]: the empty 万 section is skipped
        ("100010000", "一亿零一万"),
        ("0", "零"),
        ("007", "零零七"),  # leading zero: a code, read digit by digit
        ("13812345678", "一三八一二三四五六七八"),  # 11 digits: a phone number, digit by digit
        ("1,000,000", "一百万"),  # thousands separators removed first
        ("3.5", "三点五"),  # integer part as a cardinal, fraction digit by digit
        ("0.25", "零点二五"),
        ("50%", "百分之五十"),
        ("3.5％", "百分之三点五"),  # full-width percent sign -> % by NFKC
        ("2024年", "二零二四年"),  # four digits before 年: a year, digit by digit
        ("二〇二四年", "二零二四年"),  # 〇 folded to 零
        ("两千", "二千"),  # 两 folded to 二
    ],
)
def test_number_rule(text, expected):
    """Each expectation is the spoken Mandarin reading derived in the comment next to it."""
    assert normalize_zh(text) == expected


def test_normalize_full_example():
    """們->们 (t2s), １２->12->十二 (NFKC, numbers), 個->个, ＡＰＰ->app (NFKC, casefold), ！ dropped."""
    assert normalize_zh("我們有１２個ＡＰＰ！") == "我们有十二个app"
    assert normalize_zh("2024年增长了3.5%。") == "二零二四年增长了百分之三点五"


def test_fullwidth_and_case():
    """ＡＢＣ１２ -> ABC12 (NFKC) -> abc12 (casefold) -> abc十二; so both sides score CER 0."""
    assert normalize_zh("ＡＢＣ１２") == normalize_zh("abc12") == "abc十二"
    assert cer(["ＡＢＣ１２"], ["abc12"]) == 0.0


def test_traditional_to_simplified():
    """們 and 们 are the same character in two scripts: one sentence each way gives CER 0."""
    assert normalize_zh("我們") == "我们"
    assert cer(["我們的國家"], ["我们的国家"]) == 0.0


def test_t2s_is_the_maintained_opencc():
    """The kit uses OpenCC's own binding (``opencc`` on PyPI), whose t2s tables map variant forms to the
    standard Simplified character (幷 -> 并, 擡 -> 抬); the older pure-Python reimplementation keeps them.
    Whole sentences from the course data convert the same way with both."""
    from importlib.metadata import version

    assert int(version("opencc").split(".")[0]) >= 1
    assert normalize_zh("幷擡頭看後來開會") == "并抬头看后来开会"


def test_arabic_and_chinese_numerals_score_equal():
    """十二 vs 12 and 两个 vs 2个: equal after normalization, so 0 edits."""
    assert cer(["我有十二个苹果", "两个人"], ["我有12个苹果", "2个人"]) == 0.0


def test_punctuation_and_space_only_differences():
    """Chinese and ASCII punctuation and all whitespace are removed on both sides -> CER 0;
    with normalize=False the same pair has edits (the comma, the exclamation mark, the space)."""
    ref, hyp = "你好，世界！", "你好 世界"
    assert normalize_zh(ref) == normalize_zh(hyp) == "你好世界"
    assert cer([ref], [hyp]) == 0.0
    # raw: 你好[，→ ]世界[-！] -> 1 substitution + 1 deletion over 6 chars
    assert cer([ref], [hyp], normalize=False) == pytest.approx(2 / 6)


def test_normalize_rejects_non_string():
    with pytest.raises(ScoringError, match="expects a str"):
        normalize_zh(None)


# ---------------------------------------------------------------- CER


def test_cer_hand_aligned_pair():
    """ref 今天天气很好 (6 chars) / hyp 今天天汽很好啊:
    今 天 天 气 很 好 -
    今 天 天 汽 很 好 啊
    -> 1 substitution (气->汽) + 1 insertion (啊), 0 deletions: CER = 2 / 6 = 0.3333."""
    assert cer(["今天天气很好"], ["今天天汽很好啊"]) == pytest.approx(1 / 3)
    (row,) = cer_per_utterance(["今天天气很好"], ["今天天汽很好啊"])
    assert (row["substitutions"], row["deletions"], row["insertions"]) == (1, 0, 1)
    assert (row["edits"], row["ref_chars"]) == (2, 6)


def test_cer_is_corpus_level_not_mean_of_utterances():
    """ref 你好 / hyp 你 -> 1 deletion over 2; ref 今天天气很好 exact -> 0 over 6.
    Corpus CER = (1 + 0) / (2 + 6) = 0.125, while the mean of per-utterance CERs would be 0.25."""
    refs, hyps = ["你好", "今天天气很好"], ["你", "今天天气很好"]
    assert cer(refs, hyps) == pytest.approx(1 / 8)
    # the same number as jiwer's own CER on the normalized strings
    assert cer(refs, hyps) == pytest.approx(jiwer.cer(refs, hyps))


def test_mismatched_lengths_error_names_both_lengths():
    with pytest.raises(ScoringError, match=r"got 2 references but 1 hypotheses"):
        cer(["你好", "再见"], ["你好"])
    # one exception family for learner errors, still a ValueError for generic handlers
    assert issubclass(ScoringError, LorakitError) and issubclass(ScoringError, ValueError)
    with pytest.raises(ScoringError, match="got 0 references"):
        chrf([], [])


def test_empty_reference_is_excluded_and_counted():
    """Ref '。' normalizes to '' -> excluded. The rest: 2 edits / 6 chars. Its hypothesis 嗯 (1 char)
    is reported as empty_ref_hyp_chars so a hallucination on silence stays visible."""
    rep = cer_report(["今天天气很好", "。"], ["今天天汽很好啊", "嗯"])
    assert rep.cer == pytest.approx(2 / 6)
    assert (rep.n_utterances, rep.n_empty_ref, rep.empty_ref_hyp_chars) == (2, 1, 1)
    assert (rep.edits, rep.ref_chars) == (2, 6)
    rows = cer_per_utterance(["今天天气很好", "。"], ["今天天汽很好啊", "嗯"])
    assert rows[1]["cer"] is None and rows[1]["insertions"] == 1


def test_all_references_empty_raises():
    with pytest.raises(ScoringError, match="all 2 references are empty"):
        cer(["", "，"], ["你好", ""])


def test_non_string_item_names_its_index():
    with pytest.raises(ScoringError, match=r"hypotheses\[1\]"):
        cer(["你好", "再见"], ["你好", None])


def test_empty_hypothesis_is_all_deletions():
    """ref 你好吗 / hyp '' -> 3 deletions over 3 chars: CER 1.0."""
    assert cer(["你好吗"], [""]) == 1.0


# ---------------------------------------------------------------- error analysis


def test_align_chars_and_render():
    """Same pair as the CER test: equal 今天天, substitute 气->汽, equal 很好, insert 啊."""
    ops = align_chars("今天天气很好", "今天天汽很好啊")
    assert ops == [
        AlignOp("equal", "今天天", "今天天"),
        AlignOp("substitute", "气", "汽"),
        AlignOp("equal", "很好", "很好"),
        AlignOp("insert", "", "啊"),
    ]
    assert render_alignment(ops) == "今天天[气→汽]很好[+啊]"
    assert "\x1b[33m[气→汽]" in render_alignment(ops, style="ansi")
    assert render_alignment([AlignOp("delete", "<b>", "")], style="html").count("&lt;b&gt;") == 1
    with pytest.raises(ScoringError, match="style must be one of"):
        render_alignment(ops, style="latex")


def test_align_deletion_at_end():
    """ref 你好吗 / hyp 你好 -> equal 你好, delete 吗."""
    assert render_alignment(align_chars("你好吗", "你好")) == "你好[-吗]"


def test_confusion_pairs():
    """Pair 1: 天气 vs 天汽 -> (气,汽). Pair 2: 天气好 vs 添汽好 -> (天,添), (气,汽).
    Pair 3: 是 vs 事 -> (是,事). Totals: (气,汽) 2, (天,添) 1, (是,事) 1."""
    pairs = confusion_pairs(["天气", "天气好", "是"], ["天汽", "添汽好", "事"], top=10)
    assert pairs[0] == (("气", "汽"), 2)
    assert sorted(pairs[1:]) == [(("天", "添"), 1), (("是", "事"), 1)]
    assert confusion_pairs(["天气", "天气好", "是"], ["天汽", "添汽好", "事"], top=1) == [(("气", "汽"), 2)]


def test_cer_by_length():
    """bins=(3,): 你好 (2 chars, 1 deletion) -> "1-3"; 今天天气很好 (6 chars, 2 edits) and
    我们走吧 (4 chars, 0 edits) -> "4+" with CER (2 + 0) / (6 + 4) = 0.2; '' is left out."""
    rows = cer_by_length(["你好", "今天天气很好", "我们走吧", ""], ["你", "今天天汽很好啊", "我们走吧", "嗯"], bins=(3,))
    assert [r["bin"] for r in rows] == ["1-3", "4+"]
    assert (rows[0]["n"], rows[0]["cer"]) == (1, pytest.approx(0.5))
    assert (rows[1]["n"], rows[1]["edits"], rows[1]["ref_chars"]) == (2, 2, 10)
    assert rows[1]["cer"] == pytest.approx(0.2)
    assert cer_by_length(["你好"], ["你好"], bins=(1, 5))[0] == {"bin": "1-1", "n": 0, "ref_chars": 0, "edits": 0, "cer": None}
    with pytest.raises(ScoringError, match="strictly increasing"):
        cer_by_length(["你好"], ["你好"], bins=(10, 5))


def test_worst_utterances():
    """CERs: 你好 exact 0; 今天天气很好 2/6; 你好吗 vs 你 2/3 -> worst first: index 2 then 1."""
    worst = worst_utterances(["你好", "今天天气很好", "你好吗"], ["你好", "今天天汽很好啊", "你"], k=2)
    assert [w["index"] for w in worst] == [2, 1]
    assert worst[1]["alignment"] == "今天天[气→汽]很好[+啊]"


# ---------------------------------------------------------------- Wu task text metrics


def test_chrf_hand_computed_and_monotone():
    """ref 你好吗 / hyp 你好. Char 1-grams: P = 2/2, R = 2/3; 2-grams: P = 1/1 (你好), R = 1/2 (of 你好, 好吗).
    The hypothesis has no 3-grams, so sacrebleu averages the orders it has: P = 1, R = 7/12.
    chrF (beta 2) = 5PR / (4P + R) = (35/12) / (55/12) = 7/11 -> 63.64."""
    assert chrf(["你好吗"], ["你好"]) == pytest.approx(100 * 7 / 11)
    assert chrf(["你好吗"], ["你好吗"]) == pytest.approx(100.0)
    ref = ["今天天气很好"]
    far, near, exact = chrf(ref, ["明天下雨"]), chrf(ref, ["今天天气不错"]), chrf(ref, ["今天天气很好"])
    assert far < near < exact


def test_chrf_normalize_ignores_punctuation():
    assert chrf(["你好吗？"], ["你好吗"], normalize=True) == pytest.approx(100.0)
    assert chrf(["你好吗？"], ["你好吗"]) < 100.0


def test_exact_match():
    """你好吗？ vs 你好吗: equal once the ？ is dropped; 我们走 vs 我走: different -> 1 / 2."""
    assert exact_match(["你好吗？", "我们走"], ["你好吗", "我走"]) == 0.5
    assert light_normalize("Ｈｅｌｌｏ，世界！ ") == "hello世界"
    # light normalization leaves scripts and numbers alone: 們 != 们 and 12 != 十二 for exact match
    assert exact_match(["我們", "十二"], ["我们", "12"]) == 0.0


def test_repetition_rate_on_degenerate_string():
    """我们我们我们我们 (8 chars) has 4-grams 我们我们 at 0, 2, 4 (3 times) and 们我们我 at 1, 3 (2 times):
    max repeats 3 >= 3 -> degenerate. 今天天气很好 has all 3 of its 4-grams distinct -> 1.
    So 1 of 2 generations is degenerate: rate 0.5."""
    assert max_ngram_repeats("我们我们我们我们", n=4) == 3
    assert max_ngram_repeats("今天天气很好", n=4) == 1
    assert max_ngram_repeats("你好", n=4) == 0  # shorter than n: no n-grams
    assert repetition_rate(["今天天气很好", "我们我们我们我们"], n=4) == 0.5
    assert repetition_rate(["谢谢谢谢谢谢"], n=2) == 1.0  # 谢谢 occurs 5 times
    with pytest.raises(ScoringError, match="no texts"):
        repetition_rate([])


def test_bootstrap_ci_brackets_the_score_and_narrows_with_agreement():
    """All hypotheses right -> every resample scores 100 (a zero-width interval); half right -> the
    interval contains the corpus score and is wide, since a resample can draw mostly right or wrong ones."""
    from lorakit_nb.metrics import bootstrap_ci, chrf

    refs = ["今天天气很好", "我们明天去上海", "你吃饭了吗", "这个东西很便宜"] * 5
    assert bootstrap_ci(chrf, refs, refs, n=200) == (100.0, 100.0)
    half = [r if i % 2 else "完全不同的句子" for i, r in enumerate(refs)]
    lo, hi = bootstrap_ci(chrf, refs, half, n=300)
    assert lo < chrf(refs, half) < hi and hi - lo > 10


def test_paired_bootstrap_diff_is_zero_for_identical_systems_and_excludes_zero_for_a_broken_one():
    from lorakit_nb.metrics import chrf, paired_bootstrap_diff

    refs = [f"今天第{i}个句子很好" for i in range(20)]
    good = list(refs)
    assert paired_bootstrap_diff(chrf, refs, good, good, n=200) == (0.0, 0.0)
    one_off = good[:-1] + ["完全不同"]          # one sentence differs: the interval holds 0
    lo, hi = paired_bootstrap_diff(chrf, refs, good, one_off, n=500)
    assert lo < 0 and hi == 0.0  # resamples without that sentence tie; with it, b is worse
    broken = ["啊"] * 20                        # every sentence wrong: clearly worse, the interval excludes 0
    lo, hi = paired_bootstrap_diff(chrf, refs, good, broken, n=500)
    assert hi < 0


def test_compare_systems_says_no_difference_when_the_interval_holds_zero():
    from lorakit_nb.metrics import compare_systems

    refs = ["今天天气很好", "我们去开会", "请把文件发给我", "明天见"] * 5
    same = compare_systems(cer, refs, refs, refs, names=("a", "b"), higher_is_better=False)
    assert same["ci95"] == (0.0, 0.0) and not same["shown"] and same["reading"].startswith("no difference")
    # b wrong on every sentence, a perfect: lower CER is better, so a is better and the interval excludes 0
    wrong = ["明天天气很好", "你们去开会", "请把文件发给你", "后天见"] * 5
    diff = compare_systems(cer, refs, refs, wrong, names=("a", "b"), higher_is_better=False)
    assert diff["shown"] and diff["better"] == "a" and diff["ci95"][0] > 0 and diff["diff"] == pytest.approx(diff["b"])
