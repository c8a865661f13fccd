"""CTranslate2 (int8 / float32) vs transformers fp32 greedy decoding of Whisper, at 500 and 3000 frames.

Setup: a transformers Whisper folder (``--model``: a merged export such as runs/04/merged, or
"whisper-base"), converted once to CTranslate2 int8 and float32 (``export.ct2.export_ct2``). Each
comparison is ``export.ct2.speed_check``: the same log-mel features, prompt and token cap for both
engines, batch 1, clip by clip with the two engines alternating, torch's thread count for both.

- 3000 frames: the full 30 s window (what faster-whisper and stock transformers use).
- 500 frames: the 5 s window notebook 03 trains with (``speech.whisper.shrink_audio_context`` on the
  transformers side; CTranslate2 takes the shorter features as they are).

Run:  python benchmarks/ct2_speed.py [--model runs/04/merged] [--clips 12] [--json out.json]
Prints seconds, the transformers / CTranslate2 ratios and the sizes on disk. Timings on a shared
machine move by tens of percent between runs: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="whisper-base", help="transformers Whisper folder or model name")
    parser.add_argument("--manifest", default=str(ROOT / "data" / "zh_speech" / "test.jsonl"))
    parser.add_argument("--clips", type=int, default=12, help="first N clips of the manifest")
    parser.add_argument("--windows", default="3000,500", help="feature windows in frames (100 per second)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # generate() warns on every call that max_new_tokens beats max_length
    from lorakit_nb.export.ct2 import export_ct2, speed_check
    from lorakit_nb.export.merge import dir_bytes, weights_bytes
    from lorakit_nb.models.resolve import resolve_model
    from lorakit_nb.speech.data import load_manifest, read_audio
    from lorakit_nb.speech.whisper import load_asr_model, shrink_audio_context

    src = Path(resolve_model(args.model).path)
    audios = [read_audio(r["audio"]) for r in load_manifest(args.manifest)[: args.clips]]
    windows = sorted((int(w) for w in args.windows.split(",")), reverse=True)  # shrink only ever goes down
    results = {"model": str(src), "clips": len(audios), "threads": torch.get_num_threads(),
               "bytes": {"transformers fp32": weights_bytes(src)}, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        ct2 = {q: export_ct2(src, Path(tmp) / f"ct2_{q}", q) for q in ("int8", "float32")}
        results["bytes"].update({f"ct2 {q}": dir_bytes(d / "model.bin") for q, d in ct2.items()})
        model, processor = load_asr_model(str(src))
        for frames in windows:
            if frames != 2 * model.config.max_source_positions:
                shrink_audio_context(model, processor, frames // 100)
            for q, folder in ct2.items():
                r = speed_check(model, processor, folder, audios, compute_type=q)
                results["runs"].append(r)
                print(f"{frames:5d} frames  transformers fp32 {r['hf_seconds']:6.1f} s   CT2 {q:7s} "
                      f"{r['ct2_seconds']:6.1f} s   ratio {r['ratio']:.2f}x (median per clip "
                      f"{r['median_clip_ratio']:.2f}x)", flush=True)
    print(f"\n{len(audios)} clips, {results['threads']} threads; weights on disk:")
    for name, size in results["bytes"].items():
        print(f"  {name:18s} {size / 1e6:8.1f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
