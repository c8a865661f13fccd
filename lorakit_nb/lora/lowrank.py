"""Why low rank works: SVD of a weight update, and a small "LoRA vs full fine-tuning" fit.

Covers: `svd_reconstruction_error` (best rank-k approximation error, Eckart–Young), `low_rank` (that best
rank-k matrix), `best_rank_mse` (the lowest regression MSE any rank-k update can reach), `make_low_rank_task`
(a linear regression whose true update has a known rank), `fit_linear` (train full or LoRA on it) and
`update_norm_vs_rank` (how big the update s·B A is as the rank grows, with alpha / r or rsLoRA's alpha / sqrt(r)).
Does not: say anything about real LLM updates beyond what notebook 01 measures on its toy example.
"""
from __future__ import annotations

import math

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


def low_rank(delta: torch.Tensor, k: int) -> torch.Tensor:
    """The best rank-k approximation of `delta` (truncated SVD, Eckart–Young).

    Example: low_rank(diag(3, 4), 1) -> diag(0, 4).
    """
    u, s, vh = torch.linalg.svd(delta.float(), full_matrices=False)
    return (u[:, :k] * s[:k]) @ vh[:k]


def best_rank_mse(x: torch.Tensor, delta: torch.Tensor, ranks) -> dict[int, float]:
    """For each k in `ranks`: the MSE left on the outputs x @ delta.T by delta's best rank-k part, `low_rank`.

    This is what a rank-k update that learned the SVD's truncation of `delta` leaves on the data.
    Example: x = eye(2), delta = diag(3, 4) -> {1: 2.25, 2: 0.0} (rank 1 keeps the 4, misses the 3: 3² over 2 × 2 entries).
    """
    return {k: (x @ (delta - low_rank(delta, k)).T).pow(2).mean().item() for k in ranks}


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


def update_norm_vs_rank(ranks, alpha: float = 16, d: int = 256, b_std: float = 0.01, steps: int = 20,
                        lr: float = 1e-4, seed: int = 0) -> dict:
    """‖s·B A‖_F of a (d x d) LoRA layer for each rank, with s = alpha / r ("lora") and alpha / sqrt(r) ("rslora").

    Two situations, both with A at peft's init (kaiming-uniform: entries of variance 1 / (3 d), whatever r):
    - "init": B drawn with entries of a FIXED size `b_std`, the same for every r (rsLoRA's premise: the
      entries of A and B do not depend on r). (B A)_ij sums r independent terms, so
      ‖B A‖_F ≈ b_std·sqrt(d·r / 3) and ‖s·B A‖_F grows like s·sqrt(r): alpha / r shrinks it as
      1 / sqrt(r), alpha / sqrt(r) keeps it at alpha·b_std·sqrt(d / 3).
    - "adam": B = 0 (peft's init), then `steps` Adam steps at a typical LoRA learning rate `lr` on a
      regression to a randomly perturbed W0 (the same data for every r): the update learned early in
      training. Adam moves each entry of B by about `lr` per step whatever s is, so early on the update
      again scales with s: with alpha / r it shrinks as r grows, with alpha / sqrt(r) it does not.
      (Trained to convergence, both would reach the same best rank-r fit: s sets the speed, not the goal.)
    Returns {"ranks": [...], "init": {"lora": [...], "rslora": [...]}, "adam": {...}}, one norm per rank.
    Example: d = 256, alpha = 16, b_std = 0.01: "init" "lora" at r = 4 ≈ 16 / 4 · 0.01 · sqrt(256 · 4 / 3)
    = 0.74, at r = 16 half of that; "rslora" ≈ 16 · 0.01 · sqrt(256 / 3) = 1.48 at every r.
    """
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(d, d, generator=g) / d ** 0.5                  # (d_out, d_in)
    target = w0 + 0.1 * torch.randn(d, d, generator=g) / d ** 0.5
    x = torch.randn(2 * d, d, generator=g)                          # (n, d_in)
    y = x @ target.T                                                # (n, d_out)
    out = {"ranks": list(ranks), "init": {"lora": [], "rslora": []}, "adam": {"lora": [], "rslora": []}}
    for r in ranks:
        g_r = torch.Generator().manual_seed(seed + r)  # the same A and B for both scalings at one rank
        a0 = nn.init.kaiming_uniform_(torch.empty(r, d), a=math.sqrt(5), generator=g_r)  # (r, d_in), peft's init
        b_fixed = b_std * torch.randn(d, r, generator=g_r)                                # (d_out, r)
        for name, s in (("lora", alpha / r), ("rslora", alpha / math.sqrt(r))):
            out["init"][name].append(float((s * b_fixed @ a0).norm()))
            a, b = a0.clone().requires_grad_(), torch.zeros(d, r, requires_grad=True)
            opt = torch.optim.Adam([a, b], lr=lr)
            for _ in range(steps):
                loss = nn.functional.mse_loss(x @ (w0 + s * b @ a).T, y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            out["adam"][name].append(float((s * b @ a).detach().norm()))
    return out
