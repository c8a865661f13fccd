"""export.engines: engines take turns clip by clip; CER, gap and speed are each engine's own."""
from lorakit_nb.export.engines import compare_engines, engines_table


def test_compare_engines_scores_each_engine_and_alternates():
    refs = ["你好", "谢谢你", "再见", "今天很好"] * 3
    calls = []

    def engine(name, wrong_every):
        def run(audios):
            calls.append(name)
            return [refs[a] if wrong_every == 0 or a % wrong_every else "错" for a in audios]
        return run

    rows, hyps = compare_engines({"ref": engine("ref", 0), "worse": engine("worse", 2)}, list(range(12)), refs,
                                 reference="ref")
    assert calls[:2] == ["ref", "worse"] and calls[2:6] == ["ref", "worse", "ref", "worse"]  # warm-up, then turns
    ref, worse = rows
    assert ref["cer"] == 0 and ref["gap_points"] == 0 and ref["identical_to_reference"] == 1
    assert worse["cer"] > 0.3 and worse["gap_points"] == 100 * worse["cer"] and worse["identical_to_reference"] == 0.5
    assert worse["gap_ci95"][0] > 0 and "ref better" in worse["reading"]
    assert "worse" in engines_table(rows, "ref").splitlines()[2]
