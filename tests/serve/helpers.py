"""What the speech-server tests share: keys, limits the servers start with, clips and checks.

Covers: the constants ``conftest.py`` starts the servers with (keys, body cap, timeouts), ``tone``,
``long_clip`` (test clips joined past the window), ``post_file``, ``assert_error`` (status AND the kit's
JSON error shape), ``raw_exchange`` (bytes over a socket, for requests httpx will not send) and
``offline`` (the kit's own decoding, for parity).
Does not: start servers (``conftest.py``).
"""
from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TEST_MANIFEST = ROOT / "data" / "zh_speech" / "test.jsonl"
KEY_A, KEY_B = "test-key-a-" + "a" * 24, "test-key-b-" + "b" * 24  # B: the rate-limit burst only
KEY_C = "test-key-c-" + "c" * 24  # C: the per-key upload cap only
WRONG = "test-key-wrong-" + "z" * 24
WINDOW = 5
MAX_AUDIO_SECONDS = 30  # main server: longest clip (413 beyond); longer than WINDOW: cut by VAD
MAX_BODY_MB = 3
READ_TIMEOUT = 1.5        # main server: seconds without a body byte -> 408
PER_KEY = 8               # main server: uploads in flight per key -> 429
TIGHT_UPLOAD_TIMEOUT = 3  # tight server: seconds for a whole body -> 408
TRANSCRIBE = "/v1/audio/transcriptions"


def tone(seconds, sr=16000, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


def long_clip(audios, n: int = 6) -> np.ndarray:
    """The first ``n`` test clips with 0.5 s pauses after each: longer than WINDOW, so the server cuts it by VAD."""
    gap = np.zeros(8000, np.float32)
    return np.concatenate([x for a in audios[:n] for x in (a, gap)]).astype(np.float32)


def post_file(client, data, fields=None, **kw):
    return client.post(TRANSCRIBE, files={"file": ("clip.wav", data)}, data=fields or {"model": "whisper-1"}, **kw)


def assert_error(response, status, code):
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "code"}, body
    assert body["error"]["code"] == code, body
    assert len(body["error"]["message"]) > 20  # says what to send, not just a code
    return body["error"]


def offline(tiny_ct2, audios):
    """The kit's offline decoding of each clip alone: ct2_transcribe at the export's 5 s window."""
    from transformers import WhisperProcessor

    from lorakit_nb.export.ct2 import ct2_transcribe, load_ct2
    from lorakit_nb.speech.window import set_processor_window

    processor = WhisperProcessor.from_pretrained(tiny_ct2)
    set_processor_window(processor, WINDOW)
    return ct2_transcribe(load_ct2(tiny_ct2, "int8", 1), processor, audios, batch_size=1)


def raw_exchange(port: int, head: bytes, body_chunks=(), gap: float = 0.0, timeout: float = 30) -> tuple[bytes, float]:
    """Send ``head``, then each chunk ``gap`` seconds apart (stopping when the server answers), then read
    the whole answer. Returns (answer bytes, seconds from the first byte sent to the server closing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        t0 = time.perf_counter()
        s.sendall(head)
        s.setblocking(False)
        raw = b""
        for chunk in body_chunks:
            time.sleep(gap)
            try:
                raw += s.recv(65536)
                break  # the server answered: stop dripping
            except BlockingIOError:
                pass
            try:
                s.sendall(chunk)
            except OSError:
                break
        s.setblocking(True)
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            raw += chunk
        return raw, time.perf_counter() - t0
