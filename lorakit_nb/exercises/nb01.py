"""Notebook 01's exercises (LoRA math): reference solutions, checks, synthetic examples."""
from __future__ import annotations

import torch

from . import Exercise


def _count_all_attention(layers: int, hidden: int, r: int, expected: int) -> int:
    return layers * 4 * r * (hidden + hidden)  # layers x (q, k, v, o) x r * (d_in + d_out)


def _check_count(answer, layers, hidden, r, expected):
    assert isinstance(answer, int), f"answer with a whole number of parameters, not {answer!r}"
    hint = ""
    if answer == layers * 4 * r * hidden:
        hint = ": each adapted Linear adds r * (d_in + d_out), A is r x d_in and B is d_out x r"
    elif answer == layers * 2 * r * (hidden + hidden):
        hint = ": four projections this time (q, k, v, o), not two"
    assert answer == expected, f"{answer:,} != {expected:,} (counted from the model's shapes){hint}"
    return f"{answer:,} trainable parameters"


def _example_count():
    return {"layers": 2, "hidden": 8, "r": 2, "expected": 2 * 4 * 2 * 16}, 2 * 4 * 2 * 8


def _reference_merge(W0, A, B, alpha, r, merged):
    def my_merge(W0, A, B, alpha, r):
        return W0 + (alpha / r) * B @ A  # (d_out, r) @ (r, d_in) -> (d_out, d_in)
    return my_merge


def _check_merge(answer, W0, A, B, alpha, r, merged):
    assert callable(answer), "answer with a function my_merge(W0, A, B, alpha, r)"
    got = answer(W0, A, B, alpha, r)
    assert isinstance(got, torch.Tensor) and got.shape == merged.shape, (
        f"my_merge must return a {tuple(merged.shape)} tensor (d_out x d_in), got "
        f"{tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__}")
    try:
        torch.testing.assert_close(got.detach(), merged.detach())
    except AssertionError as exc:
        raise AssertionError("your merged weight differs from peft's merge_and_unload: W = W0 + (alpha / r) B A "
                             f"({str(exc).splitlines()[0]})") from None
    return "your merge equals peft's merge_and_unload"


def _merge_unanswered(answer) -> bool:
    if answer is Ellipsis:
        return True
    if callable(answer):  # a `def` whose body is still `...` returns None
        probe = torch.zeros(2, 2), torch.zeros(1, 2), torch.zeros(2, 1), 1.0, 1
        return answer(*probe) is None
    return False


def _example_merge():
    g = torch.Generator().manual_seed(0)
    W0, A, B = torch.randn(3, 4, generator=g), torch.randn(2, 4, generator=g), torch.randn(3, 2, generator=g)
    inputs = {"W0": W0, "A": A, "B": B, "alpha": 4.0, "r": 2, "merged": W0 + 2.0 * B @ A}
    return inputs, lambda W0, A, B, alpha, r: W0 + B @ A  # forgot the alpha / r scaling


def _smallest_rank(ranks, errors, threshold=0.05):
    return next(k for k, e in zip(ranks, errors) if e < threshold)


def _check_smallest_rank(answer, ranks, errors, threshold=0.05):
    assert answer in ranks, f"{answer!r} is not one of the ranks tried: {ranks}"
    error = dict(zip(ranks, errors))
    assert error[answer] < threshold, f"rank {answer} leaves {error[answer]:.1%} of ΔW, not under {threshold:.0%}"
    smaller = [k for k in ranks if k < answer and error[k] < threshold]
    assert not smaller, f"rank {smaller[0]} is already under {threshold:.0%} ({error[smaller[0]]:.1%}): smaller suffices"
    return f"rank {answer}: {error[answer]:.2%} of ΔW left"


def _example_smallest_rank():
    return {"ranks": [1, 2, 3, 4, 5], "errors": [0.6, 0.3, 0.04, 0.01, 0.009]}, 4


EXERCISES = {
    "01.1": Exercise("LoRA r=16 on q, k, v, o of LLaMA-2-7B, by hand", solve=_count_all_attention,
                     check=_check_count, example=_example_count),
    "01.2": Exercise("merge by hand", solve=_reference_merge, check=_check_merge, example=_example_merge,
                     unanswered=_merge_unanswered),
    "01.3": Exercise("smallest sufficient rank", solve=_smallest_rank, check=_check_smallest_rank,
                     example=_example_smallest_rank),
}
