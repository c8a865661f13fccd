"""CTranslate2 reader and CT2 -> transformers Whisper converter.

Fast tests use hand-built files and tiny random models; the real-pack tests (whisper-base from the
``[offline-models]`` wheels) skip with a reason when the pack or the speech data is absent.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from lorakit_nb.models.ct2_reader import (
    ct2_whisper_to_hf,
    read_ct2_model,
    whisper_state_dict,
)
from lorakit_nb.models.packs import WHISPER_BASE, assemble, pack_files, pack_installed

ROOT = Path(__file__).resolve().parents[2]
SPEECH_TEST = ROOT / "data" / "zh_speech" / "test.jsonl"


def _string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"  # length counts the trailing NUL


def _variable(name: str, array: np.ndarray, dtype_id: int, raw: bytes | None = None) -> bytes:
    raw = array.tobytes() if raw is None else raw
    dims = b"".join(struct.pack("<I", d) for d in array.shape)
    return (_string(name) + struct.pack("<B", array.ndim) + dims + struct.pack("<B", dtype_id)
            + struct.pack("<I", len(raw)) + raw)


def _synthetic_model_bin() -> bytes:
    """Version 6, spec "TestSpec" rev 2, four variables and one alias, written byte by byte."""
    w = np.arange(6, dtype=np.float16).reshape(2, 3) / 4  # 0, .25, .5, .75, 1, 1.25: exact in fp16
    flag = np.array(3, dtype=np.int8)  # rank-0 scalar, like CT2's decoder/activation
    bias = np.array([1.5, -2.0, 0.0, 0.125], dtype=np.float32)  # all exact in binary
    bf16 = np.array([1.0, -2.0], dtype=np.float32)
    bf16_raw = struct.pack("<2H", 0x3F80, 0xC000)  # bfloat16 = top 16 bits of float32: 1.0, -2.0
    return (struct.pack("<I", 6) + _string("TestSpec") + struct.pack("<I", 2) + struct.pack("<I", 4)
            + _variable("enc/w", w, 4) + _variable("enc/flag", flag, 1) + _variable("enc/b", bias, 0)
            + _variable("enc/bf", bf16, 5, bf16_raw)
            + struct.pack("<I", 1) + _string("dec/w") + _string("enc/w"))


def test_reader_round_trip_on_hand_built_file(tmp_path):
    """Every field written by hand reads back: header, shapes, the four dtypes, the alias.

    fp16 0.25 steps, an int8 scalar, fp32 values and bfloat16 0x3F80/0xC000 (= 1.0/-2.0) are exact.
    """
    path = tmp_path / "model.bin"
    path.write_bytes(_synthetic_model_bin())
    m = read_ct2_model(path)
    assert (m.version, m.spec, m.revision) == (6, "TestSpec", 2)
    assert list(m.variables) == ["enc/w", "enc/flag", "enc/b", "enc/bf"]
    assert m["enc/w"].dtype == np.float16 and m["enc/w"].shape == (2, 3)
    np.testing.assert_array_equal(m["enc/w"], np.arange(6).reshape(2, 3) / 4)
    assert m["enc/flag"].shape == () and int(m["enc/flag"]) == 3
    np.testing.assert_array_equal(m["enc/b"], [1.5, -2.0, 0.0, 0.125])
    np.testing.assert_array_equal(m["enc/bf"], [1.0, -2.0])
    assert m.aliases == {"dec/w": "enc/w"} and m["dec/w"] is m["enc/w"]


def test_reader_names_the_variable_where_a_truncated_file_stops(tmp_path):
    """Cutting the last 10 bytes lands inside the alias table; cutting 40 lands inside variable 3."""
    data = _synthetic_model_bin()
    (tmp_path / "a.bin").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="alias table.*truncated"):
        read_ct2_model(tmp_path / "a.bin")
    (tmp_path / "b.bin").write_bytes(data[:-40])
    with pytest.raises(ValueError, match="variable 3 of 4.*truncated"):
        read_ct2_model(tmp_path / "b.bin")
    (tmp_path / "c.bin").write_bytes(struct.pack("<I", 99) + data[4:])
    with pytest.raises(ValueError, match="version 99"):
        read_ct2_model(tmp_path / "c.bin")


def test_mapping_inverts_ctranslate2s_own_converter(tmp_path):
    """HF tiny Whisper -> ctranslate2's TransformersConverter (fp32) -> our reader + mapping gives
    back exactly the original tensors: the q/k/v and k/v un-fusing and every name are right.
    proj_out.weight is absent by design (tied to embed_tokens)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from transformers import WhisperForConditionalGeneration

    from lorakit_nb.models.tiny import build_tiny_whisper

    build_tiny_whisper(tmp_path / "hf")
    ctranslate2.converters.TransformersConverter(str(tmp_path / "hf")).convert(str(tmp_path / "ct2"),
                                                                                quantization=None)
    ours = whisper_state_dict(read_ct2_model(tmp_path / "ct2" / "model.bin"))
    ref = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").state_dict()
    assert set(ref) - set(ours) == {"proj_out.weight"} and not set(ours) - set(ref)
    for key, value in ours.items():
        torch.testing.assert_close(value, ref[key], rtol=0, atol=0, msg=key)


needs_pack = pytest.mark.skipif(not pack_installed(WHISPER_BASE),
                                reason='whisper-base offline pack not installed (pip install -e ".[offline-models]")')


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The reassembled CT2 pack folder and its transformers conversion (a few seconds)."""
    import shutil

    root = tmp_path_factory.mktemp("whisper_base")
    (root / "ct2").mkdir()
    assemble(WHISPER_BASE, root / "ct2" / "model.bin")
    for extra in pack_files(WHISPER_BASE)[1]:  # config.json, tokenizer.json, vocabulary.txt
        shutil.copy(extra, root / "ct2")
    ct2_whisper_to_hf(root / "ct2", root / "hf")
    yield root / "ct2", root / "hf"
    shutil.rmtree(root)  # ~435 MB: do not leave it in pytest's kept temp folders


@needs_pack
def test_real_pack_converts_with_no_missing_or_unexpected_keys(converted):
    """whisper-base: 6+6 layers, d_model 512, 8 heads (CT2 num_heads flag), vocab 51,865 incl.
    the 1501 timestamp tokens we add (50364 = <|0.00|> .. 51864 = <|30.00|>), 80 mel bins."""
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    _, hf = converted
    model, info = WhisperForConditionalGeneration.from_pretrained(hf, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    c = model.config
    assert (c.encoder_layers, c.decoder_layers, c.d_model, c.encoder_attention_heads, c.vocab_size) == (6, 6, 512, 8, 51865)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    tok = WhisperProcessor.from_pretrained(hf).tokenizer
    assert tok.pad_token == "<|endoftext|>"
    assert tok.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>", "<|zh|>"]) == [50364, 51864, 50260]
    gen = json.loads((hf / "generation_config.json").read_text())
    assert gen["lang_to_id"]["<|zh|>"] == 50260 and gen["task_to_id"] == {"translate": 50358, "transcribe": 50359}
    assert gen["no_timestamps_token_id"] == 50363 and gen["decoder_start_token_id"] == 50258
    assert json.loads((hf / "processor_config.json").read_text())["feature_extractor"]["feature_size"] == 80


@needs_pack
@pytest.mark.skipif(not SPEECH_TEST.is_file(), reason=f"{SPEECH_TEST} not present (speech corpus not built)")
def test_converted_model_decodes_exactly_like_ctranslate2(converted):
    """Same log-mel features (3 test clips, 30 s window) -> HF greedy and CTranslate2 greedy emit
    identical tokens after the prompt <|startoftranscript|><|zh|><|transcribe|><|notimestamps|>;
    encoder outputs agree to ~1e-3 (fp32 both, different kernels)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    import soundfile as sf
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    ct2_dir, hf = converted
    rows = [json.loads(line) for line in SPEECH_TEST.read_text("utf-8").splitlines()[:3]]
    audio = [sf.read(SPEECH_TEST.parent / r["audio"], dtype="float32")[0] for r in rows]
    processor = WhisperProcessor.from_pretrained(hf)
    features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
    model = WhisperForConditionalGeneration.from_pretrained(hf).eval()
    cap = 60
    with torch.no_grad():
        hf_out = model.generate(features, language="zh", task="transcribe", max_new_tokens=cap)
        encoded = model.model.encoder(features).last_hidden_state.numpy()  # (3, 1500, 512)
    ct = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32")
    storage = ctranslate2.StorageView.from_array(features.numpy())
    assert np.abs(np.array(ct.encode(storage)) - encoded).max() < 5e-3
    prompt = processor.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|zh|>", "<|transcribe|>",
                                                        "<|notimestamps|>"])
    results = ct.generate(storage, [prompt] * len(rows), beam_size=1)
    eot = processor.tokenizer.eos_token_id
    for hf_row, result in zip(hf_out.tolist(), results):
        while hf_row and hf_row[-1] == eot:  # HF pads finished rows with <|endoftext|>; CT2 drops it
            hf_row.pop()
        ct_row = result.sequences_ids[0]
        assert hf_row, "HF produced no tokens"
        if len(hf_row) < cap:  # both stopped on their own: the whole sequences must match
            assert hf_row == ct_row
        else:  # HF hit the cap: CT2 must agree on everything HF produced
            assert hf_row == ct_row[:cap]
