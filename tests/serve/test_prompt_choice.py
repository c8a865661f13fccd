"""Which prompt ships (the rule fixed in advance) and what a prompt did to its terms, clip by clip."""
from __future__ import annotations

import pytest

from lorakit_nb.serve.prompts import choose_prompt, compare_prompts, term_effects, terms_of


def test_terms_of_splits_list_punctuation():
    assert terms_of("项目例会：需求、上线、缺陷。") == ["项目例会", "需求", "上线", "缺陷"]
    assert terms_of("张总, 李经理;王老师") == ["张总", "李经理", "王老师"]
    assert terms_of("") == [] and terms_of(None) == []


def test_term_effects_sorts_each_term_into_what_the_prompt_did():
    refs = ["测试组还差两个模块", "冰箱的温度调到四度", "下个季度的目标", "需求下周上线", "模块"]
    plain = ["测试组还差两个魔块", "平乡的温度掉到试度", "下个基督的目标", "需求下周上线", "模块"]
    prompted = ["测试组还差两个模块", "评审的温度调到试度", "下个基督的目标", "需求下周上限", "模块"]
    got = term_effects(refs, plain, prompted, ["模块", "评审", "季度", "上线", "需求"])
    pairs = {k: [(e["clip"], e["term"]) for e in v] for k, v in got.items()}
    assert pairs == {"fixed": [(0, "模块")], "missed": [(2, "季度")], "broken": [(3, "上线")],
                     "intruded": [(1, "评审")]}  # clip 4: right both ways, nothing to say; 需求 unchanged
    assert got["fixed"][0]["prompted"] == "测试组还差两个模块"


def test_term_effects_compares_normalized_text():
    # Traditional in a hypothesis is the same term after normalize_zh (as CER sees it)
    assert term_effects(["发布计划"], ["發布計畫"], ["发布计划"], ["计划"])["fixed"] == []
    with pytest.raises(ValueError, match="differ in length"):
        term_effects(["a"], [], ["a"], ["a"])


def test_choose_prompt_ships_only_what_dev_shows_better():
    refs = [f"第{i}个模块" for i in range(30)]
    plain = [f"第{i}个魔块" for i in range(30)]          # every clip misses the term
    fixed = list(refs)                                   # a prompt that fixes them all
    noisy = plain[:15] + refs[15:]                       # half fixed: shown better too, but worse than `fixed`
    same = list(plain)                                   # changes nothing
    worse = [f"第{i}个评审魔块" for i in range(30)]       # inserts a prompt word everywhere
    comparison = compare_prompts(refs, {"none": plain, "fixed": fixed, "noisy": noisy, "same": same, "worse": worse}, n=200)
    assert comparison["vs"]["same"]["better"] is None and comparison["vs"]["worse"]["better"] == "none"
    assert choose_prompt(comparison) == "fixed"
    only_bad = compare_prompts(refs, {"none": plain, "same": same, "worse": worse}, n=200)
    assert choose_prompt(only_bad) is None  # nothing shown better: no prompt ships
