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
