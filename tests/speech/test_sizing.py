"""speech.sizing (estimates on the meta device) and speech.cost.peak_split (reading a measured table)."""
import pytest

from lorakit_nb.speech.cost import peak_split
from lorakit_nb.speech.sizing import llm_7b_states, qlora_pays_from, whisper_config, zero3_full_states
from lorakit_nb.speech.whisper import lora_param_count


def test_peak_split_reads_weights_and_the_rest():
    table = [{"kind": "lora", "weights_mb": 290, "peak_gb": 1.18, "s_per_step": 1.8},
             {"kind": "qlora", "weights_mb": 136, "peak_gb": 1.33, "s_per_step": 1.9},
             {"kind": "full", "weights_mb": 288, "peak_gb": 2.18, "s_per_step": 2.2}]
    got = peak_split(table)
    assert got["saved_mb"] == 154
    assert got["rest_mb"] == pytest.approx({"lora": 890, "qlora": 1194})
    assert got["extra_mb"] == pytest.approx(304) and got["net_gb"] == pytest.approx(0.15)
    assert got["qlora_time"] == pytest.approx(1.9 / 1.8) and got["lora_speedup"] == pytest.approx(2.2 / 1.8)


def test_qlora_pays_from_the_first_size_whose_saving_passes_the_extra():
    count = lambda cfg: lora_param_count(cfg, 16, ("q_proj", "v_proj"))
    rows, first = qlora_pays_from(count, 309.0)
    saved = [r["saved_MB"] for r in rows]
    assert saved == sorted(saved) and first == "whisper-small"
    assert next(r for r in rows if r["model"] == "whisper-base")["params_M"] == pytest.approx(72.6, abs=0.1)
    assert qlora_pays_from(count, 1e9)[1] is None and "pays_after_measured_extra" not in qlora_pays_from(count, None)[0][0]


def test_zero3_states_of_large_v3_and_the_7b_table():
    z = zero3_full_states(whisper_config("whisper-large-v3"))
    assert z["states_gb"] == pytest.approx(16 * z["params"] / 1e9) and 24 < z["states_gb"] < 26 and z["min_gpus"] == 2
    assert [r["GPUs"] for r in z["rows"]] == [1, 2, 4, 8]
    llm = llm_7b_states(r=8)
    assert llm["trainable"] == 4_194_304 and 6.7e9 < llm["params"] < 6.8e9
    assert llm["full"] > 100 and 13 < llm["lora"] < 14 and llm["qlora"] < 5  # bf16: 2 bytes per frozen weight
