"""The `lorakit` command: run the course, train from a YAML config, evaluate an adapter, fetch models.

    lorakit run [--profile cpu|gpu|auto|smoke] [--only 01,03] [--run-dir runs]
    lorakit train --config data/configs/wu_dialect_lora.yaml [--resume]
    lorakit evaluate --adapter DIR | --model NAME --data FILE.csv|FILE.jsonl [--out metrics.json] [--repetition-guard]
    lorakit models [NAME ...]
    lorakit data import SRC --out DIR [--format auto|folder|commonvoice|aishell] [--split NAME]
    lorakit serve [--model runs/04/ct2_int8] [--adapter wu-mandarin=runs/02/mandarin/adapter ...] --api-key-file KEYS
    lorakit export gguf --adapter runs/02/mandarin/adapter [--out wu-mandarin.gguf]
    lorakit export whispercpp --model runs/04/merged [--type f16|q8_0|q5_0] [--out ggml-model.bin]

Covers: argument parsing and turning the kit's errors into one readable line and exit code 1.
Does not: contain any training or evaluation logic (each subcommand calls one package function).
"""
from __future__ import annotations

import argparse
import os
import sys

from .errors import LorakitError


def _run(args) -> None:
    from .env import resolve_profile
    from .runner import run_course

    run_course(args.run_dir, resolve_profile(args.profile), args.only, args.timeout)


def _train(args) -> None:
    from lorakit_nb.text.train import train_from_config

    res = train_from_config(args.config, resume=args.resume)
    if os.environ.get("RANK", "0") != "0":  # torchrun: one process reports for all
        return
    if res.resumed_from:
        print(f"resumed from {res.resumed_from} (step {res.start_step})")
    print(f"adapter saved to {res.adapter_dir} ({res.adapter_bytes / 1e6:.1f} MB) after {res.steps} steps "
          f"in {res.train_seconds:.0f} s; best dev loss {res.eval_loss_best:.3f}")


def _evaluate(args) -> None:
    data = args.data.lower()
    if (args.adapter is None) == (args.model is None):
        raise LorakitError("give --adapter DIR (a trained adapter or export) or --model NAME (a base model, "
                           "for the baseline), not both and not neither")
    if data.endswith(".csv"):  # text: an adapter on its base, or a base alone (the baseline)
        if args.repetition_guard:
            raise LorakitError("--repetition-guard is for speech (a CTranslate2 folder on a .jsonl manifest)")
        from lorakit_nb.text.evaluate import evaluate_text_adapter, evaluate_text_base

        report = evaluate_text_adapter(args.adapter, args.data, args.out) if args.adapter else \
            evaluate_text_base(args.model, args.data, args.out)
    elif data.endswith((".jsonl", ".json")):  # speech: one function takes a name, an adapter or an export
        from lorakit_nb.export.score import evaluate_manifest

        report = evaluate_manifest(args.adapter or args.model, args.data, args.out,
                                   repetition_guard=args.repetition_guard)
    else:
        raise LorakitError(f"{args.data}: cannot tell the data type. Use a .csv of wu,mandarin,english "
                           "pairs (text) or a .jsonl manifest of {\"audio\", \"text\"} rows (speech).")
    score = "cer" if "cer" in report else "chrf"
    print(f"{args.adapter or args.model} on {args.data}: {score} {report[score]:.4g} ({report.get('n') or len(report.get('utterances', []))} rows)")


def _models(args) -> None:
    from lorakit_nb.models.resolve import resolve_model

    for name in args.names:
        resolved = resolve_model(name)
        print(f"{name}: {resolved.path} ({resolved.source})")


def _data_import(args) -> None:
    from lorakit_nb.speech.importers import import_dataset

    print(import_dataset(args.src, args.out, fmt=args.format, split=args.split, audio_format=args.audio_format,
                         max_seconds=args.max_seconds).summary())


def _serve(args) -> None:
    from lorakit_nb.serve.app import serve
    from lorakit_nb.serve.settings import ServeSettings

    adapters = {}
    for spec in args.adapter:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise LorakitError(f"--adapter {spec!r}: write NAME=PATH, e.g. --adapter wu-mandarin=runs/02/mandarin/adapter")
        if name in adapters:
            raise LorakitError(f"--adapter {name!r} given twice; each adapter needs its own name")
        adapters[name] = path
    llm = True if args.llm == "" else args.llm  # --llm with no value: the offline gemma-3-270m GGUF
    serve(args.model, llm=llm, adapters=adapters, api_key_file=args.api_key_file, no_auth=args.no_auth,
          settings=ServeSettings.from_args(args))


def _export(args) -> None:
    from lorakit_nb.export.gguf import export_gguf_adapter

    if args.format == "whispercpp":
        from lorakit_nb.export.whispercpp import export_whispercpp

        if not args.model:
            raise LorakitError("export whispercpp needs --model DIR (a merged Whisper folder, e.g. runs/04/merged)")
        path = export_whispercpp(args.model, args.out, args.type)
        print(f"{args.model} -> {path} ({path.stat().st_size / 1e6:.1f} MB, {args.type}) for whisper.cpp")
        return
    if not args.adapter:
        raise LorakitError("export gguf needs --adapter DIR (a peft adapter folder, e.g. runs/02/mandarin/adapter)")
    out = args.out or args.adapter.rstrip("/") + ".gguf"
    info = export_gguf_adapter(args.adapter, out, args.base)
    print(f"{args.adapter} -> {info['path']} ({info['tensors']} tensors, {info['bytes'] / 1e6:.1f} MB, rank "
          f"{info['rank']}, alpha {info['alpha']:g}) for {info['architecture']} ({info['layers']} layers)")


def build_parser() -> argparse.ArgumentParser:
    from lorakit_nb.serve.settings import add_settings_flags  # dataclasses only: cheap to import

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
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from the newest "
                   "checkpoint-N under the config's output_dir (optimizer, scheduler, RNG state and step)")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="score an adapter on a CSV (text) or a JSONL manifest (speech)")
    p.add_argument("--adapter", default=None, help="adapter directory (or a merged / CTranslate2 folder)")
    p.add_argument("--model", default=None, help="a base model name (e.g. gemma-3-270m, whisper-base): the baseline")
    p.add_argument("--data", required=True, help="wu,mandarin,english CSV or {audio,text} JSONL manifest")
    p.add_argument("--out", default=None, help="metrics JSON to write (default: next to the adapter)")
    p.add_argument("--repetition-guard", action="store_true", help="CTranslate2 folder: decode looping "
                   "transcripts again, as `lorakit serve --repetition-guard` does")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("models", help="resolve (and build once, offline) models by name")
    p.add_argument("names", nargs="*", default=["whisper-base", "gemma-3-270m"])
    p.set_defaults(func=_models)

    p = sub.add_parser("export", help="export for another engine (gguf: llama.cpp adapter; whispercpp: whisper.cpp)")
    p.add_argument("format", choices=("gguf", "whispercpp"),
                   help="gguf: a llama.cpp LoRA adapter file; whispercpp: a merged Whisper as a whisper.cpp ggml .bin")
    p.add_argument("--adapter", default=None, help="gguf: peft adapter folder, e.g. runs/02/mandarin/adapter")
    p.add_argument("--model", default=None, help="whispercpp: merged Whisper folder, e.g. runs/04/merged")
    p.add_argument("--type", default="f16", choices=("f16", "q8_0", "q5_0", "f32"), help="whispercpp weights (default f16)")
    p.add_argument("--out", default=None, help="output file (default: next to the adapter / model folder)")
    p.add_argument("--base", default=None, help="base GGUF it will run on (default: the offline gemma-3-270m)")
    p.set_defaults(func=_export)

    p = sub.add_parser("data", help="prepare your own speech data for notebook 03")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    p = data_sub.add_parser("import", help="decode a folder / Common Voice / AISHELL corpus into 16 kHz clips + "
                            "<split>.jsonl manifests, reporting every skipped row")
    p.add_argument("src", help="folder of audio + .txt (or a name<TAB>text file), Common Voice folder, AISHELL "
                   "folder or transcript")
    p.add_argument("--out", required=True, help="output folder: <split>.jsonl + audio/<split>/ (notebook 03's DATA_DIR)")
    p.add_argument("--format", default="auto", choices=("auto", "folder", "commonvoice", "aishell"))
    p.add_argument("--split", default=None, help="split name (default: folder -> train; Common Voice and "
                   "AISHELL -> every split found)")
    p.add_argument("--audio-format", default="flac", choices=("flac", "wav"), help="clip format written")
    p.add_argument("--max-seconds", type=float, default=30.0, help="skip longer clips (Whisper's window: 30)")
    p.set_defaults(func=_data_import)

    p = sub.add_parser("serve", help="serve Whisper (CTranslate2) and/or GGUF text models over HTTP (OpenAI-compatible)")
    p.add_argument("--model", default=None, help="CTranslate2 Whisper folder, e.g. runs/04/ct2_int8 (speech routes)")
    p.add_argument("--llm", nargs="?", const="", default=None,
                   help="serve a GGUF text model on /v1/completions (no value: the offline gemma-3-270m)")
    p.add_argument("--adapter", action="append", default=[], metavar="NAME=PATH",
                   help="a LoRA adapter served as model NAME (peft folder or .gguf); repeatable; implies --llm")
    p.add_argument("--api-key-file", default=None, help="file with one API key per line (or set LORAKIT_API_KEYS)")
    p.add_argument("--no-auth", action="store_true", help="serve without API keys (127.0.0.1 only)")
    add_settings_flags(p)  # every other flag: one per ServeSettings field, with its default
    p.set_defaults(func=_serve)
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
    except OSError as exc:  # disk full, read-only or forbidden output: io.write_error_line words it
        from .io import write_error_line

        line = write_error_line(exc)
        if line is None:
            raise
        print(f"lorakit {args.command}: {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
