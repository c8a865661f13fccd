"""A merged Whisper as CTranslate2 (int8 / float32): convert, transcribe, check parity and speed.

Covers:
- ``export_ct2``: ``ctranslate2.converters.TransformersConverter`` on a local merged folder (offline),
  plus the tokenizer/preprocessor files faster-whisper reads; the result is load-checked before it
  replaces ``out_dir``. ``converted_bytes``: the size of a conversion, without keeping it.
- ``ct2_decoder`` / ``ct2_transcribe``: ``ctranslate2.models.Whisper.generate`` plugged into the kit's
  one loop (``speech.evaluate.transcribe_loop``): the SAME log-mel features, prompt, batching and
  token cap as the transformers model gets.
- ``faster_whisper_transcribe``: the user-facing API (computes its own features, pads to 30 s).
- ``parity_check``: CER of HF vs CT2 and how often their transcripts agree;
  ``speed_check``: HF fp32 vs CT2 greedy on the same clips and window, interleaved in one run.

Does NOT cover: merging (``export/merge.py``), transformers-side generation (``speech/evaluate.py``),
CER arithmetic (``metrics``), beam search or timestamps (greedy, ``<|notimestamps|>`` only).

Pitfall measured with ctranslate2 4.8.5: ``Whisper.generate(max_length=L)`` stops after L // 2 new
tokens (its C++ halves it, as OpenAI's ``sample_len = n_text_ctx // 2``), so a cap of N new tokens
is ``max_length=2 * N``. ``tests/export/test_merge_ct2.py`` pins this down against transformers' tokens.
With a previous-text prompt the whole prompt (P tokens) counts too: new tokens = min(L // 2, L - P + 1),
so ``ct2_generate`` asks for ``max(2 * N, N + P - 1)`` (for the plain 4-token prompt and N >= 3: 2 * N).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from lorakit_nb.errors import ExportError
from lorakit_nb.speech.window import SAMPLE_RATE

FALLBACK_NO_REPEAT_NGRAM = 3  # tokens; the repetition guard's second greedy pass may not repeat a 3-gram
REPETITION_GUARD = False  # ct2_transcribe's default, set from benchmarks/repetition_guard.py's measurement
QUANTIZATIONS = ("int8", "float32", "int8_float32", "int16", "float16", "bfloat16")
# What faster-whisper (tokenizer.json, preprocessor_config.json) and WhisperProcessor.from_pretrained need;
# never config.json: the CTranslate2 folder has its own.
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "processor_config.json",
              "generation_config.json", "lorakit_export.json")


def export_ct2(merged_dir, out_dir, quantization: str = "int8") -> Path:
    """Convert a transformers Whisper folder into a CTranslate2 folder with weights in ``quantization``.

    Example: export_ct2("runs/04/merged", "runs/04/ct2_int8", "int8") -> runs/04/ct2_int8 with
    model.bin (~78 MB int8 for whisper-base; ~290 MB float32), config.json, vocabulary.json,
    tokenizer.json, preprocessor_config.json; then
    ``faster_whisper.WhisperModel("runs/04/ct2_int8", compute_type="int8")`` loads it.
    """
    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    from lorakit_nb.io import atomic_dir

    merged_dir = Path(merged_dir)
    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if not (merged_dir / "config.json").is_file() or not any(merged_dir.glob("*.safetensors")):
        raise ExportError(f"{merged_dir}: not a transformers model folder (config.json + *.safetensors); "
                          "run export.merge_adapter first and pass its output folder")
    copy = [f for f in SIDE_FILES if (merged_dir / f).is_file()]
    with atomic_dir(out_dir) as tmp:
        TransformersConverter(str(merged_dir), copy_files=copy).convert(str(tmp), quantization=quantization,
                                                                        force=True)
        ctranslate2.models.Whisper(str(tmp), device="cpu", compute_type=quantization)  # load check
    return Path(out_dir)


def converted_bytes(merged_dir, quantization: str = "float16") -> int:
    """Bytes of the model.bin a conversion to ``quantization`` writes; the folder is thrown away.

    For a size comparison with a form this CPU cannot run (float16: CTranslate2 computes it on GPUs).
    Example: converted_bytes("runs/04/merged", "float16") -> ~145_000_000 for whisper-base (2 bytes a weight)
    """
    import tempfile

    from ctranslate2.converters import TransformersConverter

    if quantization not in QUANTIZATIONS:
        raise ExportError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    with tempfile.TemporaryDirectory() as tmp:
        TransformersConverter(str(merged_dir)).convert(tmp + "/ct2", quantization=quantization, force=True)
        return (Path(tmp) / "ct2" / "model.bin").stat().st_size


def load_ct2(ct2_dir, compute_type: str = "int8", threads: int | None = None):
    """``ctranslate2.models.Whisper`` on CPU with ``threads`` intra-op threads (default: torch's count)."""
    import ctranslate2
    import torch

    if not (Path(ct2_dir) / "model.bin").is_file():
        raise ExportError(_not_ct2_message(Path(ct2_dir)))
    return ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type=compute_type,
                                      intra_threads=threads or torch.get_num_threads())


def _not_ct2_message(folder: Path) -> str:
    """What a folder without model.bin is, and what to do with it: a text adapter is served with --adapter,
    a Whisper adapter or merged model is exported first (notebook 04). Example: a notebook 02 adapter ->
    "runs/02/mandarin/adapter is a text (causal-LM) LoRA adapter, not a CTranslate2 Whisper folder ..."."""
    from lorakit_nb.adapter_files import ADAPTER_CONFIG, adapter_kind

    if (folder / ADAPTER_CONFIG).is_file():
        if adapter_kind(folder) == "text":
            return (f"{folder} is a text (causal-LM) LoRA adapter, not a CTranslate2 Whisper folder. Fix: serve it "
                    f"on the text route: lorakit serve --adapter NAME={folder} (GGUF base, /v1/completions).")
        return (f"{folder} is a Whisper LoRA adapter, not a CTranslate2 folder. Fix: merge and convert it first "
                "(notebook 04: merge_adapter, then export_ct2) and pass the result, e.g. --model runs/04/ct2_int8.")
    return (f"{folder}: no model.bin, so not a CTranslate2 Whisper folder. Fix: pass the folder notebook 04 "
            "wrote (e.g. runs/04/ct2_int8), or convert a merged model with export_ct2(merged_dir, out_dir).")


MAX_PROMPT_TOKENS = 223  # Whisper's previous-text budget: n_text_ctx // 2 - 1 (OpenAI keeps the LAST ones)


def prompt_ids(tokenizer, language: str = "zh", prompt_text: str | None = None) -> list[int]:
    """The decoder prompt transformers' generate() builds; ``prompt_text`` goes first as Whisper's previous text.

    ``<|startofprev|>`` + the text's tokens (its last ``MAX_PROMPT_TOKENS``) steer spelling and terms
    (OpenAI's ``prompt``); the model transcribes after ``<|startoftranscript|>`` as always.
    Example (whisper-base): prompt_ids(tok) -> [50258, 50260, 50359, 50363];
    prompt_ids(tok, prompt_text="词") -> [50361, <tokens of " 词">, 50258, 50260, 50359, 50363]
    """
    ids = tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", f"<|{language}|>", "<|transcribe|>",
                                           "<|notimestamps|>"])
    if prompt_text and prompt_text.strip():
        prev = tokenizer.encode(" " + prompt_text.strip(), add_special_tokens=False)[-MAX_PROMPT_TOKENS:]
        ids = [tokenizer.convert_tokens_to_ids("<|startofprev|>"), *prev, *ids]
    return ids


def ct2_generate(ct2_model, features: np.ndarray, prompt: list[int], max_new_tokens: int, **options) -> list[list[int]]:
    """Greedy token ids (prompt and end-of-text excluded) for a (batch, n_mels, frames) float32 array.

    Any ``frames`` works: the CT2 encoder adds only the first frames // 2 position rows, exactly what
    ``speech.whisper.shrink_audio_context`` keeps. ``options``: more ``Whisper.generate`` arguments
    (e.g. ``no_repeat_ngram_size=3``). Example: features (8, 80, 500) -> 8 token lists.
    """
    import ctranslate2

    x = ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))
    max_length = max(2 * max_new_tokens, max_new_tokens + len(prompt) - 1)  # see the module's pitfall note
    results = ct2_model.generate(x, [prompt] * features.shape[0], beam_size=1, max_length=max_length, **options)
    return [r.sequences_ids[0] for r in results]


def ct2_decode_batch(ct2_model, processor, audios, prompt: list[int], *, per_second: float = 6.0,
                     repetition_guard: bool = False, guard_stats: dict | None = None) -> list[tuple[str, list[int]]]:
    """Clips as ONE greedy batch, each cut to its OWN token cap: [(text, token ids)] in input order.

    The batch runs with its longest clip's cap and every clip's tokens are then cut to its own
    (``speech.evaluate.max_new_tokens_for``): what greedy decoding of that clip alone gives, so a
    transcript never depends on its batch mates. The server's engine and ``export.longform`` use it.
    ``repetition_guard``: looping rows go again as one batch with ``no_repeat_ngram_size=FALLBACK_NO_REPEAT_NGRAM``
    (own caps), kept by ``speech.repetition.replace_repetitive`` (ids with their text); ``guard_stats`` counts.
    Example: ct2_decode_batch(model, processor, [a, b], prompt_ids(processor.tokenizer)) -> [("你好", [...]), ...]
    """
    from lorakit_nb.speech.evaluate import max_new_tokens_for
    from lorakit_nb.speech.repetition import replace_repetitive
    from lorakit_nb.speech.whisper import featurize

    feats = featurize(processor, audios)
    x = np.stack([f["input_features"] for f in feats])  # (batch, n_mels, window frames)
    caps = [max_new_tokens_for(f["seconds"], per_second=per_second) for f in feats]
    tok = processor.tokenizer

    def run(rows, **options):  # rows of x as one batch at their longest cap, each cut to its own
        ids = ct2_generate(ct2_model, x[rows], prompt, max(caps[i] for i in rows), **options)
        return [(tok.decode(t[:caps[i]], skip_special_tokens=True).strip(), list(t[:caps[i]])) for i, t in zip(rows, ids)]

    out = run(list(range(len(feats))))
    if not repetition_guard:
        return out
    return replace_repetitive(out, lambda rows: run(rows, no_repeat_ngram_size=FALLBACK_NO_REPEAT_NGRAM),
                              text=lambda r: r[0], stats=guard_stats)


def ct2_decoder(ct2_model, processor, language: str = "zh", *, repetition_guard: bool = False,
                guard_stats: dict | None = None, prompt_text: str | None = None, **options):
    """``decode(features, cap)`` for a CTranslate2 Whisper: the counterpart of ``speech.evaluate.hf_decoder``.

    ``repetition_guard``: a looping transcript (``speech.repetition.is_repetitive``) is decoded again
    greedily with ``no_repeat_ngram_size=FALLBACK_NO_REPEAT_NGRAM`` (``speech.repetition.guarded``, the
    rule ``ct2_decode_batch`` uses too); ``guard_stats`` counts it.
    ``prompt_text``: Whisper's previous-text prompt (``prompt_ids``), e.g. domain terms.
    """
    prompt = prompt_ids(processor.tokenizer, language, prompt_text)

    def decoder(**extra):
        def decode(features, cap):
            return [processor.tokenizer.decode(ids, skip_special_tokens=True)
                    for ids in ct2_generate(ct2_model, features, prompt, cap, **options, **extra)]
        return decode

    if not repetition_guard:
        return decoder()
    from lorakit_nb.speech.repetition import guarded

    return guarded(decoder(), decoder(no_repeat_ngram_size=FALLBACK_NO_REPEAT_NGRAM), stats=guard_stats)


def ct2_transcribe(ct2_model, processor, audios, *, batch_size: int = 8, per_second: float = 6.0,
                   max_new_tokens=None, language: str = "zh", repetition_guard: bool = REPETITION_GUARD,
                   guard_stats: dict | None = None, prompt_text: str | None = None) -> list[str]:
    """``speech.evaluate.transcribe`` for a CTranslate2 model: the same loop, features, batches and caps.

    ``repetition_guard``: see ``ct2_decoder``; its default is measured (``benchmarks/repetition_guard.py``).
    ``prompt_text``: Whisper's previous-text prompt for every clip (``prompt_ids``); None: none.
    Example: ct2_transcribe(load_ct2("runs/04/ct2_int8"), processor, audios) -> ["今天...", ...]
    """
    from lorakit_nb.speech.evaluate import transcribe_loop

    decode = ct2_decoder(ct2_model, processor, language, repetition_guard=repetition_guard, guard_stats=guard_stats,
                         prompt_text=prompt_text)
    return transcribe_loop(decode, processor, audios, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           per_second=per_second)


def shipped_window(ct2_dir) -> int:
    """The audio window (seconds) an export was trained with, else 30 (``speech.window.window_of``)."""
    from lorakit_nb.speech.window import window_of

    return window_of(ct2_dir)


def faster_whisper_transcribe(ct2_dir, audios, *, compute_type: str = "int8", language: str = "zh",
                              per_second: float = 6.0, chunk_length: int | None = None) -> list[str]:
    """Transcribe with ``faster_whisper.WhisperModel`` (greedy, no timestamps, no VAD, no fallback).

    ``chunk_length``: the window in seconds; default: the one the export was trained with
    (``shipped_window``), so the deployed call runs the model that was scored. Left to itself
    faster-whisper pads every clip to 30 s: a different function for an adapter trained at 5 s
    (encoder self-attention mixes all positions, padding included). It computes its own log-mels
    (numpy, not transformers'), so its text can still differ slightly from ``ct2_transcribe``'s.
    Example: faster_whisper_transcribe("runs/04/ct2_int8", audios[:4]) -> 4 strings
    """
    import torch
    from faster_whisper import WhisperModel

    from lorakit_nb.speech.evaluate import max_new_tokens_for

    chunk_length = int(chunk_length or shipped_window(ct2_dir))
    model = WhisperModel(str(ct2_dir), device="cpu", compute_type=compute_type, cpu_threads=torch.get_num_threads())
    out = []
    for audio in audios:
        segments, _ = model.transcribe(np.asarray(audio, dtype=np.float32), language=language, beam_size=1,
                                       best_of=1, temperature=0.0, condition_on_previous_text=False,
                                       without_timestamps=True, vad_filter=False, chunk_length=chunk_length,
                                       max_new_tokens=max_new_tokens_for(len(audio) / SAMPLE_RATE, per_second=per_second))
        out.append("".join(s.text for s in segments).strip())  # segments is a generator: this runs it
    return out


def parity_check(hf_model, processor, ct2_dir, audios, references, *, compute_type: str = "int8",
                 hf_hypotheses=None, batch_size: int = 8, faster_whisper_clips: int = 0) -> dict:
    """CER of the transformers model vs its CTranslate2 export on the same clips, and their agreement.

    ``agreement``: fraction of clips whose transcripts are identical after ``normalize_zh``;
    ``exact_agreement``: identical raw strings. Pass ``hf_hypotheses`` when already computed.
    ``faster_whisper_clips=n`` also transcribes the first n clips through faster-whisper's API, at the
    window the export was trained with.
    Example: -> {"cer_hf": 0.121, "cer_ct2": 0.118, "cer_gap_points": 0.3, "agreement": 0.95, ...}
    """
    from lorakit_nb.metrics import cer
    from lorakit_nb.normalize import normalize_zh
    from lorakit_nb.speech.evaluate import transcribe

    refs = list(references)
    if hf_hypotheses is None:
        hf_hypotheses = transcribe(hf_model, processor, audios, batch_size=batch_size, desc="transformers")
    t0 = time.perf_counter()
    ct2_hyps = ct2_transcribe(load_ct2(ct2_dir, compute_type), processor, audios, batch_size=batch_size)
    ct2_seconds = time.perf_counter() - t0
    same = [normalize_zh(a) == normalize_zh(b) for a, b in zip(hf_hypotheses, ct2_hyps)]
    report = {"compute_type": compute_type, "n_clips": len(refs), "cer_hf": cer(refs, hf_hypotheses),
              "cer_ct2": cer(refs, ct2_hyps), "agreement": sum(same) / len(same),
              "exact_agreement": sum(a == b for a, b in zip(hf_hypotheses, ct2_hyps)) / len(same),
              "disagreeing_clips": [i for i, s in enumerate(same) if not s], "ct2_seconds": ct2_seconds,
              "hf_hypotheses": list(hf_hypotheses), "ct2_hypotheses": ct2_hyps}
    report["cer_gap_points"] = 100 * abs(report["cer_ct2"] - report["cer_hf"])
    if faster_whisper_clips:
        n = min(faster_whisper_clips, len(refs))
        fw = faster_whisper_transcribe(ct2_dir, list(audios)[:n], compute_type=compute_type)
        report.update(faster_whisper_hypotheses=fw, cer_faster_whisper=cer(refs[:n], fw),
                      cer_ct2_same_clips=cer(refs[:n], ct2_hyps[:n]))
    return report


def speed_check(hf_model, processor, ct2_dir, audios, *, compute_type: str = "int8", max_new_tokens=None,
                per_second: float = 6.0, warmup: int = 1, also: dict | None = None) -> dict:
    """Seconds for transformers greedy ``generate`` vs CTranslate2 on the same clips, one clip at a time.

    Both get the same features (so the same window: ``processor``'s, e.g. 500 frames after a 5 s
    shrink), the same prompt and the same cap, and run with torch's thread count. The two engines
    alternate clip by clip, so a burst of background load hits both rather than one.
    `also`: more CTranslate2 folders to time in the same rotation, {compute_type: folder} (e.g. the float32
    export beside the int8 one, to tell the engine's effect from quantization's); their seconds are in
    ``seconds`` under "ct2_<compute_type>", with transformers' as "hf_fp32".
    Example: -> {"frames": 500, "n_clips": 40, "hf_seconds": 14.2, "ct2_seconds": 4.1, "ratio": 3.46,
                 "seconds": {"hf_fp32": 14.2, "ct2_int8": 4.1}, ...}
    """
    import torch

    from lorakit_nb.speech.evaluate import hf_decoder, hf_inference, max_new_tokens_for
    from lorakit_nb.speech.whisper import featurize
    from lorakit_nb.speech.window import model_frames

    feats = featurize(processor, audios)
    frames = feats[0]["input_features"].shape[-1]
    expected = model_frames(hf_model)
    if frames != expected:
        raise ExportError(f"the processor makes {frames}-frame features but the transformers model takes {expected}: "
                          "shrink both with speech.whisper.shrink_audio_context(model, processor, seconds)")
    engines = {"hf": hf_decoder(hf_model, processor), "ct2": ct2_decoder(load_ct2(ct2_dir, compute_type), processor)}
    for extra_type, folder in (also or {}).items():
        engines[f"ct2_{extra_type}"] = ct2_decoder(load_ct2(folder, extra_type), processor)
    times = {name: [] for name in engines}
    with hf_inference(hf_model):
        for k, f in enumerate([feats[0]] * warmup + feats):
            x = f["input_features"][None]  # (1, n_mels, frames)
            cap = max_new_tokens or max_new_tokens_for(f["seconds"], per_second=per_second)
            for name, decode in engines.items():  # alternate engines clip by clip
                t0 = time.perf_counter()
                decode(x, cap)
                if k >= warmup:
                    times[name].append(time.perf_counter() - t0)
    hf_times, ct2_times = times["hf"], times["ct2"]
    return {"frames": int(frames), "n_clips": len(feats), "compute_type": compute_type,
            "threads": torch.get_num_threads(), "hf_seconds": sum(hf_times), "ct2_seconds": sum(ct2_times),
            "ratio": sum(hf_times) / sum(ct2_times),
            "median_clip_ratio": float(np.median(np.array(hf_times) / np.array(ct2_times))),
            "seconds": {"hf_fp32": sum(hf_times), f"ct2_{compute_type}": sum(ct2_times),
                        **{name: sum(times[name]) for name in engines if name not in ("hf", "ct2")}}}

