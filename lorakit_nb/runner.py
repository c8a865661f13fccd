"""Run the course headless: execute notebooks in order with papermill and summarise their numbers.

Covers: finding the notebooks, executing each with an execution timeout and its own OUTPUT_DIR,
reporting the notebook and cell that broke, and printing a table of each notebook's key numbers
read from its metrics.json.
Does not: decide what a notebook computes (each notebook writes its own metrics.json).
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from .env import read_metrics, write_json_atomic
from .errors import LorakitError

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"

# The numbers worth a line in the summary, per notebook; any other metric stays in metrics.json.
SUMMARY_KEYS = {
    "01": ["max_abs_diff_vs_peft", "llama2_7b_r8_qv_trainable", "whisper_small_r64_qv_trainable",
           "lowrank_fit_mse_at_true_rank", "memory_full_measured_mb", "memory_lora_measured_mb"],
    "02": ["chrf_before", "chrf_after", "exact_match_before", "exact_match_after", "train_seconds"],
    "02b": ["mandarin_identity_before", "mandarin_identity_after", "chrf_english_after", "tune_dev_chrf"],
    "03": ["cer_zero_shot", "cer_finetuned", "cer_ratio", "train_seconds"],
    "03b": ["step_seconds_3000", "large_v3_full_states_gb", "qlora_weights_saved_mb", "checkpointing_saves_gb"],
    "04": ["cer_finetuned_hf", "cer_ct2_int8", "ct2_agreement_int8", "speed_ratio_ct2_int8_vs_hf"],
    "04b": ["cer_ct2_int8", "cer_whispercpp_f16", "cer_whispercpp_q8_0", "cer_whispercpp_q5_0"],
    "05": ["cer_served", "cer_offline", "served_identical_fraction", "p95_ms_c1", "throughput_best_clips_per_s",
           "throughput_c8_over_offline_batched"],
    "05b": ["base_gguf_mb", "one_answer_chrf_median"],
}


def _papermill():
    """papermill, or one line saying how to get it (it is the `run` extra, not a base dependency)."""
    try:
        import papermill
    except ImportError:
        raise LorakitError("running notebooks headless needs papermill: pip install -e '.[run]' "
                           "(make installs it; inside Jupyter or Colab just run the notebook)") from None
    return papermill


class NotebookFailed(LorakitError, RuntimeError):
    """A notebook raised: names the notebook, the failing cell and where the executed copy is."""


def notebook_key(notebook) -> str:
    """The course position of a notebook: its name up to the first underscore.

    A core notebook is NN ("03_whisper_zh_qlora.ipynb" -> "03"); an optional side trip of stage NN carries
    a letter ("03b_cost_and_memory.ipynb" -> "03b") and runs right after its core notebook.
    """
    return Path(notebook).name.split("_", 1)[0]


def is_core(notebook) -> bool:
    """Core notebooks tell the course's one storyline; optional ones (NNb_…) are side trips."""
    return notebook_key(notebook).isdigit()


def find_notebooks(only=None, notebook_dir=NOTEBOOK_DIR) -> list[Path]:
    """Notebooks named NN_*.ipynb / NNb_*.ipynb in course order, optionally filtered ("01,03b" or ["01"])."""
    notebooks = sorted(nb for nb in Path(notebook_dir).glob("[0-9][0-9]*_*.ipynb")
                       if re.fullmatch(r"\d\d[a-z]?", notebook_key(nb)))
    if only:
        wanted = {w.strip().zfill(2) for w in (only.split(",") if isinstance(only, str) else only)}
        unknown = wanted - {notebook_key(nb) for nb in notebooks}
        if unknown:
            raise LorakitError(f"--only {sorted(unknown)}: no such notebook. "
                             f"Available: {', '.join(nb.name for nb in notebooks)}")
        notebooks = [nb for nb in notebooks if notebook_key(nb) in wanted]
    return notebooks


def upstream_parameters(notebook: Path, run_dir: Path) -> dict:
    """RUNNN_DIR -> run_dir/NN for every such name in the notebook's parameters cell.

    A notebook that reads an earlier one's outputs declares it (`RUN03_DIR = "runs/03"`), so the runner
    points it at the same run folder: 04 reads 03's adapter, 05b reads 02's adapters.
    """
    names = _papermill().inspect_notebook(str(notebook))
    return {name: str((Path(run_dir) / m.group(1)).resolve())
            for name in names if (m := re.fullmatch(r"RUN(\d\d[a-z]?)_DIR", name))}


def _failed_cell(executed: Path) -> str:
    """Describe the first cell whose output is an error, from the executed notebook on disk."""
    try:
        nb = json.loads(executed.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unknown cell"
    for i, cell in enumerate(nb.get("cells", [])):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                src = "".join(cell.get("source", "")).strip().splitlines()
                first = src[0][:80] if src else ""
                return f"cell {i} ({first!r}): {out.get('ename')}: {out.get('evalue')}"
    return "unknown cell"


def kernel_config():
    """traitlets config for the kernel papermill starts: CurveZMQ-encrypted sockets where possible.

    ipykernel >= 7 warns "Kernel is running over TCP without encryption ..." on every start unless the
    kernel manager hands it CurveZMQ keys; jupyter_client >= 8.10 does that with
    ``KernelManager.transport_encryption = "auto"``. The kernel only listens on 127.0.0.1, so the
    warning names no real risk for ``lorakit run``; encrypting is still the honest way to quiet it.
    Older jupyter_client, or a libzmq without Curve: no config (the warning, if any, stays).
    """
    import zmq
    from jupyter_client import KernelManager
    from traitlets.config import Config

    if "transport_encryption" not in KernelManager.class_trait_names() or not zmq.has("curve"):
        return Config()
    return Config({"KernelManager": {"transport_encryption": "auto"}})


def run_notebook(notebook: Path, run_dir: Path, profile: str = "cpu", timeout: int = 3600,
                 parameters: dict | None = None, progress: bool = True) -> dict:
    """Execute one notebook into run_dir/NN/ and return its metrics.

    The executed copy is saved as run_dir/<name>.ipynb. Parameters passed: PROFILE, OUTPUT_DIR (the
    notebook's own folder, run_dir/NN), and every RUNNN_DIR its parameters cell declares (04 finds 03's
    outputs at RUN03_DIR, 05 finds 04's at RUN04_DIR).
    """
    pm = _papermill()
    number = notebook_key(notebook)
    out_dir = (Path(run_dir) / number).resolve()
    params = {"PROFILE": profile, "OUTPUT_DIR": str(out_dir), **upstream_parameters(notebook, run_dir)}
    params.update(parameters or {})
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    executed = run_dir / notebook.name
    try:
        pm.execute_notebook(str(notebook), str(executed), parameters=params, kernel_name="python3",
                            execution_timeout=timeout, progress_bar=progress, cwd=str(notebook.parent),
                            config=kernel_config())
    except Exception as exc:  # papermill raises PapermillExecutionError, timeouts raise others
        raise NotebookFailed(f"{notebook.name} failed at {_failed_cell(executed)}\n"
                             f"  executed copy: {executed}\n  ({type(exc).__name__}: {str(exc).strip()[-300:]})") from exc
    return read_metrics(out_dir) if (out_dir / "metrics.json").exists() else {}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_lines(results: dict) -> list[str]:
    """Rows `NN  key  value` for the summary keys each notebook reported."""
    lines = []
    for number, (metrics, seconds) in results.items():
        lines.append(f"{number}  {'wall seconds':34s} {seconds:.0f}")
        for key in SUMMARY_KEYS.get(number, []):
            if key in metrics:
                lines.append(f"{number}  {key:34s} {_fmt(metrics[key])}")
    return lines


def run_course(run_dir="runs", profile: str = "cpu", only=None, timeout: int = 3600) -> dict:
    """Execute the notebooks in order, stop at the first failure, print and save a summary."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    notebooks = find_notebooks(only)
    results = {}
    course_start = time.perf_counter()
    for i, nb in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {nb.name}  (profile {profile}, timeout {timeout}s per cell)", flush=True)
        start = time.perf_counter()
        metrics = run_notebook(nb, run_dir, profile, timeout)
        results[notebook_key(nb)] = (metrics, time.perf_counter() - start)
    lines = summary_lines(results)
    total = time.perf_counter() - course_start
    lines.append(f"all {'total wall seconds':34s} {total:.0f}")
    print("\nSummary (from each notebook's metrics.json)\n" + "\n".join(lines))
    write_json_atomic(run_dir / "summary.json",
                      {n: {"wall_seconds": s, "metrics": m} for n, (m, s) in results.items()})
    (run_dir / "summary.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\n{len(results)} notebooks, profile {profile}: {total:.0f} s total wall time ({total / 60:.1f} min)")
    return results
