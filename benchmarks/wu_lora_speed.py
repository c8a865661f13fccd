"""Speed of the Wu-dialect LoRA run on this machine: per-step cost of the two losses, then a full run.

Part 1 (per step): one training step (forward + backward) on the same batch of 8 training pairs,
computing the loss (a) the naive way, logits for every position through the 262k-row vocabulary head,
and (b) with `response_only_loss`, logits only where labels != -100. Steps alternate a/b so load
from other processes hits both alike; the median of `--reps` is reported with the speed-up.

Part 2 (full run): `train_from_config` on the CPU config (3 epochs over the 226 training pairs, dev
loss each epoch): wall seconds, seconds per epoch, training tokens per second (prompt + response
tokens, padding excluded) and the process's peak RSS (`resource.getrusage`, which includes loading
the model).

Run:  python benchmarks/wu_lora_speed.py [--config data/configs/wu_dialect_lora.yaml] [--reps 3]
      [--skip-train] [--json out.json]
Prints the measured figures; nothing is asserted (the goal, 3 epochs in <= 5 minutes on 2 CPU cores,
is for a reader to compare against).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_seconds(model, batch, loss_fn) -> tuple[float, float]:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = loss_fn(model, **batch)
    loss.backward()
    return time.perf_counter() - start, loss.item()


def main(argv=None) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from lorakit_nb.text.config import data_files, load_config
    from lorakit_nb.text.data import load_pairs
    from lorakit_nb.text.train import (
        PadCollator,
        encode_pairs,
        full_logits_loss,
        load_base_model,
        response_only_loss,
        train_from_config,
    )

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(ROOT / "data/configs/wu_dialect_lora.yaml"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    cfg = load_config(args.config, output_dir=tempfile.mkdtemp(prefix="wu_speed_"))
    if cfg.num_threads > 0:  # the same thread count the training run will use
        torch.set_num_threads(cfg.num_threads)
    out = {"threads": torch.get_num_threads(), "dtype": cfg.dtype}
    model, tok = load_base_model(cfg)
    pairs = load_pairs(data_files(cfg)["train"])[: cfg.batch_size]
    batch = PadCollator(tok.pad_token_id)(encode_pairs(tok, pairs, cfg.template, cfg.target, cfg.max_seq_length))
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    n_resp = int((batch["labels"][:, 1:] != -100).sum())
    print(f"batch {tuple(batch['input_ids'].shape)}: {int(batch['attention_mask'].sum())} real tokens, "
          f"{n_resp} response tokens need logits; vocabulary {peft_model.config.vocab_size}")
    step_seconds(peft_model, batch, response_only_loss)  # warm-up (allocations, kernels)
    times = {"full": [], "response_only": []}
    for _ in range(args.reps):
        for name, fn in (("full", full_logits_loss), ("response_only", response_only_loss)):
            sec, loss = step_seconds(peft_model, batch, fn)
            times[name].append(sec)
            print(f"  {name:>13}: {sec:6.2f} s/step  loss {loss:.4f}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    out.update(step_full_s=med["full"], step_response_only_s=med["response_only"],
               speedup=med["full"] / med["response_only"])
    print(f"median s/step: full logits {med['full']:.2f}, response-only {med['response_only']:.2f} "
          f"-> speed-up x{out['speedup']:.2f}")

    if not args.skip_train:
        base = peft_model.unload()  # the clean base again: LoRA layers removed, weights untouched
        res = train_from_config(cfg, model=base, tokenizer=tok)
        out.update(train_seconds=res.train_seconds, epochs=res.epochs, steps=res.steps,
                   seconds_per_epoch=res.seconds_per_epoch, tokens_per_second=res.tokens_per_second,
                   train_tokens=res.train_tokens, train_loss_first=res.train_loss_first,
                   train_loss_last=res.train_loss_last, eval_loss_best=res.eval_loss_best,
                   adapter_bytes=res.adapter_bytes)
        print(f"full run: {res.epochs:.1f} epochs, {res.steps} steps in {res.train_seconds:.0f} s "
              f"({res.seconds_per_epoch:.0f} s/epoch incl. dev loss), {res.tokens_per_second:.0f} train tokens/s, "
              f"train loss {res.train_loss_first:.3f} -> {res.train_loss_last:.3f}, best dev {res.eval_loss_best:.3f}")
    out["peak_rss_mb"] = peak_rss_mb()
    print(f"peak RSS {out['peak_rss_mb']:.0f} MB")
    if args.json:
        from lorakit_nb.env import write_json_atomic

        write_json_atomic(args.json, out)
    return out


if __name__ == "__main__":
    main()
