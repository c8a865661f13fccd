"""Load test of ``lorakit serve``: the real server as a subprocess, async clients, offline baselines.

Setup: a CTranslate2 Whisper folder (``--model``, notebook 04's ``ct2_int8``) served by
``lorakit serve`` on 127.0.0.1 at a free port (``serve.client.ServerProcess``), API key required,
rate limit off (so every refusal below comes from capacity, not the per-key limit). Clips: the test
manifest's FLAC files, sent as multipart uploads exactly as the ``openai`` client sends them.

1. Offline baselines, before the server starts (so nothing competes for the cores): the same clips
   in-process with ``ct2_transcribe``, batched (batch 8) and one clip at a time.
2. Closed-loop sweep at concurrency 1, 2, 4, 8, 16 (bounded requests and seconds per level):
   clips/s, audio s/s, p50/p95/p99 latency, errors.
3. Parity: every clip sent concurrently; served text vs the offline single-clip text.
4. Overload: open-loop arrivals at 2x the best measured throughput; counts of each status (only 200,
   429 and 503 are acceptable), whether the server is alive afterwards, and its RSS.
Ratios printed: served throughput at c=8 / offline batched, p95 at c=1 / offline single-clip p95.

Run:  python benchmarks/serve_load.py --model runs/04/ct2_int8 [--clips 40] [--json out.json]
On 2 shared cores, timings move by tens of percent between runs: compare ratios within one run.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "runs" / "04" / "ct2_int8"))
    parser.add_argument("--manifest", default=str(ROOT / "data" / "zh_speech" / "test.jsonl"))
    parser.add_argument("--clips", type=int, default=40, help="first N clips of the manifest")
    parser.add_argument("--levels", default="1,2,4,8,16", help="concurrency levels")
    parser.add_argument("--requests-per-level", type=int, default=None, help="default: max(3c, 12), at most 48")
    parser.add_argument("--seconds-per-level", type=float, default=30.0)
    parser.add_argument("--overload-seconds", type=float, default=10.0)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    from lorakit_nb.serve.client import ServerProcess
    from lorakit_nb.serve.loadtest import offline_baseline, open_loop, sweep
    from lorakit_nb.speech.data import load_manifest, read_audio

    rows = load_manifest(args.manifest)[:args.clips]
    clips = [Path(r["audio"]).read_bytes() for r in rows]
    audios = [read_audio(r["audio"]) for r in rows]
    seconds = [len(a) / 16000 for a in audios]
    levels = [int(c) for c in args.levels.split(",")]
    print(f"{len(clips)} clips, {sum(seconds):.1f} s of audio, longest {max(seconds):.2f} s; model {args.model}")

    offline = offline_baseline(args.model, audios)
    print(f"offline (in-process, {offline['window']} s window): batched x{offline['batch_size']} "
          f"{offline['batched_clips_per_s']:.2f} clips/s ({offline['batched_audio_s_per_s']:.1f} audio s/s); "
          f"one clip alone p50 {offline['single_p50_ms']:.0f} ms, p95 {offline['single_p95_ms']:.0f} ms")

    key = secrets.token_urlsafe(24)
    report = {"clips": len(clips), "audio_seconds": sum(seconds), "offline": offline}
    with ServerProcess(args.model, keys=[key], args=["--rate", "0"]) as srv:
        rss_start = srv.rss_mb()
        levels_out = sweep(srv.url, key, clips, seconds, levels, seconds_per_level=args.seconds_per_level,
                           requests_per_level=(lambda c: args.requests_per_level) if args.requests_per_level else None)
        print(f"\n{'conc':>4} {'reqs':>5} {'ok':>4} {'clips/s':>8} {'audio s/s':>9} {'p50 ms':>7} {'p95 ms':>7} "
              f"{'p99 ms':>7}  errors")
        for r in levels_out:
            print(f"{r['concurrency']:>4} {r['requests']:>5} {r['ok']:>4} {r['clips_per_s']:>8.2f} "
                  f"{r['audio_s_per_s']:>9.1f} {r['p50_ms']:>7.0f} {r['p95_ms']:>7.0f} {r['p99_ms']:>7.0f}  "
                  f"{r['errors'] or '-'}")

        async def parity():
            import httpx

            async with httpx.AsyncClient(base_url=srv.url, headers={"Authorization": f"Bearer {key}"},
                                         timeout=120) as ac:
                sem = asyncio.Semaphore(8)

                async def one(c):
                    async with sem:
                        r = await ac.post("/v1/audio/transcriptions", files={"file": ("c.flac", c)})
                        return r.json().get("text") if r.status_code == 200 else None
                return await asyncio.gather(*[one(c) for c in clips])

        served = asyncio.run(parity())
        same = sum(a == b for a, b in zip(served, offline["hypotheses_single"]))
        same_batched = sum(a == b for a, b in zip(served, offline["hypotheses_batched"]))
        print(f"\nparity: {same}/{len(clips)} served transcripts identical to offline one-clip decoding "
              f"({same_batched}/{len(clips)} to offline batch-8 decoding)")

        capacity = max(r["clips_per_s"] for r in levels_out)
        over = asyncio.run(open_loop(srv.url, key, clips, seconds, rate=2 * capacity, seconds=args.overload_seconds))
        alive = srv.alive
        import httpx

        healthy = alive and httpx.get(srv.url + "/health", timeout=10).status_code == 200
        rss_end = srv.rss_mb()
        bad = {k: v for k, v in over["errors"].items() if k not in ("429", "503")}
        print(f"\noverload: {over['offered']} requests at {over['rate']:.1f}/s (2x {capacity:.2f} clips/s) for "
              f"{args.overload_seconds:g} s: {over['ok']} answered 200 (p95 {over['p95_ms']:.0f} ms), refused "
              f"{over['errors'] or 'none'}; other failures: {bad or 'none'}; server alive and healthy: {healthy}; "
              f"RSS {rss_start:.0f} MB at start -> {rss_end:.0f} MB after")

    by_c = {r["concurrency"]: r for r in levels_out}
    ratios = {}
    if 8 in by_c:
        ratios["served_c8_over_offline_batched_throughput"] = by_c[8]["clips_per_s"] / offline["batched_clips_per_s"]
    if 1 in by_c:
        ratios["served_c1_p95_over_offline_single_p95"] = by_c[1]["p95_ms"] / offline["single_p95_ms"]
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}")
    report.update(levels=levels_out, parity_identical=same, parity_identical_batched=same_batched,
                  overload=over, overload_other_failures=bad, server_alive_after=healthy, rss_mb_start=rss_start,
                  rss_mb_end=rss_end, capacity_clips_per_s=capacity, **ratios)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", "utf-8")
    return report


if __name__ == "__main__":
    out = main()
    sys.exit(0 if out["server_alive_after"] and not out["overload_other_failures"] else 1)
