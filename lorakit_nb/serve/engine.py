"""The model behind the service, and the dynamic batcher that feeds it.

Covers:
- ``Engine.__init__``: load a CTranslate2 Whisper folder (notebook 04's ``ct2_int8``) with
  ``export.ct2.load_ct2``, its processor with the window the model was trained with (recorded in
  ``lorakit_export.json``, the same rule ``lorakit evaluate`` uses), and the decoder prompt
  ``<|startoftranscript|><|zh|><|transcribe|><|notimestamps|>`` from ``export.ct2.prompt_ids``.
- ``Engine.transcribe`` (async): queue one clip and wait for its transcript. A single batcher task
  collects clips that arrive together - up to ``max_batch``, waiting at most ``max_wait_ms`` after
  the first - and decodes them as ONE CTranslate2 batch in a worker thread, so the event loop keeps
  accepting and refusing requests while the model runs.
- Bounded queue: more than ``max_queue`` clips admitted and not finished -> 503 ``queue_full`` with
  ``Retry-After`` estimated from recent batch times.

Decoding is the kit's, step for step: ``export.ct2.ct2_decode_batch`` (``speech.whisper.featurize``
at the model's window, greedy ``ct2_generate``, the per-clip token cap ``max_new_tokens_for``).
A batch runs with its longest clip's cap and every clip's tokens are then cut to its OWN cap, which
is what greedy decoding of that clip alone gives: a transcript never depends on which other
requests shared its batch. (``ct2_transcribe`` gives each offline batch its longest clip's cap, so
a clip that hits its cap may decode a few tokens further there than alone or here.)
``repetition_guard`` (``--repetition-guard``): the batch's looping rows are decoded again, as
``ct2_decode_batch`` does offline; each batch reports how many fired / were replaced to ``on_batch``.

Does not: parse HTTP, check keys or sizes (``app``, ``limits``, ``security``), run on GPU, beam-search,
or split clips longer than the window (``routes_speech`` cuts them with ``export.longform`` and
queues each piece here).
"""
from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorakit_nb.errors import ExportError
from lorakit_nb.serve.errors import ServeError
from lorakit_nb.speech.window import SAMPLE_RATE


@dataclass
class Transcript:
    """One clip's result. ``queue_seconds``: admitted -> its batch started; ``batch_size``: clips in that batch."""

    text: str
    tokens: list[int]
    seconds: float
    queue_seconds: float
    decode_seconds: float
    batch_size: int


@dataclass
class _Job:
    audio: np.ndarray
    future: asyncio.Future
    enqueued: float
    prompt: tuple = ()  # decoder prompt ids; () -> the engine's own (no previous text)


class Engine:
    """A CTranslate2 Whisper plus a dynamic batcher. Example::

        engine = Engine("runs/04/ct2_int8")        # loads the model and processor (a few seconds)
        await engine.start()                         # inside the server's event loop
        (await engine.transcribe(samples)).text      # samples: 16 kHz mono float32
    """

    def __init__(self, model_dir, *, compute_type: str = "int8", threads: int | None = None,
                 audio_seconds: int | None = None, language: str | None = None, max_batch: int = 8,
                 max_wait_ms: float = 10.0, max_queue: int = 32, per_second: float = 6.0, name: str | None = None,
                 on_batch=None, repetition_guard: bool = False):
        from transformers import WhisperProcessor

        from lorakit_nb.adapter_files import ExportSidecar
        from lorakit_nb.export.ct2 import load_ct2, prompt_ids
        from lorakit_nb.speech.window import set_processor_window, window_of

        folder = Path(model_dir).expanduser()
        if not folder.is_dir():
            raise ExportError(f"{folder}: no such model folder; pass the CTranslate2 folder notebook 04 wrote "
                              "(e.g. --model runs/04/ct2_int8)")
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ExportError("--max-batch and --max-queue must be >= 1 and --max-wait-ms >= 0")
        self.model = load_ct2(folder, compute_type, threads)  # raises ExportError without model.bin
        try:
            self.processor = WhisperProcessor.from_pretrained(folder)
        except Exception as e:
            raise ExportError(f"{folder}: cannot load the tokenizer/feature extractor ({e}); the folder needs "
                              "tokenizer.json and preprocessor_config.json, as export_ct2 writes") from None
        sidecar = ExportSidecar.load(folder)
        self.window = window_of(folder, override=audio_seconds)
        set_processor_window(self.processor, self.window)
        trained = (sidecar.trained_with if sidecar else None) or {}
        self.language = language or trained.get("language") or "zh"
        self.prompt = prompt_ids(self.processor.tokenizer, self.language)
        self.base_model = (sidecar.base_model if sidecar else "") or "whisper"
        self.name = name or f"lorakit-{Path(self.base_model).name}-{folder.name}".replace("_", "-")
        self.compute_type, self.folder = compute_type, folder
        import torch

        self.threads = int(threads or torch.get_num_threads())  # what load_ct2 gave CTranslate2
        self.max_batch, self.max_wait, self.max_queue = int(max_batch), max_wait_ms / 1000.0, int(max_queue)
        self.per_second, self.on_batch = float(per_second), on_batch
        self.repetition_guard = bool(repetition_guard)
        self.pending = 0  # admitted and not finished (queued or decoding)
        self.batches = 0
        self._batch_seconds = 0.0  # moving average, for Retry-After
        self._queue: asyncio.Queue | None = None
        self._task = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ct2-decode")

    # ---- decoding (worker thread) -------------------------------------------------------------
    def decode(self, audios, prompts=None, guard_stats: dict | None = None) -> list[tuple[str, list[int]]]:
        """Transcribe clips as ONE batch per distinct prompt, synchronously: [(text, token ids)], in input order.

        ``prompts``: one decoder prompt (ids) per clip, () for the engine's own; default: all the engine's own.
        ``guard_stats``: what the repetition guard did (``speech.repetition.replace_repetitive``), when on.
        """
        from lorakit_nb.export.ct2 import ct2_decode_batch

        prompts = [tuple(p) or tuple(self.prompt) for p in (prompts or [()] * len(audios))]
        out = [None] * len(audios)
        for prompt in dict.fromkeys(prompts):  # CTranslate2 wants one prompt length per batch
            idx = [i for i, p in enumerate(prompts) if p == prompt]
            for i, r in zip(idx, ct2_decode_batch(self.model, self.processor, [audios[i] for i in idx], list(prompt),
                                                  per_second=self.per_second, repetition_guard=self.repetition_guard,
                                                  guard_stats=guard_stats)):
                out[i] = r
        return out

    # ---- batching (event loop) ----------------------------------------------------------------
    async def start(self) -> None:
        """Start the batcher in the running loop, after one warm-up decode of silence and one VAD pass.

        The VAD pass loads the Silero model for long clips now, not on the first long request (onnxruntime
        also writes its one session file to TMPDIR then, at start, never per request).
        """
        from lorakit_nb.export.longform import vad_segments

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self.decode, [np.zeros(SAMPLE_RATE // 2, np.float32)])
        await loop.run_in_executor(self._executor, vad_segments, np.zeros(SAMPLE_RATE, np.float32), self.window)
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="lorakit-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def ready(self) -> bool:
        return self._task is not None and not self._task.done() and self.pending < self.max_queue

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the batches ahead of it at the recent batch time."""
        return max(1, math.ceil((self.pending / self.max_batch + 1) * max(self._batch_seconds, 0.05)))

    async def transcribe(self, audio: np.ndarray, prompt_text: str | None = None) -> Transcript:
        """Queue one clip (16 kHz mono float32) and return its ``Transcript``; 503 when the queue is full.

        ``prompt_text``: Whisper's previous-text prompt (``export.ct2.prompt_ids``); None: none.
        """
        if self._queue is None:
            raise ServeError(503, "not_ready", "the model is still loading; retry shortly", {"Retry-After": "1"})
        if self.pending >= self.max_queue:
            raise ServeError(503, "queue_full", f"the server is at capacity ({self.pending} clips queued or "
                             f"decoding, limit {self.max_queue}); retry after the Retry-After seconds",
                             {"Retry-After": str(self.retry_after())})
        self.pending += 1
        from lorakit_nb.export.ct2 import prompt_ids

        prompt = tuple(prompt_ids(self.processor.tokenizer, self.language, prompt_text)) if prompt_text else ()
        job = _Job(audio, asyncio.get_running_loop().create_future(), time.perf_counter(), prompt)
        try:
            self._queue.put_nowait(job)
            return await job.future
        finally:
            self.pending -= 1

    async def _collect(self) -> list[_Job]:
        """The next batch: everything already waiting (up to max_batch), topped up until max_wait after the first."""
        batch = [await self._queue.get()]
        while len(batch) < self.max_batch:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = batch[0].enqueued + self.max_wait - time.perf_counter()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except (asyncio.TimeoutError, TimeoutError):
                break
        return [j for j in batch if not j.future.done()]  # a client that gave up is not decoded

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            started, guard = time.perf_counter(), {}
            try:
                results = await loop.run_in_executor(self._executor, self.decode, [j.audio for j in batch],
                                                     [j.prompt for j in batch], guard)
            except Exception as e:  # a decoder failure fails this batch, not the server
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(ServeError(500, "decode_failed", f"decoding failed: {type(e).__name__}"))
                continue
            took = time.perf_counter() - started
            self.batches += 1
            self._batch_seconds = took if self.batches == 1 else 0.8 * self._batch_seconds + 0.2 * took
            audio_seconds = sum(len(j.audio) for j in batch) / SAMPLE_RATE
            if self.on_batch is not None:
                self.on_batch(len(batch), took, audio_seconds, guard.get("fired", 0), guard.get("replaced", 0))
            for j, (text, ids) in zip(batch, results):
                if not j.future.done():
                    j.future.set_result(Transcript(text, ids, len(j.audio) / SAMPLE_RATE, started - j.enqueued,
                                                   took, len(batch)))
