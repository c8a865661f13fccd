"""Tests for lorakit_nb.text.config: the lora-scripts keys, typo hints, fail-fast file checks, YAML quirks."""
from pathlib import Path

import pytest
import yaml

from lorakit_nb.errors import ConfigError
from lorakit_nb.text.config import (
    TrainConfig,
    config_from_dict,
    data_files,
    load_config,
)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "data" / "configs"

# The seed article's config, key for key (it printed them on one line; YAML needs one per line).
SEED_YAML = """\
train_data_dir: "./data/dialect_train"
metadata_path: "./data/dialect_train/metadata.csv"
base_model: "./models/llama-2-7b-chat.ggmlv3.q4_0.bin"
task_type: "text-generation"
lora_rank: 8
batch_size: 2
epochs: 20
learning_rate: 1e-4
max_seq_length: 256
output_dir: "./output/wuyu_lora"
save_steps: 50
dropout: 0.1
"""

PAIRS = "wu,mandarin,english\n侬好,你好,Hello\n谢谢侬,谢谢你,Thank you\n"


def _data_dir(root: Path) -> Path:
    d = root / "wu"
    d.mkdir()
    for split in ("train", "dev"):
        (d / f"{split}.csv").write_text(PAIRS, encoding="utf-8")
    return d


def test_seed_keys_accepted_as_written():
    """Every key of the article's config is valid; values come through with the right types.

    `learning_rate: 1e-4` is the YAML 1.1 trap: without a dot PyYAML returns the STRING "1e-4"
    (checked below), and the loader must still produce the float 0.0001.
    """
    raw = yaml.safe_load(SEED_YAML)
    assert raw["learning_rate"] == "1e-4"  # the trap is real
    cfg = config_from_dict(raw, base_dir="/proj", check_files=False)
    assert cfg.learning_rate == pytest.approx(1e-4) and isinstance(cfg.learning_rate, float)
    assert (cfg.lora_rank, cfg.batch_size, cfg.epochs, cfg.max_seq_length, cfg.save_steps) == (8, 2, 20.0, 256, 50)
    assert cfg.dropout == pytest.approx(0.1)
    assert cfg.peft_task_type == "CAUSAL_LM"
    # relative paths are joined to base_dir (the config file's folder), not the current directory
    assert cfg.metadata_path == str(Path("/proj/data/dialect_train/metadata.csv").resolve())
    assert cfg.output_dir == str(Path("/proj/output/wuyu_lora").resolve())


def test_typo_names_key_line_and_nearest(tmp_path):
    """`lora_rnak` on line 3 -> the message names the file, line 3, the key and `lora_rank`."""
    path = tmp_path / "c.yaml"
    path.write_text("base_model: tiny-gemma\ntrain_data_dir: wu\nlora_rnak: 8\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path, check_files=False)
    msg = str(err.value)
    assert "line 3" in msg and "`lora_rnak`" in msg and "did you mean `lora_rank`" in msg and str(path) in msg
    with pytest.raises(ConfigError, match="did you mean `learning_rate`"):
        config_from_dict({"base_model": "tiny-gemma", "train_data_dir": "x", "learning_rat": 1e-4},
                         check_files=False)


def test_bad_values_are_named():
    """Wrong types and out-of-range values name the key; both `dropout` and its alias is ambiguous."""
    base = {"base_model": "tiny-gemma", "train_data_dir": "x"}
    for bad, key in (({"lora_rank": "eight"}, "lora_rank"), ({"learning_rate": "fast"}, "learning_rate"),
                     ({"quantization": "3bit"}, "quantization"), ({"target": "cantonese"}, "target"),
                     ({"prompt_template": "no placeholder"}, "prompt_template")):
        with pytest.raises(ConfigError, match=key):
            config_from_dict({**base, **bad}, check_files=False)
    with pytest.raises(ConfigError, match="second time"):
        config_from_dict({**base, "dropout": 0.1, "lora_dropout": 0.2}, check_files=False)


def test_missing_files_fail_before_training(tmp_path, monkeypatch):
    """A missing dev.csv or a missing local model raises ConfigError inside `train_from_config`
    BEFORE any model is loaded (the loader is replaced by one that fails the test if called)."""
    from lorakit_nb.text import train as text_lora

    monkeypatch.setattr(text_lora, "load_base_model", lambda cfg: pytest.fail("model loaded before the check"))
    d = _data_dir(tmp_path)
    (d / "dev.csv").unlink()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base_model: tiny-gemma\ntrain_data_dir: wu\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="dev file .*dev.csv not found"):
        text_lora.train_from_config(cfg)
    (d / "dev.csv").write_text(PAIRS, encoding="utf-8")
    cfg.write_text("base_model: ./models/missing_model\ntrain_data_dir: wu\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1.*missing_model"):
        text_lora.train_from_config(cfg)
    cfg.write_text("base_model: ./models/llama-2-7b-chat.ggmlv3.q4_0.bin\ntrain_data_dir: wu\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="GGML"):
        load_config(cfg)


def test_paths_relative_to_config_folder(tmp_path, monkeypatch):
    """Run from another folder: `train_data_dir: wu` still means <config folder>/wu."""
    d = _data_dir(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("base_model: tiny-gemma\ntrain_data_dir: wu\noutput_dir: out\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    c = load_config(cfg)
    assert data_files(c)["train"] == d / "train.csv" and data_files(c)["test"] is None
    assert c.output_dir == str(tmp_path / "out")
    # a Python override is relative to the current folder instead
    assert load_config(cfg, output_dir="runs").output_dir == str(elsewhere / "runs")


def test_shipped_configs_load():
    """The three committed configs validate; their data folder is the committed Wu corpus."""
    for name, target in (("wu_dialect_lora.yaml", "mandarin"), ("wu_to_english_lora.yaml", "english"),
                         ("wu_dialect_lora_gpu.yaml", "mandarin")):
        cfg = load_config(CONFIGS / name, check_files=False)
        assert isinstance(cfg, TrainConfig) and cfg.target == target
        assert all(p.is_file() for p in data_files(cfg).values() if p is not None)
        assert "{wu}" in cfg.template


@pytest.mark.parametrize("capability, expected", [("AVX2", "float32"), ("AVX512", "bfloat16"), ("DEFAULT", "float32")])
def test_dtype_auto_picks_bfloat16_only_where_the_cpu_has_avx512(monkeypatch, tmp_path, capability, expected):
    """`dtype: auto` becomes a concrete dtype when the config is read: on a CPU without AVX-512, torch
    has no fast bfloat16 matmul, so float32 (no speed figure is claimed here: this test measures none)."""
    import torch

    from lorakit_nb import env

    monkeypatch.setattr(env, "device", lambda: "cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    cfg = config_from_dict({"base_model": "tiny-gemma", "train_data_dir": str(_data_dir(tmp_path)), "dtype": "auto"},
                           check_files=False)
    assert cfg.dtype == expected


def test_dtype_auto_on_gpu(monkeypatch):
    """GPU: bfloat16 where the card has it (A100, H100), float16 otherwise (T4)."""
    import torch

    from lorakit_nb.env import fast_dtype

    for supported, expected in ((True, "bfloat16"), (False, "float16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda s=supported: s)
        assert fast_dtype(on_gpu=True) == expected


def test_adapter_variant_keys_validated():
    """The variant keys come through typed; the combinations that cannot work are refused, each naming
    the key and the fix: an unknown init lists the allowed values; PiSSA needs float base weights (no
    bitsandbytes base); PiSSA/OLoRA + DoRA cannot be saved converted; LoRA+ needs a ratio > 0."""
    base = {"base_model": "tiny-gemma", "train_data_dir": "x"}
    cfg = config_from_dict({**base, "use_dora": True, "use_rslora": True, "loraplus_lr_ratio": "16",
                            "target_modules": "all-linear"}, check_files=False)
    assert (cfg.use_dora, cfg.use_rslora, cfg.loraplus_lr_ratio) == (True, True, 16.0)  # DoRA + LoRA+ is fine
    assert cfg.target_modules == "all-linear" == cfg.peft_target_modules  # a string for peft, not ["a", "l", ...]
    defaults = config_from_dict(base, check_files=False)
    assert (defaults.use_dora, defaults.init_lora_weights, defaults.loraplus_lr_ratio) == (False, True, None)
    for init, expected in (("pissa_niter_4", "pissa_niter_4"), ("Gaussian", "gaussian"), (False, False),
                           ("false", False), ("olora", "olora")):
        c = config_from_dict({**base, "init_lora_weights": init}, check_files=False)
        assert c.init_lora_weights == expected
        assert c.reinitializes_base == (str(expected).startswith(("pissa", "olora")))
    with pytest.raises(ConfigError, match=r"init_lora_weights must be one of true, false, gaussian, pissa, "
                                          r"pissa_niter_N, olora.*'loftq'"):
        config_from_dict({**base, "init_lora_weights": "loftq"}, check_files=False)
    with pytest.raises(ConfigError, match="init_lora_weights must be one of"):
        config_from_dict({**base, "init_lora_weights": "pissa_niter_x"}, check_files=False)
    with pytest.raises(ConfigError, match="pissa rewrites the base weights.*4bit.*quantization: none"):
        config_from_dict({**base, "init_lora_weights": "pissa", "quantization": "4bit"}, check_files=False)
    with pytest.raises(ConfigError, match="use_dora: true cannot be saved.*Drop one"):
        config_from_dict({**base, "init_lora_weights": "pissa", "use_dora": True}, check_files=False)
    for ratio in (0, -2):
        with pytest.raises(ConfigError, match="loraplus_lr_ratio must be > 0"):
            config_from_dict({**base, "loraplus_lr_ratio": ratio}, check_files=False)
    with pytest.raises(ConfigError, match="`use_dora` must be true or false"):
        config_from_dict({**base, "use_dora": "yes please"}, check_files=False)
    with pytest.raises(ConfigError, match="write `target_modules: all-linear`"):
        config_from_dict({**base, "target_modules": ["q_proj", "all_linear"]}, check_files=False)


def test_variant_keys_from_yaml_with_line(tmp_path):
    """As YAML: `target_modules: all-linear` and `use_rslora: true` load; a bad init names its line."""
    path = tmp_path / "c.yaml"
    path.write_text("base_model: tiny-gemma\ntrain_data_dir: wu\ntarget_modules: all-linear\nuse_rslora: true\n"
                    "init_lora_weights: svd\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 5.*init_lora_weights must be one of"):
        load_config(path, check_files=False)
    path.write_text(path.read_text("utf-8").replace("svd", "pissa_niter_2"), encoding="utf-8")
    cfg = load_config(path, check_files=False)
    assert (cfg.target_modules, cfg.use_rslora, cfg.init_lora_weights) == ("all-linear", True, "pissa_niter_2")


@pytest.mark.parametrize("ratio", [1.5, 1.0, -0.1])
def test_warmup_ratio_outside_0_1_is_refused(ratio):
    """transformers 5 reads warmup_steps >= 1 as a step COUNT: an unchecked warmup_ratio 1.5 became 1 warmup
    step, silently. The config keeps it a fraction: 0 <= warmup_ratio < 1."""
    with pytest.raises(ConfigError, match=r"warmup_ratio is the fraction .* 0 <= warmup_ratio < 1"):
        config_from_dict({"base_model": "tiny-gemma", "train_data_dir": ".", "warmup_ratio": ratio}, check_files=False)


def test_warmup_ratio_reaches_trainer_as_a_ratio():
    """warmup_ratio 0.1 over 40 optimizer steps -> ceil(0.1 x 40) = 4 warmup steps, as Trainer computes them."""
    from lorakit_nb.text.train import _training_args

    cfg = config_from_dict({"base_model": "tiny-gemma", "train_data_dir": ".", "warmup_ratio": "0.1",
                            "output_dir": "unused"}, check_files=False)
    args = _training_args(cfg, n_train=8, on_gpu=False)
    assert args.get_warmup_steps(40) == 4 and args.get_warmup_steps(7) == 1


def test_field_types_come_from_the_annotations():
    """Each TrainConfig field is coerced by its annotation alone (no second list of int/float/bool keys):
    a whole-number field refuses 2.5, a float field takes "1e-4" (PyYAML's string for it), a bool field
    refuses "yes", a nullable float takes null. Checked over every field, so a new field is covered as declared."""
    import typing

    from lorakit_nb.text.config import _coerce

    hints = typing.get_type_hints(TrainConfig)
    kinds = {name: hints[name] for name in hints if name not in ("source", "target_modules", "init_lora_weights")}
    assert {kinds[k] for k in ("lora_rank", "dropout", "use_dora")} == {int, float, bool}
    for name, hint in kinds.items():
        if hint is int:
            assert _coerce(name, "3", "<t>") == 3
            with pytest.raises(ConfigError, match=f"`{name}` must be a whole number"):
                _coerce(name, 2.5, "<t>")
        elif hint in (float, float | None):
            assert _coerce(name, "1e-4", "<t>") == pytest.approx(1e-4)
            if hint is not float:
                assert _coerce(name, None, "<t>") is None
        elif hint is bool:
            with pytest.raises(ConfigError, match=f"`{name}` must be true or false"):
                _coerce(name, "yes", "<t>")
        else:
            assert _coerce(name, 7, "<t>") == "7"  # str fields: a number written bare stays text


def test_target_modules_check_sees_through_a_peft_wrapped_layer():
    """A model that already carries a LoRA on q_proj/v_proj (02b trains variants on such a model) still has
    q_proj and v_proj as layers: the check must name them, not the adapters' lora_A/lora_B or base_layer."""
    from peft import LoraConfig, get_peft_model

    from lorakit_nb.models.resolve import load_causal_lm
    from lorakit_nb.text.config_rules import linear_layer_names

    model, _ = load_causal_lm("tiny-gemma")
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]), adapter_name="plain")
    leaves = {n.rsplit(".", 1)[-1] for n in linear_layer_names(wrapped)}
    assert {"q_proj", "v_proj", "k_proj"} <= leaves and not leaves & {"base_layer", "plain", "lora_A", "lora_B"}
