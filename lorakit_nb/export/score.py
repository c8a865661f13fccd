"""Score any Whisper on any speech manifest and keep the evidence: ``lorakit evaluate --data X.jsonl``.

It lives in the export stage because it scores every form a model takes by then, the CTranslate2 export
included (stage 03 code never imports stage 04's).

Covers: ``read_predictions`` (transcripts a run saved), ``load_for_eval`` (a model name, a merged
folder, a peft adapter folder or a CTranslate2 folder -> something that transcribes, at a window that
fits the clips) and ``evaluate_manifest`` (transcribe every row, corpus CER with its counts,
per-utterance reference / hypothesis / normalized forms / edits, written atomically to JSON).

Does NOT cover: generation itself (``speech.evaluate.transcribe``, ``export.ct2.ct2_transcribe``), the
normalizer and CER arithmetic (``metrics``), text (CSV) evaluation (``text.evaluate.evaluate_text_adapter``).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from lorakit_nb.adapter_files import SpeechSidecar, adapter_kind, read_adapter
from lorakit_nb.errors import AdapterError, ExportError
from lorakit_nb.io import ensure_writable
from lorakit_nb.speech.window import FULL_WINDOW_SECONDS as MAX_SECONDS
from lorakit_nb.speech.window import SAMPLE_RATE, window_of


def load_for_eval(model_or_dir, *, longest_seconds: float, audio_seconds=None, base_model=None,
                  compute_type: str = "int8", quantize: bool | None = None):
    """(kind, model, processor, window seconds); kind is "hf" or "ct2".

    Window: ``audio_seconds`` if given, else the window the model was trained with (recorded next
    to it), else 30 s - widened to whole seconds covering the longest clip, because the feature
    extractor silently cuts anything longer; a CTranslate2 folder keeps it (``evaluate_manifest``
    cuts a longer clip with ``export.longform``, as the server does). An adapter folder goes on its base as trained: 4-bit
    NF4 when ``lorakit_asr.json`` says it was trained that way (``quantize`` overrides).
    Example: load_for_eval("runs/03/adapter", longest_seconds=3.4) -> ("hf", PeftModel, processor, 5)
    """
    from lorakit_nb.speech.whisper import load_asr_model
    from lorakit_nb.speech.window import window_seconds

    if isinstance(model_or_dir, tuple):  # an already-loaded (model, processor)
        model, processor = model_or_dir
        return "hf", model, processor, window_seconds(model)
    folder = Path(str(model_or_dir)).expanduser()
    wanted = window_of(folder, override=audio_seconds) if folder.is_dir() else int(audio_seconds or MAX_SECONDS)
    is_ct2 = (folder / "model.bin").is_file()
    seconds = int(wanted) if is_ct2 else min(MAX_SECONDS, max(int(wanted), math.ceil(longest_seconds)))
    if seconds != wanted:
        print(f"[lorakit] window widened from {wanted} s to {seconds} s to cover the longest clip "
              f"({longest_seconds:.1f} s)")
    if is_ct2:
        from transformers import WhisperProcessor

        from lorakit_nb.export.ct2 import load_ct2
        from lorakit_nb.speech.window import set_processor_window

        processor = WhisperProcessor.from_pretrained(folder)
        set_processor_window(processor, seconds)
        return "ct2", load_ct2(folder, compute_type), processor, seconds
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        config, _ = read_adapter(folder)  # a broken config or cut-short weights: one line, before any load
        if adapter_kind(folder, config) == "text":
            raise AdapterError(f"{folder} is a text (causal-LM) adapter; a .jsonl speech manifest needs a Whisper "
                               "model or adapter (notebook 03's runs/03/adapter). Fix: score this adapter on a "
                               f"wu,mandarin,english CSV: lorakit evaluate --adapter {folder} --data "
                               "data/wu_dialect/test.csv")
        meta = SpeechSidecar.load(folder)
        base = base_model or (meta.base_model if meta else None)
        if not base:
            raise ExportError(f"{folder}: adapter without lorakit_asr.json; say which base it belongs to "
                              "(evaluate_manifest(..., base_model='whisper-base'))")
        if quantize is None:
            quantize = bool(meta and (meta.quantized or meta.extra.get("quantized_training")))
        model, processor = load_asr_model(base, quantize=quantize, audio_seconds=seconds,
                                          language=meta.language if meta else "zh")
        return "hf", PeftModel.from_pretrained(model, folder), processor, seconds
    model, processor = load_asr_model(str(model_or_dir), audio_seconds=seconds)  # name or merged folder
    return "hf", model, processor, seconds


def read_predictions(path, n: int | None = None, field: str = "hypothesis", references=None) -> list[str]:
    """Transcripts a run saved: a JSON list of strings, a list of row objects, or an object whose
    "rows" / "hypotheses" / "predictions" holds them. From row objects, ``field`` is taken
    (notebook 03 writes "hypothesis" and "zero_shot"). ``n`` checks the count; ``references``
    checks each row's "reference" (same clips, same order).

    Example: read_predictions("runs/03/test_predictions.json", n=40, field="zero_shot") -> ["下個...", ...]
    """
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: not found; run the notebook that writes it "
                          "(03 writes OUTPUT_DIR/test_predictions.json)")
    data = json.loads(path.read_text("utf-8"))
    if isinstance(data, dict):
        data = next((data[k] for k in ("rows", "hypotheses", "predictions", "utterances") if k in data), None)
    if not isinstance(data, list):
        raise ExportError(f"{path}: expected a list of predictions (or an object with a 'rows' list)")
    hyps = []
    for i, item in enumerate(data):
        if isinstance(item, dict):
            expected = references[i] if references is not None and i < len(references) else None
            if expected is not None and item.get("reference", expected) != expected:
                raise ExportError(f"{path}: row {i} is for {item['reference']!r} but clip {i} of this manifest says "
                                  f"{references[i]!r}; score the manifest that run used")
            item = item.get(field)
        elif field != "hypothesis":  # a bare list holds one system's transcripts: the main hypotheses
            raise ExportError(f"{path}: a plain list of transcripts has no {field!r} field")
        if not isinstance(item, str):
            raise ExportError(f"{path}: row {i} has no {field!r} text")
        hyps.append(item)
    if n is not None and len(hyps) != n:
        raise ExportError(f"{path}: {len(hyps)} predictions for {n} test clips; was it written for this manifest?")
    return hyps




def evaluate_manifest(model_or_dir, manifest, out_json=None, *, audio_seconds=None, base_model=None,
                      batch_size: int = 8, compute_type: str = "int8", quantize: bool | None = None,
                      repetition_guard: bool = False) -> dict:
    """Transcribe every row of a ``{"audio", "text"}`` JSONL manifest, score it, write the JSON.

    ``model_or_dir``: "whisper-base" (zero-shot), a merged folder, an adapter folder (notebook 03's
    ``runs/03/adapter``, on its base as trained: see ``load_for_eval``), a CTranslate2 folder, or a
    loaded ``(model, processor)`` tuple.
    ``out_json`` defaults to ``<folder>/eval_<manifest name>.json`` (a name: ``./eval_<manifest>.json``).
    The JSON holds the corpus CER with substitutions/deletions/insertions, and per utterance:
    audio, reference, hypothesis, their ``normalize_zh`` forms, the edit counts and the CER
    (``null`` for an empty normalized reference: such rows are left out of the corpus CER and counted).
    ``repetition_guard``: a CTranslate2 folder's looping transcripts are decoded again, as ``lorakit serve
    --repetition-guard`` does (``speech.repetition``); the JSON records it and how often it fired.
    Example: evaluate_manifest("runs/03/adapter", "data/zh_speech/test.jsonl")["cer"] -> 0.12
    """
    import numpy as np

    from lorakit_nb.env import write_json_atomic
    from lorakit_nb.metrics import cer_per_utterance, cer_report
    from lorakit_nb.speech.data import load_manifest, read_audio

    rows = load_manifest(manifest)
    audios = [read_audio(r["audio"]) for r in rows]
    refs = [r["text"] for r in rows]
    longest = max(len(a) for a in audios) / SAMPLE_RATE
    if out_json is None:
        folder = Path(str(model_or_dir)) if not isinstance(model_or_dir, tuple) else Path(".")
        out_json = (folder if folder.is_dir() else Path(".")) / f"eval_{Path(manifest).stem}.json"
    ensure_writable(Path(out_json).parent)  # a read-only or full disk: say so before the model loads
    kind, model, processor, seconds = load_for_eval(model_or_dir, longest_seconds=longest, audio_seconds=audio_seconds,
                                                    base_model=base_model, compute_type=compute_type,
                                                    quantize=quantize)
    if repetition_guard and kind != "ct2":
        raise ExportError(f"{model_or_dir}: the repetition guard runs on a CTranslate2 folder only (as served); "
                          "pass the export (e.g. runs/04/ct2_int8) or leave --repetition-guard off")
    guard = {}
    t0 = time.perf_counter()
    if kind == "ct2":
        from lorakit_nb.export.ct2 import ct2_transcribe
        from lorakit_nb.export.longform import transcribe_long

        fits = [i for i, a in enumerate(audios) if len(a) <= seconds * SAMPLE_RATE]
        hyps = [None] * len(audios)
        fitting = ct2_transcribe(model, processor, [audios[i] for i in fits], batch_size=batch_size,
                                 repetition_guard=repetition_guard, guard_stats=guard) if fits else []
        for i, h in zip(fits, fitting):
            hyps[i] = h
        for i in sorted(set(range(len(audios))) - set(fits)):  # over the window: VAD pieces, as served
            hyps[i] = transcribe_long(model, processor, audios[i], seconds, repetition_guard=repetition_guard,
                                      guard_stats=guard)["text"]
    else:
        from lorakit_nb.speech.evaluate import transcribe

        hyps = transcribe(model, processor, audios, batch_size=batch_size, desc="evaluate")
    seconds_taken = time.perf_counter() - t0
    report = cer_report(refs, hyps).as_dict()
    per_utt = cer_per_utterance(refs, hyps)
    utterances = [{"audio": row["audio"], "reference": ref, "hypothesis": hyp,
                   "reference_normalized": u["reference"], "hypothesis_normalized": u["hypothesis"],
                   **{k: u[k] for k in ("substitutions", "deletions", "insertions", "edits", "ref_chars", "cer")}}
                  for row, ref, hyp, u in zip(rows, refs, hyps, per_utt)]
    result = {"model": "(model, processor)" if isinstance(model_or_dir, tuple) else str(model_or_dir),
              "engine": "ctranslate2" if kind == "ct2" else "transformers", "manifest": str(manifest),
              "audio_seconds": seconds, "transcribe_seconds": round(seconds_taken, 2),
              **({"repetition_guard": guard} if repetition_guard else {}),
              "audio_total_seconds": round(float(np.sum([len(a) for a in audios])) / SAMPLE_RATE, 2),
              **report, "utterances": utterances}
    write_json_atomic(out_json, result)
    print(f"[lorakit] CER {result['cer']:.4f} on {len(rows)} utterances ({result['engine']}, {seconds} s window) "
          f"-> {out_json}")
    return result
