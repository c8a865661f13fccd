"""whisper.cpp (f16 / q8_0 / q5_0) vs CTranslate2 int8 on the fine-tuned Whisper: CER and clips/s, one run.

Setup: the merged fine-tuned Whisper (``--model``, default runs/04/merged) written by
``export.whispercpp.export_whispercpp`` in each file type (to a temp folder), and its CTranslate2 int8
export (``--ct2``, default runs/04/ct2_int8; converted with ``export.ct2.export_ct2`` when absent).
Both engines run at the window the model was trained with (``export.ct2.shipped_window``: whisper.cpp
gets ``audio_ctx`` = seconds * 50, CTranslate2 the same number of mel frames), greedy, the kit's token cap
from each clip's length, language zh, torch's thread count, batch 1. Clips: the kit's test set and the
other-voice set. The engines alternate clip by clip (a burst of background load hits all of them).

Run:  python benchmarks/whispercpp_vs_ct2.py [--model runs/04/merged] [--ct2 runs/04/ct2_int8] [--json out.json]
Prints per engine: CER on each set and overall, the gap to CTranslate2 in CER points, clips/s and the
speed ratio to CTranslate2 int8 (ratios, not asserted: a shared machine moves timings by tens of percent).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = {"test": ROOT / "data" / "zh_speech" / "test.jsonl",
        "other_voice": ROOT / "data" / "zh_speech_other_voice" / "test.jsonl"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "runs" / "04" / "merged"), help="merged transformers Whisper")
    parser.add_argument("--ct2", default=str(ROOT / "runs" / "04" / "ct2_int8"), help="its CTranslate2 int8 folder")
    parser.add_argument("--types", default="f16,q8_0,q5_0", help="whisper.cpp file types")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    import torch
    from transformers import WhisperProcessor

    from lorakit_nb.export.ct2 import ct2_transcribe, export_ct2, load_ct2, shipped_window
    from lorakit_nb.export.engines import compare_engines
    from lorakit_nb.export.whispercpp import export_whispercpp, load_whispercpp, whispercpp_transcribe
    from lorakit_nb.metrics import cer
    from lorakit_nb.speech.evaluate import load_clips
    from lorakit_nb.speech.window import set_processor_window

    window = shipped_window(args.model)
    clips = {name: load_clips(m) for name, m in SETS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        ct2_dir = Path(args.ct2) if (Path(args.ct2) / "model.bin").is_file() else export_ct2(args.model, Path(tmp) / "ct2")
        processor = WhisperProcessor.from_pretrained(args.model)
        set_processor_window(processor, window)
        ct2 = load_ct2(ct2_dir, "int8")
        engines = {"ct2_int8": lambda a: ct2_transcribe(ct2, processor, a, batch_size=1)}
        sizes = {"ct2_int8": (ct2_dir / "model.bin").stat().st_size}
        wmodels = {}
        for t in args.types.split(","):
            path = export_whispercpp(args.model, Path(tmp) / f"ggml-{t}.bin", t)
            sizes[f"whispercpp_{t}"] = path.stat().st_size
            wmodels[t] = load_whispercpp(path)
            engines[f"whispercpp_{t}"] = (lambda m: lambda a: whispercpp_transcribe(m, a, audio_seconds=window))(wmodels[t])
        audios = [audio for set_audios, _ in clips.values() for audio in set_audios]
        refs_all = [r for _, refs in clips.values() for r in refs]
        rows, hyps = compare_engines(engines, audios, refs_all, reference="ct2_int8")  # turns clip by clip
        del wmodels, engines
    n = len(audios)
    bounds, start = {}, 0
    for s, (a, _) in clips.items():
        bounds[s], start = (start, start + len(a)), start + len(a)
    results = {"model": args.model, "ct2": str(ct2_dir), "window_seconds": window, "threads": torch.get_num_threads(),
               "clips": {s: len(a) for s, (a, _) in clips.items()}, "engines": {}}
    print(f"{args.model} at a {window} s window ({window * 50} encoder positions), {n} clips, "
          f"{torch.get_num_threads()} threads")
    for row in rows:
        e = row["engine"]
        row.update({f"cer_{s}": cer(clips[s][1], hyps[e][lo:hi]) for s, (lo, hi) in bounds.items()})
        row.update(mb=sizes[e] / 1e6, hypotheses=hyps[e])
        results["engines"][e] = row
        print(f"{e:18s} CER test {row['cer_test']:.4f}  other {row['cer_other_voice']:.4f}  all {row['cer']:.4f} "
              f"(gap {row['gap_points']:+.2f} pt)  {row['clips_per_s']:.2f} clips/s  "
              f"x{row['speed_vs_reference']:.2f} vs CT2 int8  {row['mb']:.1f} MB")
    if args.json:
        from lorakit_nb.io import write_json_atomic

        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
