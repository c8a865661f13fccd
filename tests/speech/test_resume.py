"""`train_asr(checkpoints=True, resume=...)` on tiny-whisper: a run stopped early continues to the same end.

4 noise clips, batch 2 -> 2 steps per epoch, 2 epochs, LoRA dropout 0.05, activation checkpointing on,
a dev-CER pass at each epoch end. A time budget of 0 s stops the first run after step 1; with
`checkpoints=True` that stop writes checkpoint-1 (the epoch-end save also fires on a stopped epoch).
`resume=True` continues it from step 2. The same run without a budget is the reference: losses at
steps 2..4 within 1e-5 (measured difference 0), the same dev-CER entries, the same LoRA weights.
One torch thread: on a busy 2-core machine two threads took 67 s here, one 5 s.
"""
from __future__ import annotations

import pytest
import torch

from lorakit_nb.env import torch_threads
from lorakit_nb.errors import LorakitError
from lorakit_nb.speech.train import train_asr
from lorakit_nb.speech.whisper import add_lora, featurize, load_asr_model
from tests.speech.test_whisper import noise

TEXTS = ["今天开会", "三点出发", "请稍等", "谢谢大家"]


def _fresh():
    model, processor = load_asr_model("tiny-whisper", audio_seconds=2)
    torch.manual_seed(0)  # the same LoRA initialisation for every run
    return add_lora(model, r=4, alpha=8), processor


def _train(model, processor, out, **kw):
    feats = featurize(processor, noise([1.0, 1.5, 1.2, 1.8]), TEXTS)
    return train_asr(model, processor, feats, dev_audios=noise([1.0], seed=1), dev_texts=TEXTS[:1], output_dir=out,
                     epochs=2, batch_size=2, learning_rate=1e-2, warmup_steps=0, logging_steps=1, seed=0,
                     checkpoints=True, keep_best=False, **kw)  # the last step's weights: what resuming must match


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_budget_stopped_run_resumes_to_the_uninterrupted_result(tmp_path):
    whole_model, processor = _fresh()
    whole = _train(whole_model, processor, tmp_path / "whole")
    model, processor = _fresh()
    stopped = _train(model, processor, tmp_path / "run", time_budget_s=0)
    assert (stopped.steps, stopped.stopped_early) == (1, True)
    assert (tmp_path / "run" / "checkpoint-1" / "optimizer.pt").is_file()
    model, processor = _fresh()  # a new process would start from scratch too: the checkpoint brings the weights
    resumed = _train(model, processor, tmp_path / "run", resume=True)
    assert (resumed.steps, resumed.start_step, resumed.resumed_from) == (4, 1, str(tmp_path / "run" / "checkpoint-1"))
    got, want = dict(resumed.train_losses), dict(whole.train_losses)
    assert sorted(got) == sorted(want) == [1, 2, 3, 4]
    diff = max(abs(got[s] - want[s]) for s in want if s > 1)
    print(f"resumed from step 1: max |loss difference| over steps 2..4 = {diff:.3g}")
    assert diff <= 1e-5 and got[1] == want[1], (got, want)  # step 1 comes from the checkpoint's log
    # the budget's partial epoch (step 1) is scored in the stopped run and travels in its checkpoint's log
    cers = lambda res: [(h["step"], h["dev_cer"]) for h in res.dev_history if not h["partial"]]
    assert cers(resumed) == cers(whole) and [s for s, _ in cers(whole)] == [2, 4]
    a = {n: p for n, p in model.named_parameters() if "lora_" in n}
    b = {n: p for n, p in whole_model.named_parameters() if "lora_" in n}
    assert a.keys() == b.keys() and a
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=0, atol=1e-6)


def test_resume_needs_a_checkpoint_folder(tmp_path):
    model, processor = _fresh()
    with pytest.raises(LorakitError, match="needs output_dir"):
        train_asr(model, processor, [], resume=True)
    with pytest.raises(LorakitError, match=f"no complete checkpoint under {tmp_path}: start without resume=True, or pass "
                                           "checkpoints=True"):
        train_asr(model, processor, [], output_dir=tmp_path, resume=True)
