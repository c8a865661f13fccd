"""Generate with a (LoRA-adapted) causal LM and score it on Wu-dialect pairs.

Covers: batched greedy generation that stops at the end of the line (`generate_batch`, `first_line`,
`count_tokens`); chrF, exact match and repetition rate of generations against references (`evaluate_pairs`); which glossary words
came out translated (`glossary_hits`) and which count as learned (`learned_words`); chrF against adapter
strength (`strength_curve`, scaling via `adapters.adapter_scale`); plain Mandarin through the adapter
(`mandarin_identity`, the forgetting check); `evaluate_text_adapter`, the function behind
`lorakit evaluate --adapter DIR --data FILE.csv`.
Does not: train (see `text/train.py`), save/load/scale adapters (`text/adapters.py`) or merge them.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from lorakit_nb.adapter_files import adapter_kind, read_adapter
from lorakit_nb.env import torch_threads
from lorakit_nb.errors import AdapterError, DataError, MissingFileError
from lorakit_nb.io import ensure_writable, write_json_atomic
from lorakit_nb.metrics import chrf, exact_match, repetition_rate
from lorakit_nb.text.adapters import adapter_scale, adapter_train_config
from lorakit_nb.text.data import DEFAULT_TEMPLATE, PROMPT_TEMPLATES, load_pairs, make_examples


class StopAtNewline(StoppingCriteria):
    """Per row: done once a generated token contains a newline (EOS is handled by generate itself)."""

    def __init__(self, tokenizer, prompt_len: int):
        self.tok, self.start, self.memo = tokenizer, prompt_len, {}

    def _has_newline(self, token_id: int) -> bool:
        if token_id not in self.memo:
            self.memo[token_id] = "\n" in self.tok.decode([token_id])
        return self.memo[token_id]

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        # input_ids: (batch, prompt_len + generated so far); look at the newest token of each row
        last = input_ids[:, -1].tolist()
        return torch.tensor([self._has_newline(t) for t in last], dtype=torch.bool, device=input_ids.device)


@contextmanager
def contiguous_head_input(model):
    """Make the vocabulary head's input contiguous while generating.

    At the first decoding step transformers hands the head a strided slice hidden[:, -1:] of shape
    (batch, 1, d). With frozen weights (requires_grad False, as after peft wraps the model) torch
    2.13's CPU matmul then takes a batched path that COPIES the (d, 262144) weight once per row:
    measured 9.7 s instead of 0.19 s for 8 prompts. A contiguous input takes the plain GEMM path.
    """
    head = model.get_output_embeddings()
    handle = head.register_forward_pre_hook(lambda mod, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def generate_batch(model, tokenizer, prompts, max_new_tokens: int = 40, batch_size: int = 16,
                   progress: bool = True) -> list[str]:
    """Greedy continuations of `prompts`, cut at the first newline, in the input order.

    Prompts are sorted by length and left-padded in batches (a decoder-only model must see the prompt
    end right before the first new token). Example: ["Translate Wu dialect to Mandarin: 侬好\\nMandarin:"]
    -> ["你好"] for a trained adapter; a base model often answers with the Wu sentence itself.
    """

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    outputs = [""] * len(prompts)
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    tokenizer.padding_side = "left"  # restored below: the caller's tokenizer is not ours to change
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    try:
        _generate_batches(model, tokenizer, prompts, batches, outputs, max_new_tokens, progress)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return outputs


def _generate_batches(model, tokenizer, prompts, batches, outputs, max_new_tokens, progress):
    from tqdm.auto import tqdm

    for idx in tqdm(batches, desc="generate", disable=not progress, leave=False):
        enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True).to(model.device)
        width = enc["input_ids"].shape[1]
        with contiguous_head_input(model):
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                 pad_token_id=tokenizer.pad_token_id,
                                 stopping_criteria=StoppingCriteriaList([StopAtNewline(tokenizer, width)]))
        new = out[:, width:] if out.shape[1] > width else out[:, :0]  # (batch, new tokens)
        for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
            outputs[i] = first_line(text)


def count_tokens(tokenizer, texts) -> int:
    """Tokens in `texts` by `tokenizer`, no special tokens: one count for every engine's answers (tokens/s)."""
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def first_line(text: str) -> str:
    """What counts as the answer: the generated text up to its first newline, stripped (every engine)."""
    return text.strip().split("\n")[0].strip()


def evaluate_pairs(model, tokenizer, pairs, template: str = DEFAULT_TEMPLATE,
                   target: str = "mandarin", max_new_tokens: int = 40, batch_size: int = 16,
                   progress: bool = True) -> dict:
    """Generate for every pair and score against its `target` column.

    Returns {"chrf" (0-100), "exact_match" (0-1), "repetition_rate" (0-1), "n", "outputs",
    "examples": [{"wu", "reference", "output"}, ...]}. English output uses a longer repeat n-gram (10
    characters) because "the " recurs in any normal English sentence.
    """
    examples = make_examples(pairs, template, target)
    hyps = generate_batch(model, tokenizer, [e["prompt"] for e in examples], max_new_tokens, batch_size, progress)
    refs = [e["response"] for e in examples]
    rep_n = 10 if target == "english" else 4
    return {"chrf": chrf(refs, hyps), "exact_match": exact_match(refs, hyps),
            "repetition_rate": repetition_rate(hyps, n=rep_n), "n": len(refs), "outputs": hyps,
            "examples": [{"wu": p["wu"], "reference": r, "output": h} for p, r, h in zip(pairs, refs, hyps)]}


def glossary_hits(examples, glossary, min_pairs: int = 3) -> list[dict]:
    """Per glossary word: of the pairs whose Wu side uses it AND whose reference uses one of its
    Mandarin forms, how many outputs contain a Mandarin form, and how many still contain the Wu word.

    A rough, substring-level check of "did the model learn 侬 = 你". Words met in < `min_pairs` pairs
    are left out. Example: examples [{"wu": "侬好", "reference": "你好", "output": "你好"}], glossary
    [{"wu": "侬", "mandarin": "你"}], min_pairs=1 -> [{"wu": "侬", "mandarin": "你", "n": 1, "hits": 1,
    "kept_wu": 0}]
    """
    rows = []
    for g in glossary:
        forms = [f.strip() for f in g["mandarin"].split("/") if f.strip()]
        used = [e for e in examples if g["wu"] in e["wu"] and any(f in e["reference"] for f in forms)]
        if len(used) >= min_pairs:
            rows.append({"wu": g["wu"], "mandarin": " / ".join(forms), "n": len(used),
                         "hits": sum(any(f in e["output"] for f in forms) for e in used),
                         "kept_wu": sum(g["wu"] in e["output"] for e in used)})
    return rows


def strength_curve(model, tokenizer, pairs, scales=(0.0, 0.25, 0.5, 0.75, 1.0, 1.2), known=None,
                   **eval_kwargs) -> list[dict]:
    """chrF / exact match / repetition at each adapter scale. `known` = {scale: evaluate_pairs result}
    reuses evaluations already made (scale 0 is the base model, 1 the trained adapter) instead of
    generating again. Example: strength_curve(m, tok, test, (0, 1), known={0: before, 1: after}) costs nothing.
    """
    known = dict(known or {})
    rows = []
    for s in scales:
        if s not in known:
            with adapter_scale(model, s):
                known[s] = evaluate_pairs(model, tokenizer, pairs, **eval_kwargs)
        r = known[s]
        rows.append({"scale": float(s), "chrf": r["chrf"], "exact_match": r["exact_match"],
                     "repetition_rate": r["repetition_rate"], "outputs": r["outputs"]})
    return rows


def learned_words(rows, threshold: float = 0.75, column: str = "hits") -> dict:
    """Which glossary words count as learned: the Mandarin form in at least `threshold` of the outputs.

    `rows` are `glossary_hits` rows (or a table with `n` and a hits `column`). A word met in 4 test
    sentences needs 3 hits at 0.75. Example: learned_words([{"wu": "阿拉", "n": 4, "hits": 2},
    {"wu": "侬", "n": 8, "hits": 7}]) -> {"阿拉": False, "侬": True}
    """
    return {r["wu"]: r[column] >= threshold * r["n"] for r in rows}


def mandarin_identity(model, tokenizer, pairs, scales, template: str, max_new_tokens: int = 40,
                      batch_size: int = 16) -> list[dict]:
    """Feed plain Mandarin (each pair's `mandarin` as the input) through the adapter at each strength.

    Nothing is left to translate, so the right answer is the input itself. Returns one row per scale:
    {"scale", "unchanged" (share returned exactly, 0-1), "chrf_vs_input", "examples"}; scale 0 is the base.
    Example: mandarin_identity(model, tok, test, [0.0, 1.0], cfg.template)[0]["unchanged"] -> 0.5 (say)
    """
    mandarin_in = [{"wu": p["mandarin"], "mandarin": p["mandarin"], "english": p.get("english", "")} for p in pairs]
    rows = []
    for s in scales:
        with adapter_scale(model, s):
            r = evaluate_pairs(model, tokenizer, mandarin_in, template, "mandarin", max_new_tokens, batch_size,
                               progress=False)
        rows.append({"scale": float(s), "unchanged": r["exact_match"], "chrf_vs_input": r["chrf"],
                     "examples": r["examples"]})
    return rows


def evaluate_text_base(base_model: str, data_csv, out_json=None, *, template=None, target: str = "mandarin",
                  dtype: str = "float32", batch_size: int = 16, max_new_tokens: int = 40) -> dict:
    """The baseline for a CSV: a base model with no adapter, scored exactly as ``evaluate_text_adapter`` scores.

    `out_json` defaults to ./eval_<model>_<csv name>.json. Example: evaluate_text_base("gemma-3-270m",
    "data/wu_dialect/test.csv") -> {"chrf": ..., "adapter": None, "base_model": "gemma-3-270m", ...}
    """
    from lorakit_nb.models.resolve import load_causal_lm

    if target not in PROMPT_TEMPLATES:
        raise DataError(f"target must be one of {sorted(PROMPT_TEMPLATES)}, got {target!r}")
    pairs = load_pairs(data_csv)  # validate the CSV before the model load
    out_json = Path(out_json or f"eval_{Path(str(base_model)).name}_{Path(data_csv).stem}.json")
    ensure_writable(out_json.parent)
    model, tokenizer = load_causal_lm(base_model, dtype=getattr(torch, dtype))
    result = evaluate_pairs(model, tokenizer, pairs, template or PROMPT_TEMPLATES[target], target, max_new_tokens,
                            batch_size)
    report = {"adapter": None, "data": str(data_csv), "base_model": base_model, "target": target,
              **{k: result[k] for k in ("chrf", "exact_match", "repetition_rate", "n")},
              "examples": result["examples"]}
    write_json_atomic(out_json, report)
    return report


def evaluate_text_adapter(adapter_dir, data_csv, out_json=None, base_model=None, *, template=None, target=None,
                     batch_size: int = 16, max_new_tokens: int = 40) -> dict:
    """Score a saved adapter on any `wu,mandarin,english` CSV and write the metrics JSON atomically.

    Base model, prompt template and target column default to those the adapter was trained with;
    `out_json` defaults to <adapter_dir>/eval_<csv name>.json.
    Example: evaluate_text_adapter("runs/02/mandarin/adapter", "data/wu_dialect/test.csv", "runs/02/eval.json")
    -> {"chrf": ..., "exact_match": ..., "repetition_rate": ..., "n": 30, ...}
    """
    from peft import PeftModel

    from lorakit_nb.models.resolve import load_causal_lm

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise MissingFileError(f"{adapter_dir}: no adapter_config.json here. Fix: pass the folder that "
                                "holds adapter_config.json and adapter_model.safetensors.")
    peft_config, _ = read_adapter(adapter_dir)  # a broken config or cut-short weights: one line, now
    if adapter_kind(adapter_dir, peft_config) == "speech":
        raise AdapterError(f"{adapter_dir} is a Whisper (speech) adapter and {data_csv} is a text CSV. Fix: score "
                           "it on a speech manifest: lorakit evaluate --adapter "
                           f"{adapter_dir} --data data/zh_speech/test.jsonl")
    saved = adapter_train_config(adapter_dir)
    target = target or saved.get("target", "mandarin")
    template = template or saved.get("prompt_template") or PROMPT_TEMPLATES[target]
    base_name = base_model or saved.get("base_model") or peft_config.get("base_model_name_or_path")
    pairs = load_pairs(data_csv)  # validate the CSV before the model load
    out_json = Path(out_json or adapter_dir / f"eval_{Path(data_csv).stem}.json")
    ensure_writable(out_json.parent)  # a read-only or full disk: say so before the model loads
    # the dtype it was trained in, so scores match the notebook's (bf16 and fp32 greedy outputs can differ)
    base, tokenizer = load_causal_lm(base_name, dtype=getattr(torch, saved.get("dtype", "float32")))
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    with torch_threads(saved.get("num_threads")):  # the count it was trained with (1 beats 2 on a busy 2-core CPU)
        result = evaluate_pairs(model, tokenizer, pairs, template, target, max_new_tokens, batch_size)
    report = {"adapter": str(adapter_dir), "data": str(data_csv), "base_model": base_name, "target": target,
              **{k: result[k] for k in ("chrf", "exact_match", "repetition_rate", "n")},
              "examples": result["examples"]}
    write_json_atomic(out_json, report)
    return report
