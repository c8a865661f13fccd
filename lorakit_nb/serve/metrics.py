"""Prometheus metrics of the service (``GET /metrics``), one registry per application.

Covers ``ServeMetrics``: requests by route and status, request latency by route, audio seconds
transcribed, queue depth (clips admitted and not finished), uploads in flight, batch sizes, batch
decode time and real-time factor (decode seconds / audio seconds of a batch; below 1 is faster
than real time), clips the repetition guard re-decoded (``--repetition-guard``) and kept the retry of, and for the text route completions, generated tokens and generation time;
llama.cpp's own counters (``llamacpp:*``: tokens/s, busy slots) are appended when a text engine
runs. ``observe_request`` is fed by ``limits.LimitsMiddleware`` (so refusals count too),
``observe_batch`` by ``engine.Engine``, ``observe_completion`` by ``llm.TextEngine``. It also writes one access-log line per request: method-free
route, status, milliseconds, the caller's key id, the audio length and whether it was streamed - never
audio or keys. A stream that fails after its 200 counts under the failure's status (``serve.stream``).

Does not: push metrics anywhere (Prometheus scrapes), or keep per-key series (keys are unbounded).
"""
from __future__ import annotations

import logging

log = logging.getLogger("lorakit.serve")

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32)
RTF_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0)


class ServeMetrics:
    """Example: m = ServeMetrics(); m.observe_request("/inference", 200, 0.21, {}); m.render() -> bytes."""

    def __init__(self, queue_depth=lambda: 0, in_flight=lambda: 0, extra=None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("lorakit_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=r)
        self.latency = Histogram("lorakit_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.audio = Counter("lorakit_audio_seconds", "seconds of audio transcribed", registry=r)
        self.clips = Counter("lorakit_clips", "clips transcribed", registry=r)
        self.batch_size = Histogram("lorakit_batch_size", "clips per CTranslate2 batch", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.batch_seconds = Histogram("lorakit_batch_decode_seconds", "decode time per batch",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.rtf = Histogram("lorakit_real_time_factor", "decode seconds / audio seconds, per batch",
                             buckets=RTF_BUCKETS, registry=r)
        self.guard_fired = Counter("lorakit_repetition_guard_fired", "clips whose transcript looped and were "
                                   "decoded again (--repetition-guard)", registry=r)
        self.guard_replaced = Counter("lorakit_repetition_guard_replaced", "looping clips whose second "
                                      "decoding was kept (less repetitive)", registry=r)
        self.completion_tokens = Counter("lorakit_completion_tokens", "tokens generated on /v1/completions",
                                         registry=r)
        self.prompt_tokens = Counter("lorakit_prompt_tokens", "prompt tokens read on /v1/completions", registry=r)
        self.generation_seconds = Histogram("lorakit_generation_seconds", "llama.cpp time per completion",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.extra = extra
        Gauge("lorakit_queue_depth", "clips admitted and not finished (queued or decoding)",
              registry=r).set_function(queue_depth)
        Gauge("lorakit_uploads_in_flight", "upload requests being received or processed",
              registry=r).set_function(in_flight)

    def observe_request(self, route: str, status: int, seconds: float, state: dict) -> None:
        """Count and log one answer. A streamed one (``serve.stream``) that failed after its 200 was sent
        counts under its failure's status (``state["stream_status"]``: 504 timeout, 499 client gone...)."""
        status = state.get("stream_status", status)
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        audio = state.get("audio_seconds")
        log.info("%s %d %.0f ms key=%s%s%s", route, status, 1000 * seconds, state.get("key_id", "-"),
                 f" audio={audio:.2f}s" if audio is not None else "", " stream" if state.get("streamed") else "")

    def observe_batch(self, size: int, seconds: float, audio_seconds: float, guard_fired: int = 0,
                      guard_replaced: int = 0) -> None:
        self.batch_size.observe(size)
        self.guard_fired.inc(guard_fired)
        self.guard_replaced.inc(guard_replaced)
        self.batch_seconds.observe(seconds)
        self.audio.inc(audio_seconds)
        self.clips.inc(size)
        if audio_seconds > 0:
            self.rtf.observe(seconds / audio_seconds)

    def observe_completion(self, seconds: float, prompt_tokens: int, completion_tokens: int) -> None:
        self.generation_seconds.observe(seconds)
        self.prompt_tokens.inc(prompt_tokens)
        self.completion_tokens.inc(completion_tokens)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        text = generate_latest(self.registry)
        if self.extra is not None:
            text += self.extra().encode()
        return text
