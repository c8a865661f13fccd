"""`lorakit serve --adapter NAME=PATH`: the llama.cpp text route against a REAL server process.

Base: the offline gemma-3-270m q4_k_m GGUF. Adapters: one synthetic peft adapter (tests/adapters.py, random
B large enough to change the output) served twice, as a peft folder (exported at start-up) and as a .gguf
exported here, so both paths must give the same text. Greedy decoding with 2 parallel slots, requests one at
a time for the equality checks. Every bad input asserts its status AND its JSON error code; the last test
checks the server still answers correctly. The parity with notebook 02's trained adapters is notebook 05's.
"""
from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("xllamacpp")
httpx = pytest.importorskip("httpx")

from lorakit_nb.export.gguf import export_gguf_adapter  # noqa: E402
from lorakit_nb.models.packs import gemma_gguf  # noqa: E402
from lorakit_nb.serve.client import ServerProcess  # noqa: E402
from tests.adapters import write_adapter  # noqa: E402

KEY = "test-key-text-" + "t" * 24
PROMPT = "Translate Wu dialect to Mandarin: 侬今朝开心伐？\nMandarin:"
COMPLETIONS = "/v1/completions"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("text_route")
    base = gemma_gguf()
    folder = write_adapter(tmp / "wu", base, targets=("q_proj", "v_proj", "o_proj"), r=4, alpha=8, b_scale=0.3)
    gguf_file = export_gguf_adapter(folder, tmp / "wu.gguf", base)["path"]
    args = ["--adapter", f"wu-peft={folder}", "--adapter", f"wu-gguf={gguf_file}", "--parallel", "2",
            "--rate", "0", "--max-queue", "8", "--request-timeout", "300"]  # a loaded CI machine is slow, not broken
    tmpdir = tmp / "server_tmp"  # the server's TMPDIR: where it exports the peft adapter at start
    tmpdir.mkdir()
    with ServerProcess(None, keys=[KEY], args=args, startup_timeout=300, env={"TMPDIR": str(tmpdir)}) as srv:
        srv.tmpdir = tmpdir
        yield srv


def post(srv, body, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(srv.url + COMPLETIONS, json=body, headers=headers, timeout=120, **kw)


def complete(srv, model, strength=None, max_tokens=12):
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "stop": ["\n"]}
    if strength is not None:
        body["strength"] = strength
    r = post(srv, body)
    assert r.status_code == 200, r.text
    return r.json()


def test_models_lists_base_and_adapters(server):
    r = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    kinds = {m["id"]: m.get("kind") for m in r.json()["data"]}
    assert kinds == {"gemma-3-270m": "base", "wu-peft": "lora-adapter", "wu-gguf": "lora-adapter"}


def test_strength_routes_the_adapter(server):
    base = complete(server, "gemma-3-270m")
    assert base["object"] == "text_completion" and base["usage"]["completion_tokens"] >= 1
    assert base["strength"] == 0.0
    off = complete(server, "wu-gguf", strength=0)
    on = complete(server, "wu-gguf")  # strength defaults to 1.0
    assert on["strength"] == 1.0
    assert off["choices"][0]["text"] == base["choices"][0]["text"], "strength 0 must be the base model"
    assert on["choices"][0]["text"] != base["choices"][0]["text"], "the adapter did not change the output"
    # the peft folder, exported at start-up, is the same adapter as the .gguf file
    assert complete(server, "wu-peft")["choices"][0]["text"] == on["choices"][0]["text"]
    # a request for one adapter leaves the others at 0: the base is still the base afterwards
    assert complete(server, "gemma-3-270m")["choices"][0]["text"] == base["choices"][0]["text"]


@pytest.mark.parametrize("body, status, code", [
    ({"model": "wu-shanghai", "prompt": PROMPT}, 404, "model_not_found"),
    ({"prompt": PROMPT}, 400, "missing_model"),
    ({"model": "wu-gguf", "prompt": "  "}, 400, "empty_prompt"),
    ({"model": "wu-gguf", "prompt": ["a", "b"]}, 400, "invalid_prompt"),
    ({"model": "wu-gguf", "prompt": PROMPT, "strength": 1.5}, 400, "invalid_strength"),
    ({"model": "wu-gguf", "prompt": PROMPT, "strength": -0.1}, 400, "invalid_strength"),
    ({"model": "wu-gguf", "prompt": PROMPT, "strength": "0.8"}, 400, "invalid_strength"),
    ({"model": "gemma-3-270m", "prompt": PROMPT, "strength": 0.8}, 400, "invalid_strength"),
    ({"model": "wu-gguf", "prompt": PROMPT, "max_tokens": 0}, 400, "invalid_max_tokens"),
    ({"model": "wu-gguf", "prompt": PROMPT, "max_tokens": 100000}, 400, "invalid_max_tokens"),
    ({"model": "wu-gguf", "prompt": PROMPT, "stream": True}, 400, "unsupported_stream"),
    ({"model": "wu-gguf", "prompt": PROMPT, "stop": ["a"] * 5}, 400, "invalid_stop"),
    ({"model": "wu-gguf", "prompt": "侬" * 9000}, 413, "prompt_too_large"),
    # under the character cap but over the 512-token slot
    ({"model": "wu-gguf", "prompt": "侬今朝开心伐，" * 300}, 400, "context_length_exceeded"),
])
def test_bad_requests_get_their_documented_error(server, body, status, code):
    r = post(server, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code, r.text


def test_auth_and_body_type(server):
    assert post(server, {"model": "wu-gguf", "prompt": PROMPT}, key=None).status_code == 401
    assert post(server, {"model": "wu-gguf", "prompt": PROMPT}, key="wrong-" + "w" * 30).status_code in (401, 403)
    r = httpx.post(server.url + COMPLETIONS, content=b"{not json", timeout=10,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = httpx.post(server.url + COMPLETIONS, content=b"prompt=x", timeout=10,
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "text/plain"})
    assert r.status_code == 415, r.text


def test_speech_routes_say_there_is_no_speech_model(server):
    r = httpx.post(server.url + "/inference", json={"audio": ""}, headers={"Authorization": f"Bearer {KEY}"},
                   timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", r.text


def test_concurrent_requests_all_answer_and_are_counted(server):
    async def go():
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"model": "wu-gguf", "prompt": PROMPT, "max_tokens": 8, "strength": 0.8}
            return await asyncio.gather(*[client.post(server.url + COMPLETIONS, json=body,
                                                      headers={"Authorization": f"Bearer {KEY}"}) for _ in range(4)])

    responses = asyncio.run(go())
    assert [r.status_code for r in responses] == [200] * 4
    assert all(r.json()["strength"] == 0.8 for r in responses)
    text = httpx.get(server.url + "/metrics", timeout=10).text
    assert "lorakit_completion_tokens_total" in text and "lorakit_generation_seconds" in text
    assert "llamacpp:" in text  # llama.cpp's own counters, appended


def test_still_correct_after_the_errors(server):
    assert complete(server, "wu-gguf", strength=0)["choices"][0]["text"] == \
        complete(server, "gemma-3-270m")["choices"][0]["text"]


def test_exported_gguf_temp_files_are_removed_on_shutdown(server):
    """Runs last: the adapter exported at start lives in TMPDIR/lorakit-gguf-* while serving, and is gone
    once the server stopped on SIGTERM (uvicorn re-raises the signal, so only the app's shutdown can do it)."""
    exported = list(server.tmpdir.glob("lorakit-gguf-*/*.gguf"))
    assert exported and exported[0].stat().st_size > 10_000, list(server.tmpdir.iterdir())
    server.stop()
    assert server.proc.returncode is not None
    assert not list(server.tmpdir.glob("lorakit-gguf-*")), list(server.tmpdir.iterdir())
