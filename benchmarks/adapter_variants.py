"""Which adapter for the Wu task: LoRA, DoRA, rsLoRA, PiSSA init, LoRA+, three ranks, two module sets, side by side.

Every variant is `train_from_config` on data/configs/wu_dialect_lora.yaml (the real gemma-3-270m, offline
pack) with a few keys overridden, each in its own fresh process (so one variant's peak memory is not
another's). The grid, at rank 8 (lora_alpha = 2r: scaling 2) on the config's target modules (q,k,v,o,
gate,up,down) unless it says otherwise:
    lora      plain LoRA                     dora      use_dora: true
    rslora    use_rslora: true (alpha 16: scaling 16 / sqrt(8) = 5.7)
    pissa     init_lora_weights: pissa       loraplus  loraplus_lr_ratio: 16 (B at 16 x the learning rate)
    lora_r4, lora_r16   plain LoRA at rank 4 / 16 (alpha 2r)
    qv        plain LoRA on q_proj, v_proj only          all_linear   target_modules: all-linear
(On Gemma 3, all-linear adapts the same seven projections the config lists: the table's `layers` column shows it.)
The learning rate (1e-3), schedule and data are the config's, the same for all: a variant that wants its
own learning rate (LoRA+ or PiSSA often do) is measured at this one.

Reported per variant: dev chrF (greedy, on the first `--dev-n` dev pairs; 0 = all 30), best dev loss,
median seconds per optimizer step (timed by a callback: step only, no evaluation), peak RSS during
training (`meter.peak_bytes` after `meter.reset_peak` once the base is loaded; CUDA's peak on a GPU),
adapter bytes on disk (PiSSA's is saved converted to plain LoRA of rank 2r, so twice the size), trainable
parameters. The variant with the best dev chrF is chosen and then scored on test ONCE (`evaluate_text_adapter`).

Shortened: the config trains 3 epochs (87 steps at batch 8); here `--max-steps` defaults to 29, one
epoch, with one dev-loss evaluation at its end. Not timed end to end; measured on 2 cores shared with
another job: ~5 s per warm step (rank 16, 7 modules) and ~5 s per generated sentence (30 test sentences
in 154 s), i.e. ~5 min per variant and ~45 min for the grid there; on 2 idle cores (2.5 s/step, the
config's figure) about half, ~25 min. `--dev-n 15` halves the generation. The first steps of each run are
slow (new shapes), hence the median. The ranking after one epoch need not hold after three; rerun with `--max-steps 87` to check.
Measured end to end with `--max-steps 29 --dev-n 15` on 2 idle AVX-512 BF16 cores (bfloat16): 13 min for the
nine variants, 53-138 s each (DoRA the slowest, 3.6 s/step vs 1.8 for LoRA); rsLoRA had the best dev chrF there.

Run:  python benchmarks/adapter_variants.py [--max-steps 29] [--variants lora,dora,...] [--dev-n 0]
      [--out-dir DIR] [--json out.json]
Prints a table; nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "data" / "configs" / "wu_dialect_lora.yaml"
QKVO_MLP = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK8 = {"lora_rank": 8, "lora_alpha": 16}
VARIANTS = {
    "lora": RANK8,
    "dora": {**RANK8, "use_dora": True},
    "rslora": {**RANK8, "use_rslora": True},
    "pissa": {**RANK8, "init_lora_weights": "pissa"},
    "loraplus": {**RANK8, "loraplus_lr_ratio": 16.0},
    "lora_r4": {"lora_rank": 4, "lora_alpha": 8},
    "lora_r16": {"lora_rank": 16, "lora_alpha": 32},
    "qv": {**RANK8, "target_modules": ["q_proj", "v_proj"]},
    "all_linear": {**RANK8, "target_modules": "all-linear"},
}


def _measure_here(name: str, config: str, max_steps: int, dev_n: int, out_dir: str) -> dict:
    """One variant, in this (fresh) process: train, time the steps, score dev. Returns a table row."""
    from transformers import TrainerCallback

    from lorakit_nb import meter
    from lorakit_nb.text.config import load_config
    from lorakit_nb.text.data import load_splits
    from lorakit_nb.text.evaluate import evaluate_pairs
    from lorakit_nb.text.train import load_base_model, train_from_config

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds, self.start = [], None

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self.start)

    cfg = load_config(config, output_dir=out_dir, max_steps=max_steps, save_steps=max_steps,
                      early_stopping_patience=0, **VARIANTS[name])
    model, tok = load_base_model(cfg)
    meter.reset_peak()
    timer = StepTimer()
    res = train_from_config(cfg, model=model, tokenizer=tok, callbacks=[timer])
    peak = meter.peak_bytes()
    dev = load_splits(cfg.train_data_dir)["dev"]
    dev = dev[:dev_n] if dev_n > 0 else dev
    scored = evaluate_pairs(res.model, tok, dev, cfg.template, cfg.target, progress=False)
    layers = sum(1 for n, _ in res.model.named_modules() if n.endswith(".lora_A"))
    return {"variant": name, "overrides": VARIANTS[name], "steps": res.steps, "dev_n": scored["n"],
            "dev_chrf": scored["chrf"], "dev_loss": res.eval_loss_best,
            "s_per_step": statistics.median(timer.seconds), "peak_rss_mb": peak / 2**20,
            "adapter_bytes": res.adapter_bytes, "layers": layers,
            "trainable": sum(p.numel() for p in res.model.parameters() if p.requires_grad),
            "train_loss_last": res.train_loss_last, "adapter_dir": res.adapter_dir}


def run_variant(name: str, config: str, max_steps: int, dev_n: int, out_dir: str) -> dict:
    """`_measure_here` in a fresh Python process; its row (a failure raises with the child's stderr)."""
    from lorakit_nb.meter import RESULT

    args = {"name": name, "config": config, "max_steps": max_steps, "dev_n": dev_n, "out_dir": out_dir}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True,
                          check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"variant {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT):])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(CONFIG))
    ap.add_argument("--max-steps", type=int, default=29, help="optimizer steps per variant (config: 87)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--dev-n", type=int, default=0, help="score dev chrF on the first N dev pairs (0 = all)")
    ap.add_argument("--out-dir", default=None, help="where the adapters go (default: a new temp folder)")
    ap.add_argument("--json", default=None, help="also write the rows and the choice here")
    args = ap.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        ap.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if args.max_steps < 1:
        ap.error("--max-steps must be at least 1")
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="adapter_variants_"))
    print(f"{len(names)} variants x {args.max_steps} steps; adapters under {out}", flush=True)

    rows = []
    head = (f"{'variant':>10} {'layers':>6} {'trainable':>10} {'dev chrF':>8} {'dev loss':>8} {'s/step':>7} "
            f"{'peak RSS MB':>11} {'adapter KB':>10}")
    for name in names:
        start = time.perf_counter()
        row = run_variant(name, args.config, args.max_steps, args.dev_n, str(out / name))
        row["wall_s"] = time.perf_counter() - start
        rows.append(row)
        print(f"  {name}: dev chrF {row['dev_chrf']:.1f} ({row['wall_s']:.0f} s)", flush=True)
    print(head)
    for r in rows:
        print(f"{r['variant']:>10} {r['layers']:>6} {r['trainable']:>10,} {r['dev_chrf']:>8.1f} {r['dev_loss']:>8.3f} "
              f"{r['s_per_step']:>7.2f} {r['peak_rss_mb']:>11.0f} {r['adapter_bytes'] / 1024:>10.0f}")

    # tune on dev, report on test once
    from lorakit_nb.text.config import data_files, load_config
    from lorakit_nb.text.evaluate import evaluate_text_adapter

    best = max(rows, key=lambda r: r["dev_chrf"])
    test_csv = data_files(load_config(args.config, check_files=False))["test"]
    test = evaluate_text_adapter(best["adapter_dir"], test_csv)
    print(f"chosen on dev: {best['variant']} (dev chrF {best['dev_chrf']:.1f} on {best['dev_n']} pairs) -> "
          f"test chrF {test['chrf']:.1f} on {test['n']} pairs (scored once)")
    result = {"max_steps": args.max_steps, "dev_n": best["dev_n"], "rows": rows, "chosen": best["variant"],
              "test_chrf": test["chrf"], "test_n": test["n"]}
    if args.json:
        from lorakit_nb.io import write_json_atomic

        write_json_atomic(args.json, result)
    return result


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        from lorakit_nb.meter import child_main

        sys.argv = [sys.argv[0], sys.argv[2]]
        child_main(_measure_here)
    else:
        main()
