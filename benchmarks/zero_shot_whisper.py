"""Zero-shot whisper-base CER on the synthetic Mandarin test split: the baseline later notebooks beat.

Setup: the offline whisper-base (``lorakit_nb.models.resolve.load_whisper``), HF greedy decoding with
``language="zh", task="transcribe"``, ``max_new_tokens`` capped (beam search and temperature
fallback loop on this audio), the full 30 s window (3000 mel frames), fp32 on CPU.

CER (jiwer.cer, corpus level: total edits / total reference characters) under three
normalizations, each applied to references and hypotheses alike:
- ``light``:      NFKC, case-fold, drop punctuation/symbols/whitespace; scripts untouched, so a
                  Traditional-character output counts as wrong;
- ``light+t2s``:  the same after OpenCC Traditional -> Simplified;
- ``normalize_zh``: the kit's full CER normalization (t2s + numbers as spoken + 两/二 folding),
                  as notebooks 03/04 report it.

Run:  python benchmarks/zero_shot_whisper.py [--manifest data/zh_speech/test.jsonl] [--limit N]
Prints per-clip outputs, timings and the three CERs; ``--json`` writes them to a file.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", default=str(ROOT / "data" / "zh_speech" / "test.jsonl"))
    parser.add_argument("--model", default="whisper-base")
    parser.add_argument("--limit", type=int, default=None, help="first N clips only")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import jiwer
    import opencc
    import torch

    from lorakit_nb.models.resolve import load_whisper
    from lorakit_nb.normalize import light_normalize, normalize_zh
    from lorakit_nb.speech.data import load_manifest, read_audio

    rows = load_manifest(args.manifest)[: args.limit]
    model, processor = load_whisper(args.model, language="zh", task="transcribe")
    model.eval()
    hyps: list[str] = []
    started = time.perf_counter()
    for i in range(0, len(rows), args.batch_size):
        batch = rows[i : i + args.batch_size]
        audio = [read_audio(r["audio"]) for r in batch]
        # (batch, 80, 3000): the feature extractor pads every clip to the 30 s window
        features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="pt").input_features
        with torch.no_grad():
            out = model.generate(features, language="zh", task="transcribe", do_sample=False, num_beams=1,
                                 max_new_tokens=args.max_new_tokens)
        hyps += processor.tokenizer.batch_decode(out, skip_special_tokens=True)
        print(f"  {min(i + args.batch_size, len(rows))}/{len(rows)} clips, {time.perf_counter() - started:.1f} s",
              flush=True)
    seconds = time.perf_counter() - started
    refs = [r["text"] for r in rows]
    t2s = opencc.OpenCC("t2s")

    def corpus_cer(norm) -> float:
        return float(jiwer.cer([norm(r) for r in refs], [norm(h) for h in hyps]))

    figures = {
        "model": args.model, "manifest": str(args.manifest), "clips": len(rows), "mel_frames": features.shape[-1],
        "max_new_tokens": args.max_new_tokens, "decode": "greedy", "seconds": round(seconds, 1),
        "cer_light": round(corpus_cer(light_normalize), 4),
        "cer_light_t2s": round(corpus_cer(lambda s: light_normalize(t2s.convert(s))), 4),
        "cer_normalize_zh": round(corpus_cer(normalize_zh), 4),
        "traditional_outputs": sum(t2s.convert(h) != h for h in hyps),
    }
    for ref, hyp in list(zip(refs, hyps))[:10]:
        print(f"  ref {ref} | hyp {hyp.strip()}")
    print(json.dumps(figures, ensure_ascii=False, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps({**figures, "hypotheses": hyps}, ensure_ascii=False, indent=2), "utf-8")
    return figures


if __name__ == "__main__":
    main()
