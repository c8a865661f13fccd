"""The kit's one memory meter, and a fresh process to measure in (notebooks 01 and 03 use both).

Covers: ``rss_bytes`` (resident memory now, via psutil: Linux, macOS, Windows), ``reset_peak`` /
``peak_bytes`` (the training peak: CUDA's allocator peak on a GPU; otherwise the kernel's resident
high-water mark, reset where Linux allows it and the lifetime peak from ``resource`` elsewhere), and
``run_fresh`` (call a module's ``_measure_here(**args)`` in a new Python process and read its JSON
result, so one measurement's peak is not another's).
Does not: estimate memory from parameter counts (``lora/memory.py``) or decide what to measure.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

RESULT = "RESULT "  # the line prefix a measuring child process prints its JSON after


def rss_bytes() -> int:
    """Resident set size of this process now, in bytes (psutil, so not only on Linux)."""
    import psutil

    return psutil.Process().memory_info().rss


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def reset_peak() -> bool:
    """Start a new peak: CUDA's counter on a GPU, else Linux's VmHWM (write 5 to clear_refs).

    Returns False where the peak cannot be reset (macOS, Windows, old kernels): ``peak_bytes`` then
    reports the lifetime peak, loading included, and says so through this flag.
    """
    if _cuda():
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_bytes() -> int:
    """Peak bytes since ``reset_peak``: ``torch.cuda.max_memory_allocated`` on a GPU, else peak RSS."""
    if _cuda():
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    try:
        return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
    except (OSError, AttributeError):  # not Linux: the lifetime peak
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def run_fresh(module: str, args: dict, timeout: int = 900) -> dict:
    """``module._measure_here(**args)`` in a fresh Python process; its returned dict.

    The child is ``python -m module '<json args>'``; the module prints ``RESULT <json>`` from its
    ``if __name__ == "__main__"`` block (see ``child_main``). A failure raises with the child's stderr.
    Example: run_fresh("lorakit_nb.lora.memory", {"method": "lora"})["measured_mb"] -> 160.2 (say)
    """
    proc = subprocess.run([sys.executable, "-m", module, json.dumps(args)], capture_output=True, text=True,
                          timeout=timeout, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{module} measurement {args} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT):])


def child_main(measure) -> None:
    """The child side of ``run_fresh``: ``measure(**json args)``, printed after ``RESULT``."""
    print(RESULT + json.dumps(measure(**json.loads(sys.argv[1]))), flush=True)
