"""Whisper QLoRA on CPU, measured: short-context speed-up, LoRA vs QLoRA vs full, and the training run.

Three parts, each printed as it finishes (``--json`` also writes them to a file):
1. step time at the full 30 s window (3000 mel frames) vs the short window (``--seconds``, 500
   frames for 5 s): the speed-up ratio of ``speech.whisper.shrink_audio_context``;
2. LoRA fp32 vs QLoRA NF4 vs full fine-tuning: seconds/step, steady peak RSS, weight bytes, trainable
   parameters (``speech.cost.measure_step``: each setup in its own process, batch ``--batch-size``);
3. the notebook-03 recipe: zero-shot test CER (fp32 base at the short window), QLoRA NF4 training
   under a wall-clock budget, fine-tuned test CER, their ratio and the training seconds.

Target on the 2-core CPU profile: fine-tuned test CER <= 0.33 x zero-shot with <= 10 min of training.
These numbers depend on what else runs on the machine: the script prints the load average.

Run:  python benchmarks/whisper_qlora.py [--skip-steps] [--skip-train] [--budget 500] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "zh_speech"


def step_costs(args) -> dict:
    from lorakit_nb.speech.cost import measure_step

    def run(kind, seconds):
        row = measure_step(kind, seconds, model_name=args.model, manifest=DATA / "train.jsonl",
                           batch_size=args.batch_size, steps=args.steps, r=args.rank)
        print(f"  {row['setup']:15s} {row['frames']:5d} frames  {row['s_per_step']:7.2f} s/step  "
              f"peak {row['peak_gb']:.2f} GB  weights {row['weights_mb']:.0f} MB  "
              f"trainable {row['trainable_params']:,}", flush=True)
        return row

    rows = []
    for seconds in (30, args.seconds):
        rows += [run(kind, seconds) for kind in ("lora", "qlora", "full")]
    by = {(r["kind"], r["audio_seconds"]): r for r in rows}
    out = {"memory_table": rows}
    for kind in ("lora", "qlora", "full"):
        out[f"context_speedup_{kind}"] = by[(kind, 30)]["s_per_step"] / by[(kind, args.seconds)]["s_per_step"]
        print(f"  {kind}: {by[(kind, 30)]['s_per_step']:.2f} -> {by[(kind, args.seconds)]['s_per_step']:.2f} s/step, "
              f"speed-up x{out[f'context_speedup_{kind}']:.1f}", flush=True)
    return out


def training_run(args) -> dict:
    import torch

    from lorakit_nb.speech.evaluate import evaluate_cer, load_clips
    from lorakit_nb.speech.train import train_asr
    from lorakit_nb.speech.whisper import (
        add_lora,
        featurize,
        fit_window,
        load_asr_model,
    )

    torch.manual_seed(0)
    train_a, train_t = load_clips(DATA / "train.jsonl")
    dev_a, dev_t = load_clips(DATA / "dev.jsonl")
    test_a, test_t = load_clips(DATA / "test.jsonl")
    train_a, train_t, left_out = fit_window(train_a, train_t, args.seconds)
    print(f"  train clips {len(train_a)} (+{left_out} longer than {args.seconds} s left out), "
          f"dev {len(dev_a)}, test {len(test_a)}", flush=True)

    base, processor = load_asr_model(args.model, audio_seconds=args.seconds)
    t0 = time.perf_counter()
    zero = evaluate_cer(base, processor, test_a, test_t, progress=False)
    print(f"  zero-shot test CER {zero['cer']:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    del base

    model, processor = load_asr_model(args.model, quantize=True, audio_seconds=args.seconds)
    model = add_lora(model, r=args.rank, alpha=2 * args.rank)
    feats = featurize(processor, train_a, train_t)
    res = train_asr(model, processor, feats, dev_audios=dev_a[:args.dev_clips], dev_texts=dev_t[:args.dev_clips],
                    epochs=args.epochs, batch_size=8, learning_rate=args.lr, warmup_steps=10, time_budget_s=args.budget)
    t0 = time.perf_counter()
    tuned = evaluate_cer(model, processor, test_a, test_t, progress=False)
    out = {"cer_zero_shot": zero["cer"], "cer_finetuned": tuned["cer"], "cer_ratio": tuned["cer"] / zero["cer"],
           "train_seconds": res.train_seconds, "train_steps": res.steps, "stopped_early": res.stopped_early,
           "dev_history": res.dev_history, "final_loss": res.train_losses[-1][1] if res.train_losses else None}
    print(f"  fine-tuned test CER {tuned['cer']:.3f} ({time.perf_counter() - t0:.0f} s); ratio {out['cer_ratio']:.2f} "
          f"(target <= 0.33); training {res.train_seconds:.0f} s, {res.steps} steps", flush=True)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--seconds", type=int, default=5, help="short audio window")
    parser.add_argument("--batch-size", type=int, default=4, help="batch of the step-cost measurements")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per setup (after 1 warm-up)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--budget", type=float, default=500, help="training wall-clock budget, seconds")
    parser.add_argument("--dev-clips", type=int, default=24)
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    os.chdir(ROOT)
    results = {"load_average_start": os.getloadavg(), "cpu_count": os.cpu_count()}
    print(f"load average {results['load_average_start']} on {results['cpu_count']} CPUs", flush=True)
    if not args.skip_steps:
        print(f"step cost (batch {args.batch_size}, r={args.rank}):", flush=True)
        results.update(step_costs(args))
    if not args.skip_train:
        print("training run:", flush=True)
        results.update(training_run(args))
    results["load_average_end"] = os.getloadavg()
    print(f"load average {results['load_average_end']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
