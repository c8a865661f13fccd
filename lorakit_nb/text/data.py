"""Parallel-sentence CSV files (Wu dialect / Mandarin / English): load, validate, split, prompt.

Covers:
- `load_pairs`: one UTF-8 CSV with a header line (default `wu,mandarin,english`) -> list of dicts,
  every row checked; `check_pairs` runs the same row checks on pairs built in memory.
- `load_splits`: the train/dev/test files of one folder, plus a check that no source sentence sits in
  two splits (a test sentence seen in training would flatter the score).
- `make_examples`: prompt/response pairs from a template, for training and evaluation.
- `glossary_coverage`: how many pairs use each glossary word (the numbers in the dataset README).

Every problem a learner can cause raises one `DataError` (a `ValueError`) naming the file, the line
(1-based, as an editor shows it) and the fix; a missing file raises `FileNotFoundError`.

Does NOT: tokenize or build torch / HF datasets (see `text/train.py`), convert traditional to simplified
characters or unify Wu spelling variants (辣/勒/垃 for "at"), or fetch data from anywhere.
"""
from __future__ import annotations

import csv
import difflib
import io
import string
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from lorakit_nb.errors import DataError, MissingFileError
from lorakit_nb.io import read_utf8

DEFAULT_COLUMNS = ("wu", "mandarin", "english")
SPLITS = ("train", "dev", "test")
# The prompt each target is trained and scored with: defined here once, read by config, evaluate, export.
PROMPT_TEMPLATES = {
    "mandarin": "Translate Wu dialect to Mandarin: {wu}\nMandarin:",
    "english": "Translate Wu dialect to English: {wu}\nEnglish:",
}
DEFAULT_TEMPLATE = PROMPT_TEMPLATES["mandarin"]


def _norm(text: str) -> str:
    """Comparison key: NFKC folds full-width ！， into !, so "侬好！" and "侬好!" count as one sentence."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _records(path: Path, text: str):
    """Yield (first line number, cells) per CSV record; a quoted cell may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""))
    end = 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            yield start, cells
    except csv.Error as err:
        raise DataError(f"{path}, line {reader.line_num}: cannot parse this CSV line ({err}). "
                        "Fix: check the quotes and commas on that line.") from None


def _header(path: Path, cells: list[str], columns: Sequence[str]) -> list[str]:
    header = [c.strip() for c in cells]
    want = ",".join(columns)
    doubled = sorted({h for h in header if h and header.count(h) > 1})
    if doubled:
        raise DataError(f"{path}, line 1: column {doubled[0]!r} appears twice in the header. "
                        f"Fix: make line 1 read `{want}`.")
    missing = [c for c in columns if c not in header]
    if not missing:
        return header
    if len(missing) == len(columns) and any(unicodedata.name(ch, "").startswith("CJK") for ch in "".join(header)):
        raise DataError(f"{path}, line 1: this looks like a sentence pair, not the header. "
                        f"Fix: insert the header line `{want}` at the top of the file.")
    hints = []
    for col in missing:
        near = difflib.get_close_matches(col, header, n=1, cutoff=0.6) or [
            h for h in header if h.lower() == col.lower()]
        hints.append(f"{col!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    raise DataError(f"{path}, line 1: missing column {', '.join(hints)}; the header has: "
                    f"{', '.join(header) or '(nothing)'}. Fix: make line 1 read `{want}`.")


def _read(path, columns: Sequence[str]) -> tuple[list[dict], list[int]]:
    """Parse and check one CSV; return its pairs and the line number each pair starts on."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: no such file (looked in {path.resolve().parent}). "
                                "Fix: check the path, or the config key that names it.")
    records = ((n, cells) for n, cells in _records(path, read_utf8(path)) if any(c.strip() for c in cells))
    first = next(records, None)  # blank lines (and Excel's ",,," rows) are skipped, not errors
    if first is None:
        raise DataError(f"{path}: the file is empty. Fix: line 1 is the header `{','.join(columns)}`, "
                        "then one sentence pair per line.")
    header = _header(path, first[1], columns)
    pairs, lines = [], []
    for line, cells in records:
        spill = next((i for i, c in enumerate(cells) if "\n" in c or "\r" in c), None)
        if spill is not None:  # an unclosed quote swallows the line breaks (and the rows) after it
            col = header[spill] if spill < len(header) else f"field {spill + 1}"
            raise DataError(f"{path}, line {line}: the {col!r} cell runs over several lines, usually because "
                            "a double quote (\") on that line is never closed. Fix: close or remove that quote.")
        if len(cells) != len(header):
            why = ("a sentence containing a comma must be wrapped in double quotes" if len(cells) > len(header)
                   else "a comma is missing or the row is cut short")
            raise DataError(f"{path}, line {line}: {len(cells)} fields but the header has {len(header)} "
                            f"({','.join(header)}). Fix: {why}.")
        row = dict(zip(header, cells))
        pairs.append({col: row[col].strip() for col in columns})
        lines.append(line)
    if not pairs:
        raise DataError(f"{path}: only the header line, no sentence pairs. Fix: add one pair per line under "
                        f"`{','.join(header)}`, e.g. `侬好,你好,Hello`.")
    check_pairs(pairs, columns, source=str(path), lines=lines)
    return pairs, lines


def _field(pair, col: str):
    """A pair may be a dict or an object with attributes (a dataclass row, for example)."""
    return pair.get(col) if isinstance(pair, Mapping) else getattr(pair, col, None)


def check_pairs(pairs: Sequence[Mapping], columns: Sequence[str] = DEFAULT_COLUMNS, *, source: str = "pairs",
                lines: Sequence[int] | None = None, key: str | None = None) -> None:
    """Raise DataError at the first missing/empty field or repeated `key` sentence; return None if all is well.

    `key` (default: the first column) is the source sentence; it must be unique, because two rows with
    one input are either a duplicate pair or two answers to the same question. `lines` gives each
    pair's line in `source` (from `load_pairs`); without it the rows are counted from 1.
    Example: check_pairs([{"wu": "侬好", "mandarin": "你好", "english": "Hi"},
                          {"wu": "侬好", "mandarin": "您好", "english": "Hello"}])
      -> DataError: pairs, row 2: same 'wu' sentence as row 1 ('侬好') but a different translation ...
    """
    key = key or columns[0]
    unit = "line" if lines is not None else "row"
    seen: dict[str, int] = {}
    for i, pair in enumerate(pairs):
        n = lines[i] if lines is not None else i + 1
        at = f"{source}, {unit} {n}"
        for col in columns:
            value = _field(pair, col)
            if value is None:
                raise DataError(f"{at}: no {col!r} field. Fix: give every pair the fields {', '.join(columns)}.")
            if not isinstance(value, str):
                raise DataError(f"{at}: the {col!r} field is {type(value).__name__} {value!r}, not text. "
                                "Fix: store sentences as strings (an empty spreadsheet cell often becomes NaN).")
            if not value.strip():
                raise DataError(f"{at}: the {col!r} cell is empty. Fix: write the {col} sentence, "
                                "or delete the row.")
        k = _norm(_field(pair, key))
        if k in seen:
            j = seen[k]
            m = lines[j] if lines is not None else j + 1
            if all(_norm(_field(pairs[j], c)) == _norm(_field(pair, c)) for c in columns):
                raise DataError(f"{at}: duplicate pair — the same as {unit} {m} ({_field(pair, key)!r}). "
                                f"Fix: delete one of {unit}s {m} and {n}.")
            raise DataError(f"{at}: same {key!r} sentence as {unit} {m} ({_field(pair, key)!r}) but a different "
                            f"translation. Fix: keep one of {unit}s {m} and {n} (one input, one reference).")
        seen[k] = i


def load_pairs(path, columns: Sequence[str] = DEFAULT_COLUMNS) -> list[dict[str, str]]:
    """Read a UTF-8 CSV whose first line names `columns`; return one dict per pair, cells stripped.

    Extra columns are allowed and dropped; blank lines are skipped.
    Example: a file with the lines `wu,mandarin,english` and `侬好！,你好！,Hello!`
      -> [{"wu": "侬好！", "mandarin": "你好！", "english": "Hello!"}]
    """
    return _read(path, columns)[0]


def load_splits(data_dir, splits: Sequence[str] = SPLITS, columns: Sequence[str] = DEFAULT_COLUMNS,
                key: str | None = None) -> dict[str, list[dict[str, str]]]:
    """Load `<data_dir>/<split>.csv` for each split and check that no `key` sentence is in two splits.

    Example: load_splits("data/wu_dialect") -> {"train": [...], "dev": [...], "test": [...]}
    """
    data_dir = Path(data_dir)
    return load_disjoint({split: data_dir / f"{split}.csv" for split in splits}, columns, key)


def load_disjoint(paths: Mapping[str, Path], columns: Sequence[str] = DEFAULT_COLUMNS,
                  key: str | None = None) -> dict[str, list[dict[str, str]]]:
    """Load each named CSV and refuse a `key` sentence (default: the first column) found in two of them.

    The one owner of the "a sentence sits in one split only" rule: `load_splits` (a folder) and
    `lorakit train` (whatever files its config names) both call it. Sentences are compared after NFKC and
    whitespace folding, so "侬好！" in train and "侬好!" in dev are the same sentence.
    Example: load_disjoint({"train": "a/train.csv", "dev": "b/dev.csv"}) -> {"train": [...], "dev": [...]}
    """
    key = key or columns[0]
    out, where = {}, {}  # where[sentence] = (path, line) of its first appearance in an earlier split
    for split, path in paths.items():
        pairs, lines = _read(path, columns)
        for pair, line in zip(pairs, lines):
            k = _norm(pair[key])
            if k in where:
                other, other_line = where[k]
                raise DataError(
                    f"{path}, line {line}: the {key} sentence {pair[key]!r} is also in {other}, line "
                    f"{other_line}. Fix: a sentence may sit in one split only — delete it from one file "
                    f"(usually the training file, so the dev and test sets stay fixed).")
        where.update((_norm(p[key]), (path, n)) for p, n in zip(pairs, lines))
        out[split] = pairs
    return out


def make_examples(pairs: Iterable[Mapping], template: str = DEFAULT_TEMPLATE,
                  target: str = "mandarin") -> list[dict[str, str]]:
    r"""Turn pairs into {"prompt": template filled from the pair, "response": the pair's `target`}.

    The response is the bare target sentence; how prompt and response are joined into tokens (a space,
    an EOS) is the training code's business.

    Example:
        >>> make_examples([{"wu": "侬好！", "mandarin": "你好！", "english": "Hello!"}])
        [{'prompt': 'Translate Wu dialect to Mandarin: 侬好！\nMandarin:', 'response': '你好！'}]
    """
    pairs = list(pairs)
    if not pairs:
        return []
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    fields = list(pairs[0])
    if "" in names or any(n.isdigit() for n in names):
        raise DataError(f"template {template!r}: use named fields such as {{wu}}, not {{}} or {{0}}. "
                        "Fix: write the column name inside the braces.")
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise DataError(f"template {template!r}: no column named {unknown[0]!r}; the pairs have "
                        f"{', '.join(fields)}. Fix: use one of those names in braces.")
    if target not in fields:
        raise DataError(f"target {target!r}: no such column; the pairs have {', '.join(fields)}. "
                        "Fix: pick the column the model should write.")
    if target in names:
        raise DataError(f"template {template!r} contains {{{target}}}, the answer the model should learn "
                        "to produce. Fix: put only the input column (e.g. {wu}) in the template.")
    return [{"prompt": template.format(**p), "response": p[target]} for p in pairs]


# Words whose characters are NOT the glossary word they contain: 老板 "boss" is not 老 "very", 搭界 ("be
# related") is not 搭 "with", 搿搭 "here" is not 搭 either. Used by the notebook's coverage table and the data tests.
NOT_GLOSSARY_WORDS = ("老板", "老公", "老酒", "老师", "老底子", "老清老早", "吃辣", "搭界", "搿搭")


def glossary_coverage(pairs: Iterable[Mapping], glossary: Iterable, column: str = "wu",
                      ignore: Iterable[str] = ()) -> dict[str, int]:
    """For each glossary word, the number of pairs whose `column` uses it.

    Sentences are read longest-match first, so 伊拉 ("they") is not also counted as 伊 ("he"); words in
    `ignore` hide their characters (老板 "boss" is not 老 "very"). `glossary` is words, or rows (dicts)
    with a `column` field, e.g. load_pairs("data/wu_dialect/glossary.csv").
    Example: wu = ["伊拉老早来了", "伊老板老好"], glossary [伊, 伊拉, 老, 老早], ignore [老板]
      -> sentence 1 reads 伊拉 | 老早 ; sentence 2 reads 伊 | (老板) | 老
      -> {"伊": 1, "伊拉": 1, "老": 1, "老早": 1}
    """
    words = [g[column] if isinstance(g, Mapping) else str(g) for g in glossary]
    skip = set(ignore) - set(words)
    vocab = sorted(set(words) | skip, key=len, reverse=True)  # longest first = longest match wins
    counts = dict.fromkeys(words, 0)
    for pair in pairs:
        text, i, found = pair[column], 0, set()
        while i < len(text):
            hit = next((w for w in vocab if text.startswith(w, i)), None)
            if hit is None:
                i += 1
                continue
            if hit not in skip:
                found.add(hit)
            i += len(hit)
        for w in found:
            counts[w] += 1
    return counts
