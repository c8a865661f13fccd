"""Show a load test: the table of each concurrency level and the latency / throughput picture.

Covers:
- ``load_table``: one line per concurrency level of ``loadtest.sweep`` (answered, clips/s, audio s/s,
  p50, p95, errors) and the offline in-process figures of ``loadtest.offline_baseline`` under it.
- ``load_reading``: what the two panels say, read from the numbers (HTTP overhead visible at p95 or not;
  where throughput peaks and whether it falls after) — never from expectations.
- ``plot_load``: latency (p50, p95) and throughput against concurrency, each with its offline line.

Does not: send requests (``loadtest``) or judge claims (the notebook records verdicts).
"""
from __future__ import annotations


def load_table(load: list[dict], offline: dict) -> str:
    """The sweep as a fixed-width table, with the offline baseline underneath.

    Example: print(load_table(sweep(...), offline_baseline(...)))
    """
    lines = [f"{'clients':>7} {'ok':>4} {'clips/s':>8} {'audio s/s':>9} {'p50 ms':>7} {'p95 ms':>7}  errors"]
    lines += [f"{r['concurrency']:>7} {r['ok']:>4} {r['clips_per_s']:>8.2f} {r['audio_s_per_s']:>9.1f} "
              f"{r['p50_ms']:>7.0f} {r['p95_ms']:>7.0f}  {r['errors'] or '-'}" for r in load]
    lines.append(f"\noffline, in-process: batched x{offline['batch_size']} {offline['batched_clips_per_s']:.2f} clips/s; "
                 f"one clip alone p50 {offline['single_p50_ms']:.0f} ms, p95 {offline['single_p95_ms']:.0f} ms")
    return "\n".join(lines)


def load_reading(load: list[dict], p95_c1_over_offline: float, visible: float = 1.1) -> str:
    """Two lines reading the sweep: the one-client p95 ratio to offline, and the throughput curve's shape.

    Example: load_reading(load, 0.99) -> "one client: served p95 / offline one-clip p95 = 0.99 (no HTTP
    overhead visible at p95)\\nthroughput by clients: 1: 2.10/s, ... | peak at 4 clients, x1.64 of one client, ..."
    """
    cs = [r["concurrency"] for r in load]
    cp = [r["clips_per_s"] for r in load]
    peak = cs[cp.index(max(cp))]
    overhead = "the HTTP path adds visible time" if p95_c1_over_offline > visible else "no HTTP overhead visible at p95"
    return (f"one client: served p95 / offline one-clip p95 = {p95_c1_over_offline:.2f} ({overhead})\n"
            "throughput by clients: " + ", ".join(f"{c}: {v:.2f}/s" for c, v in zip(cs, cp))
            + f" | peak at {peak} clients, x{max(cp) / cp[0]:.2f} of one client"
            + ("" if peak == cs[-1] else f", then falls to x{cp[-1] / cp[0]:.2f} at {cs[-1]}"))


def plot_load(load: list[dict], offline: dict):
    """Two panels against concurrent clients (log2 axis): latency p50/p95 and clips/s, offline lines in green.

    Example: fig = plot_load(load, offline)
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 3.4))
    cs = [r["concurrency"] for r in load]
    for q, style in (("p50_ms", "o-"), ("p95_ms", "s--")):
        ax[0].plot(cs, [r[q] for r in load], style, label=q.replace("_ms", ""))
    ax[0].axhline(offline["single_p95_ms"], color="#2b7", lw=1, label="offline, one clip alone (p95)")
    ax[1].plot(cs, [r["clips_per_s"] for r in load], "o-", label="served")
    ax[1].axhline(offline["batched_clips_per_s"], color="#2b7", lw=1, label=f"offline, batch {offline['batch_size']}")
    for a, ylabel, title in ((ax[0], "latency (ms)", "latency vs concurrency"),
                             (ax[1], "clips / s", "throughput vs concurrency")):
        a.set_xscale("log", base=2)
        a.set_xticks(cs, [str(c) for c in cs])
        a.set(xlabel="concurrent clients", ylabel=ylabel, title=title)
        a.legend(fontsize=8)
    fig.tight_layout()
    return fig
