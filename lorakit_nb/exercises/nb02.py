"""Notebook 02's exercises (Wu-dialect text LoRA): reference solutions, checks, synthetic examples."""
from __future__ import annotations

from . import Exercise


def _best_scale(curve):
    return max(curve, key=lambda r: r["chrf"])["scale"]


def _check_best_scale(answer, curve):
    scales = [r["scale"] for r in curve]
    assert answer in scales, f"{answer!r} is not one of the scales on the dev curve: {scales}"
    best = max(r["chrf"] for r in curve)
    got = next(r["chrf"] for r in curve if r["scale"] == answer)
    assert got == best, (f"scale {answer} scores dev chrF {got:.2f}, but another scale reaches {best:.2f}: "
                         "pick the one with the highest DEV chrF (the test split is not looked at)")
    return f"scale {answer}, dev chrF {got:.2f}"


def _example_best_scale():
    curve = [{"scale": 0.0, "chrf": 15.0}, {"scale": 0.5, "chrf": 50.0}, {"scale": 1.0, "chrf": 55.4},
             {"scale": 1.2, "chrf": 51.0}]
    return {"curve": curve}, 1.2  # the edge of the grid, a tempting wrong pick


EXERCISES = {
    "02.2": Exercise("which strength would you ship?", solve=_best_scale, check=_check_best_scale,
                     example=_example_best_scale),
}


# ---------------------------------------------------------------- 02.1: fix the post's config
def _fix_post_config(post_config: dict, base_dir):
    fixed = {**post_config, "base_model": "gemma-3-270m", "train_data_dir": "../wu_dialect"}
    fixed.pop("metadata_path", None)  # our folder holds train.csv / dev.csv; a metadata.csv is not needed
    return fixed


def _check_fixed_config(answer, post_config: dict, base_dir):
    from lorakit_nb.errors import ConfigError
    from lorakit_nb.text.config import config_from_dict, data_files

    assert isinstance(answer, dict), f"answer with a dict (a fixed copy of post_config), not {type(answer).__name__}"
    try:
        checked = config_from_dict(answer, base_dir=base_dir, source="exercise 02.1")
    except ConfigError as err:  # the kit's own validation is the check: its message says what to fix
        raise AssertionError(f"the config still does not validate: {err}") from None
    assert data_files(checked)["train"].is_file(), "train_data_dir must hold train.csv"
    assert checked.lora_rank == post_config["lora_rank"] and checked.learning_rate == 1e-4, \
        "keep the post's training choices (rank 8, lr 1e-4): fix only what cannot work"
    return f"validates: {checked.base_model}, data {data_files(checked)['train'].parent.name}/, lr {checked.learning_rate}"


def _example_fix_post_config():
    from pathlib import Path

    post = {"train_data_dir": "./data/dialect_train", "metadata_path": "./data/dialect_train/metadata.csv",
            "base_model": "./models/llama-2-7b-chat.ggmlv3.q4_0.bin", "lora_rank": 8, "learning_rate": "1e-4"}
    base_dir = Path(__file__).resolve().parents[2] / "data" / "configs"
    return {"post_config": post, "base_dir": base_dir}, {**post, "base_model": "gemma-3-270m"}  # data path still wrong


# ---------------------------------------------------------------- 02.3: predict the adapter's size
def _adapter_bytes(shapes, r: int, adapter_bytes: int) -> int:
    return sum(r * (d_in + d_out) * 4 for d_in, d_out in shapes)  # A: r x d_in, B: d_out x r, float32


def _check_adapter_bytes(answer, shapes, r, adapter_bytes):
    assert isinstance(answer, int), f"answer with a whole number of bytes, not {answer!r}"
    header = adapter_bytes - answer
    smallest = min(r * (d_in + d_out) * 4 for d_in, d_out in shapes)
    # the header (tensor names and offsets, JSON) must be smaller than the smallest adapted layer: an answer
    # that leaves out any one layer, or counts one twice, cannot pass as "header"
    assert 0 <= header < smallest, (
        f"{answer:,} bytes predicted, the file has {adapter_bytes:,}: the difference ({header:,}) should be only the "
        f"safetensors header, smaller than the smallest layer's {smallest:,} bytes; each adapted Linear stores "
        "r * (d_in + d_out) float32 numbers, for EVERY entry of shapes")
    return f"{answer:,} bytes of tensors + {header:,} bytes of header = the file's {adapter_bytes:,}"


def _example_adapter_bytes():
    shapes = [(640, 1024), (640, 256), (1024, 640)]
    # the wrong answer leaves out one 106 kB layer (16 * 1664 * 4 bytes): it must not pass as header
    return ({"shapes": shapes, "r": 16, "adapter_bytes": 16 * 4 * (1664 + 896 + 1664) + 9_000},
            16 * 4 * (1664 + 896))


# ---------------------------------------------------------------- 02.4: tune r / alpha / lr on dev
def _tuned_values(score, target, reference):
    return dict(reference)  # the kit's config values reach the target at the short budget


def _check_tuned_values(answer, score, target, reference):
    from lorakit_nb.text.variants import TUNABLE

    assert isinstance(answer, dict) and answer, f"answer with a dict such as {reference}, not {answer!r}"
    unknown = set(answer) - set(TUNABLE)
    assert not unknown, f"only {TUNABLE} are tuned in this exercise, not {sorted(unknown)}"
    got = score(answer)  # trained briefly and scored on DEV (never test)
    assert got > target, (f"{answer} reaches dev chrF {got:.1f}, the target is {target:.1f}: at so few steps the "
                          "learning rate matters most; alpha / r scales the update too")
    return f"{answer}: dev chrF {got:.1f} > target {target:.1f}"


def _example_tuned_values():
    import math

    def score(values):  # a made-up dev surface: best near lr 1e-3, alpha / r = 2
        lr, r, alpha = values.get("learning_rate", 1e-4), values.get("lora_rank", 8), values.get("lora_alpha", 8)
        return 50 - 15 * abs(math.log10(lr) + 3) - 5 * abs(math.log2(alpha / r) - 1)

    reference = {"lora_rank": 16, "lora_alpha": 32, "learning_rate": 1e-3}
    return {"score": score, "target": 40.0, "reference": reference}, {"lora_rank": 8, "lora_alpha": 8,
                                                                       "learning_rate": 1e-4}


EXERCISES.update({
    "02.1": Exercise("fix the post's config", solve=_fix_post_config, check=_check_fixed_config,
                     example=_example_fix_post_config),
    "02.3": Exercise("predict the adapter file's size", solve=_adapter_bytes, check=_check_adapter_bytes,
                     example=_example_adapter_bytes),
    "02.4": Exercise("tune r / alpha / lr on dev to beat a chrF target", solve=_tuned_values,
                     check=_check_tuned_values, example=_example_tuned_values),
})
