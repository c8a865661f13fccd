"""Tests for export.whispercpp: the ggml .bin writer (read back by a small reader written here from
whisper.cpp's loader) and, on the real whisper-base pack, transcripts through pywhispercpp vs CTranslate2.

tiny-whisper: d_model 64, 2 encoder + 2 decoder layers, random weights (seconds to build).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from lorakit_nb.errors import ExportError
from tests.models import test_ct2_reader
from tests.models.test_ct2_reader import needs_pack

converted = test_ct2_reader.converted  # the real whisper-base pack as CT2 + transformers folders (a fixture)
# the natural voice: zero-shot whisper-base transcribes it well (CER ~0.12), so both engines are on firm ground
OTHER_VOICE = Path(__file__).resolve().parents[2] / "data" / "zh_speech_other_voice" / "test.jsonl"


def read_ggml(path) -> dict:
    """whisper.cpp's ``whisper_model_load`` order: magic, 11 hparams, filters, vocab, then tensor records."""
    data = Path(path).read_bytes()
    pos = 0

    def ints(n):
        nonlocal pos
        out = struct.unpack_from(f"<{n}i", data, pos)
        pos += 4 * n
        return out

    magic, = ints(1)
    keys = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx", "n_text_state",
            "n_text_head", "n_text_layer", "n_mels", "ftype")
    hparams = dict(zip(keys, ints(11)))
    n_mel, n_fft = ints(2)
    filters = np.frombuffer(data, "<f4", n_mel * n_fft, pos).reshape(n_mel, n_fft)
    pos += 4 * n_mel * n_fft
    tokens = []
    for _ in range(ints(1)[0]):
        length, = ints(1)
        tokens.append(data[pos:pos + length])
        pos += length
    tensors = {}
    sizes = {0: (1, 4), 1: (1, 2), 8: (32, 34), 6: (32, 22)}  # ggml type -> (block elements, block bytes)
    while pos < len(data):
        n_dims, name_len, ttype = ints(3)
        ne = ints(n_dims)
        name = data[pos:pos + name_len].decode()
        pos += name_len
        block, nbytes = sizes[ttype]
        size = int(np.prod(ne)) // block * nbytes
        tensors[name] = {"ne": ne, "type": ttype, "raw": data[pos:pos + size]}
        pos += size
    return {"magic": magic, "hparams": hparams, "filters": filters, "tokens": tokens, "tensors": tensors}


def expected_names(n_audio_layer: int, n_text_layer: int) -> set:
    """The tensors whisper.cpp's loader creates (src/whisper-arch.h), built from its layout."""
    names = {f"encoder.{n}" for n in ("positional_embedding", "conv1.weight", "conv1.bias", "conv2.weight",
                                       "conv2.bias", "ln_post.weight", "ln_post.bias")}
    names |= {"decoder.positional_embedding", "decoder.token_embedding.weight", "decoder.ln.weight", "decoder.ln.bias"}
    block = ["mlp_ln.weight", "mlp_ln.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias",
             "attn_ln.weight", "attn_ln.bias", "attn.query.weight", "attn.query.bias", "attn.key.weight",
             "attn.value.weight", "attn.value.bias", "attn.out.weight", "attn.out.bias"]
    cross = [n.replace("attn", "cross_attn", 1) for n in block[6:]]
    names |= {f"encoder.blocks.{i}.{n}" for i in range(n_audio_layer) for n in block}
    names |= {f"decoder.blocks.{i}.{n}" for i in range(n_text_layer) for n in block + cross}
    return names


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    import torch
    from transformers import WhisperForConditionalGeneration

    from lorakit_nb.models.resolve import load_whisper

    model, processor = load_whisper("tiny-whisper")
    config = model.config
    config.encoder_ffn_dim = config.decoder_ffn_dim = 4 * config.d_model  # whisper.cpp's only width
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    out = tmp_path_factory.mktemp("tiny_whisper")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_files(tiny_dir, tmp_path_factory):
    from lorakit_nb.export.whispercpp import export_whispercpp

    out = tmp_path_factory.mktemp("ggml")
    return {t: read_ggml(export_whispercpp(tiny_dir, out / f"{t}.bin", t)) for t in ("f16", "q8_0", "q5_0")}


def test_header_round_trips(tiny_dir, tiny_files):
    """The 11 hparams are config.json's fields in whisper.cpp's order; ftype 1 for f16, 7 + 2*1000 for q8_0 and
    8 + 2000 for q5_0 (ggml's quantization version 2); filters are the feature extractor's (80 x 201);
    the vocabulary is tokenizer.json's BPE table as bytes (50258 entries, <|endoftext|> last)."""
    from transformers import WhisperFeatureExtractor

    c = json.loads((tiny_dir / "config.json").read_text())
    for t, ftype in (("f16", 1), ("q8_0", 2007), ("q5_0", 2008)):
        f = tiny_files[t]
        assert f["magic"] == 0x67676D6C
        assert f["hparams"] == {"n_vocab": c["vocab_size"], "n_audio_ctx": c["max_source_positions"],
                                "n_audio_state": c["d_model"], "n_audio_head": c["encoder_attention_heads"],
                                "n_audio_layer": c["encoder_layers"], "n_text_ctx": c["max_target_positions"],
                                "n_text_state": c["d_model"], "n_text_head": c["decoder_attention_heads"],
                                "n_text_layer": c["decoder_layers"], "n_mels": c["num_mel_bins"], "ftype": ftype}
    f = tiny_files["f16"]
    np.testing.assert_array_equal(f["filters"], WhisperFeatureExtractor(feature_size=80).mel_filters.T.astype(np.float32))
    vocab = json.loads((tiny_dir / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(f["tokens"]) == len(vocab) and f["tokens"][-1] == b"<|endoftext|>"
    assert f["tokens"][vocab["Ġthe"]] == b" the"  # Ġ stands for the space byte
    assert f["tokens"][vocab["ä½ł"]] == "你".encode()  # a CJK character's three UTF-8 bytes


def test_tensor_names_shapes_and_types(tiny_files):
    """Every tensor whisper.cpp creates, once (11 + 15 per encoder layer + 24 per decoder layer, no proj_out);
    sizes fastest-varying first; 2-D matrices in the file type, 1-D / positional / conv biases float32,
    conv weights float16 even in quantized files (the loader's types)."""
    for t, wtype in (("f16", 1), ("q8_0", 8), ("q5_0", 6)):
        tensors = tiny_files[t]["tensors"]
        assert set(tensors) == expected_names(2, 2) and len(tensors) == 11 + 15 * 2 + 24 * 2
        assert tensors["encoder.conv1.weight"]["ne"] == (3, 80, 64) and tensors["encoder.conv1.weight"]["type"] == 1
        assert tensors["encoder.conv1.bias"]["ne"] == (1, 64) and tensors["encoder.conv1.bias"]["type"] == 0
        assert tensors["encoder.positional_embedding"]["type"] == 0
        assert tensors["decoder.token_embedding.weight"]["ne"] == (64, 51865)
        assert tensors["decoder.blocks.1.mlp.0.weight"]["ne"] == (64, 256)
        for name, rec in tensors.items():
            if len(rec["ne"]) == 1:
                assert rec["type"] == 0, name
            elif len(rec["ne"]) == 2 and "positional" not in name and "conv" not in name:
                assert rec["type"] == wtype, name


def test_q8_0_blocks_are_ggml_blocks(tiny_dir, tiny_files):
    """ggml's block_q8_0: a float16 scale d = max|x| / 127 then 32 int8 q = round(x / d); x ~ d * q. Parsed
    by hand here, the blocks give the original weights back within ~d / 2, and gguf's dequantize agrees."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    w = load_file(tiny_dir / "model.safetensors")["model.decoder.layers.0.fc1.weight"]  # (256, 64)
    raw = tiny_files["q8_0"]["tensors"]["decoder.blocks.0.mlp.0.weight"]["raw"]
    blocks = np.frombuffer(raw, dtype=[("d", "<f2"), ("q", "i1", 32)])  # 34 bytes a block
    assert len(blocks) == w.size // 32
    d = blocks["d"].astype(np.float32)[:, None]
    by_hand = (d * blocks["q"]).reshape(w.shape)
    # within d / 2, plus 127 x the float16 rounding of d (relative 2^-11): under 0.6 d
    assert np.all(np.abs(by_hand - w) <= 0.6 * d.repeat(32, 1).reshape(w.shape))
    np.testing.assert_allclose(d[:, 0], np.abs(w.reshape(-1, 32)).max(1) / 127, rtol=1e-3)
    ours = dequantize(np.frombuffer(raw, np.uint8).reshape(256, -1), GGMLQuantizationType.Q8_0)
    np.testing.assert_array_equal(ours, by_hand)
    q5 = tiny_files["q5_0"]["tensors"]["decoder.blocks.0.mlp.0.weight"]["raw"]  # 22-byte blocks, 5-bit
    back = dequantize(np.frombuffer(q5, np.uint8).reshape(256, -1), GGMLQuantizationType.Q5_0)
    assert np.abs(back - w).max() < np.abs(w).max() / 15 * 0.51 + 1e-6  # step max|x| / 16 (x ~ -16..15)


def test_ggml_name_and_refusals(tiny_dir, tmp_path):
    from lorakit_nb.export.whispercpp import export_whispercpp, ggml_name

    assert ggml_name("model.encoder.layers.3.self_attn.k_proj.weight") == "encoder.blocks.3.attn.key.weight"
    assert ggml_name("model.decoder.layers.0.encoder_attn.k_proj.weight") == "decoder.blocks.0.cross_attn.key.weight"
    assert ggml_name("model.encoder.layer_norm.weight") == "encoder.ln_post.weight"
    assert ggml_name("proj_out.weight") is None
    with pytest.raises(ExportError, match="q4_k"):
        export_whispercpp(tiny_dir, tmp_path / "x.bin", "q4_k")
    config = json.loads((tiny_dir / "config.json").read_text())
    narrow = tmp_path / "narrow"
    narrow.mkdir()
    for f in tiny_dir.iterdir():
        (narrow / f.name).write_bytes(f.read_bytes())
    (narrow / "config.json").write_text(json.dumps({**config, "encoder_ffn_dim": 128}))
    with pytest.raises(ExportError, match="not 4 x d_model"):
        export_whispercpp(narrow, tmp_path / "x.bin")
    with pytest.raises(ExportError, match="not a transformers Whisper folder"):
        export_whispercpp(tmp_path, tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()


@needs_pack
@pytest.mark.skipif(not OTHER_VOICE.is_file(), reason=f"{OTHER_VOICE} not present")
def test_real_whisper_base_runs_in_whispercpp_like_ctranslate2(converted, tmp_path):
    """whisper-base (the offline pack) written as f16 and q8_0 and run by pywhispercpp's bundled whisper.cpp
    on 3 committed other-voice clips at a 30 s window: its transcripts match CTranslate2's (float32) greedy ones on the same
    clips within a CER of 0.05 (measured: identical text, CER 0.0; the margin allows one character in 41 for
    whisper.cpp's own mel code and kernels; a wrong tensor layout or vocabulary gives garbage, CER near 1)."""
    pytest.importorskip("pywhispercpp")
    from transformers import WhisperProcessor

    from lorakit_nb.export.ct2 import ct2_transcribe, load_ct2
    from lorakit_nb.export.whispercpp import export_whispercpp, load_whispercpp, whispercpp_transcribe
    from lorakit_nb.metrics import cer
    from lorakit_nb.speech.evaluate import load_clips

    ct2_dir, hf = converted
    audios, _ = load_clips(OTHER_VOICE)
    audios = audios[:3]
    reference = ct2_transcribe(load_ct2(ct2_dir, "float32"), WhisperProcessor.from_pretrained(hf), audios)
    for file_type in ("f16", "q8_0"):
        model = load_whispercpp(export_whispercpp(hf, tmp_path / f"{file_type}.bin", file_type))
        hyps = whispercpp_transcribe(model, audios, audio_seconds=30)
        assert cer(reference, hyps) <= 0.05, (file_type, reference, hyps)
