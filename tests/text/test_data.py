"""Tests for lorakit_nb.text.data: the committed Wu-dialect dataset and the loader's error messages."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lorakit_nb.errors import DataError, LorakitError
from lorakit_nb.text.data import (
    DEFAULT_COLUMNS,
    NOT_GLOSSARY_WORDS,
    check_pairs,
    glossary_coverage,
    load_pairs,
    load_splits,
    make_examples,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "wu_dialect"
HEADER = "wu,mandarin,english\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


# ---------------------------------------------------------------- the real dataset

def test_real_dataset_loads_with_disjoint_splits():
    """The committed splits load cleanly, hold >= 240 pairs, and share no sentence in any column.

    The disjointness is re-checked here with the plain csv module, independently of `load_splits`.
    """
    splits = load_splits(DATA)
    sizes = {name: len(pairs) for name, pairs in splits.items()}
    assert sum(sizes.values()) >= 240
    assert sizes["train"] >= 200 and sizes["dev"] >= 25 and sizes["test"] >= 25
    raw = {}
    for name in ("train", "dev", "test"):
        with open(DATA / f"{name}.csv", encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            assert next(reader) == list(DEFAULT_COLUMNS)
            raw[name] = [row for row in reader]
        assert [list(p.values()) for p in splits[name]] == raw[name]  # nothing lost or reordered
    for col in range(3):
        seen = [row[col] for rows in raw.values() for row in rows]
        assert len(seen) == len(set(seen)), f"a {DEFAULT_COLUMNS[col]} sentence appears twice"


def test_test_split_words_are_taught_in_train():
    """Every glossary word used in the test split appears in >= 2 training sentences, and the four words
    of the notebook's story (侬 = 你, 伐 = 吗, 勿 = 不, 阿拉 = 我们) each appear in >= 3 test sentences."""
    splits = load_splits(DATA)
    glossary = load_pairs(DATA / "glossary.csv")
    train = glossary_coverage(splits["train"], glossary)
    test = glossary_coverage(splits["test"], glossary)
    assert [w for w, n in test.items() if n and train[w] < 2] == []
    assert all(test[w] >= 3 for w in ("侬", "伐", "勿", "阿拉"))
    # every core word is tested somewhere (compounds such as 搭界 do not count as 搭), and taught twice
    test_words = glossary_coverage(splits["test"], glossary, ignore=NOT_GLOSSARY_WORDS)
    train_words = glossary_coverage(splits["train"], glossary, ignore=NOT_GLOSSARY_WORDS)
    assert [w for w, n in test_words.items() if n == 0] == [], "glossary words in no test sentence"
    assert [w for w, n in train_words.items() if n < 2] == [], "glossary words taught fewer than twice"


# ---------------------------------------------------------------- helpers

def test_glossary_coverage_longest_match_and_ignore():
    """Docstring example, by hand: "伊拉老早来了" reads 伊拉|老早 (not 伊, not 老);
    "伊老板老好" reads 伊|(老板, ignored)|老 -> each of the four words is used by exactly one sentence."""
    pairs = [{"wu": "伊拉老早来了"}, {"wu": "伊老板老好"}]
    got = glossary_coverage(pairs, ["伊", "伊拉", "老", "老早"], ignore=["老板"])
    assert got == {"伊": 1, "伊拉": 1, "老": 1, "老早": 1}
    # with 老 alone in the glossary, 老早 and 老板 are no longer whole words: both sentences count for 老
    assert glossary_coverage(pairs, ["老"]) == {"老": 2}


def test_make_examples_fills_template_and_target():
    pair = {"wu": "侬好！", "mandarin": "你好！", "english": "Hello!"}
    assert make_examples([pair]) == [
        {"prompt": "Translate Wu dialect to Mandarin: 侬好！\nMandarin:", "response": "你好！"}]
    assert make_examples([pair], "Wu: {wu}\nEnglish:", target="english") == [
        {"prompt": "Wu: 侬好！\nEnglish:", "response": "Hello!"}]


@pytest.mark.parametrize("template, target, needle", [
    ("Translate: {cantonese}", "mandarin", "no column named 'cantonese'"),
    ("Translate: {wu} -> {mandarin}", "mandarin", "the answer"),
    ("Translate: {}", "mandarin", "named fields"),
    ("Translate: {wu}", "french", "target 'french'"),
])
def test_make_examples_rejects_bad_template(template, target, needle):
    with pytest.raises(DataError, match=needle):
        make_examples([{"wu": "侬好", "mandarin": "你好", "english": "Hi"}], template, target)


# ---------------------------------------------------------------- bad input: one clear error each

def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError) and issubclass(DataError, LorakitError)


def test_missing_column_lists_the_header(tmp_path):
    f = write(tmp_path / "pairs.csv", "wu,mandarin\n侬好,你好\n")
    with pytest.raises(DataError) as e:
        load_pairs(f)
    msg = str(e.value)
    assert f"{f}, line 1" in msg and "'english'" in msg and "the header has: wu, mandarin" in msg
    assert "wu,mandarin,english" in msg  # the fix


def test_misspelled_column_suggests_nearest(tmp_path):
    f = write(tmp_path / "pairs.csv", "wu,Mandarin,english\n侬好,你好,Hi\n")
    with pytest.raises(DataError, match=r"line 1: missing column 'mandarin' \(did you mean 'Mandarin'\?\)"):
        load_pairs(f)


def test_header_missing_altogether(tmp_path):
    f = write(tmp_path / "pairs.csv", "侬好,你好,Hi\n")
    with pytest.raises(DataError, match=r"pairs.csv, line 1: this looks like a sentence pair, not the header"):
        load_pairs(f)


def test_empty_cell_names_line_and_column(tmp_path):
    """Line 1 header, line 2 fine, line 3 has an empty (blank-only) mandarin cell."""
    f = write(tmp_path / "pairs.csv", HEADER + "侬好,你好,Hi\n阿拉,  ,we\n")
    with pytest.raises(DataError) as e:
        load_pairs(f)
    assert f"{f}, line 3: the 'mandarin' cell is empty" in str(e.value)


def test_line_numbers_count_bom_blank_lines_and_quoted_newlines(tmp_path):
    """BOM is accepted; line 2 is blank; line 3 is a pair; line 4 is empty in `english` -> "line 4",
    as an editor shows it (a blank line is still a line)."""
    f = tmp_path / "pairs.csv"
    f.write_bytes(b"\xef\xbb\xbf" + (HEADER + "\n侬好,你好,Hi\n阿拉,我们,\n").encode("utf-8"))
    with pytest.raises(DataError, match=r"line 4: the 'english' cell is empty"):
        load_pairs(f)
    ok = write(tmp_path / "ok.csv", HEADER + '\n侬好,你好,"Hello, you"\n')
    assert load_pairs(ok) == [{"wu": "侬好", "mandarin": "你好", "english": "Hello, you"}]


def test_duplicate_pair_names_both_lines(tmp_path):
    """Lines 2 and 4 hold the same pair; the error is raised at the second one and names the first.
    Full-width ！ and ASCII ! count as the same sentence."""
    f = write(tmp_path / "pairs.csv", HEADER + "侬好！,你好！,Hi\n阿拉,我们,we\n侬好!,你好!,Hi\n")
    with pytest.raises(DataError) as e:
        load_pairs(f)
    msg = str(e.value)
    assert f"{f}, line 4: duplicate pair" in msg and "line 2" in msg and "delete one of lines 2 and 4" in msg


def test_same_sentence_two_translations(tmp_path):
    f = write(tmp_path / "pairs.csv", HEADER + "侬好,你好,Hi\n侬好,您好,Hello\n")
    with pytest.raises(DataError, match=r"line 3: same 'wu' sentence as line 2 \('侬好'\) but a different"):
        load_pairs(f)


def test_train_test_overlap_names_sentence_and_both_files(tmp_path):
    """阿拉 is line 3 of train.csv and line 2 of test.csv; dev is clean."""
    write(tmp_path / "train.csv", HEADER + "侬好,你好,Hi\n阿拉,我们,we\n")
    write(tmp_path / "dev.csv", HEADER + "伊,他,he\n")
    write(tmp_path / "test.csv", HEADER + "阿拉,我们,we\n")
    with pytest.raises(DataError) as e:
        load_splits(tmp_path)
    msg = str(e.value)
    assert f"{tmp_path / 'test.csv'}, line 2" in msg and f"{tmp_path / 'train.csv'}, line 3" in msg
    assert "'阿拉'" in msg and "one split only" in msg


def test_gbk_file_is_rejected_with_offset(tmp_path):
    """A file saved as GBK. The header is ASCII (20 bytes incl. newline, offsets 0-19). On line 2,
    侬 is GBK d9 af, which by chance is also a valid UTF-8 pair (U+066F); 好 is GBK ba c3 and 0xba
    cannot start a UTF-8 character -> first bad byte at offset 20 + 2 = 22, line 2."""
    f = tmp_path / "pairs.csv"
    f.write_bytes((HEADER + "侬好,你好,Hi\n").encode("gbk"))
    with pytest.raises(DataError) as e:
        load_pairs(f)
    msg = str(e.value)
    assert f"{f}, line 2: not UTF-8" in msg and "byte offset 22: ba c3" in msg
    assert "GBK" in msg and "re-save the file as UTF-8" in msg


def test_unquoted_comma_gives_field_count(tmp_path):
    f = write(tmp_path / "pairs.csv", HEADER + "侬好,你好,Hello, you\n")
    with pytest.raises(DataError, match=r"line 2: 4 fields but the header has 3 .*double quotes"):
        load_pairs(f)


def test_unclosed_quote_is_caught(tmp_path):
    """The quote opened on line 2 swallows line 3 into the english cell."""
    f = write(tmp_path / "pairs.csv", HEADER + '侬好,你好,"Hello\n阿拉,我们,we\n')
    with pytest.raises(DataError, match=r"line 2: the 'english' cell runs over several lines"):
        load_pairs(f)


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="the file is empty"):
        load_pairs(write(tmp_path / "empty.csv", "\n\n"))
    with pytest.raises(FileNotFoundError, match=r"dev.csv: no such file"):
        load_splits(write(tmp_path / "train.csv", HEADER + "侬好,你好,Hi\n").parent)


def test_check_pairs_in_memory_counts_rows_from_one():
    pairs = [{"wu": "侬好", "mandarin": "你好", "english": "Hi"}, {"wu": "阿拉", "mandarin": float("nan"),
                                                                "english": "we"}]
    with pytest.raises(DataError, match=r"my pairs, row 2: the 'mandarin' field is float nan, not text"):
        check_pairs(pairs, source="my pairs")
    assert check_pairs(pairs[:1]) is None


def test_readme_coverage_table_is_the_computed_one():
    """data/wu_dialect/README.md's word table (train/dev/test counts) must be what glossary_coverage computes."""
    import re

    glossary = load_pairs(DATA / "glossary.csv")
    splits = load_splits(DATA)
    computed = {name: glossary_coverage(pairs, glossary, ignore=NOT_GLOSSARY_WORDS) for name, pairs in splits.items()}
    rows = re.findall(r"^\| (\S+) \| .+? \| .+? \| (\d+) \| (\d+) \| (\d+) \|$",
                      (DATA / "README.md").read_text(encoding="utf-8"), flags=re.M)
    assert {w for w, *_ in rows} == set(computed["train"]), "the table must list every glossary word once"
    for word, train, dev, test in rows:
        assert (int(train), int(dev), int(test)) == tuple(computed[s][word] for s in ("train", "dev", "test")), word
