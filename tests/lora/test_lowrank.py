"""The best-rank-k regression error, checked on a matrix whose SVD is known by hand."""
import torch

from lorakit_nb.lora.lowrank import best_rank_mse


def test_best_rank_mse_keeps_the_largest_singular_values():
    """delta = diag(3, 4): rank 1 keeps the 4 and misses the 3 (MSE 3² over 2 × 2 entries = 2.25), rank 2 misses nothing."""
    best = best_rank_mse(torch.eye(2), torch.diag(torch.tensor([3.0, 4.0])), [1, 2])
    assert abs(best[1] - 2.25) < 1e-5
    assert abs(best[2]) < 1e-10
