"""LoRA from first principles: one adapted linear layer, injection, merging, parameter counts.

    h = W0 x + (alpha / r) * B (A x)        W0: (d_out, d_in) frozen, A: (r, d_in), B: (d_out, r)

B starts at zero, so at initialisation the adapted layer computes exactly W0 x: training starts from
the pretrained model, not from a perturbed one. rsLoRA replaces alpha / r by alpha / sqrt(r) so the
update's scale does not shrink as the rank grows.

Covers: `LoRALinear` (same initialisation, dropout placement and scaling as peft's `lora.Linear`),
`inject_lora` (swap named nn.Linear modules; `lora.dora.inject_dora` does the same with DoRA layers),
merge/unmerge, `copy_lora_weights` between this layer and peft's, and parameter counting from real
module shapes.
Does not: quantize (see peft + bitsandbytes in notebook 03), handle Conv/Embedding layers, or manage
several adapters per layer (peft does that; notebook 02 uses it).
"""
from __future__ import annotations

import math

import torch
from torch import nn


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update B @ A.

    Example:
        >>> base = nn.Linear(16, 8)
        >>> layer = LoRALinear(base, r=4, alpha=8)          # scaling = 8 / 4 = 2.0
        >>> x = torch.randn(2, 16)
        >>> torch.equal(layer(x), base(x))                  # B == 0 at init
        True
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0,
                 use_rslora: bool = False):
        super().__init__()
        if r <= 0:
            raise ValueError(f"LoRA rank r must be a positive integer, got {r}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.use_rslora = r, alpha, use_rslora
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        d_out, d_in = base.weight.shape
        self.lora_A = nn.Parameter(torch.empty(r, d_in, dtype=base.weight.dtype))   # (r, d_in)
        self.lora_B = nn.Parameter(torch.zeros(d_out, r, dtype=base.weight.dtype))  # (d_out, r)
        # Same init as peft: A ~ kaiming-uniform (a=sqrt(5), nn.Linear's default), B = 0.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        # Dropout acts on the input of the LoRA path only; the frozen path sees the clean x.
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """ΔW = scaling * B @ A, shape (d_out, d_in): what merging adds to W0."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (..., d_in)
        h = self.base(x)                                  # (..., d_out)
        if self.merged:
            return h
        # Multiply A first: (..., d_in) -> (..., r) -> (..., d_out). Never materialise ΔW here.
        return h + self.scaling * (self.dropout(x) @ self.lora_A.T @ self.lora_B.T)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold ΔW into W0 so inference costs exactly one matmul (idempotent)."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ΔW again, restoring W0 (up to float rounding)."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def merged_weight(self) -> torch.Tensor:
        """W0 + ΔW, shape (d_out, d_in): what merging leaves in the Linear (a variant overrides only this)."""
        return self.base.weight.detach().clone() if self.merged else self.base.weight + self.delta_weight()

    def merged_linear(self) -> nn.Linear:
        """A plain nn.Linear holding `merged_weight()`: what `merge_and_unload` leaves behind."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.merged_weight())
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"


def _matches(name: str, targets) -> bool:
    # Same rule as peft for a list of names: the module's last dotted component equals a target.
    return name.split(".")[-1] in set(targets)


def inject_lora(model: nn.Module, target_modules=("q_proj", "v_proj"), r: int = 8, alpha: float = 16,
                dropout: float = 0.0, use_rslora: bool = False, layer_cls=None) -> list[str]:
    """Freeze `model` and replace every nn.Linear whose name ends in a target by a LoRALinear
    (or by `layer_cls`, a subclass taking the same arguments: `lora.dora.inject_dora` passes DoRALinear).

    Returns the replaced module names. Raises if nothing matched (a typo in target_modules is the
    usual cause, so the error lists the Linear names that do exist).
    """
    layer_cls = layer_cls or LoRALinear
    for p in model.parameters():
        p.requires_grad_(False)
    replaced = []
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Linear) and _matches(name, target_modules):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, layer_cls(module, r, alpha, dropout, use_rslora))
            replaced.append(name)
    if not replaced:
        linear = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"No nn.Linear matched target_modules={list(target_modules)}. "
                         f"Linear layer names in this model: {linear}")
    return replaced


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear (DoRALinear too) by its merged nn.Linear (our `merge_and_unload`)."""
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.merged_linear())
    return model


@torch.no_grad()
def copy_lora_weights(src, dst, adapter_name: str = "default") -> None:
    """Copy A and B between a `LoRALinear` and a peft `lora.Linear` (either direction).

    peft keeps them in per-adapter ModuleDicts: `lora_A[adapter].weight` is (r, d_in) and
    `lora_B[adapter].weight` is (d_out, r) — the same shapes as ours.
    """
    def tensors(layer):
        if isinstance(layer, LoRALinear):
            return layer.lora_A, layer.lora_B
        return layer.lora_A[adapter_name].weight, layer.lora_B[adapter_name].weight

    (a_src, b_src), (a_dst, b_dst) = tensors(src), tensors(dst)
    a_dst.copy_(a_src)
    b_dst.copy_(b_src)


def lora_params_for_linear(d_out: int, d_in: int, r: int) -> int:
    """Trainable parameters LoRA adds to one (d_out, d_in) linear layer: r * (d_in + d_out).

    Example: a 4096 x 4096 q_proj with r=8 -> 8 * (4096 + 4096) = 65,536.
    """
    return r * (d_in + d_out)


def count_lora_params(model: nn.Module, target_modules=("q_proj", "v_proj"), r: int = 8) -> dict:
    """Count what LoRA would add to `model`, from its real module shapes (works on a meta-device model).

    Returns {"modules": n_adapted, "lora_params": added, "base_params": total, "percent": 100*added/total}.
    Example: LLaMA-2-7B (32 layers, d=4096), r=8 on q_proj and v_proj -> 64 modules x 65,536 = 4,194,304.
    """
    added, modules = 0, 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and _matches(name, target_modules):
            added += lora_params_for_linear(m.out_features, m.in_features, r)
            modules += 1
    base = sum(p.numel() for p in model.parameters())
    return {"modules": modules, "lora_params": added, "base_params": base, "percent": 100.0 * added / base}


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts: the kit's one counter, the numbers peft's
    ``print_trainable_parameters`` shows.

    A PeftModel is asked directly (``get_nb_trainable_parameters``); any other module is summed here
    the same way: a bitsandbytes 4-bit weight stores two values per byte, so it counts twice its
    ``numel`` (its logical, unpacked size). Example: a 4x4 Linear with bias -> (20, 20).
    """
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    trainable = total = 0
    for p in model.parameters():
        n = p.numel() * (2 if p.__class__.__name__ == "Params4bit" else 1)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
