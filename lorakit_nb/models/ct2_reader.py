"""Read CTranslate2 ``model.bin`` files and turn a CTranslate2 Whisper into a transformers directory.

Covers:
- ``read_ct2_model``: a dependency-free reader for the CTranslate2 binary format (version 6), the
  format faster-whisper packs ship in. Layout, all little-endian::

      uint32 version | string spec name | uint32 revision | uint32 n_variables
      n_variables x (string name | uint8 rank | rank x uint32 dims | uint8 dtype id |
                     uint32 n_bytes | n_bytes raw data)
      uint32 n_aliases | n_aliases x (string alias | string target)

  where a string is a uint16 length (counting the trailing NUL), the UTF-8 bytes, then the NUL.
- ``ct2_whisper_to_hf``: map the ``WhisperSpec`` variables onto ``WhisperForConditionalGeneration``
  keys (un-fusing the q/k/v and k/v projections), and write a normal transformers directory:
  fp32 safetensors, config, generation config (language/task ids), tokenizer with timestamp tokens,
  feature extractor.

Does NOT cover: writing CTranslate2 files (use ``ctranslate2.converters``), quantized CT2 models
(int8/int16 weights carry scales this module does not apply), or any CT2 architecture but Whisper.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lorakit_nb.errors import MissingFileError
from lorakit_nb.io import atomic_dir

# CTranslate2's dtype ids (ctranslate2/specs/model_spec.py::_dtype_to_type_id).
_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_ITEMSIZE = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2}
SUPPORTED_VERSIONS = (6,)


@dataclass
class Ct2Model:
    """The parsed content of a CTranslate2 ``model.bin``."""

    version: int
    spec: str  # e.g. "WhisperSpec"
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # alias name -> target variable name

    def __getitem__(self, name: str) -> np.ndarray:
        return self.variables[self.aliases.get(name, name)]


def _as_array(raw: bytes, dtype: str, dims: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":
        # numpy has no bfloat16: a bfloat16 is the top half of a float32, so shift it back up.
        as_u32 = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return as_u32.view(np.float32).reshape(dims)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(dims)


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` into numpy arrays (zero-copy views on the file bytes).

    Example: a file holding one fp16 variable ``"w"`` of shape (2, 3) and the alias ``"v" -> "w"``
    reads back as ``Ct2Model(version=6, ..., variables={"w": <(2, 3) float16>}, aliases={"v": "w"})``.
    A truncated file raises ``ValueError`` naming the variable where the data stops.
    """
    path = Path(path)
    data = memoryview(path.read_bytes())  # slices of a memoryview do not copy
    pos = 0
    n_vars = 0
    where = "the header"

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(data):
            raise ValueError(
                f"{path}: file ends at byte {len(data)} while reading {where} (variable {n_vars}); "
                "the file is truncated - reassemble or reinstall it"
            )
        chunk = data[pos : pos + n]
        pos += n
        return chunk

    def u(fmt: str) -> int:
        return struct.unpack("<" + fmt, take(struct.calcsize(fmt)))[0]

    def string() -> str:
        return bytes(take(u("H"))[:-1]).decode("utf-8")  # drop the trailing NUL

    version = u("I")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"{path}: CTranslate2 binary version {version} is not supported "
                         f"(this reader handles {SUPPORTED_VERSIONS}); is this a model.bin file?")
    model = Ct2Model(version=version, spec=string(), revision=u("I"))
    n_total = u("I")
    for n_vars in range(n_total):
        where = f"variable {n_vars} of {n_total}"
        name = string()
        dims = tuple(u("I") for _ in range(u("B")))
        dtype_id = u("B")
        if dtype_id not in _DTYPES:
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        dtype, n_bytes = _DTYPES[dtype_id], u("I")
        if n_bytes != _ITEMSIZE[dtype] * int(np.prod(dims, dtype=np.int64)):
            raise ValueError(f"{path}: variable {name!r} declares {n_bytes} bytes for {dims} {dtype}")
        model.variables[name] = _as_array(take(n_bytes), dtype, dims)
    n_vars, where = n_total, "the alias table"
    for _ in range(u("I")):
        alias = string()
        model.aliases[alias] = string()
    if pos != len(data):
        raise ValueError(f"{path}: {len(data) - pos} unexpected bytes after the alias table")
    return model


# ---------------------------------------------------------------- CTranslate2 Whisper -> transformers

# Scalar flags a standard Whisper WhisperSpec carries; anything else means a different architecture.
_EXPECTED_FLAGS = {"decoder/activation": 3, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                   "decoder/alibi": 0}  # 3 = CTranslate2's Activation.GELU


def _count_layers(ct2: Ct2Model, side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for name in ct2.variables if (m := pattern.match(name)))


def whisper_config_from_ct2(ct2: Ct2Model, **token_ids):
    """Derive a ``WhisperConfig`` from tensor shapes and the ``num_heads`` flags.

    Example (whisper-base): conv1 weight (512, 80, 3) -> d_model 512, 80 mel bins; embeddings
    (51865, 512) -> vocab 51865; encoder positions (1500, 512) -> max_source_positions 1500.
    """
    from transformers import WhisperConfig

    if ct2.spec != "WhisperSpec":
        raise ValueError(f"expected a WhisperSpec model, found {ct2.spec!r}")
    for name, want in _EXPECTED_FLAGS.items():
        if name in ct2.variables and int(ct2[name]) != want:
            raise ValueError(f"{name} = {int(ct2[name])}, expected {want}: not a standard Whisper model")
    d_model, n_mels, _ = ct2["encoder/conv1/weight"].shape  # (out, in, kernel)
    return WhisperConfig(
        vocab_size=ct2["decoder/embeddings/weight"].shape[0], num_mel_bins=n_mels, d_model=d_model,
        encoder_layers=_count_layers(ct2, "encoder"), decoder_layers=_count_layers(ct2, "decoder"),
        encoder_attention_heads=int(ct2["encoder/num_heads"]), decoder_attention_heads=int(ct2["decoder/num_heads"]),
        encoder_ffn_dim=ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu", scale_embedding=False, tie_word_embeddings=True, **token_ids,
    )


def whisper_state_dict(ct2: Ct2Model) -> dict:
    """Map CTranslate2 Whisper variables to ``WhisperForConditionalGeneration`` fp32 tensors.

    CTranslate2 fuses projections: self-attention ``linear_0`` is q,k,v stacked on dim 0
    (3*d, d); cross-attention ``linear_1`` is k,v stacked (2*d, d). Whisper's k_proj has no bias,
    so the k slice of each fused bias must be zero (checked, not assumed).
    Example: encoder/layer_0/self_attention/linear_0/weight (1536, 512) ->
    model.encoder.layers.0.self_attn.{q,k,v}_proj.weight, each (512, 512).
    """
    import numpy as np
    import torch

    sd: dict[str, torch.Tensor] = {}

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(ct2[name], dtype=np.float32))  # fp16 -> fp32 copy

    def linear(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"], sd[f"{hf}.bias"] = t(f"{ct}/weight"), t(f"{ct}/bias")

    def norm(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"], sd[f"{hf}.bias"] = t(f"{ct}/gamma"), t(f"{ct}/beta")

    def fused(hf: str, ct: str, names: tuple[str, ...]) -> None:
        weights, biases = t(f"{ct}/weight").chunk(len(names)), t(f"{ct}/bias").chunk(len(names))
        for proj, w, b in zip(names, weights, biases):
            sd[f"{hf}.{proj}.weight"] = w.clone()
            if proj == "k_proj":
                if b.abs().max() > 0:
                    raise ValueError(f"{ct}/bias has a non-zero key part: Whisper's k_proj has no bias")
            else:
                sd[f"{hf}.{proj}.bias"] = b.clone()

    enc, dec = "model.encoder", "model.decoder"
    for i in (1, 2):
        linear(f"{enc}.conv{i}", f"encoder/conv{i}")
    sd[f"{enc}.embed_positions.weight"] = t("encoder/position_encodings/encodings")
    norm(f"{enc}.layer_norm", "encoder/layer_norm")
    sd[f"{dec}.embed_tokens.weight"] = t("decoder/embeddings/weight")  # proj_out is tied to it
    sd[f"{dec}.embed_positions.weight"] = t("decoder/position_encodings/encodings")
    norm(f"{dec}.layer_norm", "decoder/layer_norm")
    for side, hf_side in (("encoder", enc), ("decoder", dec)):
        for i in range(_count_layers(ct2, side)):
            ct, hf = f"{side}/layer_{i}", f"{hf_side}.layers.{i}"
            fused(f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
            if side == "decoder":
                linear(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
                fused(f"{hf}.encoder_attn", f"{ct}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
    return sd


def ct2_whisper_to_hf(ct2_dir: str | Path, out_dir: str | Path, *, language: str | None = None,
                      task: str | None = None) -> Path:
    """Convert a faster-whisper (CTranslate2) Whisper folder into a transformers folder.

    ``ct2_dir`` holds ``model.bin``, ``config.json`` (CT2: suppress ids, alignment heads) and
    ``tokenizer.json``. ``out_dir`` must be absent or empty; it gets ``model.safetensors`` (fp32),
    ``config.json``, ``generation_config.json``, the tokenizer and the processor files.
    Example::

        ct2_whisper_to_hf("pack/", "whisper-base-hf/")
        model = WhisperForConditionalGeneration.from_pretrained("whisper-base-hf/")
        model.generate(features, language="zh", task="transcribe")
    """
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperForConditionalGeneration

    from lorakit_nb.models.whisper_hf import (
        save_whisper_extras,
        whisper_generation_config,
        whisper_tokenizer,
    )

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty: remove it or choose another output folder")
    for name in ("model.bin", "config.json", "tokenizer.json"):
        if not (ct2_dir / name).is_file():
            raise MissingFileError(f"{ct2_dir / name} is missing: a faster-whisper model folder needs {name}")
    ct2 = read_ct2_model(ct2_dir / "model.bin")
    ct2_config = json.loads((ct2_dir / "config.json").read_text("utf-8"))
    tokenizer = whisper_tokenizer(ct2_dir / "tokenizer.json")
    ids = tokenizer.convert_tokens_to_ids
    eot = ids("<|endoftext|>")
    config = whisper_config_from_ct2(ct2, pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
                                     decoder_start_token_id=ids("<|startoftranscript|>"),
                                     suppress_tokens=ct2_config.get("suppress_ids", []),
                                     begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [eot]))
    if config.vocab_size != len(tokenizer):
        raise ValueError(f"{ct2_dir}: model vocabulary {config.vocab_size} != tokenizer size {len(tokenizer)}")
    state_dict = whisper_state_dict(ct2)
    # Check the key set against a weightless (meta) model: no missing or unexpected keys, except
    # proj_out.weight, which transformers ties to embed_tokens (tie_word_embeddings=True).
    with torch.device("meta"):
        expected = set(WhisperForConditionalGeneration(config).state_dict()) - {"proj_out.weight"}
    if set(state_dict) != expected:
        raise ValueError(f"CT2 -> HF mapping mismatch: missing {sorted(expected - set(state_dict))}, "
                         f"unexpected {sorted(set(state_dict) - expected)}")
    gen = whisper_generation_config(
        tokenizer, suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        alignment_heads=ct2_config.get("alignment_heads"), max_length=config.max_target_positions,
        language=language, task=task)
    with atomic_dir(out_dir) as tmp:
        save_file(state_dict, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config.architectures = ["WhisperForConditionalGeneration"]
        config.save_pretrained(tmp)
        save_whisper_extras(tmp, tokenizer, gen, config.num_mel_bins)
    return out_dir
