"""Every notebook, executed headless with papermill on the CPU profile, asserted on its metrics.json.

Notebooks run in course order into one run folder, so 04 reads 03's outputs as it does for a learner.
Set LORAKIT_NOTEBOOKS=01,02 to run a subset (04 needs 03 in the same run).
"""
import math
import os

import pytest

from lorakit_nb.runner import find_notebooks, run_notebook

ONLY = os.environ.get("LORAKIT_NOTEBOOKS") or None
NOTEBOOKS = find_notebooks(ONLY)
TIMEOUT = int(os.environ.get("LORAKIT_CELL_TIMEOUT", "1800"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def check_01(m):
    assert m["max_abs_diff_vs_peft"] < 1e-5
    assert m["llama2_7b_r8_qv_trainable"] == 4_194_304
    assert m["whisper_small_r64_qv_trainable"] == 7_077_888
    assert m["lowrank_fit_mse_rank1"] > 1000 * m["lowrank_fit_mse_at_true_rank"]
    assert m["memory_estimate_7b_gib"]["full"] > m["memory_estimate_7b_gib"]["lora"] > m["memory_estimate_7b_gib"]["qlora"]
    assert m["memory_full_measured_mb"] > 1.5 * m["memory_lora_measured_mb"]


def check_02(m):
    assert m["chrf_after"] > m["chrf_before"]
    assert math.isfinite(m["train_loss_last"]) and m["train_loss_last"] < m["train_loss_first"]
    assert m["adapter_bytes"] > 0


def check_03(m):
    assert 0 <= m["cer_finetuned"] < m["cer_zero_shot"]
    assert m["train_seconds"] > 0 and m["adapter_bytes"] > 0


def check_04(m):
    for key in ("cer_zero_shot", "cer_finetuned_hf", "cer_ct2_int8"):
        assert 0 <= m[key] <= 2, key
    assert abs(m["cer_ct2_int8"] - m["cer_finetuned_hf"]) <= 0.05
    assert m["speed_ratio_ct2_int8_vs_hf"] > 0
    assert m["ct2_int8_bytes"] > 0 and m["merged_bytes"] > m["adapter_bytes"] > 0


CHECKS = {"01": check_01, "02": check_02, "03": check_03, "04": check_04}


@pytest.mark.notebook
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[nb.name for nb in NOTEBOOKS])
def test_notebook_runs_and_reports(notebook, run_dir):
    metrics = run_notebook(notebook, run_dir, profile="cpu", timeout=TIMEOUT, progress=False)
    assert metrics, f"{notebook.name} wrote no metrics.json"
    assert metrics["profile"] == "cpu"
    CHECKS[notebook.name[:2]](metrics)
