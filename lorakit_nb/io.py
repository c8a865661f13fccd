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
- ``dir_bytes`` / ``weights_bytes``: sizes on disk; ``read_utf8``: the one reader of a learner's text
  file (CSV, manifest) that names the line and the likely encoding (GBK/GB18030) when it is not UTF-8.
- ``write_error_line`` / ``ensure_writable``: the one place an OSError from writing (disk full, read-only
  or forbidden folder) becomes the line a learner reads ("no space left on <path>" / "cannot write <path>").
- ``read_adapter``: the one reader of a saved adapter folder (its config and tensor shapes, both files
  checked, with one line naming the broken file) and ``adapter_kind`` (text or speech).

Does not: decide what goes into a sidecar (the training and export code fill them), load models.
"""
from __future__ import annotations

import codecs
import dataclasses
import errno
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


WRITE_ERRNOS = {errno.ENOSPC: "no space left on", errno.EDQUOT: "no space left (disk quota) on",
                errno.EROFS: "cannot write", errno.EACCES: "cannot write", errno.EPERM: "cannot write"}


def write_error_line(exc: BaseException) -> str | None:
    """The learner's line for an OSError from writing (disk full, read-only, forbidden); None for others.

    Example: OSError(errno.ENOSPC, "No space left on device", "runs/02/eval.json")
      -> "no space left on runs/02/eval.json: free some disk space (or write elsewhere) and run it again"
    """
    if not isinstance(exc, OSError) or exc.errno not in WRITE_ERRNOS:
        return None
    where = exc.filename or "the output folder"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some disk space (or write elsewhere) and run it again"
    elif exc.errno == errno.EROFS:
        fix = "it is on a read-only file system; choose an output folder you can write to"
    else:
        fix = "permission denied; choose an output folder you can write to"
    return f"{WRITE_ERRNOS[exc.errno]} {where}: {fix}"


def _raise_naming(exc: OSError, path: Path):
    # a failed write/fsync carries no file name, a failed rename names the hidden temp file: name the target
    if exc.errno in WRITE_ERRNOS and (exc.filename is None or Path(str(exc.filename)).name.startswith(".")):
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
    raise exc


@contextmanager
def writing(path):
    """Inside it, a disk-full / read-only OSError that names no file (or a hidden temp file) names ``path``.

    For writers that cannot go through ``atomic_file`` (GGUFWriter opens its own file by name).
    Example: ``with writing("runs/05/a.gguf"): writer.write_tensors_to_file()``
    """
    try:
        yield
    except OSError as exc:
        _raise_naming(exc, Path(path))


def ensure_writable(folder) -> Path:
    """Create ``folder`` and prove a file can be written in it, before minutes of work go into it.

    Raises the OSError (ENOSPC / EROFS / EACCES) naming ``folder``; ``write_error_line`` words it.
    Example: ensure_writable("runs/02/mandarin") -> Path("runs/02/mandarin")
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".lorakit-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        _raise_naming(exc, folder)
    return folder


@contextmanager
def atomic_file(path, mode: str = "w"):
    """Yield an open temp file next to ``path``; on success it is fsynced and renamed onto ``path``.

    Example: ``with atomic_file("runs/03/test.jsonl") as f: f.write(...)``  (mode "wb" for bytes)
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        _raise_naming(exc, path)
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; the kit's outputs are meant to be shared
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        _raise_naming(exc, path)
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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    except OSError as exc:
        _raise_naming(exc, target)
    old = None
    try:
        try:
            yield tmp
        except OSError as exc:
            _raise_naming(exc, target)
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


def read_utf8(path) -> str:
    """A text file a learner made (CSV, JSONL manifest) as str; a BOM is dropped (Excel's "CSV UTF-8" adds one).

    Not UTF-8: one DataError naming the line, the first bad bytes and, when the file reads as GB18030
    (GBK, the usual encoding of Chinese Windows and Excel), that encoding, with the iconv command.
    Example: a manifest saved as GBK -> DataError("train.jsonl, line 1: not UTF-8 text (byte offset 43:
    cf c2). It reads as GBK/GB18030, ... Fix: re-save the file as UTF-8 ...")
    """
    from lorakit_nb.errors import DataError

    path = Path(path)
    raw = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        pos = skip + err.start
        line = raw.count(b"\n", 0, pos) + 1
        guess = ""
        try:
            raw.decode("gb18030")
            guess = " It reads as GBK/GB18030, the usual encoding of Chinese Windows and Excel."
        except UnicodeDecodeError:
            pass
        raise DataError(
            f"{path}, line {line}: not UTF-8 text (byte offset {pos}: {raw[pos:pos + 2].hex(' ')}).{guess} "
            "Fix: re-save the file as UTF-8 (Excel: 'CSV UTF-8'; an editor: encoding UTF-8; or "
            f"`iconv -f GB18030 -t UTF-8 {path.name} > {path.stem}.utf8{path.suffix}`)."
        ) from None


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
