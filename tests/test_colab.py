"""The Colab setup cell: the same in every notebook, a no-op outside Colab; on (a simulated) Colab it clones the
kit from LORAKIT_REPO and installs it with the runtime's pinned versions as pip constraints, without the CPU
weight packs and without touching torch. (tests/test_colab_env.py runs the real install in a Colab-like venv.)"""
import importlib.metadata as md
import shutil
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

from lorakit_nb import colab
from lorakit_nb.colab import COLAB_CELL
from lorakit_nb.runner import find_notebooks


@pytest.mark.parametrize("notebook", find_notebooks(None), ids=lambda p: p.name)
def test_every_notebook_starts_with_the_colab_cell(notebook):
    nb = nbformat.read(notebook, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code.source == COLAB_CELL.rstrip("\n")


def _run_cell(monkeypatch, tmp_path, colab_runtime: bool, repo: str | None):
    """Execute COLAB_CELL with subprocess.check_call recorded; the fake `git clone` puts colab.py in place."""
    kit = tmp_path / "lorakit-nb"
    calls = []

    def check_call(cmd, **kw):
        calls.append(list(cmd))
        if cmd[0] == "git":
            (kit / "notebooks").mkdir(parents=True)
            (kit / "lorakit_nb").mkdir()
            shutil.copy(Path(colab.__file__), kit / "lorakit_nb" / "colab.py")

    monkeypatch.setattr(subprocess, "check_call", check_call)
    if colab_runtime:
        monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    if repo is None:
        monkeypatch.delenv("LORAKIT_REPO", raising=False)
    else:
        monkeypatch.setenv("LORAKIT_REPO", repo)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cell prepends the kit; undone after the test
    exec(compile(COLAB_CELL.replace('"/content/lorakit-nb"', repr(str(kit))), "colab_cell", "exec"),
         {"__name__": "__main__"})
    return calls, kit


def test_outside_colab_the_cell_does_nothing(monkeypatch, tmp_path):
    calls, _ = _run_cell(monkeypatch, tmp_path, colab_runtime=False, repo=None)
    assert calls == []


def test_on_colab_it_clones_and_installs_with_the_runtime_pins_as_constraints(monkeypatch, tmp_path, capsys):
    calls, kit = _run_cell(monkeypatch, tmp_path, colab_runtime=True, repo="https://example.org/lorakit-nb.git")
    assert calls[0] == ["git", "clone", "--depth", "1", "https://example.org/lorakit-nb.git", str(kit)]
    pip = calls[1]
    assert pip[:4] == [sys.executable, "-m", "pip", "install"] and pip[-2:] == ["-e", f"{kit}[serve]"]
    assert not any("offline-models" in a or a.startswith("torch") for a in pip)
    constraints = Path(pip[pip.index("-c") + 1]).read_text().splitlines()
    # this test venv has ipykernel and numpy: the constraints hold exactly the versions installed now
    assert f"ipykernel=={md.version('ipykernel')}" in constraints and f"numpy=={md.version('numpy')}" in constraints
    assert len(calls) == 2 and Path.cwd() == kit / "notebooks"
    assert "No restart needed" in capsys.readouterr().out


def test_on_colab_without_a_repo_address_it_says_how_to_set_it(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="LORAKIT_REPO"):
        _run_cell(monkeypatch, tmp_path, colab_runtime=True, repo=None)


def test_pinned_names_follow_google_colabs_own_equals_requirements(monkeypatch):
    real = md.requires

    def requires(name):
        if name == "google-colab":
            return ["ipykernel==6.17.1", "pandas==2.2.2", "requests>=2.31", 'pytest==8.0; extra == "test"']
        return real(name)

    monkeypatch.setattr(md, "requires", requires)
    names = colab.colab_pinned_names()
    assert {"ipykernel", "pandas", "ipywidgets", "jupyter-client", "notebook", "numpy", "torch"} <= names
    assert "requests" not in names and "pytest" not in names


def test_a_pinned_package_changed_by_pip_fails_loudly(monkeypatch, tmp_path):
    (tmp_path / "notebooks").mkdir()
    monkeypatch.setattr(colab, "pinned_versions", lambda: {"ipykernel": "6.17.1"})
    versions = iter([{"ipykernel": "6.17.1"}, {"ipykernel": "7.1.0"}])  # before, after pip
    monkeypatch.setattr(colab, "_all_versions", lambda: next(versions))
    monkeypatch.setattr(subprocess, "check_call", lambda cmd, **kw: None)
    with pytest.raises(RuntimeError, match=r"ipykernel.*6\.17\.1.*7\.1\.0"):
        colab.install(str(tmp_path))


def test_pip_refusing_the_constraints_is_one_clear_error(monkeypatch, tmp_path):
    def refuse(cmd, **kw):
        raise subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(colab, "pinned_versions", lambda: {"ipywidgets": "7.7.1"})
    monkeypatch.setattr(subprocess, "check_call", refuse)
    with pytest.raises(RuntimeError, match=r"without replacing a package this runtime pins \(ipywidgets==7\.7\.1"):
        colab.install(str(tmp_path))


def test_restart_is_asked_only_for_upgraded_packages_already_imported():
    before = {"numpy": "2.1.3", "sacrebleu": "2.4.0", "jiwer": "3.0"}
    after = {"numpy": "2.3.0", "sacrebleu": "2.5.0", "jiwer": "3.0"}
    assert colab.imported_and_changed(before, after, modules={"numpy": object(), "jiwer": object()}) == ["numpy"]
