"""The text model behind ``POST /v1/completions``: llama.cpp (``xllamacpp``) on a GGUF base plus LoRA adapters.

Covers:
- ``TextEngine.__init__``: load the base GGUF (default: the offline gemma-3-270m q4_k_m file,
  ``models.packs.gemma_gguf``) in llama.cpp with ``n_parallel`` slots, and every adapter given as
  ``{name: path}`` - a llama.cpp LoRA ``.gguf`` or a peft adapter folder, which is exported once
  with ``export.gguf.export_gguf_adapter`` (checked against the base). Adapters are loaded with
  strength 0; each request sets the strength of the one it names.
- ``TextEngine.complete`` (async): one greedy (or sampled) completion. ``model`` picks the adapter
  (or the bare base), ``strength`` scales it (0 = the base model, 1 = as trained, up to
  ``MAX_STRENGTH``). Requests run in worker threads, so llama.cpp's parallel slots decode
  concurrent requests together (continuous batching); more than ``max_queue`` admitted and
  unfinished -> 503 ``queue_full``.
- The request llama.cpp sees is built here from checked fields only; a client cannot pass
  llama.cpp options (``lora``, grammars, ...) through.

llama.cpp's own HTTP listener (``xllamacpp.Server`` always starts one on 127.0.0.1) is locked with a
random key that never leaves this process; everything goes through ``lorakit serve``'s routes.

Does not: parse HTTP or check API keys (``app``), apply a chat template (the base model has none),
stream tokens, or merge adapters into the base.
"""
from __future__ import annotations

import asyncio
import atexit
import secrets
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lorakit_nb.errors import LorakitError, MissingFileError
from lorakit_nb.serve.errors import ServeError

MAX_STRENGTH = 1.2   # strengths above the trained one are allowed a little (notebook 02's curve goes to 1.2)
MAX_TOKENS = 256     # most tokens one request may generate
MAX_STOP = 4         # OpenAI's limit on stop sequences
BASE_NAME = "gemma-3-270m"


def _import_xllamacpp():
    try:
        import xllamacpp
    except ImportError as exc:  # pragma: no cover - the serve extra installs it
        raise LorakitError('the llama.cpp engine needs the `xllamacpp` package: pip install -e ".[serve]"') from exc
    return xllamacpp


def prepare_adapters(adapters: dict, base_gguf: Path, out_dir: Path) -> dict[str, dict]:
    """{name: {"path": gguf, "source": given path, "bytes": size}}; peft folders are exported to ``out_dir``."""
    from lorakit_nb.export.gguf import export_gguf_adapter

    prepared = {}
    for name, given in adapters.items():
        given = Path(given).expanduser()
        if given.is_dir():
            info = export_gguf_adapter(given, out_dir / f"{name}.gguf", base_gguf)
            path = Path(info["path"])
        elif given.is_file() and given.suffix == ".gguf":
            path = given
        else:
            raise MissingFileError(f"adapter {name!r}: {given} is neither a peft adapter folder nor a .gguf file; "
                                   "pass --adapter NAME=runs/02/mandarin/adapter (or NAME=file.gguf)")
        prepared[name] = {"path": str(path), "source": str(given), "bytes": path.stat().st_size}
    return prepared


class TextEngine:
    """llama.cpp with one base GGUF and named LoRA adapters. Example::

        engine = TextEngine(adapters={"wu-mandarin": "runs/02/mandarin/adapter"})
        await engine.start()
        (await engine.complete("Translate Wu dialect to Mandarin: 侬好\\nMandarin:", model="wu-mandarin",
                               strength=0.8, max_tokens=40, stop=["\\n"]))["choices"][0]["text"]
    """

    def __init__(self, base_gguf=None, adapters: dict | None = None, *, base_name: str = BASE_NAME,
                 threads: int | None = None, n_parallel: int = 4, ctx_per_slot: int = 512, max_queue: int = 32,
                 export_dir=None):
        import os

        if base_gguf is None:
            from lorakit_nb.models.packs import gemma_gguf

            base_gguf = gemma_gguf()
        self.base_gguf = Path(base_gguf).expanduser()
        if not self.base_gguf.is_file():
            raise MissingFileError(f"base GGUF {self.base_gguf} not found: pass --llm FILE.gguf (or omit it for the "
                                   "offline gemma-3-270m)")
        adapters = dict(adapters or {})
        if base_name in adapters:
            raise LorakitError(f"adapter name {base_name!r} is the base model's name; pick another")
        self._export_tmp = None
        if export_dir is None:  # removed by stop(); atexit covers a start that fails after this line
            self._export_tmp = tempfile.TemporaryDirectory(prefix="lorakit-gguf-")
            atexit.register(self._export_tmp.cleanup)
            export_dir = self._export_tmp.name
        self.adapters = prepare_adapters(adapters, self.base_gguf, Path(export_dir))
        self.base_name = base_name
        self.names = [base_name, *self.adapters]
        self.n_parallel, self.ctx_per_slot, self.max_queue = int(n_parallel), int(ctx_per_slot), int(max_queue)
        self.threads = threads or os.cpu_count() or 1
        x = _import_xllamacpp()
        params = x.CommonParams()
        params.model.path = str(self.base_gguf)
        params.n_parallel = self.n_parallel
        params.n_ctx = self.ctx_per_slot * self.n_parallel  # llama.cpp splits n_ctx over the slots
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.verbosity = -1
        params.api_keys = [secrets.token_urlsafe(32)]  # lock llama.cpp's own listener: nobody holds this key
        params.endpoint_metrics = True
        infos = []
        for info in self.adapters.values():
            lora = x.CommonAdapterLoraInfo()
            lora.path, lora.scale = info["path"], 0.0
            infos.append(lora)
        params.lora_adapters = infos
        params.lora_init_without_apply = True
        t0 = time.perf_counter()
        self._server = x.Server(params)
        self.load_seconds = time.perf_counter() - t0
        self._pool = ThreadPoolExecutor(max_workers=self.n_parallel, thread_name_prefix="llama")
        self.pending = 0
        self.on_complete = None  # set by the app: fn(seconds, prompt_tokens, completion_tokens)
        self._seconds = []

    @property
    def ready(self) -> bool:
        return self.pending < self.max_queue

    def retry_after(self) -> int:
        recent = self._seconds[-20:]
        per = sum(recent) / len(recent) if recent else 1.0
        return max(1, round(per * (self.pending + 1) / self.n_parallel))

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """Stop taking work and delete the GGUF files exported at start (uvicorn re-raises SIGTERM after
        shutdown, so exit handlers never run on the usual way out: this is where they go)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._export_tmp is not None:
            self._export_tmp.cleanup()

    def request(self, prompt: str, model: str, strength: float, max_tokens: int, stop, temperature: float) -> dict:
        """The body llama.cpp gets (checked fields only): every adapter at 0 but the one named, at ``strength``."""
        lora = [{"id": i, "scale": float(strength) if name == model else 0.0} for i, name in enumerate(self.adapters)]
        body = {"prompt": prompt, "max_tokens": int(max_tokens), "temperature": float(temperature),
                "stop": list(stop), "cache_prompt": False}
        if lora:
            body["lora"] = lora
        return body

    def complete_sync(self, prompt: str, *, model: str, strength: float = 1.0, max_tokens: int = 64, stop=(),
                      temperature: float = 0.0) -> dict:
        """One completion, blocking (what ``complete`` runs in a worker thread); OpenAI ``text_completion`` dict."""
        if model not in self.names:
            raise ServeError(404, "model_not_found", f"model {model!r} is not served here; use one of "
                             f"{', '.join(self.names)} (GET /v1/models)")
        t0 = time.perf_counter()
        out = self._server.handle_completions(self.request(prompt, model, strength, max_tokens, stop, temperature))
        seconds = time.perf_counter() - t0
        if "error" in out:
            err = out["error"]
            if err.get("type") == "exceed_context_size_error":
                raise ServeError(400, "context_length_exceeded", f"the prompt has {err.get('n_prompt_tokens')} tokens; "
                                 f"prompt + max_tokens must fit in {self.ctx_per_slot} tokens: shorten the prompt")
            raise ServeError(500, "engine_error", "the text engine failed on this request")
        self._seconds = self._seconds[-99:] + [seconds]
        usage = out.get("usage", {})
        if self.on_complete:
            self.on_complete(seconds, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
        choices = [{"text": c.get("text", ""), "index": c.get("index", 0), "logprobs": None,
                    "finish_reason": c.get("finish_reason")} for c in out.get("choices", [])]
        return {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion", "created": int(time.time()),
                "model": model, "choices": choices, "strength": float(strength) if model != self.base_name else 0.0,
                "usage": {k: usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}}

    async def complete(self, prompt: str, **kwargs) -> dict:
        if self.pending >= self.max_queue:
            raise ServeError(503, "queue_full", f"{self.pending} completions queued or running (limit "
                             f"{self.max_queue}); retry later", {"Retry-After": str(self.retry_after())})
        self.pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, lambda: self.complete_sync(prompt, **kwargs))
        finally:
            self.pending -= 1

    def metrics_text(self) -> str:
        """llama.cpp's own Prometheus text (tokens/s, slots busy), for ``/metrics``."""
        out = self._server.handle_metrics()
        return out if isinstance(out, str) else ""
