"""How often the repetition guard fires on the fine-tuned CTranslate2 export, and CER with and without it.

Setup: a CTranslate2 Whisper folder (``--ct2``, default runs/04/ct2_int8: notebook 04's export), its own
processor at the window it was trained with (``export.ct2.shipped_window``), and the kit's two test
sets: ``data/zh_speech/test.jsonl`` (the training voice) and ``data/zh_speech_other_voice/test.jsonl``
(a voice the model never heard). Each set is transcribed twice with ``export.ct2.ct2_transcribe``:
``repetition_guard=False`` and ``True`` (``speech.repetition``: a looping transcript is decoded again
greedily with ``no_repeat_ngram_size``).

Run:  python benchmarks/repetition_guard.py [--ct2 runs/04/ct2_int8] [--json out.json]
Prints per set: clips, how many fired and were replaced, CER without / with, and the changed clips.
"""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETS = {"test": ROOT / "data" / "zh_speech" / "test.jsonl",
        "other_voice": ROOT / "data" / "zh_speech_other_voice" / "test.jsonl"}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ct2", default=str(ROOT / "runs" / "04" / "ct2_int8"), help="CTranslate2 Whisper folder")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="one token cap for every clip (default: the kit's cap from each clip's length)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)

    from transformers import WhisperProcessor

    from lorakit_nb.export.ct2 import ct2_transcribe, load_ct2, shipped_window
    from lorakit_nb.metrics import cer
    from lorakit_nb.speech.evaluate import load_clips
    from lorakit_nb.speech.window import set_processor_window

    model = load_ct2(args.ct2)
    processor = WhisperProcessor.from_pretrained(args.ct2)
    window = shipped_window(args.ct2)
    set_processor_window(processor, window)
    results = {"ct2": args.ct2, "window_seconds": window, "max_new_tokens": args.max_new_tokens, "sets": {}}
    print(f"{args.ct2} at a {window} s window, token cap {args.max_new_tokens or 'from clip length'}")
    for name, manifest in SETS.items():
        audios, refs = load_clips(manifest)
        plain = ct2_transcribe(model, processor, audios, repetition_guard=False, max_new_tokens=args.max_new_tokens)
        stats: dict = {}
        guarded = ct2_transcribe(model, processor, audios, repetition_guard=True, guard_stats=stats,
                                 max_new_tokens=args.max_new_tokens)
        changed = [{"clip": i, "reference": r, "without": a, "with": b}
                   for i, (r, a, b) in enumerate(zip(refs, plain, guarded)) if a != b]
        row = {"clips": len(refs), "fired": stats["fired"], "replaced": stats["replaced"],
               "cer_without": cer(refs, plain), "cer_with": cer(refs, guarded), "changed": changed}
        results["sets"][name] = row
        print(f"{name:12s} clips {row['clips']:3d}  fired {row['fired']:2d}  replaced {row['replaced']:2d}  "
              f"CER without {row['cer_without']:.4f}  with {row['cer_with']:.4f}")
        for c in changed:
            print(f"    #{c['clip']}: ref {c['reference']} | without {c['without']} | with {c['with']}")
    if args.json:
        from lorakit_nb.io import write_json_atomic

        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
