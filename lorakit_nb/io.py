"""Files on disk, written so that nothing is ever half-written, and the kit's sidecar JSONs.

Covers:
- ``atomic_file`` / ``write_json_atomic`` / ``write_text_atomic``: a unique temp file next to the
  target, fsync, then ``os.replace``: a reader sees the old file or the new one, never half of one.
- ``atomic_dir``: the same for a folder (a saved adapter, a merged model, an export): build it in a
  unique temp folder, then swap it in. The old copy is moved aside first and deleted only after the
  new one is in place, so a crash leaves the old folder (or the new one), never neither.
- ``save_adapter``: the one way the kit writes a peft LoRA adapter (safetensors only) plus a sidecar.
- The sidecars, one small dataclass each with ``load``/``save`` and a schema version:
  ``TrainSidecar`` (``lorakit_train.json``, next to a text adapter: how it was trained),
  ``SpeechSidecar`` (``lorakit_asr.json``, next to a Whisper adapter: base, window, language, NF4),
  ``ExportSidecar`` (``lorakit_export.json``, in a merged or CTranslate2 folder: where it came from).
- ``dir_bytes`` / ``weights_bytes``: sizes on disk.

Does not: decide what goes into a sidecar (the training and export code fill them), load models.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from lorakit_nb.errors import LorakitError


def _jsonable(obj):
    # numpy / torch scalars and paths, so notebooks can pass what they computed as is
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"value of type {type(obj).__name__} is not JSON-serialisable")


@contextmanager
def atomic_file(path, mode: str = "w"):
    """Yield an open temp file next to ``path``; on success it is fsynced and renamed onto ``path``.

    Example: ``with atomic_file("runs/03/test.jsonl") as f: f.write(...)``  (mode "wb" for bytes)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the kit's outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically. Example: write_text_atomic("out/README.md", "# card\\n")."""
    with atomic_file(path) as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path, data) -> Path:
    """Write JSON (UTF-8, indented, numpy/torch scalars allowed) atomically; return the path."""
    with atomic_file(path) as f:
        json.dump(data, f, ensure_ascii=False, indent=2, default=_jsonable)
        f.write("\n")
    return Path(path)


@contextmanager
def atomic_dir(target):
    """Yield an empty temp folder next to ``target``; on success it replaces ``target``.

    The old ``target`` is renamed aside (not deleted) before the swap and removed only once the new
    folder is in place; a crash or Ctrl-C leaves the old folder (or the new one), never half a model.
    Example: ``with atomic_dir("runs/04/merged") as tmp: model.save_pretrained(tmp)``
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    old = None
    try:
        yield tmp
        for f in [tmp, *tmp.rglob("*")]:  # mkdtemp makes 0700 (and some writers 0600): exports are shared
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.old-"))
            os.replace(target, old / "x")  # os.replace refuses a non-empty folder as destination
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            if not target.exists() and (old / "x").exists():  # the swap failed: put the old copy back
                os.replace(old / "x", target)
            shutil.rmtree(old, ignore_errors=True)


def dir_bytes(path) -> int:
    """Total size of the files under ``path`` (a file: its size). Example: dir_bytes("runs/04/ct2_int8")."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def weights_bytes(folder) -> int:
    """Bytes of the ``*.safetensors`` files in ``folder``. Example: ~290 MB for an fp32 whisper-base."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


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
