"""Whisper + (Q)LoRA for Chinese speech: short audio context, 4-bit NF4 loading, LoRA, labels, batches.

Covers:
- ``shrink_audio_context``: cut Whisper's 30 s encoder window down to the few seconds our clips last.
- ``set_language_prefix``: the ``<|zh|><|transcribe|><|notimestamps|>`` prefix, for labels AND generate().
- ``load_asr_model``: whisper in fp32 or 4-bit NF4 (``lora.quant.nf4_config``: double quantization, fp32 compute);
  ``fast_4bit_inference``: bitsandbytes' faster packed CPU kernel for evaluation, undone afterwards.
- ``add_lora`` / ``lora_param_count``: peft LoRA on q_proj,v_proj (optionally k/out/fc1/fc2), frozen
  base, activation checkpointing (non-re-entrant); the hand formula for the trainable count.
- ``try_task_type``: one training forward with a given peft ``task_type``, to show which ones work.
- ``featurize`` / ``fit_window``: log-mel features + label ids; which clips fit the audio window.
- ``WhisperCollator``: a batch of those features for training (labels padded with -100).

Does NOT cover: the training loop and dev-CER callback (``speech/train.py``), generation
and CER (``speech/evaluate.py``), step time and memory (``speech/cost.py``), reading audio or manifests
(``speech/data.py``), converting the offline CTranslate2 pack (``models/ct2_reader.py``).

Why ``task_type`` is left unset in ``LoraConfig``: ``"SEQ_2_SEQ_LM"`` wraps the model in
``PeftModelForSeq2SeqLM`` (``"CAUSAL_LM"``, as some tutorials write, in ``PeftModelForCausalLM``),
whose ``forward`` is written for text models and passes ``input_ids`` along itself; Whisper's encoder
takes ``input_features`` (log-mels), and with peft 0.21 / transformers 5 a training forward fails with
``TypeError: ... got multiple values for keyword argument 'input_ids'``. Unset, peft returns a plain
``PeftModel`` that forwards every keyword untouched to ``WhisperForConditionalGeneration``.
"""
from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lorakit_nb.errors import AudioError
from lorakit_nb.lora.quant import nf4_config
from lorakit_nb.speech.window import (
    POSITIONS_PER_SECOND,
    SAMPLE_RATE,
    positions_for,
    set_processor_window,
)

ATTENTION_TARGETS = ("q_proj", "v_proj")
ALL_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def shrink_audio_context(model, processor, seconds: int) -> int:
    """Make Whisper's encoder (and feature extractor) work on a `seconds`-long window instead of 30 s.

    Whisper pads every clip to 30 s = 3000 mel frames (100 frames/s: hop 160 samples at 16 kHz);
    conv1 (stride 1) keeps 3000 frames, conv2 (stride 2) halves them to 1500 encoder positions,
    i.e. 50 positions per second. The encoder adds ``embed_positions.weight[:1500]`` (fixed
    sinusoids, one row per position) and transformers 5 refuses any other length:
    ``WhisperEncoder.forward`` raises unless ``input_features.shape[-1] == max_source_positions * 1 * 2``.
    A 3 s clip therefore spends 90 % of the encoder's attention and MLP work on padding.

    The trick: keep the first ``seconds * 50`` rows of ``embed_positions`` (a position's row does not
    depend on the window length, so position 10 gets exactly the vector it got before), set
    ``config.max_source_positions`` to match (the length check and ``generate()``'s short-form test
    read it), and make the feature extractor pad/truncate to ``seconds * 100`` frames. Encoder cost
    falls ~linearly or better (attention is quadratic), and short clips transcribe as well or better.
    Clips longer than ``seconds`` are truncated by the feature extractor: pick ``seconds`` >= the
    longest clip. Call it before ``add_lora`` (it replaces a module).

    Example: shrink_audio_context(model, processor, 5) -> 250; features are then (batch, 80, 500)
    and the encoder output is (batch, 250, d_model).
    """
    enc = model.get_encoder()
    old = enc.embed_positions.num_embeddings
    positions = positions_for(seconds) if seconds == int(seconds) else -1
    if seconds != int(seconds) or not 1 <= positions <= old:
        raise ValueError(f"audio window must be a whole number of seconds in 1..{old // POSITIONS_PER_SECOND}, "
                         f"got {seconds!r}: fix AUDIO_SECONDS in the parameters cell")
    weight = enc.embed_positions.weight.data[:positions].clone()  # (positions, d_model)
    enc.embed_positions = nn.Embedding(positions, weight.shape[1], _weight=weight).requires_grad_(False)
    enc.max_source_positions = positions
    model.config.max_source_positions = positions
    enc.config.max_source_positions = positions  # the encoder may hold its own copy of the config
    set_processor_window(processor, seconds)
    return positions


def set_language_prefix(model, processor, language: str = "zh", task: str = "transcribe") -> list[int]:
    """Set `<|startoftranscript|><|zh|><|transcribe|><|notimestamps|>` for labels and generate().

    Labels: the tokenizer puts the prefix in front of every transcript, so the model learns to
    continue exactly the prompt ``generate(language="zh", task="transcribe")`` feeds it. Batching
    labels needs a pad token; the offline tokenizer has none, so ``<|endoftext|>`` is used (its
    padding positions become -100 in the collator anyway). The generation config gets the language
    and task tables generate() looks tokens up in, in case the checkpoint lacks them.

    Example: returns [50258, 50260, 50359, 50363] for whisper's multilingual vocabulary.
    """
    tok = processor.tokenizer
    if tok.pad_token is None:
        tok.pad_token = "<|endoftext|>"
    tok.set_prefix_tokens(language=language, task=task, predict_timestamps=False)
    gc = model.generation_config
    vocab = tok.get_vocab()
    if not getattr(gc, "lang_to_id", None):
        gc.lang_to_id = {t: i for t, i in vocab.items() if len(t) <= 9 and t.startswith("<|") and t[2:-2].isalpha()
                         and t[2:-2].islower() and t not in ("<|transcribe|>", "<|translate|>", "<|nocaptions|>")}
    if not getattr(gc, "task_to_id", None):
        gc.task_to_id = {"transcribe": vocab["<|transcribe|>"], "translate": vocab["<|translate|>"]}
    gc.no_timestamps_token_id = vocab["<|notimestamps|>"]
    gc.decoder_start_token_id = vocab["<|startoftranscript|>"]
    gc.is_multilingual = True
    gc.forced_decoder_ids = None  # superseded by language/task; left set, it conflicts with them
    gc.language, gc.task = language, task
    model.config.decoder_start_token_id = gc.decoder_start_token_id
    return tok.prefix_tokens


def load_asr_model(name: str = "whisper-base", *, quantize: bool = False, audio_seconds: int | None = None,
                   language: str = "zh"):
    """(model, processor) for `name` ("whisper-base", "tiny-whisper", a hub id or a local dir).

    ``quantize=True`` loads the Linear layers as 4-bit NF4 (``nf4_config``); conv front end,
    embeddings, layer norms and the tied output head stay fp32. ``audio_seconds`` applies
    ``shrink_audio_context``; the language prefix is always set.
    Example: model, processor = load_asr_model("whisper-base", quantize=True, audio_seconds=5)
    """
    from lorakit_nb.models.resolve import load_whisper

    kwargs = {"quantization_config": nf4_config()} if quantize else {}
    model, processor = load_whisper(name, **kwargs)
    for module in model.modules():
        # bitsandbytes >= 0.49 repacks a 4-bit weight for a faster CPU kernel the first time it runs
        # in eval mode without grad (on AVX512-BF16 CPUs), one way: that layout has no backward, so
        # training after an evaluation (our dev-CER callback) would crash. Off by default; only
        # ``fast_4bit_inference`` turns it on, and it puts the trainable layout back afterwards.
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.cpu_packing_supported = module.support_avx512bf16_for_cpu
            module.support_avx512bf16_for_cpu = False
    if audio_seconds:
        shrink_audio_context(model, processor, audio_seconds)
    set_language_prefix(model, processor, language)
    return model, processor


@contextmanager
def fast_4bit_inference(model):
    """Inside: 4-bit layers may use bitsandbytes' packed CPU kernel; on exit the exact training layout returns.

    Measured here on whisper-base, 8 clips, 5 s window: fp32 9.2 s, NF4 (training layout, which
    dequantizes every weight on every decoder step) 30.3 s, NF4 packed kernel 11.1 s. The packing
    rewrites the weight bytes and the quantization state in place (scales become bf16, double
    quantization is undone), so we keep the original bytes and a copy of the state and restore them:
    training continues on bit-identical weights. No-op for non-quantized models and on GPU.
    Example: with fast_4bit_inference(model): model.generate(...)
    """
    saved = []
    for module in model.modules():
        if getattr(module, "cpu_packing_supported", False) and module.weight.device.type == "cpu":
            state = module.weight.quant_state
            saved.append((module, module.weight.data, copy.deepcopy(state)))
            module.support_avx512bf16_for_cpu = True
    try:
        yield model
    finally:
        for module, data, state in saved:
            module.support_avx512bf16_for_cpu = False
            module.weight.data, module.weight.quant_state = data, state
            if getattr(module, "quant_state", None) is not None:
                module.quant_state = state


def add_lora(model, *, r: int = 16, alpha: int = 32, targets=ATTENTION_TARGETS, dropout: float = 0.05,
             checkpointing: bool = True):
    """Freeze the (possibly 4-bit) base, wrap it with LoRA adapters, enable activation checkpointing.

    - ``prepare_model_for_kbit_training`` freezes every base weight and keeps non-quantized
      parameters in fp32; its own checkpointing call is skipped (it uses the name transformers 5
      deprecates) and done here with ``activation_checkpointing_enable`` when available.
    - Activation checkpointing stores only each layer's input and recomputes the layer in the
      backward pass: less memory, more compute (``benchmarks/whisper_qlora.py`` measures both).
      The kit uses torch's non-re-entrant checkpoint (``use_reentrant=False``), which passes
      gradients to the weights inside a block even when the block's input does not require grad,
      so ``enable_input_require_grads`` (the fix many tutorials copy) is not needed: it exists for
      the re-entrant variant, where such a block returns no gradient and no LoRA weight in it
      learns. ``tests/speech/test_whisper.py`` trains with checkpointing and checks LoRA B moves.
    - ``task_type`` is left unset (see the module docstring).
    Example: add_lora(model, r=16, targets=("q_proj", "v_proj")) on whisper-base -> 589,824 trainable.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if checkpointing:
        enable_checkpointing(model)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout, bias="none")
    return get_peft_model(model, cfg)


def try_task_type(model_name: str, features: list[dict], task_type: str | None, r: int = 8,
                  audio_seconds: int | None = None) -> dict:
    """Wrap a freshly loaded `model_name` with LoRA under peft's `task_type` and run one training forward.

    `features`: ``featurize(processor, audios, texts)`` rows (input_features + labels) for a model loaded
    with `audio_seconds` (None: Whisper's 30 s window). Returns
    {"task_type", "wrapper" (the peft class), "ok", "result"}: the loss, or the exception's first line.
    Example: try_task_type("whisper-base", feats, "CAUSAL_LM") -> {"ok": False, "result": "TypeError: ..."}
    """
    import torch
    from peft import LoraConfig, get_peft_model


    model, processor = load_asr_model(model_name, audio_seconds=audio_seconds)
    kwargs = {} if task_type is None else {"task_type": task_type}
    wrapped = get_peft_model(model, LoraConfig(r=r, target_modules=list(ATTENTION_TARGETS), **kwargs))
    batch = WhisperCollator(processor, model.config.decoder_start_token_id)(features)
    row = {"task_type": task_type, "wrapper": type(wrapped).__name__}
    try:
        with torch.no_grad():
            loss = float(wrapped(**batch).loss)
        row.update(ok=True, result=f"loss {loss:.3f}")
    except Exception as exc:  # the point is to show the error a learner would meet
        lines = str(exc).splitlines() or [""]  # torch prints the whole module inside the message: keep its ends
        message = lines[0] if len(lines) == 1 else f"{lines[0]}…{lines[-1]}"
        row.update(ok=False, result=f"{type(exc).__name__}: {message[:200]}")
    return row


def enable_checkpointing(model) -> None:
    """Activation checkpointing, non-re-entrant (transformers 5 name, older fallback); see ``add_lora``."""
    model.config.use_cache = False  # the KV cache is useless in teacher-forced training and clashes with it
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # transformers 4.x
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def lora_param_count(config, r: int, targets=ATTENTION_TARGETS) -> int:
    """Trainable LoRA parameters for a Whisper config, by hand: r * (in + out) per adapted Linear.

    Per layer, ``q/k/v/out_proj`` map d_model -> d_model, so each adds r * 2 * d_model;
    ``fc1`` (d_model -> ffn) and ``fc2`` (ffn -> d_model) add r * (d_model + ffn) each.
    The encoder has one attention per layer (self); the decoder has two (self + cross).
    Example: whisper-small (d_model 768, 12 + 12 layers), r=64, q,v:
    64 * 1536 * (12*2 + 12*2*2) = 98,304 * 72 = 7,077,888.
    """
    d, attn = config.d_model, [t for t in targets if t in ("q_proj", "k_proj", "v_proj", "out_proj")]
    per_attn = len(attn) * r * 2 * d
    enc_ffn = sum(t in targets for t in ("fc1", "fc2")) * r * (d + config.encoder_ffn_dim)
    dec_ffn = sum(t in targets for t in ("fc1", "fc2")) * r * (d + config.decoder_ffn_dim)
    return config.encoder_layers * (per_attn + enc_ffn) + config.decoder_layers * (2 * per_attn + dec_ffn)


def featurize(processor, audios, texts=None) -> list[dict]:
    """Log-mel features (and label ids) for each clip; seconds kept for the generation cap.

    Each item: {"input_features": float32 (n_mels, frames), "labels": [ids] (prefix + text + eot),
    "seconds": clip length}. `frames` is the feature extractor's window (3000, or 500 after a 5 s
    shrink). Example: featurize(processor, [np.zeros(16000)], ["你好"])[0]["input_features"].shape
    -> (80, 500) with a 5 s window.
    """
    fe, out = processor.feature_extractor, []
    for i, audio in enumerate(audios):
        audio = np.asarray(audio, dtype=np.float32)
        feats = fe(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]  # (n_mels, frames)
        item = {"input_features": feats, "seconds": len(audio) / SAMPLE_RATE}
        if texts is not None:
            item["labels"] = processor.tokenizer(texts[i]).input_ids
        out.append(item)
    return out


def fit_window(audios, texts, seconds: float):
    """(audios, texts, n_left_out): keep the clips no longer than the window.

    A clip longer than the window would be cut by the feature extractor while its label still holds
    the whole sentence: training on it teaches the model to invent the missing end. So training
    leaves such clips out (and says how many); evaluation keeps every clip, cut or not.
    Example: fit_window([np.zeros(16000 * 3), np.zeros(16000 * 7)], ["a", "b"], 5) -> ([...3 s], ["a"], 1);
    a window shorter than every clip raises AudioError naming the longest clip's length.
    """
    keep = [i for i, a in enumerate(audios) if len(a) <= seconds * SAMPLE_RATE]
    if audios and not keep:  # nothing to train on: say so now, not as a tensor error inside Trainer
        shortest, longest = (f(len(a) for a in audios) / SAMPLE_RATE for f in (min, max))
        raise AudioError(f"all {len(audios)} training clips are longer than the {seconds:g} s window (shortest "
                         f"{shortest:.1f} s, longest {longest:.1f} s). Fix: set AUDIO_SECONDS to at least "
                         f"{math.ceil(longest)} (the longest clip, so none is left out; 30 at most).")
    return [audios[i] for i in keep], [texts[i] for i in keep], len(audios) - len(keep)


@dataclass
class WhisperCollator:
    """Stack features, pad labels with -100 (ignored by the loss), drop a leading start token.

    The model builds ``decoder_input_ids`` by shifting labels right and prepending
    ``decoder_start_token_id`` (<|startoftranscript|>). The tokenizer already put that token first,
    so if every row starts with it we drop it -- otherwise the decoder would see it twice.
    Padding is found from the attention mask, not by token id: pad and end-of-text are the same
    id (50257), and the real end-of-text must stay in the labels so the model learns to stop.
    Example: labels [[S, zh, tr, nt, a, b, E], [S, zh, tr, nt, a, E]] ->
             [[zh, tr, nt, a, b, E], [zh, tr, nt, a, E, -100]]
    """

    processor: object
    decoder_start_token_id: int

    def __call__(self, features: list[dict]) -> dict:
        input_features = torch.stack([torch.as_tensor(f["input_features"]) for f in features])  # (b, mels, frames)
        batch = self.processor.tokenizer.pad({"input_ids": [f["labels"] for f in features]}, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"].ne(1), -100)  # (b, max_len)
        if (labels[:, 0] == self.decoder_start_token_id).all():
            labels = labels[:, 1:]
        return {"input_features": input_features, "labels": labels}
