"""The non-weight half of a transformers Whisper directory: tokenizer, generation config, processor.

Covers:
- ``whisper_tokenizer``: a ``WhisperTokenizer`` from a ``tokenizer.json`` (e.g. a faster-whisper
  pack's), adding the 1501 timestamp tokens ``<|0.00|>`` .. ``<|30.00|>`` when the file lacks them
  and setting ``pad_token="<|endoftext|>"`` so label batches can be padded.
- ``whisper_generation_config``: the ids ``generate(language="zh", task="transcribe")`` needs
  (``lang_to_id``, ``task_to_id``, ``no_timestamps_token_id``), suppress lists, alignment heads.
- ``save_whisper_extras``: write tokenizer + feature extractor (processor) + generation config.

Does NOT cover: model weights (see ``models/ct2_reader.py``) or audio loading.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

N_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|> in steps of 0.02 s
TASKS = ("translate", "transcribe")  # Whisper's special-token order: <|translate|> then <|transcribe|>
# After the language tokens Whisper has these specials, in this id order (openai/whisper tokenizer.py).
AFTER_LANGUAGES = ("<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                   "<|nocaptions|>", "<|notimestamps|>")


def timestamp_token(i: int) -> str:
    """Example: timestamp_token(0) -> "<|0.00|>", timestamp_token(1500) -> "<|30.00|>"."""
    return f"<|{i * 0.02:.2f}|>"


def added_token(token_id: int, content: str, special: bool) -> dict:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": special}


def whisper_tokenizer(tokenizer_json: dict | str | Path):
    """A ``WhisperTokenizer`` with timestamp tokens and ``pad_token="<|endoftext|>"``.

    The faster-whisper pack's tokenizer.json stops at ``<|notimestamps|>`` (id 50363); Whisper's
    vocabulary continues with 1501 timestamp tokens (ids 50364..51864) that transformers'
    timestamp code looks up by text, so they are appended as non-special added tokens.
    Example: whisper_tokenizer(pack / "tokenizer.json").convert_tokens_to_ids("<|30.00|>") -> 51864.
    """
    from transformers import WhisperTokenizer

    spec = tokenizer_json if isinstance(tokenizer_json, dict) else json.loads(Path(tokenizer_json).read_text("utf-8"))
    spec = json.loads(json.dumps(spec))  # private copy: we edit added_tokens
    added = spec["added_tokens"]
    contents = {a["content"] for a in added}
    if "<|notimestamps|>" not in contents:
        raise ValueError("tokenizer.json has no <|notimestamps|> token: not a Whisper tokenizer")
    if timestamp_token(0) not in contents:
        next_id = max(a["id"] for a in added) + 1
        added += [added_token(next_id + i, timestamp_token(i), False) for i in range(N_TIMESTAMPS)]
    # Every special token from <|startoftranscript|> on; <|endoftext|> is bos/eos/unk/pad already.
    # transformers takes the id after the last special as the first timestamp, so order matters.
    specials = [a["content"] for a in sorted(added, key=lambda a: a["id"]) if a["special"]]
    config = {"tokenizer_class": "WhisperTokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "model_max_length": 448,
              "extra_special_tokens": [s for s in specials if s != "<|endoftext|>"]}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), "utf-8")
        (Path(tmp) / "tokenizer_config.json").write_text(json.dumps(config), "utf-8")
        tok = WhisperTokenizer.from_pretrained(tmp)
    assert tok.convert_tokens_to_ids("<|notimestamps|>") + 1 == tok.convert_tokens_to_ids(timestamp_token(0))
    return tok


def whisper_generation_config(tokenizer, *, suppress_tokens=(), begin_suppress_tokens=None,
                              alignment_heads=None, max_length: int = 448, language=None, task=None):
    """The ``GenerationConfig`` that lets ``generate(language="zh", task="transcribe")`` work.

    Example: for whisper-base ``lang_to_id["<|zh|>"] == 50260``, ``task_to_id == {"translate": 50358,
    "transcribe": 50359}``, ``no_timestamps_token_id == 50363``, ``decoder_start_token_id == 50258``.
    """
    from transformers import GenerationConfig

    ids = tokenizer.convert_tokens_to_ids
    sot, eot = ids("<|startoftranscript|>"), ids("<|endoftext|>")
    first_after_langs = ids("<|translate|>")
    # Language tokens are exactly the ids between <|startoftranscript|> and <|translate|>.
    lang_to_id = {tokenizer.convert_ids_to_tokens(i): i for i in range(sot + 1, first_after_langs)}
    if begin_suppress_tokens is None:
        begin_suppress_tokens = [eot]
    return GenerationConfig(
        decoder_start_token_id=sot, bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=max_length, suppress_tokens=list(suppress_tokens),
        begin_suppress_tokens=list(begin_suppress_tokens),
        alignment_heads=[list(h) for h in alignment_heads] if alignment_heads else None,
        lang_to_id=lang_to_id, task_to_id={t: ids(f"<|{t}|>") for t in TASKS},
        no_timestamps_token_id=ids("<|notimestamps|>"), prev_sot_token_id=ids("<|startofprev|>"),
        is_multilingual=len(lang_to_id) > 1, return_timestamps=False, max_initial_timestamp_index=50,
        language=language, task=task,
    )


def save_whisper_extras(out_dir: str | Path, tokenizer, generation_config, num_mel_bins: int) -> None:
    """Write tokenizer, feature extractor (as a ``WhisperProcessor``) and generation config."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=num_mel_bins), tokenizer)
    processor.save_pretrained(out_dir)
    generation_config.save_pretrained(out_dir)
