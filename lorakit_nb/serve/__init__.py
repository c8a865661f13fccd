"""``lorakit serve``: the fine-tuned Whisper (notebook 04's CTranslate2 folder) as an HTTP service.

Covers: an OpenAI-compatible ``POST /v1/audio/transcriptions`` (``stream=true``: one server-sent event
per decoded piece, ``stream``), a JSON ``POST /inference``, health, readiness, model listing and
Prometheus metrics; API keys, per-key rate limits, body/duration caps, timeouts and a bounded queue;
dynamic batching of concurrent requests into one CTranslate2 batch.
Modules: ``errors`` (the JSON error shape), ``audio`` (uploads -> 16 kHz mono float32),
``security`` (keys, token buckets), ``engine`` (model + batcher), ``limits`` (ASGI byte cap, read
and upload deadlines, admission overall and per key), ``metrics``, ``settings`` (every flag and default),
``context`` (what routes share), ``routes_speech`` / ``routes_text`` (the model routes), ``protocol``
(JSON 400 for malformed HTTP), ``stream`` (OpenAI's transcript events), ``app`` (the app, info routes,
``serve``), ``client`` (a subprocess launcher for tests, notebooks and benchmarks), ``loadtest`` (an
async load generator).

Does not: terminate TLS (put a reverse proxy in front, see README), train, export or evaluate models,
stream tokens within a piece, or time words (decoding is ``<|notimestamps|>`` greedy; a long clip's segment
times are its voice-activity pieces', ``export.longform``).
"""
