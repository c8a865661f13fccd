"""Tiny random models built from a config in seconds, for tests and quick plumbing runs.

Covers: ``build_tiny_whisper`` (Whisper layout, 80 mel bins, 30 s window, d_model 64, 2+2 layers)
and ``build_tiny_gemma`` (Gemma 3 text layout, hidden 64, 2 layers), saved as normal transformers
folders with fixed seeds, so two builds are identical. tiny-whisper uses the real whisper-base
tokenizer when its pack is installed (cheap: one JSON file), else a byte-level stand-in with the
same special-token layout. tiny-gemma always uses a byte-level tokenizer: the real one takes ~23 s
to extract from the GGUF and its 262k vocabulary would dominate a tiny model's compute.

Does NOT: produce useful outputs (weights are random) or download anything.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from lorakit_nb.io import atomic_dir
from lorakit_nb.models.packs import MANIFEST, WHISPER_BASE, PackMissingError, pack_files
from lorakit_nb.models.whisper_hf import (
    AFTER_LANGUAGES,
    added_token,
    save_whisper_extras,
    whisper_generation_config,
    whisper_tokenizer,
)


def byte_level_tokenizer_json(specials: list[str], bos: str | None = None) -> dict:
    """A byte-level BPE ``tokenizer.json`` with no merges: every UTF-8 byte is one token.

    Ids: 0..255 the bytes (GPT-2's byte-to-unicode alphabet), then ``specials`` in order.
    ``bos`` (if given) is prepended to every encoded text, as Gemma's tokenizer does.
    Example: with specials ["<pad>"], "好" (3 UTF-8 bytes) encodes to 3 ids and "<pad>" is id 256.
    """
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    shifted = iter(range(256, 512))  # non-printable bytes map to unused code points, in order
    vocab = {(chr(b) if b in printable else chr(next(shifted))): b for b in range(256)}
    level = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    post = None
    if bos is not None:
        bos_id = 256 + specials.index(bos)
        post = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                                                         {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [bos_id], "tokens": [bos]}}}
    return {"version": "1.0", "truncation": None, "padding": None, "normalizer": None,
            "added_tokens": [added_token(256 + i, s, True) for i, s in enumerate(specials)],
            "pre_tokenizer": {"type": "ByteLevel", **level}, "post_processor": post,
            "decoder": {"type": "ByteLevel", **level},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": []}}


def _write_manifest(out: Path, started: float, **info) -> dict:
    manifest = {"built_seconds": round(time.perf_counter() - started, 1), "source": "tiny-random", **info}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    return manifest


def build_tiny_whisper(target: str | Path, seed: int = 0) -> dict:
    """Random Whisper (~3.5 M params with the real 51,865-token vocabulary) at ``target``.

    Example: build_tiny_whisper(tmp / "tiny-whisper"); then
    WhisperForConditionalGeneration.from_pretrained(tmp / "tiny-whisper") takes 80x3000 features.
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    started = time.perf_counter()
    try:
        _, extras = pack_files(WHISPER_BASE)
        ct2_config = json.loads(extras[0].read_text("utf-8"))
        tokenizer, tokenizer_source = whisper_tokenizer(extras[1]), "whisper-base pack"
    except PackMissingError:
        specials = ["<|endoftext|>", "<|startoftranscript|>", *[f"<|{c}|>" for c in list(LANGUAGES)[:99]],
                    *AFTER_LANGUAGES]
        ct2_config, tokenizer_source = {}, "byte-level stand-in"
        tokenizer = whisper_tokenizer(byte_level_tokenizer_json(specials))
    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    config = WhisperConfig(vocab_size=len(tokenizer), num_mel_bins=80, d_model=64, encoder_layers=2,
                           decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                           encoder_ffn_dim=128, decoder_ffn_dim=128, max_source_positions=1500,
                           max_target_positions=448, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                           decoder_start_token_id=ids("<|startoftranscript|>"), begin_suppress_tokens=[eot],
                           suppress_tokens=[])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    gen = whisper_generation_config(tokenizer, suppress_tokens=ct2_config.get("suppress_ids", []),
                                    begin_suppress_tokens=ct2_config.get("suppress_ids_begin"))
    with atomic_dir(target) as out:
        model.save_pretrained(out)
        save_whisper_extras(out, tokenizer, gen, num_mel_bins=80)
        return _write_manifest(out, started, name="tiny-whisper", tokenizer=tokenizer_source, seed=seed)


def build_tiny_gemma(target: str | Path, seed: int = 0) -> dict:
    """Random Gemma-3 causal LM (hidden 64, 2 layers, byte-level vocabulary of 260) at ``target``.

    Specials mirror Gemma's ids: <pad>=256, <eos>=257, <bos>=258 (prepended), <unk>=259.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3TextConfig

    started = time.perf_counter()
    spec = byte_level_tokenizer_json(["<pad>", "<eos>", "<bos>", "<unk>"], bos="<bos>")
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "tokenizer.json").write_text(json.dumps(spec), "utf-8")
        Path(tmp, "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "TokenizersBackend", "pad_token": "<pad>", "eos_token": "<eos>",
             "bos_token": "<bos>", "unk_token": "<unk>", "model_max_length": 512,
             "padding_side": "left"}), "utf-8")
        tokenizer = AutoTokenizer.from_pretrained(tmp)
    ids = tokenizer.convert_tokens_to_ids
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                              num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                              max_position_embeddings=512, sliding_window=64, pad_token_id=ids("<pad>"),
                              eos_token_id=ids("<eos>"), bos_token_id=ids("<bos>"))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with atomic_dir(target) as out:
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        return _write_manifest(out, started, name="tiny-gemma", tokenizer="byte-level", seed=seed)
