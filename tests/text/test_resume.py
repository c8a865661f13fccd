"""`lorakit train --resume`: a run killed after a checkpoint and resumed ends where the same run uninterrupted ends.

Setup (the smoke config's pattern: tiny random gemma, the 226 Wu pairs, batch 8 -> 29 steps per epoch,
dropout 0.05 on every LoRA layer): max_steps 40, save_steps 5, a log line per step, one torch thread
(the same float sums in the same order, in a child process or in this one). Checkpoints fall at steps
5, 10, ..., 40; the run crosses an epoch boundary at step 29. HF Trainer's resume restores the adapter weights, the
Adam moments, the learning-rate schedule, the RNG state (dropout masks) and the data order (the sampler
is seeded per epoch; batches already trained are skipped), so each loss after the checkpoint repeats.
Tolerance 1e-5 on losses near 5.5: a few float32 roundings (eps 1.2e-7 x 5.5 = 6.6e-7 each); measured
difference 0. What a lost piece of state does is far larger (measured on this setup, resumed from
checkpoint-5 with one file removed): no rng_state.pth (new dropout masks) 1.3e-3 at step 6, 3.2e-3 at
most; no optimizer.pt (fresh Adam moments, schedule from the start) 4.0e-2 at most.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lorakit_nb.cli import main
from lorakit_nb.errors import MissingFileError
from lorakit_nb.text.train import train_from_config
from lorakit_nb.training import COMPLETE_MARKER

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "data" / "configs" / "wu_dialect_lora_smoke.yaml"


def _config(tmp_path: Path, name: str, **keys) -> Path:
    """The smoke config with its data path made absolute and `keys` replaced, written as <tmp>/<name>.yaml."""
    raw = yaml.safe_load(SMOKE.read_text("utf-8"))
    raw.update(train_data_dir=str(REPO / "data" / "wu_dialect"), output_dir=str(tmp_path / name), **keys)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True), "utf-8")
    return path


def _train(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lorakit_nb.cli", "train", "--config", str(config), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=config.parent)


def _state(checkpoint: Path) -> dict | None:
    """trainer_state.json, or None while it is missing or half written (Trainer opens it, then writes)."""
    try:
        return json.loads((checkpoint / "trainer_state.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None


def _log(run_dir: Path, step: int) -> list:
    return _state(run_dir / f"checkpoint-{step}")["log_history"]


def test_killed_run_resumes_to_the_same_losses_and_weights(tmp_path):
    """SIGKILL the run as soon as its first checkpoint is complete (the kit's marker, written after
    everything else, is there), resume it with --resume; the same config run without interruption (in this process,
    while the resumed one runs) gives every logged train and dev loss after the checkpoint within 1e-5,
    and the same adapter weights, both at step 40 and in the saved (best-dev-loss) adapter."""
    keys = dict(max_steps=40, save_steps=5, logging_steps=1, num_threads=1)
    killed_cfg, whole_cfg = _config(tmp_path, "killed", **keys), _config(tmp_path, "whole", **keys)
    killed_dir, whole_dir = tmp_path / "killed", tmp_path / "whole"
    proc = _train(killed_cfg)
    deadline = time.monotonic() + 80
    while not (killed_dir / "checkpoint-5" / COMPLETE_MARKER).is_file():
        assert proc.poll() is None, f"training exited before its first checkpoint:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, "no checkpoint-5 after 80 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed_dir / "adapter").exists() and not (killed_dir / "checkpoint-40").exists()  # really cut short

    resumed = _train(killed_cfg, "--resume")
    whole = train_from_config(whole_cfg)
    out = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, out
    start = int(re.search(r"resumed from \S+checkpoint-(\d+) \(step (\d+)\)", out).group(2))
    assert 5 <= start < 40 and whole.steps == 40

    def after_start(log, key):
        return {h["step"]: h[key] for h in log if key in h and h["step"] > start}

    for key in ("loss", "eval_loss"):
        got, want = after_start(_log(killed_dir, 40), key), after_start(_log(whole_dir, 40), key)
        assert sorted(got) == sorted(want) and len(got) >= (7 if key == "eval_loss" else 35 - start)
        diff = max(abs(got[s] - want[s]) for s in want)
        print(f"resumed from step {start}: max |{key} difference| over {len(want)} steps = {diff:.3g}")
        assert diff <= 1e-5, {s: (got[s], want[s]) for s in want}
    for rel in ("checkpoint-40/adapter_model.safetensors", "adapter/adapter_model.safetensors"):
        a, b = load_file(killed_dir / rel), load_file(whole_dir / rel)
        assert a.keys() == b.keys() and any("lora_B" in k for k in a)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    # the saved adapter is the best dev-loss checkpoint's, chosen from the whole log (before and after the kill)
    evals = {h["step"]: h["eval_loss"] for h in _log(killed_dir, 40) if "eval_loss" in h}
    best = json.loads((killed_dir / "checkpoint-40" / "trainer_state.json").read_text("utf-8"))["best_model_checkpoint"]
    assert Path(best).resolve() == (killed_dir / f"checkpoint-{min(evals, key=evals.get)}").resolve()
    assert len(evals) == 8


def test_resume_without_a_checkpoint_is_one_clear_error(tmp_path, capsys):
    """--resume with nothing to resume: exit code 1 and a line naming the folder and both ways out,
    before any model is loaded. Checkpoints cut off mid-save (no trainer_state.json, or half of one) do not count."""
    cfg = _config(tmp_path, "run")
    (tmp_path / "run" / "checkpoint-2").mkdir(parents=True)  # killed while saving: no trainer_state.json
    (tmp_path / "run" / "checkpoint-4").mkdir()
    (tmp_path / "run" / "checkpoint-4" / "trainer_state.json").write_text('{"log_history": [{"lo', "utf-8")  # cut off
    assert main(["train", "--config", str(cfg), "--resume"]) == 1
    err = capsys.readouterr().err
    assert f"no complete checkpoint under {tmp_path / 'run'}: start without --resume, or set save_steps" in err
    assert not (tmp_path / "run" / "adapter").exists()


def test_resume_skips_a_checkpoint_killed_between_trainer_state_and_the_adapter_copy(tmp_path, capsys):
    """Trainer writes trainer_state.json before the callbacks' on_save (where the named adapter is copied to
    the checkpoint's top level). A kill between the two left a folder that looked complete; --resume took it
    and failed with a traceback. Now only a folder with the kit's marker counts: the newer, cut-off one is
    skipped with a line saying so, and the older complete one is taken."""
    from lorakit_nb.training import resume_checkpoint

    run = tmp_path / "run"
    for step, marker in ((4, True), (8, False)):
        ckpt = run / f"checkpoint-{step}"
        (ckpt / "mandarin").mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text('{"global_step": %d, "log_history": []}' % step, "utf-8")
        if marker:
            (ckpt / COMPLETE_MARKER).write_text("done", "utf-8")
    assert resume_checkpoint(True, run) == str(run / "checkpoint-4")
    assert "checkpoint-8: incomplete" in capsys.readouterr().out
    with pytest.raises(MissingFileError, match="not a complete checkpoint"):
        resume_checkpoint(str(run / "checkpoint-8"), run)


def test_resume_keeps_the_early_stopping_count(tmp_path):
    """Early stopping with patience 2 counts dev evaluations without improvement; that count is saved in
    the checkpoint and must come back. 16 pairs (2 steps per epoch), lr 0.5: dev loss stalls and the run
    stops before max_steps. Resumed (resume=<folder>) from the last checkpoint before the stop, where the
    count is already 1, it must stop at the same step with the same dev losses; with the count reset to 0
    it would run one evaluation (2 steps) longer."""
    cfg = _config(tmp_path, "a", max_steps=60, save_steps=2, logging_steps=1, num_threads=1, max_train_examples=16,
                  learning_rate=0.5, dropout=0.3, early_stopping_patience=2, save_total_limit=40)
    whole = train_from_config(cfg)
    assert whole.steps < 60  # early stopping fired (else this test checks nothing)
    ckpt = tmp_path / "a" / f"checkpoint-{whole.steps - 2}"
    saved = json.loads((ckpt / "trainer_state.json").read_text("utf-8"))["stateful_callbacks"]
    assert saved["EarlyStoppingCallback"]["attributes"]["early_stopping_patience_counter"] == 1
    resumed = train_from_config(cfg, resume=str(ckpt), output_dir=str(tmp_path / "b"))
    assert (resumed.steps, resumed.start_step) == (whole.steps, whole.steps - 2)
    assert [s for s, _ in resumed.eval_losses] == [s for s, _ in whole.eval_losses]
    assert [v for _, v in resumed.eval_losses] == pytest.approx([v for _, v in whole.eval_losses], abs=1e-5)
    assert list(resumed.model.peft_config) == ["mandarin"]  # no stray adapter from the checkpoint's two copies
