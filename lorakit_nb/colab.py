"""The first code cell of every notebook: on Google Colab, fetch and install the kit; anywhere else, nothing.

Scope: the cell's text (``COLAB_CELL``), kept here so the five notebooks carry the same cell and
tests/test_colab.py can run it under a simulated Colab. The cell cannot import this module: on Colab the
kit is not installed yet when it runs, so it is plain Python with no kit imports.
What it does on Colab: clone the kit from ``LORAKIT_REPO`` (an environment variable, set with
``%env LORAKIT_REPO=<git URL>``: the address the notebook was opened from) into /content/lorakit-nb unless
it is there, ``pip install -e`` it with the ``serve`` extra only — no ``offline-models`` (the CPU profile's
weight packs; the GPU profile loads hub models) and no torch reinstall (the kit asks for torch>=2.4, which
Colab's CUDA build already satisfies) — then work from its notebooks/ folder. When pip replaced a package
the running kernel has already imported (numpy is the usual one), it says to restart the runtime once.
"""
from __future__ import annotations

COLAB_CELL = '''# Colab only: fetch and install the kit, keeping Colab's CUDA torch. Anywhere else this cell does nothing.
import sys

if "google.colab" in sys.modules:
    import importlib.metadata as _md
    import os
    import subprocess
    _kit = "/content/lorakit-nb"
    if not os.path.isdir(_kit):
        _repo = os.environ.get("LORAKIT_REPO", "")
        if not _repo:
            raise RuntimeError("Set the kit's git address first, in a cell above: %env LORAKIT_REPO=<the URL "
                               "you opened this notebook from>, then run this cell again")
        subprocess.check_call(["git", "clone", "--depth", "1", _repo, _kit])
    _before = {p: _md.version(p) for p in ("numpy", "torch")}
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "-e", _kit + "[serve]"])
    sys.path.insert(0, _kit)        # importable now, without waiting for the editable install's restart
    os.chdir(_kit + "/notebooks")   # relative paths (../data) as in a local checkout
    _changed = [p for p, v in _before.items() if _md.version(p) != v]
    if _changed:
        print(f"pip changed {_changed}, already loaded by this runtime: Runtime > Restart session, then run all again")
'''
