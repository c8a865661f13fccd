"""Load a running ``lorakit serve`` and measure it: closed-loop sweeps, open-loop overload, offline baselines.

Covers:
- ``closed_loop``: ``concurrency`` async clients (httpx), each sending the next clip as soon as its
  previous answer is back, for at most ``requests`` requests or ``seconds`` seconds. Reports clips/s,
  audio seconds per second, latency p50/p95/p99 (ms) of the successful requests and a count of every
  non-200 status or transport error.
- ``open_loop``: requests fired on a fixed schedule (``rate`` per second) whether or not earlier ones
  have finished - the way real traffic overloads a server; reports the same numbers.
- ``sweep``: ``closed_loop`` at each concurrency level.
- ``offline_baseline``: the same clips transcribed in-process with ``export.ct2.ct2_transcribe``:
  batched throughput (batch 8) and the time of each clip alone (batch 1).
- ``complete_texts``: text prompts through ``POST /v1/completions`` with ``concurrency`` clients in
  flight (greedy, one adapter at one strength), answers cut as ``text.evaluate.first_line`` cuts them,
  in the input order, with the wall time and the tokens llama.cpp generated; ``text_sweep`` does it
  at each concurrency level.
- ``transcribe_files``: audio files through ``POST /v1/audio/transcriptions`` (optionally with OpenAI's
  ``prompt``) with ``concurrency`` clients in flight, transcripts in the input order.
- ``timed_stream``: one clip streamed (``stream=true``) with the ``openai`` client: each event with the
  seconds since the request was sent.
- ``percentile`` (linear interpolation, as numpy's default); ``run_sync`` (a coroutine from sync code or Jupyter).

Does not: start the server (``client.ServerProcess``), plot, or judge the numbers.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np


def run_sync(coro):
    """Run a coroutine to completion from sync code, also inside Jupyter (whose event loop is already running)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # a fresh loop in a worker thread
        return pool.submit(asyncio.run, coro).result()


def percentile(values, q: float) -> float:
    """q-th percentile (0-100) of ``values``; NaN for none. Example: percentile([1, 2, 3, 4], 50) -> 2.5."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else float("nan")


def _summary(latencies, statuses, audio, wall, **extra) -> dict:
    ok = len(latencies)
    return {**extra, "requests": sum(statuses.values()), "ok": ok,
            "errors": {str(k): v for k, v in sorted(statuses.items(), key=str) if k != 200},
            "wall_s": wall, "clips_per_s": ok / wall if wall > 0 else float("nan"),
            "audio_s_per_s": audio / wall if wall > 0 else float("nan"),
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99), "mean_ms": float(np.mean(latencies)) if ok else float("nan")}


async def _one(ac, clip: bytes, route: str, latencies, statuses, audio_box, seconds: float):
    import httpx

    from lorakit_nb.serve.client import b64

    t0 = time.perf_counter()
    try:
        if route == "inference":
            r = await ac.post("/inference", json={"audio": b64(clip)})
        else:
            r = await ac.post("/v1/audio/transcriptions", files={"file": ("clip.flac", clip)},
                              data={"model": "whisper-1"})
        status = r.status_code
    except httpx.HTTPError as e:
        status = type(e).__name__
    statuses[status] += 1
    if status == 200:
        latencies.append(1000 * (time.perf_counter() - t0))
        audio_box[0] += seconds


def _client(url: str, key: str | None, concurrency: int):
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits)


async def closed_loop(url, key, clips, seconds_each, *, concurrency: int, requests: int, seconds: float = 60,
                      route: str = "transcriptions") -> dict:
    """``concurrency`` clients in a loop over ``clips`` (bytes), at most ``requests`` in total or ``seconds``."""
    latencies, statuses, audio = [], Counter(), [0.0]
    counter = iter(range(requests))
    t0 = time.perf_counter()
    async with _client(url, key, concurrency) as ac:
        async def worker():
            for i in counter:
                if time.perf_counter() - t0 > seconds:
                    return
                k = i % len(clips)
                await _one(ac, clips[k], route, latencies, statuses, audio, seconds_each[k])

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    return _summary(latencies, statuses, audio[0], time.perf_counter() - t0, concurrency=concurrency)


async def open_loop(url, key, clips, seconds_each, *, rate: float, seconds: float,
                    route: str = "transcriptions") -> dict:
    """Fire ``rate`` requests per second for ``seconds`` s regardless of answers; wait for all of them."""
    latencies, statuses, audio = [], Counter(), [0.0]
    n = max(1, int(rate * seconds))
    t0 = time.perf_counter()
    async with _client(url, key, n) as ac:
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            k = i % len(clips)
            tasks.append(asyncio.create_task(_one(ac, clips[k], route, latencies, statuses, audio, seconds_each[k])))
        await asyncio.gather(*tasks)
    return _summary(latencies, statuses, audio[0], time.perf_counter() - t0, rate=rate, offered=n)


def sweep(url, key, clips, seconds_each, levels=(1, 2, 4, 8, 16), *, requests_per_level=None,
          seconds_per_level: float = 30, route: str = "transcriptions", warmup: int = 2) -> list[dict]:
    """``closed_loop`` at each concurrency; ``requests_per_level(c)`` defaults to max(3 c, 12) capped at 48."""
    per_level = requests_per_level or (lambda c: min(48, max(3 * c, 12)))
    if warmup:
        run_sync(closed_loop(url, key, clips, seconds_each, concurrency=1, requests=warmup, route=route))
    return [run_sync(closed_loop(url, key, clips, seconds_each, concurrency=c, requests=per_level(c),
                                    seconds=seconds_per_level, route=route)) for c in levels]


def offline_baseline(model_dir, audios, *, batch_size: int = 8, threads: int | None = None,
                     single_clips: int | None = None, compute_type: str = "int8") -> dict:
    """In-process CTranslate2 on the same clips and window as the server (the export's training window).

    Returns {"batched_clips_per_s", "batched_audio_s_per_s", "single_ms" (each clip alone), "single_p50_ms",
    "single_p95_ms", "hypotheses_single", "hypotheses_batched", "window"}.
    """
    from transformers import WhisperProcessor

    from lorakit_nb.export.ct2 import ct2_transcribe, load_ct2
    from lorakit_nb.speech.window import SAMPLE_RATE, set_processor_window, window_of

    window = window_of(model_dir)
    processor = WhisperProcessor.from_pretrained(model_dir)
    set_processor_window(processor, window)
    model = load_ct2(model_dir, compute_type, threads)
    ct2_transcribe(model, processor, audios[:1], batch_size=1)  # warm-up
    t0 = time.perf_counter()
    batched = ct2_transcribe(model, processor, audios, batch_size=batch_size)
    wall = time.perf_counter() - t0
    single, single_ms = [], []
    for a in audios[:single_clips or len(audios)]:
        t1 = time.perf_counter()
        single += ct2_transcribe(model, processor, [a], batch_size=1)
        single_ms.append(1000 * (time.perf_counter() - t1))
    audio_s = sum(len(a) for a in audios) / SAMPLE_RATE
    return {"window": window, "batch_size": batch_size, "batched_clips_per_s": len(audios) / wall,
            "batched_audio_s_per_s": audio_s / wall, "single_ms": single_ms,
            "single_p50_ms": percentile(single_ms, 50), "single_p95_ms": percentile(single_ms, 95),
            "hypotheses_single": single, "hypotheses_batched": batched}


async def transcribe_files(url, key, clips, *, prompt: str | None = None, concurrency: int = 8) -> list[str]:
    """Every clip (file bytes) through ``/v1/audio/transcriptions``, in input order; raises on any non-200.

    ``prompt``: OpenAI's ``prompt`` field (Whisper's previous text), the same for every clip; None: none sent.
    Example: run_sync(transcribe_files(srv.url, KEY, [open("a.flac", "rb").read()], prompt="季度、缺陷")) -> ["..."]
    """
    texts = [""] * len(clips)
    gate = asyncio.Semaphore(concurrency)
    form = {"model": "whisper-1", **({"prompt": prompt} if prompt else {})}

    async def one(ac, i):
        async with gate:
            r = await ac.post("/v1/audio/transcriptions", files={"file": (f"clip{i}.wav", clips[i])}, data=form)
        if r.status_code != 200:
            raise RuntimeError(f"/v1/audio/transcriptions answered {r.status_code} for clip {i}: {r.text[:300]}")
        texts[i] = r.json()["text"]

    async with _client(url, key, concurrency) as ac:
        await asyncio.gather(*[one(ac, i) for i in range(len(clips))])
    return texts


def timed_stream(base_url, key, data: bytes, *, filename: str = "clip.wav", **fields) -> list[tuple[float, object]]:
    """[(seconds since the request, event)] of one clip streamed through ``/v1/audio/transcriptions``.

    ``base_url`` ends in /v1 (``ServerProcess.base_url``); the events are the ``openai`` client's
    (``.type`` "transcript.text.delta" with ``.delta``, the last "transcript.text.done" with ``.text``);
    ``fields``: more of the client's arguments (``prompt``, ``response_format``).
    Example: [(0.41, TranscriptionTextDeltaEvent(delta="你好", ...)), (0.41, TranscriptionTextDoneEvent(...))]
    """
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key=key or "none", max_retries=0)
    t0, arrivals = time.perf_counter(), []
    for event in client.audio.transcriptions.create(model="whisper-1", file=(filename, data), stream=True,
                                                       **fields):
        arrivals.append((time.perf_counter() - t0, event))
    return arrivals


async def complete_texts(url, key, prompts, *, model: str, strength: float | None = None, concurrency: int = 4,
                         max_tokens: int = 40, stop=("\n",)) -> dict:
    """Every prompt through ``/v1/completions`` (at most ``concurrency`` in flight); raises on any non-200.

    Returns {"outputs" (first lines, input order), "wall_seconds", "completion_tokens", "latencies_ms",
    "tokens_per_s"}. Example: run_sync(complete_texts(srv.url, KEY, prompts, model="wu-mandarin", strength=0.8))
    """
    from lorakit_nb.text.evaluate import first_line

    outputs, tokens, latencies = [""] * len(prompts), [0] * len(prompts), [0.0] * len(prompts)
    gate = asyncio.Semaphore(concurrency)

    async def one(ac, i):
        body = {"model": model, "prompt": prompts[i], "max_tokens": max_tokens, "stop": list(stop), "temperature": 0}
        if strength is not None:
            body["strength"] = strength
        async with gate:
            t0 = time.perf_counter()
            r = await ac.post("/v1/completions", json=body)
            latencies[i] = (time.perf_counter() - t0) * 1000
        if r.status_code != 200:
            raise RuntimeError(f"/v1/completions answered {r.status_code} for prompt {i}: {r.text[:300]}")
        out = r.json()
        outputs[i], tokens[i] = first_line(out["choices"][0]["text"]), out["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    async with _client(url, key, concurrency) as ac:
        await asyncio.gather(*[one(ac, i) for i in range(len(prompts))])
    wall = time.perf_counter() - t0
    return {"outputs": outputs, "wall_seconds": wall, "completion_tokens": sum(tokens),
            "latencies_ms": latencies, "tokens_per_s": sum(tokens) / wall if wall > 0 else 0.0}


def text_sweep(url, key, prompts, *, model: str, strength: float | None = None, levels=(1, 4, 8),
               max_tokens: int = 40) -> list[dict]:
    """``complete_texts`` at each concurrency: [{"concurrency", "tokens_per_s", "p50_ms", "p95_ms", "wall_seconds",
    "completion_tokens", "outputs"}] (tokens as llama.cpp counts them, the stop newline included)."""
    rows = []
    for c in levels:
        r = run_sync(complete_texts(url, key, prompts, model=model, strength=strength, concurrency=c,
                                    max_tokens=max_tokens))
        rows.append({"concurrency": c, "tokens_per_s": r["tokens_per_s"], "wall_seconds": r["wall_seconds"],
                     "completion_tokens": r["completion_tokens"], "p50_ms": percentile(r["latencies_ms"], 50),
                     "p95_ms": percentile(r["latencies_ms"], 95), "outputs": r["outputs"]})
    return rows
