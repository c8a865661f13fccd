"""One trainer wrapper for every course room: run ``trainer.train()``, read the numbers from its log.

Covers: ``run_trainer`` (times ``trainer.train()`` and builds a ``TrainResult`` from
``trainer.state.log_history``: train losses, eval losses, any callback entries such as dev CER),
``TrainResult`` (the one result type notebooks 02 and 03 and ``lorakit train`` read), and
``TimeBudgetCallback`` (stop cleanly once a wall-clock budget is spent).
Does not: build models, datasets or ``TrainingArguments`` (each room does: ``text/train.py``,
``speech/train.py``), save adapters (``io.save_adapter``).
"""
from __future__ import annotations

import dataclasses
import time

from transformers import TrainerCallback


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
    """

    train_seconds: float  # wall clock of trainer.train(), evaluations during training included
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
        return self.train_seconds / max(self.epochs, 1e-9)


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


def run_trainer(trainer, *, budget: TimeBudgetCallback | None = None, **extra) -> TrainResult:
    """``trainer.train()``, timed; the result read from ``trainer.state.log_history``.

    ``budget``: the ``TimeBudgetCallback`` given to the trainer, if any (its ``stopped_early`` is
    reported). ``extra`` fills the other ``TrainResult`` fields (``train_tokens``, ...).
    """
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    state = trainer.state
    return result_from_log(state.log_history, train_seconds=seconds, steps=state.global_step,
                           epochs=float(state.epoch or 0.0), best_checkpoint=state.best_model_checkpoint,
                           stopped_early=bool(budget and budget.stopped_early), **extra)
