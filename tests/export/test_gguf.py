"""`export_gguf_adapter` / `lorakit export gguf`: peft LoRA folders -> llama.cpp LoRA GGUF, checked against the base.

The base is the real offline gemma-3-270m q4_k_m GGUF (its tensor shapes are what an adapter is checked against);
adapters are synthetic (tests/adapters.py) or a real peft adapter on tiny-gemma, which must be refused.
Every refusal is asserted on its message AND on leaving no file (or temp file) behind.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from lorakit_nb.cli import main  # noqa: E402
from lorakit_nb.errors import ExportError, MissingFileError  # noqa: E402
from lorakit_nb.export.gguf import export_gguf_adapter, read_gguf_header  # noqa: E402
from lorakit_nb.models.packs import gemma_gguf  # noqa: E402
from tests.adapters import write_adapter  # noqa: E402


@pytest.fixture(scope="module")
def base():
    return gemma_gguf()


def _nothing_written(folder, out):
    assert not out.exists()
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")], list(folder.iterdir())


def test_export_writes_a_llama_cpp_lora_gguf(tmp_path, base):
    from safetensors.numpy import load_file

    adapter = write_adapter(tmp_path / "a", base, targets=("q_proj", "v_proj"), r=4, alpha=8)
    info = export_gguf_adapter(adapter, tmp_path / "a.gguf", base)
    reader = gguf.GGUFReader(info["path"])
    fields = reader.fields
    assert fields["general.type"].contents() == "adapter" and fields["adapter.type"].contents() == "lora"
    assert fields["general.architecture"].contents() == "gemma3" == info["architecture"]
    assert fields["adapter.lora.alpha"].contents() == pytest.approx(8.0)  # peft scaling 8/4 = 2 -> alpha/r = 2
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == info["tensors"] == 2 * 2 * info["layers"] == 72
    state = load_file(str(adapter / "adapter_model.safetensors"))
    a = state["base_model.model.model.layers.3.self_attn.v_proj.lora_A.weight"]  # (r, in)
    b = state["base_model.model.model.layers.3.self_attn.v_proj.lora_B.weight"]  # (out, r)
    got_a = np.asarray(tensors["blk.3.attn_v.weight.lora_a"].data).reshape(a.shape)
    got_b = np.asarray(tensors["blk.3.attn_v.weight.lora_b"].data).reshape(b.shape)
    np.testing.assert_array_equal(got_a, a)
    np.testing.assert_array_equal(got_b, b)
    meta, dims = read_gguf_header(info["path"])  # the fast header reader agrees with the gguf package's
    assert meta["adapter.lora.alpha"] == pytest.approx(8.0) and meta["general.type"] == "adapter"
    assert dims == {name: tuple(int(n) for n in t.shape) for name, t in tensors.items()}


def test_rslora_strength_is_kept(tmp_path, base):
    """llama.cpp scales by alpha / r; an rsLoRA adapter (alpha / sqrt(r)) is written with alpha = sqrt(r) * alpha."""
    adapter = write_adapter(tmp_path / "rs", base, r=16, alpha=8, use_rslora=True)
    info = export_gguf_adapter(adapter, tmp_path / "rs.gguf", base)
    assert info["alpha"] == pytest.approx(8 / 16 ** 0.5 * 16)  # = 32: alpha / r = 2 = 8 / sqrt(16)
    assert gguf.GGUFReader(info["path"]).fields["adapter.lora.alpha"].contents() == pytest.approx(32.0)


@pytest.mark.parametrize("case, kwargs, message", [
    ("dora", {"use_dora": True}, "use_dora is true"),
    ("rank_pattern", {"rank_pattern": {"q_proj": 8}}, "rank_pattern is set"),
    ("rank", {"rank_in_weights": 2}, "says r = 4"),
    ("shape", {"fan_in_offset": 1}, "trained on another base model"),
    ("layers", {"layers": 20}, "has 18 layers"),
])
def test_mismatched_adapters_are_refused_with_the_reason(tmp_path, base, case, kwargs, message):
    adapter = write_adapter(tmp_path / case, base, r=4, **kwargs)
    out = tmp_path / "out" / f"{case}.gguf"
    out.parent.mkdir()
    with pytest.raises(ExportError, match=message):
        export_gguf_adapter(adapter, out, base)
    _nothing_written(out.parent, out)


def test_unsupported_module_is_named(tmp_path, base):
    from safetensors.numpy import load_file, save_file

    adapter = write_adapter(tmp_path / "emb", base, r=4)
    weights = adapter / "adapter_model.safetensors"
    state = load_file(str(weights))
    state["base_model.model.model.embed_tokens.lora_A.weight"] = np.zeros((4, 10), np.float32)
    save_file(state, str(weights))
    with pytest.raises(ExportError, match="embed_tokens.*cannot target"):
        export_gguf_adapter(adapter, tmp_path / "emb.gguf", base)
    _nothing_written(tmp_path, tmp_path / "emb.gguf")


def test_an_adapter_for_another_base_model_is_refused(tmp_path, base):
    """A real peft adapter trained shape-wise on tiny-gemma (hidden 64) cannot run on gemma-3-270m (hidden 640)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lorakit_nb.models.resolve import resolve_model

    model = AutoModelForCausalLM.from_pretrained(resolve_model("tiny-gemma", quiet=True).path)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "tiny")
    with pytest.raises(ExportError, match="another base model"):
        export_gguf_adapter(tmp_path / "tiny", tmp_path / "tiny.gguf", base)
    _nothing_written(tmp_path, tmp_path / "tiny.gguf")


def test_not_an_adapter_folder(tmp_path, base):
    with pytest.raises(MissingFileError, match="adapter_config.json"):
        export_gguf_adapter(tmp_path, tmp_path / "x.gguf", base)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    from safetensors.numpy import save_file

    save_file({}, str(tmp_path / "adapter_model.safetensors"))  # a valid (empty) file: the peft_type is refused
    with pytest.raises(ExportError, match="only LoRA"):
        export_gguf_adapter(tmp_path, tmp_path / "x.gguf", base)


def test_cli_export_gguf(tmp_path, base, capsys):
    adapter = write_adapter(tmp_path / "cli", base, targets=("q_proj", "k_proj", "v_proj", "o_proj"), r=2)
    assert main(["export", "gguf", "--adapter", str(adapter)]) == 0
    assert (tmp_path / "cli.gguf").is_file()
    assert "144 tensors" in capsys.readouterr().out
    assert main(["export", "gguf", "--adapter", str(tmp_path / "missing")]) == 1
    assert "adapter_config.json" in capsys.readouterr().err
