"""The course runner and CLI: notebook selection, failure reports that name the cell, summary table."""
import json

import nbformat
import pytest

from lorakit_nb.cli import main
from lorakit_nb.errors import LorakitError
from lorakit_nb.runner import (
    NotebookFailed,
    find_notebooks,
    run_notebook,
    summary_lines,
)


def _write_nb(path, *sources, tag_first=True):
    cells = [nbformat.v4.new_code_cell(s) for s in sources]
    if tag_first:
        cells[0].metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_find_notebooks_order_and_filter(tmp_path):
    for name in ("02_b.ipynb", "01_a.ipynb", "notes.ipynb"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in find_notebooks(notebook_dir=tmp_path)] == ["01_a.ipynb", "02_b.ipynb"]
    assert [p.name for p in find_notebooks("2", notebook_dir=tmp_path)] == ["02_b.ipynb"]
    with pytest.raises(LorakitError, match="07"):
        find_notebooks("07", notebook_dir=tmp_path)


def test_failure_names_notebook_and_cell(tmp_path):
    nb = tmp_path / "09_broken.ipynb"
    _write_nb(nb, 'PROFILE = "auto"\nOUTPUT_DIR = "x"', "x = 1", "raise ValueError('bad row 3')")
    with pytest.raises(NotebookFailed) as err:
        run_notebook(nb, tmp_path / "runs", timeout=120, progress=False)
    msg = str(err.value)
    assert "09_broken.ipynb" in msg and "cell" in msg and "bad row 3" in msg


def test_parameters_reach_the_notebook_and_metrics_come_back(tmp_path):
    nb = tmp_path / "05_ok.ipynb"
    _write_nb(nb, 'PROFILE = "auto"\nOUTPUT_DIR = "x"',
              "from lorakit_nb.env import write_metrics\nwrite_metrics(OUTPUT_DIR, {'profile': PROFILE, 'v': 2.5})")
    metrics = run_notebook(nb, tmp_path / "runs", profile="cpu", timeout=120, progress=False)
    assert metrics == {"profile": "cpu", "v": 2.5}
    assert json.loads((tmp_path / "runs" / "05" / "metrics.json").read_text())["v"] == 2.5


def test_summary_lines_pick_known_keys():
    lines = summary_lines({"03": ({"cer_zero_shot": 0.712345, "other": 1}, 12.3)})
    assert lines[0].startswith("03  wall seconds") and "0.7123" in lines[1] and len(lines) == 2


def test_cli_reports_errors_in_one_line(capsys):
    assert main(["run", "--only", "99"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lorakit run:") and "99" in err


def test_cli_rejects_unknown_profile_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--profile", "tpu"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'tpu'" in err and "Traceback" not in err


def test_smoke_is_a_profile():
    from lorakit_nb.env import resolve_profile

    assert resolve_profile("smoke") == "smoke"
    with pytest.raises(ValueError, match="smoke"):
        resolve_profile("tpu")


def test_cli_missing_adapter_is_one_line(tmp_path, capsys):
    """`lorakit evaluate --adapter typo --data x.csv` names the missing path in one line, no traceback."""
    from lorakit_nb import cli

    data = tmp_path / "x.csv"
    data.write_text("wu,mandarin,english\n侬好,你好,hello\n", encoding="utf-8")
    assert cli.main(["evaluate", "--adapter", str(tmp_path / "typo"), "--data", str(data)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "typo" in err and "Traceback" not in err


def test_cli_evaluate_needs_exactly_one_of_adapter_and_model(tmp_path, capsys):
    from lorakit_nb import cli

    data = tmp_path / "x.csv"
    data.write_text("wu,mandarin,english\n侬好,你好,hello\n", encoding="utf-8")
    assert cli.main(["evaluate", "--data", str(data)]) == 1
    assert cli.main(["evaluate", "--adapter", "a", "--model", "tiny-gemma", "--data", str(data)]) == 1
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 2 and all("--adapter DIR" in e and "--model NAME" in e for e in errs)


def test_cli_evaluate_model_scores_the_base_as_a_baseline(tmp_path, capsys):
    """`lorakit evaluate --model NAME --data X.csv`: a base model with no adapter, the same JSON as for an adapter;
    its chrF is recomputed here from the saved outputs, so the file holds what was scored."""
    import json

    from lorakit_nb import cli
    from lorakit_nb.metrics import chrf

    data = tmp_path / "x.csv"
    data.write_text("wu,mandarin,english\n侬好,你好,hello\n谢谢侬,谢谢你,thank you\n", encoding="utf-8")
    out = tmp_path / "base.json"
    assert cli.main(["evaluate", "--model", "tiny-gemma", "--data", str(data), "--out", str(out)]) == 0
    saved = json.loads(out.read_text("utf-8"))
    assert saved["adapter"] is None and saved["base_model"] == "tiny-gemma" and saved["n"] == 2
    ex = saved["examples"]
    assert saved["chrf"] == pytest.approx(chrf([e["reference"] for e in ex], [e["output"] for e in ex]))
    assert "tiny-gemma on" in capsys.readouterr().out


def test_optional_notebooks_follow_their_stage_and_get_upstream_dirs(tmp_path):
    """02b_… is stage 02's side trip: it sorts after 02, --only names it as 02b, and a RUN02_DIR in its
    parameters cell is pointed at the run folder's 02/."""
    from lorakit_nb.runner import is_core, notebook_key, upstream_parameters

    for name in ("03_c.ipynb", "02b_side.ipynb", "02_b.ipynb", "02bb_not.ipynb"):
        (tmp_path / name).write_text("{}")
    found = find_notebooks(notebook_dir=tmp_path)
    assert [p.name for p in found] == ["02_b.ipynb", "02b_side.ipynb", "03_c.ipynb"]
    assert [p.name for p in find_notebooks("02b", notebook_dir=tmp_path)] == ["02b_side.ipynb"]
    assert notebook_key(found[1]) == "02b" and not is_core(found[1]) and is_core(found[0])
    nb = tmp_path / "05b_x.ipynb"
    _write_nb(nb, 'PROFILE = "auto"\nOUTPUT_DIR = "x"\nRUN02_DIR = "runs/02"')
    assert upstream_parameters(nb, tmp_path / "runs") == {"RUN02_DIR": str((tmp_path / "runs" / "02").resolve())}
