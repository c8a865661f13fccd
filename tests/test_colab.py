"""The Colab setup cell: the same in every notebook, a no-op outside Colab, and on (a simulated) Colab it
clones the kit from LORAKIT_REPO and installs it without the CPU weight packs and without touching torch."""
import subprocess
import sys
import types

import nbformat
import pytest

from lorakit_nb.colab import COLAB_CELL
from lorakit_nb.runner import find_notebooks


@pytest.mark.parametrize("notebook", find_notebooks(None), ids=lambda p: p.name)
def test_every_notebook_starts_with_the_colab_cell(notebook):
    nb = nbformat.read(notebook, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code.source == COLAB_CELL.rstrip("\n")


def _run_cell(monkeypatch, tmp_path, colab: bool, repo: str | None):
    """Execute COLAB_CELL with subprocess.check_call recorded (a `git clone` creates the folder it names)."""
    kit = tmp_path / "lorakit-nb"
    calls = []

    def check_call(cmd, **kw):
        calls.append(list(cmd))
        if cmd[0] == "git":
            (kit / "notebooks").mkdir(parents=True)

    monkeypatch.setattr(subprocess, "check_call", check_call)
    if colab:
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
    calls, _ = _run_cell(monkeypatch, tmp_path, colab=False, repo=None)
    assert calls == []


def test_on_colab_it_clones_and_installs_without_weight_packs_or_torch(monkeypatch, tmp_path):
    calls, kit = _run_cell(monkeypatch, tmp_path, colab=True, repo="https://example.org/lorakit-nb.git")
    assert calls[0] == ["git", "clone", "--depth", "1", "https://example.org/lorakit-nb.git", str(kit)]
    pip = calls[1]
    assert pip[:4] == [sys.executable, "-m", "pip", "install"] and pip[-1] == f"{kit}[serve]"
    assert not any("offline-models" in a or a.startswith("torch") for a in pip)
    assert len(calls) == 2


def test_on_colab_without_a_repo_address_it_says_how_to_set_it(monkeypatch, tmp_path):
    with pytest.raises(RuntimeError, match="LORAKIT_REPO"):
        _run_cell(monkeypatch, tmp_path, colab=True, repo=None)
