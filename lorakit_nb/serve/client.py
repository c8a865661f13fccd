"""Run ``lorakit serve`` as a real subprocess on 127.0.0.1 and talk to it: for tests, notebook 05, benchmarks.

Covers: ``free_port``; ``ServerProcess`` (start ``python -m lorakit_nb.cli serve ...`` on a free
port, wait for ``GET /ready``, keep its log in memory, report its RSS, stop it - also from
``atexit`` and on ``with`` exit, and the child stops itself if this process dies, so a failed cell
or test never leaves it running); ``wav_bytes``
(16-bit PCM WAV of float samples, in memory) and ``b64`` (base64 text of bytes).

Does not: serve anything itself (``app.serve`` does, in the child), or retry failed requests.
"""
from __future__ import annotations

import atexit
import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from lorakit_nb.errors import LorakitError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wav_bytes(samples, sample_rate: int = 16_000) -> bytes:
    """WAV (16-bit PCM) bytes of float samples in [-1, 1]; shape (n,) or (n, channels)."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class ServerProcess:
    """``lorakit serve`` in a child process. Example::

        with ServerProcess("runs/04/ct2_int8", keys=["k" * 32], args=["--rate", "0"]) as srv:
            httpx.get(srv.url + "/health")
    """

    def __init__(self, model_dir, *, keys=None, args=(), port: int | None = None, startup_timeout: float = 120,
                 env: dict | None = None, key_file=None):
        self.model_dir = str(model_dir) if model_dir else None
        self.keys, self.args = list(keys or []), [str(a) for a in args]
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self.startup_timeout, self.extra_env, self.key_file = startup_timeout, dict(env or {}), key_file
        self.proc: subprocess.Popen | None = None
        self._lines: list[str] = []

    def start(self) -> ServerProcess:
        """Launch the child and wait until ``GET /ready`` answers 200 (raises with its log if it dies)."""
        return self.launch().wait_ready()

    def launch(self) -> ServerProcess:
        """Start the child without waiting (start several servers, then ``wait_ready`` each)."""
        model = ["--model", self.model_dir] if self.model_dir else []  # None: text models only (args carry --adapter)
        cmd = [sys.executable, "-m", "lorakit_nb.cli", "serve", *model, "--host", "127.0.0.1",
               "--port", str(self.port), *self.args]
        env = {**os.environ, "LORAKIT_SERVE_EXIT_WITH_PARENT": "1", **self.extra_env}  # never outlives us
        if self.key_file:
            cmd += ["--api-key-file", str(self.key_file)]
        if self.keys:
            env["LORAKIT_API_KEYS"] = ",".join(self.keys)  # not on the command line: ps would show it
        elif not self.key_file and "--no-auth" not in self.args:
            cmd.append("--no-auth")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     encoding="utf-8", errors="replace", cwd=str(Path(__file__).resolve().parents[2]))
        atexit.register(self.stop)
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def wait_ready(self) -> ServerProcess:
        import httpx

        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LorakitError(f"lorakit serve exited with code {self.proc.returncode}:\n{self.log()[-2000:]}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise LorakitError(f"lorakit serve not ready after {self.startup_timeout:g} s:\n{self.log()[-2000:]}")

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self._lines.append(line)

    def log(self) -> str:
        """Everything the server printed so far (stdout and stderr)."""
        return "".join(self._lines)

    def rss_mb(self) -> float:
        """Resident memory of the server process, MB."""
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 1e6

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
