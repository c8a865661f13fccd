"""One trainer wrapper for every course room: run ``trainer.train()``, read the numbers from its log.

Covers: ``run_trainer`` (times ``trainer.train()`` and builds a ``TrainResult`` from
``trainer.state.log_history``: train losses, eval losses, any callback entries such as dev CER),
``TrainResult`` (the one result type notebooks 02 and 03 and ``lorakit train`` read),
``TimeBudgetCallback`` (stop cleanly once a wall-clock budget is spent), and ``resume_checkpoint``
(which ``checkpoint-N`` folder an interrupted run continues from: HF Trainer's ``resume_from_checkpoint``
restores weights, optimizer, scheduler, RNG state and step; the log before it comes from its
``trainer_state.json``).
Does not: build models, datasets or ``TrainingArguments`` (each room does: ``text/train.py``,
``speech/train.py``), save adapters (``io.save_adapter``).
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

from transformers import TrainerCallback

from lorakit_nb.errors import MissingFileError

# Trainer writes trainer_state.json LAST when it saves a checkpoint (after weights, optimizer, scheduler and
# RNG state), so a checkpoint-N folder holding it, whole, is complete; one without it (or with a cut-off
# one: the file is opened, then written) was stopped mid-save.
TRAINER_STATE = "trainer_state.json"


def _saved_state(checkpoint) -> dict | None:
    """The checkpoint's trainer_state.json as a dict, or None when it is missing or cut off mid-write."""
    try:
        return json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class TimeBudgetCallback(TrainerCallback):
    """Ask the Trainer to stop after the step that crosses `seconds` of training time (None: no limit)."""

    def __init__(self, seconds=None):
        self.seconds, self.start, self.stopped_early = seconds, None, False

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds is not None and time.perf_counter() - self.start > self.seconds:
            control.should_training_stop = self.stopped_early = True


@dataclasses.dataclass
class TrainResult:
    """What a training run hands back. Losses are ``[(step, value)]`` as the Trainer logged them.

    ``dev_history``: log entries a callback added with a ``dev_cer`` key (speech), e.g.
    ``{"epoch": 2.0, "step": 86, "dev_cer": 0.21}``. The room that trained fills ``model``,
    ``tokenizer``, ``config``, ``adapter_dir`` and ``adapter_bytes`` when it saves an adapter.
    A resumed run's losses and steps cover the whole run (the log before the checkpoint is restored
    with it); its ``train_seconds`` and ``train_tokens`` cover only this call, from ``start_step`` /
    ``start_epoch`` (the checkpoint's) to ``steps`` / ``epochs``.
    """

    train_seconds: float  # wall clock of this trainer.train() call, evaluations during training included
    steps: int
    epochs: float
    train_losses: list
    eval_losses: list
    dev_history: list
    stopped_early: bool = False
    best_checkpoint: str | None = None
    train_tokens: int = 0
    model: object = None
    tokenizer: object = None
    config: object = None
    adapter_dir: str | None = None
    adapter_bytes: int = 0
    resumed_from: str | None = None  # the checkpoint-N folder this call continued from, if any
    start_step: int = 0
    start_epoch: float = 0.0

    @property
    def train_loss_first(self) -> float:
        return self.train_losses[0][1]

    @property
    def train_loss_last(self) -> float:
        return self.train_losses[-1][1]

    @property
    def eval_loss_best(self) -> float:
        return min(v for _, v in self.eval_losses) if self.eval_losses else float("nan")

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds

    @property
    def seconds_per_epoch(self) -> float:
        return self.train_seconds / max(self.epochs - self.start_epoch, 1e-9)


def result_from_log(log_history: list, *, train_seconds: float, steps: int, epochs: float, **extra) -> TrainResult:
    """A ``TrainResult`` from a Trainer's ``log_history`` (the list of dicts it logs, in order).

    Example: result_from_log([{"step": 5, "loss": 2.1}, {"step": 10, "eval_loss": 1.9}], train_seconds=3.0,
             steps=10, epochs=1.0).eval_losses -> [(10, 1.9)]
    """
    return TrainResult(
        train_seconds=train_seconds, steps=steps, epochs=epochs,
        train_losses=[(h["step"], float(h["loss"])) for h in log_history if "loss" in h],
        eval_losses=[(h["step"], float(h["eval_loss"])) for h in log_history if "eval_loss" in h],
        dev_history=[dict(h) for h in log_history if "dev_cer" in h], **extra)


def resume_checkpoint(resume, output_dir, *,
                      fix: str = "start without --resume, or set save_steps so checkpoints are written") -> str | None:
    """The checkpoint folder a run continues from: None (``resume`` False/None: start afresh), the newest
    complete ``checkpoint-N`` under `output_dir` (``resume=True``), or the folder ``resume`` names.

    Example: out/ holds checkpoint-4, checkpoint-8 and checkpoint-12 without a whole trainer_state.json
    (killed mid-save): resume_checkpoint(True, "out") -> "out/checkpoint-8"; (False, "out") -> None.
    Raises ``MissingFileError`` when there is none, saying how to go on (`fix`: the ways out, in the
    words of the room's own settings).
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        folder = Path(output_dir) if output_dir is not None else None
        steps = {}
        if folder is not None and folder.is_dir():
            for d in folder.iterdir():
                m = re.fullmatch(r"checkpoint-(\d+)", d.name)
                if m and _saved_state(d) is not None:
                    steps[int(m.group(1))] = d
        if not steps:
            raise MissingFileError(f"no checkpoint under {folder}: {fix} "
                                   f"(a checkpoint-N folder with {TRAINER_STATE})")
        return str(steps[max(steps)])
    path = Path(resume)
    if _saved_state(path) is None:
        raise MissingFileError(f"{path} is not a complete Trainer checkpoint (no whole {TRAINER_STATE}): name a "
                               "checkpoint-N folder from output_dir, or pass resume=True for the newest one")
    return str(path)


def run_trainer(trainer, *, budget: TimeBudgetCallback | None = None, resume_from_checkpoint: str | None = None,
                **extra) -> TrainResult:
    """``trainer.train()``, timed; the result read from ``trainer.state.log_history``.

    ``budget``: the ``TimeBudgetCallback`` given to the trainer, if any (its ``stopped_early`` is
    reported). ``resume_from_checkpoint``: a ``checkpoint-N`` folder (see ``resume_checkpoint``); Trainer
    restores the adapter weights, optimizer, scheduler, RNG state, step and log from it and skips the
    batches already trained. ``extra`` fills the other ``TrainResult`` fields (``train_tokens``, ...).
    """
    saved = (_saved_state(resume_from_checkpoint) or {}) if resume_from_checkpoint is not None else {}
    start_step, start_epoch = int(saved.get("global_step", 0)), float(saved.get("epoch") or 0.0)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    seconds = time.perf_counter() - start
    state = trainer.state
    return result_from_log(state.log_history, train_seconds=seconds, steps=state.global_step,
                           epochs=float(state.epoch or 0.0), best_checkpoint=state.best_model_checkpoint,
                           stopped_early=bool(budget and budget.stopped_early), resumed_from=resume_from_checkpoint,
                           start_step=start_step, start_epoch=start_epoch, **extra)
