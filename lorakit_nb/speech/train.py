"""Train a (Q)LoRA Whisper with HF ``Seq2SeqTrainer``; dev CER by ``generate()`` after every epoch.

Covers: ``DevCERCallback`` (greedy, capped transcription of the dev clips at each epoch end; it keeps a copy of
the trainable weights of the epoch with the lowest dev CER), ``best_dev_entry`` (which epoch that is),
and ``train_asr`` (which restores that epoch's adapter weights before it returns) which wires features, ``speech.whisper.WhisperCollator``, ``Seq2SeqTrainingArguments`` and the
callbacks (``training.TimeBudgetCallback`` among them) together and returns the one ``TrainResult``
(loss curve, dev-CER curve, training time) that ``training.run_trainer`` reads from the Trainer's log;
optional per-epoch checkpoints and resuming an interrupted run from the newest of them.

Does NOT cover: building the model (``speech/whisper.py``), test-set scoring (``speech/evaluate.py``),
saving the final adapter (the notebook does, ``io.save_adapter``), mixed precision.
"""
from __future__ import annotations

import tempfile

import torch
from transformers import TrainerCallback

from lorakit_nb.errors import LorakitError
from lorakit_nb.speech.evaluate import transcribe
from lorakit_nb.speech.whisper import WhisperCollator
from lorakit_nb.training import TimeBudgetCallback, TrainResult, resume_checkpoint, run_trainer


class DevCERCallback(TrainerCallback):
    """At each epoch end: transcribe the dev clips with ``generate()`` and record the CER.

    When a ``TimeBudgetCallback`` (``budget``) has stopped training mid-epoch it still scores that partial
    epoch (``"partial": True`` in its entry), so the steps the budget allowed can be the ones kept; the
    budget bounds the training steps, and one dev pass more comes on top.

    It also keeps a copy of the trainable (adapter) weights whenever the dev CER is the lowest so far
    (``best_entry``, ``best_state``; a tie keeps the earlier epoch), so ``train_asr`` can restore them.

    Example history entry: {"epoch": 2.0, "step": 86, "dev_cer": 0.21, "partial": False}
    """

    def __init__(self, processor, audios, references, batch_size: int = 16, per_second: float = 6.0, budget=None):
        self.processor, self.audios, self.references = processor, audios, list(references)
        self.batch_size, self.per_second, self.budget = batch_size, per_second, budget
        self.best_entry, self.best_state = None, None

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        from lorakit_nb.metrics import cer

        partial = self.budget is not None and self.budget.stopped_early
        if partial:  # the time budget ended a partial epoch: score it too, so its steps can be the ones kept
            print(f"time budget reached at step {state.global_step} (epoch {state.epoch:.2f}): "
                  "dev evaluation of this partial epoch", flush=True)
        hyps = transcribe(model, self.processor, self.audios, batch_size=self.batch_size, per_second=self.per_second,
                          progress=False)
        entry = {"epoch": round(float(state.epoch), 2), "step": state.global_step, "dev_cer": cer(self.references, hyps),
                 "partial": partial}
        state.log_history.append(entry)  # training.run_trainer reads dev_history from the Trainer's log
        print(f"epoch {entry['epoch']:.2f} (step {entry['step']}): dev CER {entry['dev_cer']:.3f}", flush=True)
        if best_dev_entry([e for e in (self.best_entry, entry) if e is not None]) is entry:  # the one rule
            self.best_entry = entry
            self.best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def best_dev_entry(dev_history: list[dict]) -> dict | None:
    """The dev-history entry with the lowest dev CER (the earliest of equal ones); None for an empty history.

    Example: best_dev_entry([{"epoch": 1.0, "dev_cer": 0.109}, {"epoch": 2.0, "dev_cer": 0.113},
                             {"epoch": 3.0, "dev_cer": 0.102}, {"epoch": 4.0, "dev_cer": 0.105}])
             -> {"epoch": 3.0, "dev_cer": 0.102}
    """
    return min(dev_history, key=lambda h: h["dev_cer"]) if dev_history else None


def restore_state(model, state: dict) -> None:
    """Copy saved tensors (``{parameter name: tensor}``) back into `model`'s parameters of those names.

    Example: restore_state(model, callback.best_state)  # the adapter weights of the best-dev epoch
    """
    params = dict(model.named_parameters())
    missing = sorted(set(state) - set(params))
    if missing:
        raise LorakitError(f"restore_state: the model has no parameters named {missing[:3]}; "
                           "restore into the same (LoRA-wrapped) model that was trained")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def train_asr(model, processor, train_features, *, dev_audios=None, dev_texts=None, output_dir=None,
              epochs: float = 3, batch_size: int = 8, learning_rate: float = 1e-3, warmup_steps: int = 10,
              weight_decay: float = 0.0, logging_steps: int = 5, time_budget_s=None, seed: int = 0,
              per_second: float = 6.0, eval_batch_size: int = 16, callbacks=(), checkpoints: bool = False,
              resume=False, keep_best: bool = True) -> TrainResult:
    """Fine-tune `model` (LoRA/QLoRA-wrapped) on `train_features` (from ``featurize``) with Seq2SeqTrainer.

    A linear learning-rate schedule with a short warm-up; ``label_names`` set because a PeftModel's
    forward signature hides ``labels`` from the Trainer's detection; columns are kept (our items are
    plain dicts, the collator picks what it needs). Extra ``callbacks`` (e.g.
    ``text.plot.LossPlotCallback()``) are passed to the Trainer.
    ``checkpoints=True`` saves ``<output_dir>/checkpoint-N`` (adapter, optimizer, scheduler, RNG state;
    the newest two are kept) at each epoch end, after the dev CER so it is in the checkpoint's log, and when the
    time budget stops training. ``resume=True`` continues an interrupted run from the newest of them (a
    path names one): the same model, data and arguments, and the run goes on as if it had never stopped;
    the time budget counts this call only.
    ``keep_best=True`` (with dev clips): after training, the adapter weights of the epoch with the lowest
    dev CER (``best_dev_entry(res.dev_history)``) are copied back into `model`, so the model that is scored
    and saved next is that epoch's, not the last one's (a partial epoch cut by the budget is scored too and
    competes like any other).
    Example: res = train_asr(model, processor, feats, dev_audios=a, dev_texts=t, epochs=3)
             res.dev_history[-1]["dev_cer"] -> 0.2 (say)
             train_asr(model, processor, feats, output_dir="runs/03/trainer", checkpoints=True, resume=True)
    """
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

    if output_dir is None and (checkpoints or resume is True):
        raise LorakitError("train_asr(checkpoints=True / resume=True) needs output_dir: the folder the "
                           "checkpoint-N folders are written to and resumed from")
    checkpoint = resume_checkpoint(resume, output_dir,
                                   fix="start without resume=True, or pass checkpoints=True so checkpoints are written")
    if output_dir is None:  # the Trainer wants a folder even when it saves nothing
        output_dir = tempfile.mkdtemp(prefix="lorakit_asr_trainer_")
    args = Seq2SeqTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=batch_size, num_train_epochs=epochs,
        learning_rate=learning_rate, warmup_steps=warmup_steps, weight_decay=weight_decay,
        lr_scheduler_type="linear", logging_steps=logging_steps, logging_first_step=True,
        save_strategy="epoch" if checkpoints else "no", save_total_limit=2, save_only_model=False,
        eval_strategy="no",
        report_to=[], remove_unused_columns=False, label_names=["labels"], seed=seed,
        dataloader_num_workers=0, dataloader_pin_memory=torch.cuda.is_available(), disable_tqdm=False,
    )
    budget = TimeBudgetCallback(time_budget_s)
    callbacks = [budget, *callbacks]
    if dev_audios is not None:
        callbacks.append(DevCERCallback(processor, dev_audios, dev_texts, batch_size=eval_batch_size,
                                        per_second=per_second, budget=budget))
    trainer = Seq2SeqTrainer(model=model, args=args, train_dataset=train_features,
                             data_collator=WhisperCollator(processor, model.config.decoder_start_token_id),
                             callbacks=callbacks)
    result = run_trainer(trainer, budget=budget, resume_from_checkpoint=checkpoint)
    dev = callbacks[-1] if dev_audios is not None else None
    if keep_best and dev is not None and dev.best_state is not None:
        restore_state(model, dev.best_state)
        print(f"kept the adapter of epoch {dev.best_entry['epoch']:g} (step {dev.best_entry['step']}), "
              f"the lowest dev CER: {dev.best_entry['dev_cer']:.3f}", flush=True)
    return result
