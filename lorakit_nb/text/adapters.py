"""Saved LoRA adapters and their strength: load several on one base, scale - peft's own API.

Covers: a Trainer callback that keeps named adapters' checkpoints where `load_best_model_at_end` looks; loading
several saved adapters onto ONE base (switch with `set_adapter`); reading and scaling LoRA strength.

On strength: the `PeftModel.from_pretrained(model, path, weight_scale=0.8)` seen in blog posts is not
a peft argument (peft 0.21 accepts and silently ignores it). peft scales a LoRA layer's contribution
through `LoraLayer.scaling[adapter]` (= lora_alpha / r at load): `peft.helpers.rescale_adapter_scale(
model, m)` multiplies it by m inside a `with` block, `LoraLayer.set_scale(adapter, m)` sets m * alpha / r.
Does not: save an adapter (`io.save_adapter` is the one writer; a text run passes it a `TrainSidecar`),
train (`text/train.py`), generate or score (`text/evaluate.py`), merge adapters into the base.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback

from lorakit_nb.adapter_files import TrainSidecar


class FlatAdapterCheckpoints(TrainerCallback):
    """Copy a named adapter's files to the checkpoint folder's top level after each save.

    peft saves an adapter not called "default" one folder down (checkpoint-29/mandarin/...), while
    Trainer's load_best_model_at_end looks for adapter_model.safetensors at checkpoint-29/ and would
    otherwise warn and keep the LAST weights instead of the best.
    """

    def __init__(self, adapter_name: str):
        self.name = adapter_name

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # several processes (torchrun): the one that wrote copies
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.name != "default" and (ckpt / self.name).is_dir():
            for f in (ckpt / self.name).iterdir():
                shutil.copy2(f, ckpt / f.name)


def lora_scalings(model, adapter: str | None = None) -> list[float]:
    """Current `scaling[adapter]` of every LoRA layer (alpha / r times any multiplier in force)."""
    from peft.tuners.lora import LoraLayer

    adapter = adapter or model.active_adapter
    return [m.scaling[adapter] for m in model.modules() if isinstance(m, LoraLayer) and adapter in m.scaling]


@contextmanager
def adapter_scale(model, scale: float):
    """Inside the block, every LoRA update is multiplied by `scale` (0 = base model, 1 = as trained).

    Thin wrapper over peft's `rescale_adapter_scale`, which restores the scalings on exit even after
    an error. Example: with adapter_scale(model, 0.5): out = model.generate(...)  # half-strength adapter
    """
    from peft.helpers import rescale_adapter_scale

    with rescale_adapter_scale(model, float(scale)):
        yield model


def load_adapters(base_model, adapters: dict, is_trainable: bool = False):
    """One PeftModel holding several saved adapters on ONE copy of the base; the first is active.

    Example: m = load_adapters(base, {"mandarin": "runs/02/mandarin/adapter", "english": ".../adapter"})
             m.set_adapter("english")  # switch in microseconds, no reload
    """
    from peft import PeftModel

    (first, path), *rest = adapters.items()
    model = PeftModel.from_pretrained(base_model, path, adapter_name=first, is_trainable=is_trainable)
    for name, p in rest:
        model.load_adapter(p, adapter_name=name, is_trainable=is_trainable)
    model.set_adapter(first)
    return model


def adapter_train_config(adapter_dir) -> dict:
    """The training settings saved with an adapter (template, target, base model), or {} if none."""
    sidecar = TrainSidecar.load(adapter_dir)
    # unset fields are left out, so callers' .get(key, default) keep their defaults
    return {k: v for k, v in sidecar.to_dict().items() if k != "schema" and v != ""} if sidecar else {}
