"""A Colab-like runtime, built offline: the kernel and widget packages at the versions google-colab pins, the
kit installed by the Colab cell's own install path, nothing pinned replaced, and notebook 01 executed in that
environment's kernel.

Colab's GPU runtime (2026-08): Python 3.13, torch 2.11.0+cu128, transformers 5.15, peft 0.20, numpy 2.1.3,
ipykernel 6.17.1, ipywidgets 7.7.1, jupyter_client 7.4.9, notebook 6.5.7. Built here with two differences,
both forced by what this machine's registries serve: Python 3.11 (the interpreter this venv runs on; the
registries carry no CPU torch for 3.13) and torch 2.13.0 CPU (no CPU build of 2.11 is served; the kit asks
torch>=2.4, so the install path treats either the same: as a pinned package to keep). Everything else is
Colab's version. The venv is kept in ~/.cache/lorakit/colab-venv (rebuilt when these pins change); the kit's
own install runs every time. Slow (a few minutes the first time): marker `colab`.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Kept beside the kit's model cache (like pip's own cache, it only saves time: rebuilt when the pins change)
VENV = Path(os.environ.get("LORAKIT_COLAB_VENV", Path.home() / ".cache" / "lorakit" / "colab-venv"))
COLAB_PINS = {"ipykernel": "6.17.1", "ipywidgets": "7.7.1", "jupyter-client": "7.4.9", "notebook": "6.5.7",
              "numpy": "2.1.3", "transformers": "5.15.0", "peft": "0.20.0"}
TORCH = "torch==2.13.0"  # Colab: 2.11.0+cu128 (see the module docstring)
KERNEL = "lorakit-colab-like"
KEPT = ("ipykernel", "ipywidgets", "jupyter-client", "notebook", "numpy", "torch")  # what google-colab pins + preloads

pytestmark = [pytest.mark.colab, pytest.mark.skipif(sys.platform != "linux", reason="built on Linux only")]


def _py(*args, **kw):
    return subprocess.run([str(VENV / "bin" / "python"), *args], check=True, capture_output=True, text=True, **kw)


def _freeze() -> dict:
    out = _py("-m", "pip", "list", "--format", "json").stdout
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out)}


@pytest.fixture(scope="module")
def colab_venv():
    stamp = VENV / "colab-pins.json"
    wanted = json.dumps({**COLAB_PINS, "torch": TORCH}, sort_keys=True)
    if not (stamp.exists() and stamp.read_text() == wanted):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        _py("-m", "pip", "install", "-q", "--upgrade", "pip")
        _py("-m", "pip", "install", "-q", TORCH)
        _py("-m", "pip", "install", "-q", *(f"{k}=={v}" for k, v in COLAB_PINS.items()))
        _py("-m", "ipykernel", "install", "--prefix", str(VENV), "--name", KERNEL, "--display-name", KERNEL)
        stamp.write_text(wanted)
    return VENV


@pytest.fixture(scope="module")
def installed(colab_venv):
    """Run the Colab cell's install path (lorakit_nb/colab.py loaded by file path, as the cell does)."""
    before = _freeze()
    code = ("import importlib.util as u; s = u.spec_from_file_location('c', sys.argv[1]); m = u.module_from_spec(s); "
            "s.loader.exec_module(m); m.install(sys.argv[2])")
    result = _py("-c", "import sys; " + code, str(ROOT / "lorakit_nb" / "colab.py"), str(ROOT))
    return before, _freeze(), result.stdout


def test_the_install_path_keeps_every_pinned_package(installed):
    before, after, out = installed
    assert before["ipykernel"] == "6.17.1" and before["ipywidgets"] == "7.7.1"
    assert {k: after.get(k) for k in KEPT} == {k: before.get(k) for k in KEPT}, out
    assert "No restart needed" in out
    # the kit really was installed around them: peft moved to the kit's range, the headless runner stayed out
    assert after["lorakit-nb"] == "0.1.0" and after["peft"].startswith("0.21")
    assert "papermill" not in after


def test_the_kits_widget_builds_with_ipywidgets_7(installed):
    code = ("import numpy as np, ipywidgets; from lorakit_nb.speech.evaluate import listen_widget; "
            "w = listen_widget([np.zeros(1600), np.ones(1600) * 0.1], {'reference': ['你好', '再见']}); "
            "w.children[0].value = 1; print(ipywidgets.__version__, type(w).__name__, len(w.children), "
            "'再见' in w.children[2].value)")
    assert _py("-c", code).stdout.split() == ["7.7.1", "VBox", "3", "True"]


def test_notebook_01_runs_in_the_colab_like_kernel(installed, tmp_path, monkeypatch):
    import papermill as pm

    monkeypatch.setenv("JUPYTER_PATH", str(VENV / "share" / "jupyter"))
    out_dir = tmp_path / "01"
    pm.execute_notebook(str(ROOT / "notebooks" / "01_lora_math.ipynb"), str(tmp_path / "01.ipynb"),
                        parameters={"PROFILE": "cpu", "OUTPUT_DIR": str(out_dir)}, kernel_name=KERNEL,
                        cwd=str(ROOT / "notebooks"), execution_timeout=900, progress_bar=False)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics["profile"] == "cpu" and metrics["max_abs_diff_vs_peft"] < 1e-5
    executed = json.loads((tmp_path / "01.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    # show_env's line: the kernel that ran it is the Colab-like venv's (Colab's transformers, the kit's peft)
    assert "transformers 5.15.0" in printed and "peft 0.21" in printed, printed[:400]
