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

# Trainer writes trainer_state.json after weights, optimizer, scheduler and RNG state, but the callbacks'
# on_save (the text room copies a named adapter to the checkpoint's top level there) runs after it. So the
# kit writes its own marker LAST, from a callback that runs after every other one: a checkpoint-N folder is
# complete only when it holds the marker (and a whole trainer_state.json); a kill at any point before that
# leaves a folder `resume` skips, saying so.
TRAINER_STATE = "trainer_state.json"
COMPLETE_MARKER = "lorakit-checkpoint-complete"


def _saved_state(checkpoint) -> dict | None:
    """The checkpoint's trainer_state.json as a dict, or None when it is missing or cut off mid-write."""
    try:
        return json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(checkpoint) -> bool:
    return (Path(checkpoint) / COMPLETE_MARKER).is_file() and _saved_state(checkpoint) is not None


class CompleteCheckpointMarker(TrainerCallback):
    """Write COMPLETE_MARKER into each checkpoint after everything else in it (run_trainer adds it last)."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                (ckpt / COMPLETE_MARKER).write_text(f"step {state.global_step}\n", encoding="utf-8")


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

    Example: out/ holds checkpoint-4, checkpoint-8 and checkpoint-12 without its completion marker
    (killed mid-save): resume_checkpoint(True, "out") -> "out/checkpoint-8", printing that checkpoint-12 is
    skipped; (False, "out") -> None.
    Raises ``MissingFileError`` when there is none, saying how to go on (`fix`: the ways out, in the
    words of the room's own settings).
    """
    if resume is None or resume is False:
        return None
    if resume is True:
        folder = Path(output_dir) if output_dir is not None else None
        steps, partial = {}, []
        if folder is not None and folder.is_dir():
            for d in folder.iterdir():
                m = re.fullmatch(r"checkpoint-(\d+)", d.name)
                if m and _is_complete(d):
                    steps[int(m.group(1))] = d
                elif m:
                    partial.append(d.name)
        newest = max(steps) if steps else -1
        for name in sorted(partial):
            if int(name.split("-")[1]) > newest:
                print(f"{folder / name}: incomplete (the run stopped while saving it: no {COMPLETE_MARKER}); skipped")
        if not steps:
            raise MissingFileError(f"no complete checkpoint under {folder}: {fix} "
                                   f"(a checkpoint-N folder with {TRAINER_STATE} and {COMPLETE_MARKER})")
        return str(steps[newest])
    path = Path(resume)
    if not _is_complete(path):
        raise MissingFileError(f"{path} is not a complete checkpoint (no whole {TRAINER_STATE} or no "
                               f"{COMPLETE_MARKER}: it was cut off while saving): name a complete checkpoint-N "
                               "folder from output_dir, or pass resume=True for the newest complete one")
    return str(path)


def run_trainer(trainer, *, budget: TimeBudgetCallback | None = None, resume_from_checkpoint: str | None = None,
                **extra) -> TrainResult:
    """``trainer.train()``, timed; the result read from ``trainer.state.log_history``.

    ``budget``: the ``TimeBudgetCallback`` given to the trainer, if any (its ``stopped_early`` is
    reported). ``resume_from_checkpoint``: a ``checkpoint-N`` folder (see ``resume_checkpoint``); Trainer
    restores the adapter weights, optimizer, scheduler, RNG state, step and log from it and skips the
    batches already trained. ``extra`` fills the other ``TrainResult`` fields (``train_tokens``, ...).
    """
    trainer.add_callback(CompleteCheckpointMarker())  # last: after every other on_save has written its files
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
