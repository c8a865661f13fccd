"""`lorakit train` on two processes (torchrun, DDP over gloo on CPU) against one process, on tiny-gemma.

Both runs go through the command line in fresh processes, as a user would start them; the loss curves
are read from the `trainer_state.json` that Trainer writes into the last checkpoint.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
TORCHRUN = BIN / "torchrun" if (BIN / "torchrun").exists() else shutil.which("torchrun")
LORAKIT = BIN / "lorakit" if (BIN / "lorakit").exists() else shutil.which("lorakit")
PAIRS = [("侬好", "你好"), ("谢谢侬", "谢谢你"), ("阿拉走了", "我们走了"), ("侬吃饭了伐", "你吃饭了吗"),
         ("今朝落雨", "今天下雨"), ("勿晓得", "不知道"), ("伊拉来了", "他们来了"), ("覅急", "别急"),
         ("侬几岁", "你几岁"), ("阿拉屋里", "我们家里"), ("老好额", "很好的"), ("覅客气", "不要客气"),
         ("明朝会", "明天见"), ("辰光到了", "时间到了"), ("吃夜饭", "吃晚饭"), ("交关好", "非常好"),
         ("侬讲啥", "你说什么"), ("伊勿来", "他不来"), ("快点", "快点"), ("再会", "再见")]
STEPS = 4


def _config(root: Path, name: str, grad_accum: int) -> Path:
    """16 training pairs, per-process batch 2, 4 steps: one pass over the data at a global batch of 4."""
    d = root / "wu"
    if not d.exists():
        d.mkdir()
        rows = lambda rs: "wu,mandarin,english\n" + "".join(f"{w},{m},x\n" for w, m in rs)
        (d / "train.csv").write_text(rows(PAIRS[:16]), "utf-8")
        (d / "dev.csv").write_text(rows(PAIRS[16:]), "utf-8")
    cfg = root / f"{name}.yaml"
    cfg.write_text(f"base_model: tiny-gemma\ntrain_data_dir: wu\nlora_rank: 4\nlora_alpha: 8\ndropout: 0.0\n"
                   f"batch_size: 2\ngradient_accumulation_steps: {grad_accum}\nmax_steps: {STEPS}\n"
                   f"learning_rate: 2e-2\nlr_scheduler_type: constant\nlogging_steps: 1\nsave_steps: {STEPS}\n"
                   f"early_stopping_patience: 0\nmax_seq_length: 64\ndtype: float32\noutput_dir: {name}\n"
                   "adapter_name: mandarin\n", "utf-8")
    return cfg


def _run(cmd, root: Path, name: str) -> tuple[list, list, dict]:
    proc = subprocess.run([str(c) for c in cmd], cwd=root, capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.stdout.count("adapter saved to") == 1, proc.stdout  # one report, not one per process
    state = json.loads((root / name / f"checkpoint-{STEPS}" / "trainer_state.json").read_text("utf-8"))
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    evals = [h["eval_loss"] for h in state["log_history"] if "eval_loss" in h]
    sidecar = json.loads((root / name / "adapter" / "lorakit_train.json").read_text("utf-8"))
    return losses, evals, sidecar


@pytest.mark.skipif(TORCHRUN is None or LORAKIT is None, reason="torchrun / lorakit not installed in this env")
def test_two_processes_follow_the_one_process_loss_curve(tmp_path):
    """1 process x batch 2 x gradient accumulation 2  ==  2 processes (torchrun) x batch 2: the same
    global batch of 4 pairs per step, and the same pairs in it (accelerate hands batch 2k to rank 0 and
    2k+1 to rank 1 from one seeded shuffle; accumulation sees 2k then 2k+1). Both average two per-batch
    mean losses, and DDP averages the two gradients as accumulation sums the halves, so the curves agree
    up to float32 rounding (the runs use 2 and 1 threads). Measured: the 4 logged losses (5.571 ->
    5.408) identical, dev loss 4.8e-7 apart. The bound 1e-3 is far above that and below what a broken
    setup gives: with the loss's forward bypassing the DDP wrapper (no gradient sync; each rank follows
    its own half) step 2 was 3.8e-2 off; one process at batch 4 (a mean over all response tokens of the
    4 pairs instead of the mean of two batch means) is up to 6e-3 off, so that is not the comparison."""
    one = _run([LORAKIT, "train", "--config", _config(tmp_path, "one", grad_accum=2)], tmp_path, "one")
    two = _run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "lorakit_nb.cli", "train", "--config",
                _config(tmp_path, "two", grad_accum=1)], tmp_path, "two")
    (loss1, eval1, side1), (loss2, eval2, side2) = one, two
    assert len(loss1) == len(loss2) == STEPS and len(eval1) == len(eval2) == 1
    assert (side1["world_size"], side2["world_size"]) == (1, 2)
    assert loss1[-1] < loss1[0] - 0.01  # it trains at all (lr 2e-2 on a random tiny model)
    diff = max(abs(a - b) for a, b in zip(loss1, loss2))
    assert diff < 1e-3, f"loss curves differ by {diff:.2e}: 1 process {loss1}, 2 processes {loss2}"
    assert abs(eval1[0] - eval2[0]) < 1e-3, (eval1, eval2)
