"""Notebook 05's exercises (serving): reference solutions, checks, synthetic examples."""
from __future__ import annotations

from . import Exercise


def _mean_batch(scraped: dict) -> float:
    return scraped["lorakit_batch_size_sum"] / scraped["lorakit_batch_size_count"]


def _check_mean_batch(answer, scraped: dict, max_batch: int):
    batches = scraped["lorakit_batch_size_count"]
    true = scraped["lorakit_batch_size_sum"] / batches
    assert isinstance(answer, (int, float)), f"answer with a number (clips per CTranslate2 call), not {answer!r}"
    assert abs(answer - true) < 0.05, (f"{answer:.2f} is not what /metrics says: divide the histogram's _sum "
                                       "(clips decoded) by its _count (batches)")
    assert 1 <= answer <= max_batch
    return f"{answer:.2f} clips per batch over {batches:.0f} batches (at most {max_batch}: --max-batch)"


def _example_mean_batch():
    return {"scraped": {"lorakit_batch_size_sum": 30.0, "lorakit_batch_size_count": 12.0}, "max_batch": 8}, 12.0


def _burst_answered(burst: int, rate: float) -> int:
    return int(burst)  # the bucket starts full: `burst` tokens at once, then `rate` per second


def _check_burst(answer, burst: int, rate: float, statuses: list):
    assert isinstance(answer, int), f"answer with a whole number of requests, not {answer!r}"
    ok = statuses.count(200)
    assert set(statuses) <= {200, 429}, f"unexpected statuses {sorted(set(statuses))}"
    assert abs(ok - answer) <= 1, (f"{ok} of {len(statuses)} were answered 200, you said {answer}: a fresh key's "
                                   f"bucket holds `burst` = {burst} tokens; one request spends one")
    return f"{ok} passed: the bucket's burst, plus whatever refilled ({rate}/s) while the burst was in flight"


def _example_burst():
    return {"burst": 3, "rate": 1.0, "statuses": [200, 200, 200, 429, 429, 429, 429, 429, 429, 429]}, 10


EXERCISES = {
    "05.1": Exercise("mean clips per CTranslate2 call, from /metrics", solve=lambda scraped, max_batch: _mean_batch(scraped),
                     check=_check_mean_batch, example=_example_mean_batch),
    "05.2": Exercise("how many of a 10-request burst are answered", solve=lambda burst, rate, statuses: _burst_answered(burst, rate),
                     check=_check_burst, example=_example_burst),
}
