"""DoRA from first principles: a LoRA update split into a direction and a learned magnitude.

DoRA (Liu et al., 2024, "Weight-Decomposed Low-Rank Adaptation") writes the adapted weight as

    W' = m ⊙ V / ‖V‖,      V = W0 + s·B A,      s = alpha / r  (rsLoRA: alpha / sqrt(r))

with W0: (d_out, d_in) frozen, A: (r, d_in), B: (d_out, r) as in LoRA, and m: (d_out,) trainable.
‖V‖ is ONE NORM PER OUTPUT UNIT, taken over the d_in inputs: `torch.linalg.norm(V, dim=1)` on
PyTorch's (d_out, d_in) weight (the paper calls it the column norm because it writes the weight
transposed, d_in x d_out). m starts at ‖W0‖ (B = 0 there), so step 0 computes exactly W0 x + b.
The bias is not rescaled. As the paper suggests (section 4.3) and peft does, ‖V‖ is DETACHED: it is
recomputed from the current B and A every forward pass, but treated as a constant in backprop.

Covers: `DoRALinear` (same forward, dropout placement, merge and unmerge as peft's
`LoraConfig(use_dora=True)` layer), `copy_dora_weights` between this layer and peft's.
Does not: handle Conv/Embedding layers, quantized bases or several adapters per layer (peft does).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lorakit_nb.lora.layer import LoRALinear, copy_lora_weights, inject_lora


class DoRALinear(LoRALinear):
    """A frozen nn.Linear, a LoRA update s·B A, and a trainable magnitude per output unit.

    Example:
        >>> base = nn.Linear(3, 2, bias=False)
        >>> _ = base.weight.data.copy_(torch.tensor([[3., 4., 0.], [0., 0., 2.]]))
        >>> DoRALinear(base, r=1, alpha=1).magnitude.tolist()   # ‖(3, 4, 0)‖ = 5, ‖(0, 0, 2)‖ = 2
        [5.0, 2.0]
    """

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16, dropout: float = 0.0,
                 use_rslora: bool = False):
        super().__init__(base, r, alpha, dropout, use_rslora)
        self.magnitude = nn.Parameter(self.weight_norm().clone())  # (d_out,): ‖W0‖ per row, as B = 0
        self._merged_norm = None  # the norm used at merge time, needed to unmerge exactly

    def weight_norm(self, detach: bool = True) -> torch.Tensor:
        """‖W0 + s·B A‖ per output unit, shape (d_out,); detached unless `detach=False`.

        `detach=False` exists only to show what the detaching changes (notebook 01, the tests).
        """
        norm = torch.linalg.vector_norm(self.base.weight + self.delta_weight(), dim=1)  # (d_out,)
        return norm.detach() if detach else norm

    def dora_factor(self, detach: bool = True) -> torch.Tensor:
        """m / ‖W0 + s·B A‖, shape (d_out,): 1.0 everywhere at init."""
        return self.magnitude / self.weight_norm(detach)

    def forward(self, x: torch.Tensor, detach_norm: bool = True) -> torch.Tensor:  # x: (..., d_in)
        if self.merged:
            return self.base(x)
        g = self.dora_factor(detach_norm)                                   # (d_out,)
        bias = self.base.bias
        if isinstance(self.dropout, nn.Identity) or not self.training:  # W' x + b = g ⊙ (W0 x + s·B A x) + b
            out = g * (F.linear(x, self.base.weight) + self.scaling * (x @ self.lora_A.T @ self.lora_B.T))
            return out if bias is None else out + bias
        xd = self.dropout(x)
        lora = self.scaling * (xd @ self.lora_A.T @ self.lora_B.T)          # (..., d_out)
        # With dropout (peft's placement): the frozen path sees the clean x, the DoRA correction
        # (g - 1) ⊙ W0 x_d and the rescaled LoRA term see the dropped-out x_d.
        return self.base(x) + (g - 1) * F.linear(xd, self.base.weight) + g * lora

    def merged_weight(self) -> torch.Tensor:
        """W' = g ⊙ (W0 + ΔW), rows scaled: what merging leaves in the Linear, shape (d_out, d_in).

        Once merged, the Linear already holds W' (recomputing from it would rescale twice).
        """
        if self.merged:
            return self.base.weight.detach().clone()
        return self.dora_factor()[:, None] * (self.base.weight + self.delta_weight())

    @torch.no_grad()
    def merge(self) -> None:
        """Replace W0 by g ⊙ (W0 + ΔW) (idempotent); the norm is kept so `unmerge` can invert it."""
        if not self.merged:
            self._merged_norm = self.weight_norm()
            self.base.weight.copy_(self.merged_weight())
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W0 = W' / g - ΔW with the g used at merge time (up to float rounding)."""
        if self.merged:
            g = self.magnitude / self._merged_norm
            self.base.weight.copy_(self.base.weight / g[:, None] - self.delta_weight())
            self.merged, self._merged_norm = False, None

    def extra_repr(self) -> str:
        return super().extra_repr() + ", dora=True"


def inject_dora(model: nn.Module, target_modules=("q_proj", "v_proj"), r: int = 8, alpha: float = 16,
                dropout: float = 0.0, use_rslora: bool = False) -> list[str]:
    """`layer.inject_lora` with DoRALinear layers. Example: inject_dora(model, ["q_proj"], r=4) -> ["q_proj"]"""
    return inject_lora(model, target_modules, r, alpha, dropout, use_rslora, layer_cls=DoRALinear)


@torch.no_grad()
def copy_dora_weights(src, dst, adapter_name: str = "default") -> None:
    """Copy A, B and the magnitude between a `DoRALinear` and a peft DoRA `lora.Linear` (either way).

    peft keeps the magnitude in `lora_magnitude_vector[adapter].weight`, shape (d_out,) like ours.
    """
    def magnitude(layer):
        if isinstance(layer, DoRALinear):
            return layer.magnitude
        vectors = getattr(layer, "lora_magnitude_vector", {})
        if adapter_name not in vectors:
            raise ValueError(f"{type(layer).__name__} has no DoRA magnitude for adapter {adapter_name!r}: build it "
                             "with DoRALinear or peft's LoraConfig(use_dora=True) (copy_lora_weights copies plain LoRA)")
        return vectors[adapter_name].weight

    src_m, dst_m = magnitude(src), magnitude(dst)  # both checked before anything is copied
    copy_lora_weights(src, dst, adapter_name)
    dst_m.copy_(src_m)
