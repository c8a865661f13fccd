"""Where am I running? Versions, device, the profile switch, and metrics.json.

Every notebook starts with `show_env()` and ends with `write_metrics(...)`, so a learner (and CI)
sees the same facts in the same place.

Covers: package versions, CPU/GPU detection, the fast training dtype (``dtype: auto``), resolving
PROFILE = "auto" | "cpu" | "gpu" | "smoke", writing and reading `OUTPUT_DIR/metrics.json` atomically.
Does not: pick hyper-parameters (each notebook's `parameters` cell does that, visibly).
"""
from __future__ import annotations

import contextlib
import json
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lorakit_nb.io import write_json_atomic

KEY_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "jiwer", "ctranslate2")
PROFILES = ("cpu", "gpu", "smoke")  # smoke: tiny random models, plumbing checks only


def package_version(name: str) -> str:
    """Installed version of a distribution, or "not installed"."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def device() -> str:
    """"cuda" when a CUDA GPU is visible to torch, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def show_env(packages=KEY_PACKAGES) -> dict:
    """Print and return Python, package versions and the device.

    Example: show_env(("torch",)) prints `python 3.11.7 | torch 2.13.0+cpu | device cpu (2 threads)`.
    """
    import torch

    info = {"python": platform.python_version()}
    info.update({p: package_version(p) for p in packages})
    dev = device()
    info["device"] = dev
    if dev == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    else:
        info["threads"] = torch.get_num_threads()
    print(" | ".join(f"{k} {v}" for k, v in info.items()))
    return info


def fast_dtype(on_gpu: bool | None = None) -> str:
    """The training dtype that is fast on this machine, for a config's ``dtype: auto``.

    GPU: "bfloat16" where the card supports it (A100, H100, ...), else "float16" (T4).
    CPU: "bfloat16" only with AVX-512 (torch's CPU capability "AVX512..."), where it measured ~1.2-2x
    faster than float32; on AVX2-only CPUs torch has no fast bfloat16 matmul and a gemma-3-270m LoRA
    step measured 144 s in bfloat16 vs 3.5 s in float32 (1 thread), so "float32" there.
    Example: fast_dtype(on_gpu=False) on an AVX2 laptop -> "float32".
    """
    import torch

    on_gpu = device() == "cuda" if on_gpu is None else on_gpu
    if on_gpu:
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else "float32"


def resolve_profile(profile: str = "auto") -> str:
    """Turn the notebook's PROFILE switch into "cpu", "gpu" or "smoke" and say why.

    "auto" -> "gpu" if CUDA is available else "cpu". An explicit value is kept as given; "smoke" runs
    every cell on tiny random models and tiny data (plumbing checks, numbers mean nothing).
    Example: resolve_profile("auto") on a laptop -> prints `PROFILE auto -> cpu (no CUDA GPU found)`.
    """
    profile = (profile or "auto").lower()
    if profile == "auto":
        resolved = "gpu" if device() == "cuda" else "cpu"
        why = "CUDA GPU found" if resolved == "gpu" else "no CUDA GPU found"
        print(f"PROFILE auto -> {resolved} ({why})")
        return resolved
    if profile not in PROFILES:
        raise ValueError(f"PROFILE must be 'auto', 'cpu', 'gpu' or 'smoke', not {profile!r}: fix the parameters cell.")
    print(f"PROFILE {profile}")
    return profile




@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run a block with ``torch.set_num_threads(n)``, then restore the caller's count (n <= 0 / None: unchanged).

    One thread can beat two on a busy 2-core machine (no waiting at barriers); the setting is
    process-wide, so a library function that changes it must put it back.
    Example: with torch_threads(1): trainer.train()
    """
    import torch

    before = torch.get_num_threads()
    if n and n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


VERDICTS = ("holds", "partly", "wrong", "not refuted", "not comparable", "not checked here")
"""What a claims-ledger row may say. `holds` / `partly` / `wrong`: the measurement answers the claim.
`not refuted`: the measurement is a bound that leaves the claim possible (a lower bound under a claimed
ceiling). `not comparable`: the setups differ too much for a verdict (2 CPU cores vs a GPU server, 1 of 20
epochs). `not checked here`: nothing in this run can check it; the `measured` field says why."""


def judge(holds: bool, partly: bool = False) -> str:
    """The verdict of a claim whose test is a condition: "holds", else "partly" if `partly`, else "wrong".

    Example: judge(ratio >= 3, partly=ratio >= 2) -> "partly" for ratio 2.4
    """
    return "holds" if holds else "partly" if partly else "wrong"


def record_claim(metrics: dict, claim_id: str, claim: str, measured, verdict: str) -> dict:
    """One row of the claims ledger: a seed article's claim, what this run measured, and the verdict.

    Stored as ``metrics["claims"][claim_id] = {"claim", "measured", "verdict"}`` (verdict: one of
    ``VERDICTS``), so ``metrics.json`` carries every checked claim and the tests can assert it.
    Prints the row. Example: record_claim(m, "seed1_7b_r8", "r=8 on 7B adds ~600k parameters", 4194304, "wrong")
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    row = {"claim": claim, "measured": measured, "verdict": verdict}
    metrics.setdefault("claims", {})[claim_id] = row
    print(f"[claim {claim_id}] {claim} | measured: {measured} | {verdict.upper()}")
    return row


def write_metrics(output_dir, metrics: dict, name: str = "metrics.json") -> Path:
    """Merge `metrics` into OUTPUT_DIR/metrics.json (created if missing) and return its path.

    Merging lets a notebook record numbers section by section. Example:
    write_metrics("runs/01", {"max_abs_diff_vs_peft": 0.0}) -> runs/01/metrics.json
    """
    path = Path(output_dir) / name
    current = read_metrics(output_dir, name) if path.exists() else {}
    current.update(metrics)
    return write_json_atomic(path, current)


def read_metrics(output_dir, name: str = "metrics.json") -> dict:
    """Read OUTPUT_DIR/metrics.json."""
    with open(Path(output_dir) / name, encoding="utf-8") as f:
        return json.load(f)
