"""Config-driven LoRA training of a causal LM on Wu-dialect sentence pairs (HF Trainer + peft).

Covers: turning a pair into prompt + response tokens with the loss on the response only (labels -100
on the prompt and on padding); a padding collator; the response-only-logits loss, which applies the
vocabulary head (262k rows for Gemma 3) only at the positions the loss reads; `train_from_config`
(the function behind `lorakit train --config ...` and notebook 02); resuming an interrupted run from
its last `checkpoint-N` (`resume`: weights, optimizer, scheduler, RNG state and step, as if never
stopped); continuing training from a saved adapter with a fresh optimizer (`resume_adapter`:
incremental training); a second adapter trained on the same in-memory base; the adapter variants a
config can ask for (DoRA, rsLoRA, PiSSA / OLoRA init, LoRA+, all-linear), passed to peft's own
`LoraConfig` / `create_loraplus_optimizer`; several processes under `torchrun` (DDP, gloo on CPU).
Does not: generate or score text (`text/evaluate.py`), parse YAML (`text/config.py`), find model
weights (`models/resolve.py`) or read the Trainer's log (`training.run_trainer`).
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (
    EarlyStoppingCallback,
    Trainer,
    TrainingArguments,
    set_seed,
)

from lorakit_nb.adapter_files import TrainSidecar, save_adapter
from lorakit_nb.env import torch_threads
from lorakit_nb.errors import ConfigError
from lorakit_nb.io import ensure_writable
from lorakit_nb.text.adapters import FlatAdapterCheckpoints
from lorakit_nb.text.config import (
    TrainConfig,
    check_inputs,
    config_from_dict,
    data_files,
    load_config,
)
from lorakit_nb.text.config_rules import check_target_modules
from lorakit_nb.text.data import load_disjoint, make_examples
from lorakit_nb.training import TrainResult, resume_checkpoint, run_trainer

IGNORE = -100  # label value PyTorch's cross_entropy skips


def encode_pair(tokenizer, prompt: str, response: str, max_len: int) -> dict:
    """Token ids of prompt + " " + response + EOS, with labels only on the response part.

    Prompt and response are tokenized separately and concatenated, so the boundary is exact.
    Example (ids made up): prompt -> [2, 71, 72], response " 你好" -> [90, 91] + eos 1
        input_ids [2, 71, 72, 90, 91, 1]; labels [-100, -100, -100, 90, 91, 1]
    Too long pairs lose response tokens from the end (the prompt is kept whole).
    """
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    r = tokenizer(" " + response.strip(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    r = r[: max(1, max_len - len(p))]
    return {"input_ids": p + r, "labels": [IGNORE] * len(p) + r}


def encode_pairs(tokenizer, pairs, template: str, target: str, max_len: int):
    """A ``datasets.Dataset`` of encoded pairs (columns input_ids, labels), built with ``Dataset.map``.

    `template` filled from the pair is the prompt, its `target` column the response. Kept in memory
    (nothing cached on disk). Example: encode_pairs(tok, pairs, DEFAULT_TEMPLATE, "mandarin", 128)[0]
    -> {"input_ids": [...], "labels": [-100, ..., 90, 91, 1]}
    """
    import hashlib

    from datasets import Dataset

    examples = Dataset.from_list([{"prompt": ex["prompt"], "response": ex["response"]}
                                  for ex in make_examples(pairs, template, target)])
    # a fingerprint from the inputs, so datasets need not hash the tokenizer (it warns when it cannot)
    key = hashlib.sha256(repr((tokenizer.name_or_path, len(tokenizer), template, max_len,
                               examples["prompt"], examples["response"])).encode()).hexdigest()[:16]
    return examples.map(lambda ex: encode_pair(tokenizer, ex["prompt"], ex["response"], max_len),
                        remove_columns=["prompt", "response"], new_fingerprint=key, desc="encode pairs")


class PadCollator:
    """Right-pad a list of encoded pairs into tensors; padding gets attention 0 and label -100."""

    def __init__(self, pad_token_id: int):
        self.pad = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad, dtype=torch.long)  # (batch, seq)
        labels = torch.full_like(ids, IGNORE)
        mask = torch.zeros_like(ids)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def response_only_loss(model, input_ids, attention_mask, labels, **_) -> torch.Tensor:
    """Mean next-token cross-entropy over response tokens, computing logits ONLY where labels != -100.

    The naive loss builds logits for every position: (batch, seq, 262144) floats for Gemma 3, most of
    them thrown away on prompt and padding. Here the body runs as usual, then the positions whose NEXT
    token is a label are gathered and only those go through the head. Same number, less work.
    The body runs through `model` itself, asked for logits at no position (`logits_to_keep` empty) and for
    its hidden states, the last of which is the final norm's output (what the head reads): under torchrun
    `model` is the DistributedDataParallel wrapper, which syncs gradients only after its own forward.
    """
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner  # unwrap peft, LoRA stays
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                logits_to_keep=torch.empty(0, dtype=torch.long, device=input_ids.device))
    head = base.get_output_embeddings()
    # Trainer's bf16/fp16 mode has accelerate convert the model's outputs to float32; the hidden states were
    # computed in the model's dtype, so casting back to the head's dtype is exact (and keeps the head's matmul)
    hidden = out.hidden_states[-1].to(head.weight.dtype)      # (B, T, H)
    targets = labels[:, 1:]                                   # (B, T-1): token t+1 is predicted at t
    keep = targets != IGNORE                                  # (B, T-1)
    logits = head(hidden[:, :-1][keep])                       # (N, V), N = response tokens in batch
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:  # Gemma-style soft cap, exactly as the model's own forward applies it
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits.float(), targets[keep])


def full_logits_loss(model, input_ids, attention_mask, labels, **_) -> torch.Tensor:
    """The model's own loss (logits at every position) - the reference the fast loss must equal."""
    return model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss


class ResponseOnlyTrainer(Trainer):
    """`Trainer` whose loss is `response_only_loss`: a per-batch mean, so GA scaling is left to Trainer."""

    loss_is_scaled_for_ga = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = response_only_loss(model, **inputs)
        return (loss, {"loss": loss}) if return_outputs else loss


def load_base_model(cfg: TrainConfig):
    """(model, tokenizer) for `cfg.base_model`, quantized with bitsandbytes when `cfg.quantization` asks."""
    from lorakit_nb.lora.quant import quantization_config
    from lorakit_nb.models.resolve import load_causal_lm

    kwargs = {"dtype": getattr(torch, cfg.dtype)}
    if cfg.quantization != "none":
        kwargs["quantization_config"] = quantization_config(cfg.quantization, kwargs["dtype"])
    return load_causal_lm(cfg.base_model, **kwargs)


def attach_lora(model, cfg: TrainConfig):
    """Wrap a base model with a fresh LoRA adapter named `cfg.adapter_name`; a PeftModel gets a new one.

    Adding to an existing PeftModel keeps the other adapters in memory, sharing one copy of the base.
    The variant keys go to peft as they are: `use_dora`, `use_rslora`, `init_lora_weights`, and
    `target_modules` (a list, or "all-linear": every nn.Linear but the output head).
    """
    from peft import (
        LoraConfig,
        PeftModel,
        get_peft_model,
        prepare_model_for_kbit_training,
    )

    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.dropout,
                      target_modules=cfg.peft_target_modules, task_type=cfg.peft_task_type,
                      use_dora=cfg.use_dora, use_rslora=cfg.use_rslora, init_lora_weights=cfg.init_lora_weights)
    if isinstance(model, PeftModel) and cfg.reinitializes_base:
        raise ConfigError(f"{cfg.source or '<config>'}: init_lora_weights: {cfg.init_lora_weights} rewrites the "
                          "base weights, which this model shares with its other adapters "
                          f"({', '.join(model.peft_config)}); train it on a fresh base, or use "
                          "init_lora_weights: true here.")
    check_target_modules(cfg, model.get_base_model() if isinstance(model, PeftModel) else model)
    if isinstance(model, PeftModel):
        model.add_adapter(cfg.adapter_name, lora)
        model.set_adapter(cfg.adapter_name)  # peft makes only the active adapter trainable
        return model
    if cfg.quantization != "none":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, lora, adapter_name=cfg.adapter_name)


def loraplus_optimizer(model, args: TrainingArguments, ratio: float):
    """LoRA+ (Hayou et al. 2024): peft's optimizer with the B matrices at `ratio` x the learning rate.

    The optimizer class and its betas / eps are the ones Trainer would build from `args` (AdamW), so
    LoRA+ differs from plain LoRA only in its param groups. 1-D trainable tensors (DoRA's magnitude
    vectors) land in peft's B group. Example: lr 1e-3, ratio 16 -> groups at lr 1e-3 (A) and 1.6e-2 (B).
    """
    from peft.optimizers import create_loraplus_optimizer

    cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    return create_loraplus_optimizer(model, cls, lr=args.learning_rate, loraplus_lr_ratio=ratio,
                                     loraplus_weight_decay=args.weight_decay, **kwargs)


def _training_args(cfg: TrainConfig, n_train: int, on_gpu: bool) -> TrainingArguments:
    # under torchrun each of WORLD_SIZE processes takes batch_size pairs per step: the global batch grows
    world = int(os.environ.get("WORLD_SIZE", "1"))
    steps_per_epoch = math.ceil(n_train / (cfg.batch_size * cfg.gradient_accumulation_steps * world))
    # Dev loss is computed at every checkpoint so the best one can be picked: every save_steps, or at
    # each epoch's end when an epoch is shorter than save_steps (so there is at least one per epoch).
    every = min(cfg.save_steps, steps_per_epoch)
    # transformers 5 has no `warmup_ratio` argument: `warmup_steps` below 1 IS the ratio (ceil(ratio x total
    # steps)), 1 or more a step count. config_rules keeps warmup_ratio in [0, 1), so it always means a ratio.
    return TrainingArguments(
        output_dir=cfg.output_dir, per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type, warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps, logging_first_step=True, eval_strategy="steps", eval_steps=every,
        save_strategy="steps", save_steps=every, save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False,
        label_names=["labels"], remove_unused_columns=False, report_to="none", seed=cfg.seed,
        # checkpoints keep optimizer, scheduler and RNG state (save_only_model=False) so `resume` continues
        # the same run; the early-stopping patience count is restored with them
        save_only_model=False, restore_callback_states_from_checkpoint=True,
        # several processes (torchrun): gloo on CPU (nccl is the GPU default; one process must name none, or
        # accelerate looks for a process group); every trainable tensor is used in every forward, so DDP's
        # per-step search for unused parameters is skipped (it also breaks reentrant gradient checkpointing)
        ddp_backend="gloo" if world > 1 and not on_gpu else None, ddp_find_unused_parameters=False,
        dataloader_num_workers=0, use_cpu=not on_gpu, bf16=cfg.dtype == "bfloat16",
        fp16=on_gpu and cfg.dtype == "float16")


def train_from_config(config_or_path, *, callbacks=None, model=None, tokenizer=None, resume_adapter=None,
                      resume=False, **overrides) -> TrainResult:
    """Train a LoRA adapter as the YAML config says; save it under `<output_dir>/adapter`.

    `model`/`tokenizer` reuse an already loaded base (or a PeftModel, which gets one more adapter).
    `resume` continues an INTERRUPTED run: True picks the newest complete `checkpoint-N` under the
    config's output_dir (a path names one); Trainer restores the adapter weights, optimizer, scheduler,
    RNG state, step and log, so the run goes on as if it had never stopped (same config, please).
    `resume_adapter` is a different thing: start a NEW run from a saved adapter's weights with a fresh
    optimizer and schedule, step 0 (incremental training, e.g. on new data).
    Example: train_from_config("data/configs/wu_dialect_lora.yaml", output_dir="runs/02/mandarin")
             train_from_config("data/configs/wu_dialect_lora.yaml", resume=True)  # after a crash
    """
    cfg = config_or_path if isinstance(config_or_path, TrainConfig) else load_config(config_or_path, **overrides)
    if overrides and isinstance(config_or_path, TrainConfig):  # validated again; new paths relative to cwd
        cfg = config_from_dict({**cfg.to_dict(), **overrides}, source=cfg.source, check_files=False)
    check_inputs(cfg)  # missing model or data -> error now, before minutes of loading
    checkpoint = resume_checkpoint(resume, cfg.output_dir)  # and no checkpoint to resume -> error now too
    files = data_files(cfg)
    # a dev sentence also in train would make the dev loss (and the best checkpoint it picks) a memory test
    splits = load_disjoint({"train": files["train"], "dev": files["dev"]})
    train_pairs, dev_pairs = splits["train"], splits["dev"]
    if model is None and resume_adapter is None:
        check_target_modules(cfg)  # layer names the base lacks, from its config.json where it is on disk
    ensure_writable(cfg.output_dir)  # a read-only or full output folder: said before the model loads, too
    if cfg.max_train_examples > 0:
        train_pairs = train_pairs[: cfg.max_train_examples]
    set_seed(cfg.seed)
    if model is None:
        model, tokenizer = load_base_model(cfg)
    if resume_adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, resume_adapter, adapter_name=cfg.adapter_name, is_trainable=True)
    else:
        model = attach_lora(model, cfg)
    initial = None  # PiSSA / OLoRA: the step-0 adapter, to save the result as plain LoRA on the unchanged base
    if resume_adapter is None and cfg.reinitializes_base:
        initial = Path(cfg.output_dir) / "initial_adapter"
        if int(os.environ.get("RANK", "0")) == 0:
            save_adapter(model, initial, adapter_name=cfg.adapter_name)
    enc = lambda pairs: encode_pairs(tokenizer, pairs, cfg.template, cfg.target, cfg.max_seq_length)
    train_set, dev_set = enc(train_pairs), enc(dev_pairs)
    on_gpu = torch.cuda.is_available()
    cbs = [*(callbacks or []), FlatAdapterCheckpoints(cfg.adapter_name)]
    if cfg.early_stopping_patience > 0:
        cbs.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer_cls = ResponseOnlyTrainer if cfg.response_only_logits else Trainer
    args = _training_args(cfg, len(train_set), on_gpu)
    optimizer = loraplus_optimizer(model, args, cfg.loraplus_lr_ratio) if cfg.loraplus_lr_ratio else None
    trainer = trainer_cls(model=model, args=args, train_dataset=train_set, eval_dataset=dev_set,
                          data_collator=PadCollator(tokenizer.pad_token_id), callbacks=cbs,
                          optimizers=(optimizer, None))  # None: Trainer builds it (and the schedule, always)
    adapters_before = set(model.peft_config)
    with torch_threads(cfg.num_threads):
        res = run_trainer(trainer, resume_from_checkpoint=checkpoint)
    # Resuming a named adapter: the checkpoint holds it twice (mandarin/ and the top-level copy that
    # FlatAdapterCheckpoints makes for load_best_model_at_end), and Trainer loads the top-level copy as a
    # frozen extra adapter "default". Drop it, so the run hands back the same model a fresh one does.
    for extra in set(model.peft_config) - adapters_before:
        model.delete_adapter(extra)
    adapter_dir = Path(cfg.output_dir) / "adapter"
    sidecar = {**cfg.to_dict(), "prompt_template": cfg.template, "world_size": trainer.args.world_size}
    if initial is not None:  # what peft's conversion writes: B'A' - B0A0 as one LoRA of twice the rank
        sidecar["saved_as"] = f"lora rank {2 * cfg.lora_rank} (converted from {cfg.init_lora_weights})"
    if trainer.is_world_process_zero():  # one writer when several processes trained (torchrun)
        save_adapter(model, adapter_dir, adapter_name=cfg.adapter_name, sidecar=TrainSidecar.from_config(sidecar),
                     initial_adapter=initial)
    trainer.accelerator.wait_for_everyone()
    weights = adapter_dir / "adapter_model.safetensors"  # absent on other machines without a shared disk
    adapter_dir, nbytes = str(adapter_dir), weights.stat().st_size if weights.is_file() else 0
    model.eval()
    tokens = round(sum(len(x["input_ids"]) for x in train_set) * (res.epochs - res.start_epoch))  # this call's
    return dataclasses.replace(res, train_tokens=tokens, model=model, tokenizer=tokenizer, config=cfg,
                               adapter_dir=adapter_dir, adapter_bytes=nbytes)
