"""Several engines, the same clips, one run: CER and clips/s of each next to a reference engine.

Covers:
- ``compare_engines``: every engine transcribes every clip, the engines taking turns clip by clip (a burst
  of background load on a shared machine then hits all of them alike, not the one that ran during it);
  after one warm-up clip each. Per engine: CER, its gap to the reference engine in CER points, the paired
  bootstrap interval of that gap (in points) (``metrics.compare_systems``), clips/s and the speed ratio to the reference.
- ``engines_table``: those rows as text.

Does NOT cover: loading or exporting models (``export.ct2``, ``export.whispercpp``), batching (each engine
gets one clip at a time, as a single user's request would).
"""
from __future__ import annotations

import time


def compare_engines(engines: dict, audios, refs, *, reference: str) -> tuple[list[dict], dict]:
    """(rows, transcripts by engine) for ``engines`` = {name: fn(list of audios) -> list of texts}.

    Example: compare_engines({"ct2_int8": run_ct2, "whispercpp_q8_0": run_q8}, audios, refs, reference="ct2_int8")
    -> ([{"engine": "ct2_int8", "cer": 0.138, "gap_points": 0.0, ...}, {"engine": "whispercpp_q8_0", ...}], {...})
    """
    from lorakit_nb.metrics import cer, compare_systems

    if reference not in engines:
        raise ValueError(f"reference {reference!r} is not one of the engines {list(engines)}")
    for run in engines.values():  # warm-up: first-call allocations stay out of the timing
        run(list(audios[:1]))
    hyps = {name: [] for name in engines}
    seconds = dict.fromkeys(engines, 0.0)
    for audio in audios:
        for name, run in engines.items():
            t0 = time.perf_counter()
            hyps[name] += run([audio])
            seconds[name] += time.perf_counter() - t0
    ref_cer, ref_speed = cer(refs, hyps[reference]), len(audios) / seconds[reference]
    rows = []
    for name in engines:
        c, speed = cer(refs, hyps[name]), len(audios) / seconds[name]
        row = {"engine": name, "cer": c, "gap_points": 100 * (c - ref_cer), "clips_per_s": speed,
               "speed_vs_reference": speed / ref_speed,
               "identical_to_reference": sum(a == b for a, b in zip(hyps[name], hyps[reference])) / len(audios)}
        if name != reference:
            cmp = compare_systems(cer, refs, hyps[reference], hyps[name], names=(reference, name), higher_is_better=False)
            row.update(gap_ci95=[100 * x for x in cmp["ci95"]], reading=cmp["reading"])
        rows.append(row)
    return rows, hyps


def engines_table(rows: list[dict], reference: str) -> str:
    """One line per engine: CER, gap to the reference (points), identical transcripts, clips/s, speed ratio."""
    lines = [f"{'engine':18s} {'CER':>6s} {'gap pts':>8s} {'same text':>9s} {'clips/s':>8s} {'x ' + reference:>12s}"]
    lines += [f"{r['engine']:18s} {r['cer']:6.3f} {r['gap_points']:+8.1f} {r['identical_to_reference']:9.0%} "
              f"{r['clips_per_s']:8.2f} {r['speed_vs_reference']:12.2f}" for r in rows]
    return "\n".join(lines)
