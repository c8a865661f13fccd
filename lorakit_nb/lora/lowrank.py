"""Why low rank works: SVD of a weight update, and a small "LoRA vs full fine-tuning" fit.

Covers: `svd_reconstruction_error` (best rank-k approximation error, Eckart–Young), `make_low_rank_task`
(a linear regression whose true update has a known rank) and `fit_linear` (train full or LoRA on it).
Does not: say anything about real LLM updates beyond what notebook 01 measures on its toy example.
"""
from __future__ import annotations

import torch
from torch import nn

from lorakit_nb.lora.layer import LoRALinear


def svd_reconstruction_error(delta: torch.Tensor, ranks) -> list[float]:
    """Relative Frobenius error of the best rank-k approximation of `delta`, for each k in `ranks`.

    By Eckart–Young the best rank-k error is sqrt(sum of the squared singular values past k), so
    error(k) = sqrt(sum_{i>k} s_i^2) / sqrt(sum_i s_i^2).
    Example: delta = diag(3, 4) -> s = (4, 3); error(1) = 3 / 5 = 0.6, error(2) = 0.0.
    """
    s = torch.linalg.svdvals(delta.float())
    total = s.pow(2).sum()
    return [float(s[k:].pow(2).sum().sqrt() / total.sqrt()) for k in ranks]


def make_low_rank_task(d_in: int = 64, d_out: int = 64, true_rank: int = 4, n: int = 2048, seed: int = 0):
    """A frozen layer W0 and data y = (W0 + ΔW*) x with rank(ΔW*) = true_rank.

    Returns (base_linear, x, y, delta_true). x: (n, d_in), y: (n, d_out).
    """
    g = torch.Generator().manual_seed(seed)
    base = nn.Linear(d_in, d_out, bias=False)
    with torch.no_grad():
        base.weight.copy_(torch.randn(d_out, d_in, generator=g) / d_in ** 0.5)
    delta = (torch.randn(d_out, true_rank, generator=g) @ torch.randn(true_rank, d_in, generator=g)) / d_in
    x = torch.randn(n, d_in, generator=g)
    y = x @ (base.weight.detach() + delta).T
    return base, x, y, delta


def fit_linear(base: nn.Linear, x: torch.Tensor, y: torch.Tensor, rank: int | None, steps: int = 300,
               lr: float = 1e-2, seed: int = 0) -> float:
    """Fit y ≈ layer(x) with Adam and return the final mean squared error.

    rank=None trains a full copy of W (full fine-tuning); an int trains LoRA of that rank with
    alpha = rank (scaling 1), so only the update's rank differs between runs.
    """
    torch.manual_seed(seed)
    layer = nn.Linear(base.in_features, base.out_features, bias=False)
    layer.load_state_dict(base.state_dict())
    if rank is not None:
        layer = LoRALinear(layer, r=rank, alpha=rank)
    params = [p for p in layer.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        loss = nn.functional.mse_loss(layer(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(nn.functional.mse_loss(layer(x), y))
