"""The `lorakit` command: run the course, train from a YAML config, evaluate an adapter, fetch models.

    lorakit run [--profile cpu|gpu|auto|smoke] [--only 01,03] [--run-dir runs]
    lorakit train --config data/configs/wu_dialect_lora.yaml
    lorakit evaluate --adapter DIR --data FILE.csv|FILE.jsonl [--out metrics.json]
    lorakit models [NAME ...]

Covers: argument parsing and turning the kit's errors into one readable line and exit code 1.
Does not: contain any training or evaluation logic (each subcommand calls one package function).
"""
from __future__ import annotations

import argparse
import sys

from .errors import LorakitError


def _run(args) -> None:
    from .env import resolve_profile
    from .runner import run_course

    run_course(args.run_dir, resolve_profile(args.profile), args.only, args.timeout)


def _train(args) -> None:
    from lorakit_nb.text.train import train_from_config

    res = train_from_config(args.config)
    print(f"adapter saved to {res.adapter_dir} ({res.adapter_bytes / 1e6:.1f} MB) after {res.steps} steps "
          f"in {res.train_seconds:.0f} s; best dev loss {res.eval_loss_best:.3f}")


def _evaluate(args) -> None:
    data = args.data.lower()
    if data.endswith(".csv"):
        from lorakit_nb.text.evaluate import evaluate_adapter
    elif data.endswith((".jsonl", ".json")):
        from lorakit_nb.speech.score import evaluate_manifest as evaluate_adapter
    else:
        raise LorakitError(f"{args.data}: cannot tell the data type. Use a .csv of wu,mandarin,english "
                           "pairs (text) or a .jsonl manifest of {\"audio\", \"text\"} rows (speech).")
    evaluate_adapter(args.adapter, args.data, args.out)


def _models(args) -> None:
    from lorakit_nb.models.resolve import resolve_model

    for name in args.names:
        resolved = resolve_model(name)
        print(f"{name}: {resolved.path} ({resolved.source})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lorakit", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="execute the notebooks in order with papermill and print their numbers")
    p.add_argument("--profile", default="cpu", choices=("cpu", "gpu", "auto", "smoke"),
                   help="cpu (default, offline), gpu, auto, or smoke (tiny random models, about 3 min)")
    p.add_argument("--only", default=None, help="comma-separated notebook numbers, e.g. 01,03")
    p.add_argument("--run-dir", default="runs", help="where executed notebooks and outputs go")
    p.add_argument("--timeout", type=int, default=3600, help="per-cell execution timeout in seconds")
    p.set_defaults(func=_run)

    p = sub.add_parser("train", help="train a text LoRA adapter from a YAML config")
    p.add_argument("--config", required=True, help="YAML file, e.g. data/configs/wu_dialect_lora.yaml")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="score an adapter on a CSV (text) or a JSONL manifest (speech)")
    p.add_argument("--adapter", required=True, help="adapter directory (or a merged model directory)")
    p.add_argument("--data", required=True, help="wu,mandarin,english CSV or {audio,text} JSONL manifest")
    p.add_argument("--out", default=None, help="metrics JSON to write (default: next to the adapter)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("models", help="resolve (and build once, offline) models by name")
    p.add_argument("names", nargs="*", default=["whisper-base", "gemma-3-270m"])
    p.set_defaults(func=_models)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LorakitError as exc:
        print(f"lorakit {args.command}: {exc}", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:  # a path the user typed: one line naming it, no traceback
        print(f"lorakit {args.command}: {exc.filename or exc}: no such file or folder; check the path", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
