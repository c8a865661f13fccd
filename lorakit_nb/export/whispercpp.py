"""A merged Whisper as whisper.cpp's own ggml ``.bin`` (f16, q8_0, q5_0), and transcription with it.

Covers:
- ``export_whispercpp``: read a transformers Whisper folder's safetensors and write the file whisper.cpp's
  loader (``whisper_model_load`` in its ``src/whisper.cpp``) reads: magic, 11 int32 hyper-parameters,
  the mel filter bank, the byte-level vocabulary, then one record per tensor under whisper.cpp's
  names. The same layout as whisper.cpp's ``models/convert-h5-to-ggml.py`` followed by its
  ``quantize`` tool, written in one pass; quantized blocks come from the ``gguf`` package's numpy
  quantizers (``gguf.quants``), whose q8_0 / q5_0 blocks are ggml's (tests check a block by hand).
- ``ggml_name``: a transformers key -> whisper.cpp's tensor name.
- ``whispercpp_transcribe``: ``pywhispercpp`` (the bundled whisper.cpp) greedy, one clip at a time, at
  a given audio window (``audio_ctx`` = seconds * 50 encoder positions).

Does NOT cover: GGUF (whisper.cpp does not read GGUF for Whisper models; GGUF adapters for llama.cpp
are ``export/gguf.py``), k-quants (q4_k etc.: the ``gguf`` package has no numpy quantizer for them),
timestamps, beam search, the CTranslate2 export (``export/ct2.py``).

File layout (little-endian): int32 magic 0x67676d6c; int32 n_vocab, n_audio_ctx, n_audio_state,
n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype;
int32 n_mel, n_fft + n_mel*n_fft float32 filters; int32 token count + per token (int32 length, bytes);
per tensor: int32 n_dims, name length, ggml type; n_dims int32 sizes, fastest-varying first; the name;
the data. ``ftype`` of a quantized file carries ``2 * 1000`` (ggml's quantization version 2).
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
from pathlib import Path

import numpy as np

from lorakit_nb.errors import ExportError

GGML_MAGIC = 0x67676D6C  # "ggml"
QNT_VERSION = 2  # GGML_QNT_VERSION: stored as ftype + 2 * 1000 in a quantized file
# file type -> (header ftype, ggml tensor type id of the 2-D weight matrices)
FTYPES = {"f32": (0, 0), "f16": (1, 1), "q8_0": (7, 8), "q5_0": (8, 6)}
F32, F16 = 0, 1
# kept float32 even in an f16/quantized file (whisper.cpp's loader creates these tensors as F32)
ALWAYS_F32 = ("encoder.positional_embedding", "decoder.positional_embedding", "encoder.conv1.bias",
              "encoder.conv2.bias")
_LAYER_PARTS = {"self_attn.q_proj": "attn.query", "self_attn.k_proj": "attn.key", "self_attn.v_proj": "attn.value",
                "self_attn.out_proj": "attn.out", "self_attn_layer_norm": "attn_ln",
                "encoder_attn.q_proj": "cross_attn.query", "encoder_attn.k_proj": "cross_attn.key",
                "encoder_attn.v_proj": "cross_attn.value", "encoder_attn.out_proj": "cross_attn.out",
                "encoder_attn_layer_norm": "cross_attn_ln", "fc1": "mlp.0", "fc2": "mlp.2", "final_layer_norm": "mlp_ln"}
_TOP = {"encoder.layer_norm": "encoder.ln_post", "decoder.layer_norm": "decoder.ln",
        "encoder.embed_positions.weight": "encoder.positional_embedding",
        "decoder.embed_positions.weight": "decoder.positional_embedding",
        "decoder.embed_tokens.weight": "decoder.token_embedding.weight"}


def ggml_name(key: str) -> str | None:
    """whisper.cpp's name for a transformers Whisper key; None for ``proj_out.weight`` (tied to the embedding).

    Example: ggml_name("model.decoder.layers.2.encoder_attn.k_proj.weight") -> "decoder.blocks.2.cross_attn.key.weight";
    ggml_name("model.encoder.layer_norm.bias") -> "encoder.ln_post.bias"
    """
    if key == "proj_out.weight":
        return None
    name = key.removeprefix("model.")
    parts = name.split(".")
    if len(parts) > 3 and parts[1] == "layers":  # encoder.layers.{i}.<module>.<weight|bias>
        module = ".".join(parts[3:-1])
        if module not in _LAYER_PARTS:
            raise ExportError(f"{key}: no whisper.cpp tensor for module {module!r}")
        return f"{parts[0]}.blocks.{parts[2]}.{_LAYER_PARTS[module]}.{parts[-1]}"
    for prefix, target in _TOP.items():
        if name == prefix or name.startswith(prefix + "."):
            return target + name[len(prefix):]
    return name  # encoder.conv1.weight etc. keep their names


def _byte_decoder() -> dict:
    """GPT-2's byte-level BPE alphabet reversed: the printable character standing for each byte -> the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:  # non-printable bytes were shifted to 256, 257, ...
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def vocab_bytes(tokenizer_json) -> list[bytes]:
    """The BPE vocabulary (``model.vocab`` of tokenizer.json) as raw bytes, in id order.

    Example: whisper-base -> 50258 entries; [b"!", b'"', ...]; entry 50257 is b"<|endoftext|>".
    Special tokens beyond it (languages, tasks, timestamps) are not written: whisper.cpp names those itself.
    """
    vocab = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))["model"]["vocab"]
    decode = _byte_decoder()
    ordered = sorted(vocab.items(), key=lambda kv: kv[1])
    if [i for _, i in ordered] != list(range(len(ordered))):
        raise ExportError(f"{tokenizer_json}: vocabulary ids are not 0..{len(ordered) - 1}; a Whisper tokenizer.json has no gaps")
    return [bytes(decode[c] for c in token) for token, _ in ordered]


def _tensor_record(name: str, data: np.ndarray, file_type: str) -> tuple[bytes, bytes]:
    """(record header, payload) for one tensor: float32/float16 as is, 2-D matrices quantized for q8_0/q5_0."""
    if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
        data = data.reshape(-1, 1)  # whisper.cpp wants (n_state, 1): ne = [1, n_state]
    if name in ALWAYS_F32 or data.ndim < 2 or file_type == "f32":
        ttype, payload = F32, data.astype("<f4").tobytes()
    elif data.ndim != 2 or file_type == "f16":  # conv weights (3-D) stay f16 in quantized files too
        ttype, payload = F16, data.astype("<f2").tobytes()
    else:
        from gguf import GGMLQuantizationType
        from gguf.quants import quantize

        qtype = GGMLQuantizationType[file_type.upper()]
        ttype, payload = int(qtype), quantize(data.astype(np.float32), qtype).tobytes()  # (rows, blocks*bytes)
    raw = name.encode()
    head = struct.pack("<iii", data.ndim, len(raw), ttype) + struct.pack(f"<{data.ndim}i", *data.shape[::-1]) + raw
    return head, payload


def export_whispercpp(merged_dir, out_path=None, file_type: str = "f16") -> Path:
    """Write a transformers Whisper folder as one whisper.cpp ggml ``.bin`` (temp file + rename).

    ``out_path`` default: ``<merged_dir>/../whispercpp/ggml-model-<file_type>.bin``.
    Example: export_whispercpp("runs/04/merged", file_type="q8_0") -> runs/04/whispercpp/ggml-model-q8_0.bin
    (whisper-base: ~148 MB f16, ~82 MB q8_0, ~58 MB q5_0; 245 tensors)
    """
    from safetensors import safe_open
    from transformers import WhisperFeatureExtractor

    from lorakit_nb.io import atomic_file

    merged_dir = Path(merged_dir)
    if file_type not in FTYPES:
        raise ExportError(f"file type must be one of {tuple(FTYPES)}, got {file_type!r}")
    files = sorted(merged_dir.glob("*.safetensors"))
    if not (merged_dir / "config.json").is_file() or not files or not (merged_dir / "tokenizer.json").is_file():
        raise ExportError(f"{merged_dir}: not a transformers Whisper folder (config.json, tokenizer.json, *.safetensors); "
                          "run export.merge_adapter first and pass its output folder")
    c = json.loads((merged_dir / "config.json").read_text(encoding="utf-8"))
    if c.get("model_type") != "whisper":
        raise ExportError(f"{merged_dir}/config.json: model_type {c.get('model_type')!r}; only Whisper exports to whisper.cpp")
    if c["encoder_ffn_dim"] != 4 * c["d_model"] or c["decoder_ffn_dim"] != 4 * c["d_model"]:
        raise ExportError(f"{merged_dir}/config.json: feed-forward width {c['encoder_ffn_dim']}/{c['decoder_ffn_dim']} is "
                          f"not 4 x d_model ({4 * c['d_model']}); whisper.cpp builds every Whisper with that width")
    ftype, _ = FTYPES[file_type]
    hparams = [c["vocab_size"], c["max_source_positions"], c["d_model"], c["encoder_attention_heads"],
               c["encoder_layers"], c["max_target_positions"], c["d_model"], c["decoder_attention_heads"],
               c["decoder_layers"], c["num_mel_bins"], ftype + (QNT_VERSION * 1000 if ftype >= 2 else 0)]
    filters = WhisperFeatureExtractor(feature_size=c["num_mel_bins"]).mel_filters.T.astype("<f4")  # (n_mel, n_fft)
    tokens = vocab_bytes(merged_dir / "tokenizer.json")
    out_path = Path(out_path or merged_dir.parent / "whispercpp" / f"ggml-model-{file_type}.bin")
    with atomic_file(out_path, "wb") as f:
        f.write(struct.pack("<i", GGML_MAGIC) + struct.pack("<11i", *hparams))
        f.write(struct.pack("<ii", *filters.shape) + filters.tobytes())
        f.write(struct.pack("<i", len(tokens)))
        for tok in tokens:
            f.write(struct.pack("<i", len(tok)) + tok)
        for file in files:
            with safe_open(str(file), "np") as st:
                for key in st.keys():
                    name = ggml_name(key)
                    if name is not None:
                        head, payload = _tensor_record(name, st.get_tensor(key).astype(np.float32), file_type)
                        f.write(head)
                        f.write(payload)
    return out_path


@contextlib.contextmanager
def _quiet_native_stderr():
    """whisper.cpp logs every load and state allocation on file descriptor 2; silence that descriptor inside.

    pywhispercpp's own redirect needs ``sys.stderr.fileno()``, which a Jupyter kernel's stderr lacks (so its
    logs filled the notebook); this redirects descriptor 2 itself. Python's own errors still raise normally.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def load_whispercpp(model_path, *, threads: int | None = None):
    """A ``pywhispercpp.model.Model`` on a local ggml file (never a download), greedy, no timestamps, quiet."""
    import torch
    from pywhispercpp.model import Model

    if not Path(model_path).is_file():  # pywhispercpp would otherwise try to download a model by that name
        raise ExportError(f"{model_path}: no such file; write it with export_whispercpp(merged_dir)")
    with _quiet_native_stderr():
        return Model(str(model_path), redirect_whispercpp_logs_to=False, n_threads=threads or torch.get_num_threads(),
                     print_progress=False, print_realtime=False, no_context=True, no_timestamps=True,
                     single_segment=True, suppress_blank=True, temperature_inc=0.0)


def whispercpp_transcribe(model, audios, *, audio_seconds: int = 30, language: str = "zh",
                          per_second: float = 6.0) -> list[str]:
    """Greedy transcripts from whisper.cpp at an ``audio_seconds`` window (``audio_ctx`` = seconds * 50).

    ``temperature_inc=0`` turns whisper.cpp's temperature fallback off, so this is plain capped greedy
    decoding, as ``export.ct2.ct2_transcribe`` does; the token cap per clip is ``max_new_tokens_for``.
    Example: whispercpp_transcribe(load_whispercpp("runs/04/whispercpp/ggml-model-q8_0.bin"), audios, audio_seconds=5)
    """
    from lorakit_nb.speech.evaluate import max_new_tokens_for
    from lorakit_nb.speech.window import SAMPLE_RATE, positions_for

    out = []
    for audio in audios:
        audio = np.asarray(audio, dtype=np.float32)
        with _quiet_native_stderr():
            segments = model.transcribe(audio, language=language, audio_ctx=positions_for(audio_seconds),
                                        max_tokens=max_new_tokens_for(len(audio) / SAMPLE_RATE, per_second=per_second))
        out.append("".join(s.text for s in segments).strip())
    return out
