"""Wu -> Mandarin generation: llama.cpp (q4_k_m GGUF base + the LoRA as GGUF) vs transformers + peft, tokens/s.

Setup: notebook 02's Mandarin adapter (``--adapter``, default runs/02/mandarin/adapter; it must be trained on
gemma-3-270m), exported with ``export.gguf.export_gguf_adapter`` and served by a real ``lorakit serve``
(``--adapter wu-mandarin=FILE``) on 127.0.0.1. The prompts are the Wu test split, at ``--strength``.

- transformers + peft: ``text.evaluate.generate_batch`` exactly as notebook 02 generates (batches of
  ``--batch``, greedy, cut at the newline), the dtype and thread count the adapter was trained with.
- llama.cpp: the same prompts through ``POST /v1/completions`` (greedy, ``stop=["\\n"]``) with 1, 4 and 8
  requests in flight (``serve.loadtest.text_sweep``; the server has ``--parallel 8`` slots).

Tokens are counted the same way for both engines (answers re-tokenized with the base's tokenizer).
Each engine runs ``--repeats`` times, alternating, and the best time is kept. The target the kit was built
against is llama.cpp >= 3x transformers' tokens/s; the script prints the measured ratio either way.

Run:  python benchmarks/llama_vs_hf.py [--adapter runs/02/mandarin/adapter] [--repeats 2] [--json out.json]
Timings on a shared machine move by tens of percent between runs: compare ratios measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import secrets
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 3.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", default=str(ROOT / "runs" / "02" / "mandarin" / "adapter"))
    parser.add_argument("--data", default=str(ROOT / "data" / "wu_dialect" / "test.csv"))
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=16, help="transformers' generate() batch (notebook 02: 16)")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--levels", default="1,4,8", help="llama.cpp requests in flight")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch
    from peft import PeftModel

    from lorakit_nb.env import torch_threads
    from lorakit_nb.export.gguf import export_gguf_adapter
    from lorakit_nb.metrics import chrf
    from lorakit_nb.models.resolve import load_causal_lm
    from lorakit_nb.serve.client import ServerProcess
    from lorakit_nb.serve.loadtest import text_sweep
    from lorakit_nb.text.adapters import adapter_scale, adapter_train_config
    from lorakit_nb.text.data import PROMPT_TEMPLATES, load_pairs, make_examples
    from lorakit_nb.text.evaluate import count_tokens, generate_batch

    adapter = Path(args.adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise SystemExit(f"{adapter}: no adapter here. Run notebook 02 first (lorakit run --only 02) or pass "
                         "--adapter DIR")
    saved = adapter_train_config(adapter)
    template = saved.get("prompt_template") or PROMPT_TEMPLATES["mandarin"]
    examples = make_examples(load_pairs(args.data), template, "mandarin")
    prompts, refs = [e["prompt"] for e in examples], [e["response"] for e in examples]
    levels = [int(x) for x in args.levels.split(",")]

    dtype = saved.get("dtype", "float32")
    model, tok = load_causal_lm("gemma-3-270m", dtype=getattr(torch, dtype))
    model = PeftModel.from_pretrained(model, str(adapter))

    def n_tokens(texts):
        return count_tokens(tok, texts)

    key = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = export_gguf_adapter(adapter, Path(tmp) / "wu-mandarin.gguf")["path"]
        srv = ServerProcess(None, keys=[key], args=["--adapter", f"wu-mandarin={gguf}", "--parallel", max(levels),
                                                    "--rate", 0, "--max-queue", 64])
        with srv:
            hf_best, sweeps = None, []
            for _ in range(args.repeats):  # alternate the engines so drift on a shared machine hits both
                with torch_threads(saved.get("num_threads")), adapter_scale(model, args.strength):
                    t0 = time.perf_counter()
                    hf_out = generate_batch(model, tok, prompts, args.max_new_tokens, args.batch, progress=False)
                    seconds = time.perf_counter() - t0
                hf_best = seconds if hf_best is None else min(hf_best, seconds)
                sweeps.append(text_sweep(srv.url, key, prompts, model="wu-mandarin", strength=args.strength,
                                         levels=levels, max_tokens=args.max_new_tokens))
    hf_tps = n_tokens(hf_out) / hf_best
    rows = []
    for i in range(len(levels)):
        best = min((s[i] for s in sweeps), key=lambda r: r["wall_seconds"])
        tps = n_tokens(best.pop("outputs")) / best["wall_seconds"]  # counted as for transformers
        rows.append({**best, "tokens_per_s": tps, "over_hf": tps / hf_tps})
    print(f"{len(prompts)} Wu test prompts, strength {args.strength}, answers of {n_tokens(hf_out) / len(prompts):.1f} "
          f"tokens on average; best of {args.repeats}")
    print(f"transformers + peft ({dtype}, batch {args.batch}): {hf_best:6.1f} s  {hf_tps:6.1f} tokens/s  "
          f"chrF {chrf(refs, hf_out):.1f}")
    for r in rows:
        print(f"llama.cpp, {r['concurrency']} in flight:      {r['wall_seconds']:6.1f} s  {r['tokens_per_s']:6.1f} tokens/s  "
              f"p50 {r['p50_ms']:.0f} ms  p95 {r['p95_ms']:.0f} ms  -> {r['over_hf']:.2f}x transformers")
    best = max(rows, key=lambda r: r["over_hf"])
    print(f"best ratio {best['over_hf']:.2f}x at {best['concurrency']} in flight (target >= {TARGET:g}x: "
          f"{'met' if best['over_hf'] >= TARGET else 'NOT met'})")
    result = {"hf_tokens_per_s": hf_tps, "hf_seconds": hf_best, "dtype": dtype, "llamacpp": rows,
              "best_ratio": best["over_hf"], "target": TARGET}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
