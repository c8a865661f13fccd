"""What the kit keeps next to a model: peft adapters and the small sidecar JSONs that say where it came from.

Covers:
- ``save_adapter``: the one way the kit writes a peft LoRA adapter (safetensors only) plus a sidecar.
- ``read_adapter``: the one reader of a saved adapter folder (its config and tensor shapes, both files
  checked, with one line naming the broken file) and ``adapter_kind`` (text or speech).
- The sidecars, one small dataclass each with ``load``/``save`` and a schema version:
  ``TrainSidecar`` (``lorakit_train.json``, next to a text adapter: how it was trained),
  ``SpeechSidecar`` (``lorakit_asr.json``, next to a Whisper adapter: base, window, language, NF4),
  ``ExportSidecar`` (``lorakit_export.json``, in a merged or CTranslate2 folder: where it came from).

Does not: write files by itself (``io``'s atomic writers do), decide what goes into a sidecar (the training
and export code fill them), load models.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import ClassVar

from lorakit_nb.errors import LorakitError
from lorakit_nb.io import atomic_dir, write_json_atomic


class SidecarError(LorakitError, ValueError):
    """A sidecar JSON is unreadable or was written by a newer, incompatible kit."""


@dataclasses.dataclass
class _Sidecar:
    """Base of the sidecar dataclasses: fields are the known keys; ``extra`` keeps any others."""

    FILE: ClassVar[str] = ""
    SCHEMA: ClassVar[int] = 1
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def path(cls, folder) -> Path:
        return Path(folder) / cls.FILE

    @classmethod
    def load(cls, folder, required: bool = False):
        """The sidecar in ``folder``; None if there is none (``required``: raise SidecarError instead)."""
        path = cls.path(folder)
        if not path.is_file():
            if required:
                raise SidecarError(f"{folder}: no {cls.FILE} here; point to a folder the kit wrote "
                                   "(an adapter saved by notebook 02/03, an export from notebook 04)")
            return None
        try:
            raw = json.loads(path.read_text("utf-8"))
        except ValueError as exc:
            raise SidecarError(f"{path}: not valid JSON ({exc}); re-save the adapter or export") from exc
        if not isinstance(raw, dict):
            raise SidecarError(f"{path}: expected a JSON object")
        schema = raw.pop("schema", 1)
        if schema > cls.SCHEMA:
            raise SidecarError(f"{path}: schema {schema} is newer than this kit's {cls.SCHEMA}; upgrade lorakit-nb")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in raw.items() if k in names}
        return cls(**known, extra={k: v for k, v in raw.items() if k not in names})

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {"schema": self.SCHEMA, **d, **self.extra}

    def save(self, folder) -> Path:
        return write_json_atomic(self.path(folder), self.to_dict())


@dataclasses.dataclass
class TrainSidecar(_Sidecar):
    """``lorakit_train.json`` next to a text adapter: the training config it came from (a dict)."""

    FILE: ClassVar[str] = "lorakit_train.json"
    base_model: str = ""
    prompt_template: str = ""
    target: str = ""

    @classmethod
    def from_config(cls, train_config: dict) -> TrainSidecar:
        """The sidecar for a run's config dict: the three known keys as fields, the rest in ``extra``.

        Example: TrainSidecar.from_config({"base_model": "gemma-3-270m", "lora_rank": 16}).extra -> {"lora_rank": 16}
        """
        rest = dict(train_config)
        return cls(**{k: rest.pop(k) for k in ("base_model", "prompt_template", "target") if k in rest}, extra=rest)


@dataclasses.dataclass
class SpeechSidecar(_Sidecar):
    """``lorakit_asr.json`` next to a Whisper adapter: what it takes to rebuild the trained model.

    Example: SpeechSidecar(base_model="whisper-base", audio_seconds=5, quantized=True).save(adapter_dir)
    """

    FILE: ClassVar[str] = "lorakit_asr.json"
    base_model: str = "whisper-base"
    audio_seconds: int | None = None
    language: str = "zh"
    quantized: bool = False  # trained on a 4-bit NF4 base (QLoRA): evaluation must load it the same way


@dataclasses.dataclass
class ExportSidecar(_Sidecar):
    """``lorakit_export.json`` in a merged / CTranslate2 folder: its origin and the window it expects."""

    FILE: ClassVar[str] = "lorakit_export.json"
    base_model: str = ""
    adapter: str = ""
    base_weights: str = "fp32"
    audio_seconds: int | None = None  # the window the model was trained (and should be run) with
    trained_with: dict = dataclasses.field(default_factory=dict)


def save_adapter(peft_model, out_dir, *, adapter_name: str = "default", sidecar: _Sidecar | None = None,
                 processor=None, initial_adapter=None) -> int:
    """Write one LoRA adapter (``adapter_model.safetensors`` + ``adapter_config.json``) atomically.

    peft nests an adapter not called "default" one folder down; it is lifted to ``out_dir`` itself.
    ``sidecar`` (a TrainSidecar / SpeechSidecar) and ``processor`` (Whisper's, for a standalone
    adapter folder) are written into the same folder. Returns the bytes of the safetensors file.
    ``initial_adapter``: the folder of a PiSSA / OLoRA adapter saved at step 0; peft then writes the
    trained one as plain LoRA of twice the rank (B'A' - B0A0), which loads on the UNCHANGED base.
    Example: r=16 on q_proj,v_proj of whisper-base: 589,824 fp32 values -> 2,359,296 bytes + header.
    """
    if not hasattr(peft_model, "peft_config"):
        raise LorakitError(f"save_adapter needs a peft model (got {type(peft_model).__name__}); "
                           "wrap the base with get_peft_model or load it with PeftModel.from_pretrained")
    with atomic_dir(out_dir) as tmp:
        convert = {} if initial_adapter is None else {"path_initial_model_for_weight_conversion": str(initial_adapter)}
        peft_model.save_pretrained(tmp / "peft", selected_adapters=[adapter_name], safe_serialization=True,
                                   **convert)
        src = tmp / "peft" / adapter_name if adapter_name != "default" else tmp / "peft"
        for f in src.iterdir():
            if f.is_file():
                os.replace(f, tmp / f.name)
        shutil.rmtree(tmp / "peft")
        if processor is not None:
            processor.save_pretrained(tmp)
        if sidecar is not None:
            sidecar.save(tmp)
    return (Path(out_dir) / "adapter_model.safetensors").stat().st_size


ADAPTER_CONFIG, ADAPTER_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def read_adapter(folder) -> tuple[dict, dict]:
    """(adapter_config.json as a dict, {tensor name: shape}) of a saved peft adapter, no tensor data read.

    The one reader every loader calls first, so a broken folder gives one line naming the file
    (``MissingFileError`` for a missing file, ``AdapterError`` for invalid JSON or a safetensors file
    cut short, e.g. by a full disk or an interrupted copy) instead of a JSON or safetensors traceback.
    Example: cfg, shapes = read_adapter("runs/02/mandarin/adapter"); cfg["r"] -> 16,
    shapes["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] -> (16, 640)
    """
    from safetensors import SafetensorError, safe_open

    from lorakit_nb.errors import AdapterError, MissingFileError

    folder = Path(folder)
    cfg_path, weights = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    for path in (cfg_path, weights):
        if not path.is_file():
            raise MissingFileError(f"{path} not found: pass the folder a LoRA adapter was saved in "
                                   f"({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}, as peft's save_pretrained with "
                                   "safe_serialization=True writes them), e.g. runs/02/mandarin/adapter")
    try:
        cfg = json.loads(cfg_path.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise AdapterError(f"{cfg_path}: not valid JSON ({exc}); copy the adapter folder again or "
                           "re-save it (io.save_adapter writes it)") from None
    if not isinstance(cfg, dict) or "peft_type" not in cfg:
        raise AdapterError(f"{cfg_path}: not a peft adapter config (no peft_type); copy the adapter folder "
                           "again or re-save it")
    try:
        with safe_open(str(weights), framework="np") as f:
            # a safe_open handle is not iterable, hence .keys()
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except SafetensorError as exc:
        raise AdapterError(f"{weights}: unreadable or cut short ({exc}; {weights.stat().st_size:,} bytes); "
                           "copy the adapter folder again or retrain it") from None
    return cfg, shapes


def adapter_kind(folder, config: dict | None = None) -> str | None:
    """"speech" (a Whisper adapter), "text" (a causal-LM adapter) or None when the folder does not say.

    The sidecar decides (``lorakit_asr.json`` / ``lorakit_train.json``), else the peft config: task
    CAUSAL_LM, or a base model whose name says whisper.
    Example: adapter_kind("runs/03/adapter") -> "speech"; adapter_kind("runs/02/mandarin/adapter") -> "text"
    """
    folder = Path(folder)
    if SpeechSidecar.path(folder).is_file():
        return "speech"
    if TrainSidecar.path(folder).is_file():
        return "text"
    if config is None:
        try:
            config = json.loads((folder / ADAPTER_CONFIG).read_text("utf-8"))
        except (OSError, ValueError):
            return None
    if not isinstance(config, dict):
        return None
    if str(config.get("task_type") or "").upper() == "CAUSAL_LM":
        return "text"
    return "speech" if "whisper" in str(config.get("base_model_name_or_path") or "").lower() else None
