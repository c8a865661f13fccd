"""The load-test table and reading (serve.report) and the llama.cpp parity table (serve.llm_checks): text from numbers."""
import matplotlib

from lorakit_nb.serve.llm_checks import export_wu_adapters, parity_table
from lorakit_nb.serve.report import load_reading, load_table, plot_load

matplotlib.use("Agg")

LOAD = [{"concurrency": c, "ok": 16, "requests": 16, "clips_per_s": v, "audio_s_per_s": 3 * v, "p50_ms": 400 * c,
         "p95_ms": 500 * c, "errors": {}} for c, v in ((1, 2.0), (2, 3.0), (4, 3.3), (8, 2.9))]
OFFLINE = {"batch_size": 8, "batched_clips_per_s": 3.5, "single_p50_ms": 380.0, "single_p95_ms": 450.0}


def test_load_table_has_a_row_per_level_and_the_offline_line():
    text = load_table(LOAD, OFFLINE)
    rows = text.splitlines()
    assert rows[1].split()[:3] == ["1", "16", "2.00"] and rows[4].split()[0] == "8"
    assert "batched x8 3.50 clips/s" in text and "p95 450 ms" in text


def test_load_reading_follows_the_numbers():
    flat = load_reading(LOAD, 0.99)
    assert "no HTTP overhead visible" in flat and "peak at 4 clients, x1.65 of one client, then falls to x1.45 at 8" in flat
    rising = load_reading([dict(r, clips_per_s=r["concurrency"]) for r in LOAD], 1.3)
    assert "adds visible time" in rising and "peak at 8 clients, x8.00" in rising and "falls" not in rising


def test_plot_load_draws_two_panels():
    fig = plot_load(LOAD, OFFLINE)
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 3 and len(fig.axes[1].lines) == 2


def test_parity_table_says_why_a_row_agrees():
    rows = [{"label": "test, strength 0.8 (shipped)", "hf": 60.0, "llamacpp": 57.0, "tol": 2, "within": False, "agrees": True},
            {"label": "dev, strength 1.0", "hf": 55.0, "llamacpp": 50.0, "tol": 3, "within": False, "agrees": False}]
    text = parity_table({"rows": rows, "passes": 3, "seconds": 12.0, "shipped_strength": 0.8,
                         "test_identical_share": 0.8, "test_diff_ci95": [-6.0, 1.0]})
    assert "interval holds 0: not a real difference" in text.splitlines()[-2]
    assert text.splitlines()[-1].endswith("(within 3: NO)") and "-5.0" in text.splitlines()[-1]


def test_adapters_of_another_base_are_skipped_with_the_reason(tmp_path):
    exported, why = export_wu_adapters(tmp_path, tmp_path, tmp_path / "gemma.gguf", "tiny-llama")
    assert exported == {} and "'tiny-llama', not gemma-3-270m" in why
