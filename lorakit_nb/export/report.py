"""What notebook 04 reports about its exports: the speed table, the model cards, the size comparison.

Covers:
- ``subset_manifests``: the first n rows of each split as small manifests (the smoke profile's data);
- ``speed_table``: batch-1 and batched seconds per engine with the CER of each, and the two factors
  that make up the speed-up (the engine's, quantization's);
- ``size_table``: bytes on disk of each shipping form, and how much int8 saves against float32 and float16;
- ``whisper_cards`` / ``text_card``: the README.md model cards of the merged folder, each CTranslate2
  folder and the merged text model, each card leading with the test CER of that very folder.

Does NOT cover: measuring (``export.ct2.parity_check`` / ``speed_check``), writing one card
(``export.merge.write_model_card``), plots (``export.plot``).
"""
from __future__ import annotations

import json
from pathlib import Path

from lorakit_nb.errors import ExportError
from lorakit_nb.export.merge import LICENCES, write_model_card
from lorakit_nb.io import write_text_atomic

ENGINES = ("hf_fp32", "ct2_float32", "ct2_int8")
WHISPER_NOTES = ("CER after lorakit_nb.metrics.normalize_zh (Traditional->Simplified, numbers as spoken Chinese, "
                 "no punctuation) - not comparable with CERs computed with another normalizer.",
                 "Greedy decoding with a length cap; beam search loops on this kind of audio.")


def subset_manifests(manifests: dict, out_dir, n: int) -> dict:
    """Write the first ``n`` rows of each manifest to ``out_dir/<split>.jsonl`` (audio paths kept as given).

    Example: subset_manifests({"test": "data/zh_speech/test.jsonl"}, "runs/04/smoke_data", 8)
    -> {"test": Path("runs/04/smoke_data/test.jsonl")} holding 8 rows
    """
    from lorakit_nb.speech.data import load_manifest

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, path in manifests.items():
        rows = load_manifest(path)[:n]
        written[split] = out_dir / f"{split}.jsonl"
        write_text_atomic(written[split], "".join(json.dumps({"audio": r["audio"], "text": r["text"]},
                                                             ensure_ascii=False) + "\n" for r in rows))
    return written


def speed_table(speed: dict, batched_seconds: dict, cers: dict, *, batch_size: int, n_batched: int) -> tuple:
    """(rows, engine factor, quantization factor) from ``ct2.speed_check(..., also={"float32": ...})``.

    ``batched_seconds`` / ``cers``: {engine: value} for ``ENGINES`` (the batched pass over all clips).
    The engine factor is HF fp32 / CT2 float32 (same weights, another engine), the quantization factor
    CT2 float32 / CT2 int8 (same engine, int8 weights); their product is the int8 speed-up.
    Example: batch-1 seconds {hf_fp32: 12, ct2_float32: 6, ct2_int8: 3} -> engine x2.0, quantization x2.0,
    and the ct2_int8 row says "x vs HF (batch 1)": 4.0
    """
    seconds = speed["seconds"]
    missing = [e for e in ENGINES if e not in seconds or e not in batched_seconds or e not in cers]
    if missing:
        raise ExportError(f"speed_table needs {ENGINES} everywhere; missing {missing}: time CT2 float32 with "
                          "speed_check(..., also={'float32': folder})")
    rows = [{"engine": e, f"batch 1, {speed['n_clips']} clips (s)": seconds[e],
             "x vs HF (batch 1)": seconds["hf_fp32"] / seconds[e],
             f"batch {batch_size}, {n_batched} clips (s)": batched_seconds[e],
             f"x vs HF (batch {batch_size})": batched_seconds["hf_fp32"] / batched_seconds[e], "CER": cers[e]}
            for e in ENGINES]
    return rows, seconds["hf_fp32"] / seconds["ct2_float32"], seconds["ct2_float32"] / seconds["ct2_int8"]


def size_table(sizes: dict) -> dict:
    """How much the int8 weights save against float32 and against float16 (the usual half-precision baseline).

    ``sizes``: bytes of the weight files, with keys "ct2_int8", "ct2_float32", "ct2_float16".
    Example: {"ct2_int8": 80, "ct2_float32": 290, "ct2_float16": 146} -> {"int8_vs_float32": 0.724...,
    "int8_vs_float16": 0.452...}
    """
    return {"int8_vs_float32": 1 - sizes["ct2_int8"] / sizes["ct2_float32"],
            "int8_vs_float16": 1 - sizes["ct2_int8"] / sizes["ct2_float16"]}


def _usage(kind: str, folder: str, window: int) -> str:
    if kind == "merged":  # each snippet runs the model at the window it was trained and scored with
        return ('from transformers import WhisperForConditionalGeneration, WhisperProcessor\n'
                'from lorakit_nb.speech.whisper import shrink_audio_context\n'
                f'model = WhisperForConditionalGeneration.from_pretrained("{folder}")\n'
                f'processor = WhisperProcessor.from_pretrained("{folder}")\n'
                f'shrink_audio_context(model, processor, {window})  # the trained window, from lorakit_export.json\n'
                '# then: processor(audio, sampling_rate=16000) -> model.generate(..., language="zh", task="transcribe")')
    return ('# the trained window: lorakit serve / lorakit evaluate feed CTranslate2 features of this length\n'
            f'lorakit serve --model {folder} --api-key-file KEYS   # OpenAI-style /v1/audio/transcriptions\n'
            '# faster-whisper loads this folder too, but runs a 30 s encoder window: a different function\n'
            f'# for an adapter trained at {window} s (CER in the table above)')


def whisper_cards(folders: dict, own_cer: dict, shared_scores: dict, *, base_model: str, data_note: str,
                  notes, audio_seconds: int, n_test: int) -> list[Path]:
    """One README.md card per Whisper export folder; each leads with the test CER of THAT folder.

    ``notes`` come first, then ``WHISPER_NOTES`` (the normalizer behind every CER, the decoding).

    ``folders``: {"merged": path, "int8": path, "float32": path}; ``own_cer``: the same keys -> test CER.
    Example: whisper_cards({"merged": m, "int8": c8}, {"merged": 0.08, "int8": 0.09}, {...}, base_model=
    "whisper-base", data_note="...", notes=[...], audio_seconds=5, n_test=40) -> [m/README.md, c8/README.md]
    """
    cards = []
    for kind, folder in folders.items():
        folder = Path(folder)
        engine = "transformers fp32" if kind == "merged" else f"CTranslate2 {kind}"
        scores = {f"CER on the {n_test} test clips, this folder ({engine}, normalize_zh)": own_cer[kind],
                  **shared_scores}
        title = (f"{base_model} + Mandarin LoRA (merged)" if kind == "merged"
                 else f"{base_model} + Mandarin LoRA, CTranslate2 {kind}")
        cards.append(write_model_card(folder, base_model, data_note, scores, LICENCES["whisper"], title=title,
                                      usage=_usage("merged" if kind == "merged" else "ct2", folder.name, audio_seconds),
                                      notes=[*notes, *WHISPER_NOTES]))
    return cards


def text_card(out_dir, result: dict) -> Path:
    """The card of notebook 02's merged Wu -> Mandarin model (``export.text.merge_text_adapter``'s result).

    Example: text_card("runs/04/text_merged", merge_text_adapter("runs/02", "runs/04/text_merged"))
    -> runs/04/text_merged/README.md
    """
    usage = ('from transformers import AutoModelForCausalLM, AutoTokenizer\n'
             f'tok = AutoTokenizer.from_pretrained("{Path(out_dir).name}")\n'
             f'model = AutoModelForCausalLM.from_pretrained("{Path(out_dir).name}")\n'
             'ids = tok("Translate Wu dialect to Mandarin: 侬今朝吃饭了伐？\\nMandarin:", return_tensors="pt")\n'
             'print(tok.decode(model.generate(**ids, max_new_tokens=40)[0], skip_special_tokens=True))')
    notes = ["Scores are notebook 02's (chrF 0-100 and exact match on its test split), copied from its metrics.json.",
             "Merged into the fp32 base; the adapter was trained on a bfloat16 base."]
    return write_model_card(out_dir, result["base_model"],
                            "Wu (Shanghainese) -> Mandarin sentence pairs from lorakit-nb data/wu_dialect.",
                            result["scores"], LICENCES["gemma"], title="gemma-3-270m + Wu->Mandarin LoRA (merged)",
                            usage=usage, notes=notes)
