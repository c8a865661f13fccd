"""The speech servers the serve tests share: REAL ``lorakit serve`` processes on 127.0.0.1, free ports.

Model: tiny-whisper (random weights, special tokens suppressed as in tests/test_export.py) exported
to CTranslate2 int8 with a ``lorakit_export.json`` recording a 5 s training window. Its transcripts
are garbage, but deterministic: enough to check that served text equals the kit's offline decoding.

Two servers start once per test session: ``server`` (API keys, small limits so each refusal is cheap
to trigger) and ``tight`` (no keys, queue of 1, 3 uploads in flight, a 3 s upload deadline, for
overload and slow clients). The limits they start with are in ``helpers``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serve.helpers import (
    KEY_A,
    KEY_B,
    KEY_C,
    MAX_AUDIO_SECONDS,
    MAX_BODY_MB,
    PER_KEY,
    READ_TIMEOUT,
    TEST_MANIFEST,
    TIGHT_UPLOAD_TIMEOUT,
    WINDOW,
)


@pytest.fixture(scope="session")
def tiny_ct2(tmp_path_factory):
    """tiny-whisper -> CTranslate2 int8 folder with a sidecar saying it was trained with a 5 s window."""
    import shutil

    pytest.importorskip("ctranslate2")
    from lorakit_nb.adapter_files import ExportSidecar
    from lorakit_nb.export.ct2 import export_ct2
    from lorakit_nb.models.resolve import resolve_model

    tmp = tmp_path_factory.mktemp("serve_model")
    hf = tmp / "hf"
    shutil.copytree(resolve_model("tiny-whisper", quiet=True).path, hf)
    gen = json.loads((hf / "generation_config.json").read_text())
    gen["suppress_tokens"] = list(range(50258, 51865))  # random weights: no timestamps / specials
    (hf / "generation_config.json").write_text(json.dumps(gen))
    ct2 = export_ct2(hf, tmp / "ct2_int8", "int8")
    ExportSidecar(base_model="tiny-whisper", audio_seconds=30,
                  trained_with={"audio_seconds": WINDOW, "language": "zh"}).save(ct2)
    return ct2


@pytest.fixture(scope="session")
def servers(tiny_ct2, tmp_path_factory):
    from lorakit_nb.serve.client import ServerProcess

    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(f"# test keys\n{KEY_A}\n\n{KEY_B}\n{KEY_C}\n")
    tmpdir = tmp_path_factory.mktemp("server_tmp")
    main = ServerProcess(tiny_ct2, key_file=keys, env={"TMPDIR": str(tmpdir)},
                         args=["--max-body-mb", MAX_BODY_MB, "--read-timeout", READ_TIMEOUT, "--rate", 5,
                               "--burst", 30, "--max-wait-ms", 50, "--threads", 1, "--max-uploads-per-key", PER_KEY,
                               "--max-audio-seconds", MAX_AUDIO_SECONDS])
    tight = ServerProcess(tiny_ct2, args=["--no-auth", "--max-queue", 1, "--max-batch", 1, "--max-wait-ms", 0,
                                          "--max-concurrency", 3, "--read-timeout", 5, "--rate", 0,
                                          "--upload-timeout", TIGHT_UPLOAD_TIMEOUT, "--threads", 1])
    main.launch(), tight.launch()
    try:
        main.wait_ready(), tight.wait_ready()
        main.tmpdir, main.tmp_before = tmpdir, sorted(p.name for p in tmpdir.iterdir())
        yield main, tight
    finally:
        main.stop(), tight.stop()


@pytest.fixture(scope="session")
def server(servers):
    return servers[0]


@pytest.fixture(scope="session")
def client(server):
    import httpx

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY_A}"}, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def clips():
    """(bytes of the first 8 test clips as stored (FLAC), their decoded 16 kHz samples)."""
    from lorakit_nb.speech.data import load_manifest, read_audio

    if not TEST_MANIFEST.is_file():
        pytest.skip("speech data not generated")
    rows = load_manifest(TEST_MANIFEST)[:8]
    return [Path(r["audio"]).read_bytes() for r in rows], [read_audio(r["audio"]) for r in rows]
