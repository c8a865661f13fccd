"""``lorakit serve`` under slow and hostile clients (REAL server processes from ``conftest.py``).

A client dripping one byte every half second is cut at the upload deadline and its slot is free again;
one API key cannot hold more than its share of the upload slots; a client that hangs up mid-upload is
a 499 line, not a 500; a malformed Content-Length gets the kit's JSON 400.
"""
from __future__ import annotations

import json
import re
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("ctranslate2")
httpx = pytest.importorskip("httpx")

from lorakit_nb.serve.client import b64  # noqa: E402
from tests.serve.helpers import KEY_A, KEY_C, PER_KEY, TIGHT_UPLOAD_TIMEOUT, assert_error, raw_exchange  # noqa: E402


def _head(length: int | str, key: str | None = None) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST /inference HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
            f"Content-Length: {length}\r\n\r\n").encode()


def _status_and_error(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), raw[:200]
    return int(head.split()[1]), json.loads(body)["error"]


def test_slow_drip_hits_the_upload_deadline_and_frees_the_slot(servers, clips):
    """Tight server: 3 slots, 3 s to send a body, 5 s read gap. Three clients drip a byte every 0.5 s
    (never a gap long enough for the read timeout): while they hold every slot an upload gets 503; each
    is answered 408 ``upload_timeout`` about 3 s after its headers; then an upload gets 200.
    Before the total deadline, the drips held the slots for as long as they kept dripping (here 20 s)."""
    tight = servers[1]
    answers = [None] * 3

    def drip(i):
        answers[i] = raw_exchange(tight.port, _head(5000), [b" "] * 40, gap=0.5, timeout=30)

    threads = [threading.Thread(target=drip, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    assert_error(httpx.post(tight.url + "/inference", json={"audio": b64(clips[0][0])}), 503,
                 "too_many_requests_in_flight")
    for t in threads:
        t.join(40)
    for raw, seconds in answers:
        status, err = _status_and_error(raw)
        assert (status, err["code"]) == (408, "upload_timeout"), raw[:300]
        assert TIGHT_UPLOAD_TIMEOUT * 0.9 <= seconds < TIGHT_UPLOAD_TIMEOUT + 3, seconds
    r = httpx.post(tight.url + "/inference", json={"audio": b64(clips[0][0])}, timeout=30)
    assert r.status_code == 200, r.text


def test_one_key_cannot_take_every_slot(server, clips):
    """Main server: PER_KEY uploads in flight per key. Key C stalls PER_KEY uploads; its next upload gets
    429 ``too_many_uploads_for_key``, while key A (same server, 64 slots) still transcribes."""
    import socket

    socks = []
    try:
        for _ in range(PER_KEY):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(_head(5000, KEY_C) + b"{")
            socks.append(s)
        time.sleep(0.3)
        r = httpx.post(server.url + "/inference", json={"audio": b64(clips[0][0])},
                       headers={"Authorization": f"Bearer {KEY_C}"})
        assert_error(r, 429, "too_many_uploads_for_key")
        assert r.headers["retry-after"] == "1"
        r = httpx.post(server.url + "/inference", json={"audio": b64(clips[0][0])},
                       headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30)
        assert r.status_code == 200, r.text
    finally:
        for s in socks:
            s.close()


def test_client_gone_mid_upload_is_499_not_500(server):
    """Headers promise 100 kB, 1 kB arrives, the client hangs up: the access log says 499 in one line, no
    ERROR or traceback, and /metrics counts no 500 (before: ClientDisconnect -> 'internal error' -> 500)."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(_head(100_000, KEY_A) + b'{"audio": "' + b"A" * 1000)
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while "/inference 499" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log()
    assert "/inference 499" in log, log[-2000:]
    assert "Traceback" not in log and "internal error" not in log and " ERROR " not in log, log[-2000:]
    metrics = httpx.get(server.url + "/metrics").text
    assert re.search(r'^lorakit_requests_total\{route="/inference",status="499"\} [1-9]', metrics, re.M)
    assert not re.search(r'status="500"', metrics), "a hang-up was counted as a server error"


@pytest.mark.parametrize("length", ["abc", "-5", "12, 13"])
def test_malformed_content_length_gets_the_json_error_shape(server, length):
    raw, _ = raw_exchange(server.port, _head(length, KEY_A) + b"{}")
    status, err = _status_and_error(raw)
    assert status == 400 and err["code"] == "invalid_http_request" and err["type"] == "invalid_request_error"
    assert "Content-Length" in err["message"]
