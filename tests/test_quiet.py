"""Known third-party noise stays quiet: bitsandbytes' `kernels` log line, peft's checkpointing FutureWarning,
the kernel's TCP warning."""
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import nbformat

from lorakit_nb.quiet import BNB_CPU_LOGGER, BNB_KERNELS_MESSAGE, PEFT_CHECKPOINTING_WARNING
from lorakit_nb.runner import run_notebook


def test_bnb_kernels_message_is_still_the_one_bitsandbytes_logs():
    """If a bitsandbytes upgrade rewords the message, the filter would silently stop matching: fail here."""
    spec = importlib.util.find_spec("bitsandbytes")
    source = (Path(spec.origin).parent / "backends" / "cpu" / "ops.py").read_text(encoding="utf-8")
    assert BNB_KERNELS_MESSAGE in source and "logging.getLogger(__name__)" in source


def test_only_the_kernels_message_is_dropped():
    """A fresh process, as a learner's kernel: import the kit, then bitsandbytes' logger says two things.

    The CPU 4-bit path is re-imported with AVX512-BF16 reported present, which is what makes
    bitsandbytes try `kernels` and log the warning on such CPUs; without the kit's filter it is printed.
    """
    code = (
        "import importlib, logging, lorakit_nb, bitsandbytes, bitsandbytes.functional as F\n"
        "import bitsandbytes.backends.cpu.ops as ops\n"
        "F.has_avx512bf16 = lambda: True\n"
        "import warnings; warnings.simplefilter('ignore')\n"  # torch's re-registration notice, not ours
        "importlib.reload(ops)\n"
        f"logging.getLogger({BNB_CPU_LOGGER!r}).warning('another bitsandbytes warning')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert "kernels-community" not in proc.stderr, proc.stderr
    assert "another bitsandbytes warning" in proc.stderr, proc.stderr
    without_kit = subprocess.run([sys.executable, "-c", code.replace("lorakit_nb, ", "")], capture_output=True,
                                 text=True, timeout=300, check=True)
    assert BNB_KERNELS_MESSAGE in without_kit.stderr, "the simulation no longer triggers the warning"


def test_peft_checkpointing_futurewarning_is_dropped_in_a_fresh_process():
    """get_peft_model reads transformers 5's deprecated `is_gradient_checkpointing`: without the kit's filter
    a FutureWarning is printed (checked, so the filter cannot go stale); with it, only other warnings show."""
    code = (
        "import warnings; warnings.simplefilter('default')\n"
        "import lorakit_nb\n"
        "import torch\n"
        "from peft import LoraConfig, get_peft_model\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "m = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,"
        " num_attention_heads=2, num_key_value_heads=2, vocab_size=64))\n"
        "get_peft_model(m, LoraConfig(r=2, target_modules=['q_proj']))\n"
        "warnings.warn('another deprecation', FutureWarning)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert "is_gradient_checkpointing" not in proc.stderr and "another deprecation" in proc.stderr, proc.stderr
    without = code.replace("import lorakit_nb\n", "")
    proc = subprocess.run([sys.executable, "-c", without], capture_output=True, text=True, timeout=300, check=True)
    assert "is_gradient_checkpointing" in proc.stderr, "peft no longer triggers it: drop PEFT_CHECKPOINTING_WARNING"
    assert PEFT_CHECKPOINTING_WARNING.strip("`").split("`")[0] in proc.stderr


def test_filter_is_narrow():
    logger = logging.getLogger(BNB_CPU_LOGGER)
    drop = logging.makeLogRecord({"msg": BNB_KERNELS_MESSAGE + ": %s", "args": ("x",), "levelno": logging.WARNING})
    keep = logging.makeLogRecord({"msg": "Failed to load something else", "levelno": logging.WARNING})
    assert not logger.filter(drop) and logger.filter(keep)


def test_papermill_kernel_does_not_warn_about_tcp(tmp_path, capfd):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell('PROFILE = "cpu"\nOUTPUT_DIR = "x"'),
                                         nbformat.v4.new_code_cell("print(6 * 7)")])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "09_quiet.ipynb"
    nbformat.write(nb, path)
    run_notebook(path, tmp_path / "runs", timeout=120, progress=False)
    err = capfd.readouterr().err
    assert "without encryption" not in err, err
    executed = nbformat.read(tmp_path / "runs" / path.name, as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "42\n"
