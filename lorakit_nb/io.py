"""Files on disk, written so that nothing is ever half-written, and read with errors that name them.

Covers:
- ``atomic_file`` / ``write_json_atomic`` / ``write_text_atomic``: a unique temp file next to the
  target, fsync, then ``os.replace``: a reader sees the old file or the new one, never half of one.
- ``atomic_dir``: the same for a folder (a saved adapter, a merged model, an export): build it in a
  unique temp folder, then swap it in. The old copy is moved aside first and deleted only after the
  new one is in place, so a crash leaves the old folder (or the new one), never neither.
- ``dir_bytes`` / ``weights_bytes``: sizes on disk; ``read_utf8``: the one reader of a learner's text
  file (CSV, manifest) that names the line and the likely encoding (GBK/GB18030) when it is not UTF-8.
- ``write_error_line`` / ``ensure_writable``: the one place an OSError from writing (disk full, read-only
  or forbidden folder) becomes the line a learner reads ("no space left on <path>" / "cannot write <path>").

Does not: read or write adapters and the kit's sidecar JSONs (``adapter_files``), load models.
"""
from __future__ import annotations

import codecs
import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


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
