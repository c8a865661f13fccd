"""Tests for speech.repetition: the loop detector on hand-written Chinese strings and the fallback path
with fake decoders (no model)."""
from __future__ import annotations

import numpy as np

from lorakit_nb.speech.repetition import compression_ratio, guarded, is_repetitive, replace_repetitive

NORMAL = ["先把最紧急的缺陷修掉再说", "下个季度的目标是用户翻一番", "这件事我会后单独跟你说",
          "新版本的发布计划已经定了", "我们明天上午十点开会", "谢谢大家"]
LOOPS = ["用户翻一番翻一番翻一番翻一番",  # 一番 x4 (2-gram rule)
         "新版本的发布计划计划计划计划",  # 计划 x4
         "好的" * 30]  # 180 bytes that zlib squeezes ~10x (compression-ratio rule)


def test_detector_separates_loops_from_sentences():
    """Every normal sentence (each 2-gram at most twice, 12-39 bytes: ratio < 1.2) passes; each loop is caught."""
    assert not any(is_repetitive(t) for t in NORMAL)
    assert all(is_repetitive(t) for t in LOOPS)
    assert compression_ratio("好的" * 30) > 2.4 > max(compression_ratio(t) for t in NORMAL)
    assert compression_ratio("") == 0.0 and not is_repetitive("")


def test_fallback_replaces_only_looping_rows_and_counts():
    """Rows 0 and 2 loop: only they go to the fallback (2 rows of the batch's features), whose clean text
    replaces them; row 1 is untouched; stats count 3 clips, 2 fired, 2 replaced."""
    first = ["翻一番翻一番翻一番翻一番", NORMAL[0], "计划计划计划计划"]
    seen = {}

    def decode(features, cap):
        return list(first)

    def fallback(features, cap):
        seen["rows"], seen["cap"] = features[:, 0, 0].tolist(), cap
        return ["用户翻一番", "发布计划"]

    stats = {}
    x = np.arange(3, dtype=np.float32)[:, None, None] * np.ones((3, 2, 4), np.float32)  # row i filled with i
    out = guarded(decode, fallback, stats=stats)(x, 7)
    assert out == ["用户翻一番", NORMAL[0], "发布计划"]
    assert seen == {"rows": [0.0, 2.0], "cap": 7}
    assert stats == {"clips": 3, "fired": 2, "replaced": 2}


def test_fallback_that_still_loops_more_is_not_taken():
    """A fallback text that repeats as much (计划 x4) or more is dropped; one that repeats less is kept even if
    still flagged (x4 -> x5 dropped; x5 -> x4 kept)."""
    stats = {}
    out = guarded(lambda f, c: ["计划计划计划计划"], lambda f, c: ["计划计划计划计划计划"], stats=stats)(np.zeros((1, 2, 4)), 5)
    assert out == ["计划计划计划计划"] and stats == {"clips": 1, "fired": 1, "replaced": 0}
    out = guarded(lambda f, c: ["计划计划计划计划计划"], lambda f, c: ["计划计划计划计划"])(np.zeros((1, 2, 4)), 5)
    assert out == ["计划计划计划计划"]


def test_no_fallback_call_when_nothing_loops():
    def fallback(features, cap):
        raise AssertionError("fallback called on clean text")

    assert guarded(lambda f, c: NORMAL[:2], fallback)(np.zeros((2, 2, 4)), 5) == NORMAL[:2]


def test_shared_rule_moves_ids_with_their_text_and_judges_stripped_text():
    """``replace_repetitive`` on (text, ids) rows: row 0 loops (计划 x4) and its retry is clean -> the retry's
    text AND ids; row 2 loops and its retry repeats as much (x4) -> the first pair stays; row 1 (clean) is
    never retried. A leading space (Whisper's decoded text has one; the server's is stripped) changes no
    verdict: "今天天气很好，" + "好的" * 11 compresses 87 -> 36 bytes (2.42 > 2.4), with the space 88 -> 37
    (2.38), so judged unstripped the two paths would disagree (n-gram rule off to isolate zlib's)."""
    rows = [("计划计划计划计划", [1, 1, 1, 1]), (" 谢谢大家", [2]), ("翻一番翻一番翻一番翻一番", [3, 3])]
    asked = []

    def redo(idx):
        asked.append(idx)
        return [("发布计划", [9]), ("翻一番 翻一番 翻一番 翻一番", [8])]

    stats = {"clips": 5}  # counts add up across calls
    out = replace_repetitive(rows, redo, text=lambda r: r[0], stats=stats)
    assert out == [("发布计划", [9]), rows[1], rows[2]] and asked == [[0, 2]]
    assert stats == {"clips": 8, "fired": 2, "replaced": 1}
    edge = "今天天气很好，" + "好的" * 11
    assert compression_ratio(edge) > 2.4 > compression_ratio(" " + edge)
    assert is_repetitive(" " + edge, max_repeats=100) and is_repetitive(edge, max_repeats=100)
    assert replace_repetitive(NORMAL, lambda idx: 1 / 0) == NORMAL  # nothing loops: no retry
