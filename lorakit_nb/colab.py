"""The first code cell of every notebook: on Google Colab, fetch and install the kit; anywhere else, nothing.

Scope: the cell's text (``COLAB_CELL``, the same in every notebook; tests/test_colab.py checks it and runs it
under a simulated Colab) and ``install``, the install path the cell runs once the kit is cloned.
Does not: touch anything outside Colab, install the CPU weight packs (``offline-models``: the GPU profile
loads hub models) or the headless-runner extra (papermill, a newer ipykernel), or reinstall torch.

Why a constraints file: Colab's runtime pins ipykernel, ipywidgets, jupyter_client and notebook (through
google-colab's own ``==`` requirements); a newer ipykernel needs a newer jupyter_client, which breaks Colab's
notebook 6 server, and ipywidgets 8 does not render there. ``install`` reads the versions installed *now*
(the runtime's own ``pip freeze`` of those packages, plus torch and numpy, which the runtime has already
imported), writes them as ``name==version`` constraints, and runs ``pip install -c constraints -e kit[serve]``:
pip either installs the kit around them or stops with ResolutionImpossible — it can never replace them. After
the install it checks them again and raises if any changed. A restart is needed only when pip upgraded a
package the kernel has already imported; then it prints one line naming them.

The cell cannot import the kit by name (it is not installed yet when the cell runs): it loads this file by
path, so this module uses the standard library only.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
import tempfile

KIT_DIR = "/content/lorakit-nb"
# google-colab pins these; the kit must run with whatever versions the runtime has.
COLAB_KERNEL_PINS = ("ipykernel", "ipywidgets", "jupyter_client", "notebook")
# Imported by the runtime before any cell runs (Colab preloads them): replacing them means a restart.
RUNTIME_IMPORTED = ("numpy", "torch")

COLAB_CELL = '''# Colab only: fetch the kit and install it without replacing what Colab pins. Anywhere else: nothing.
import sys

if "google.colab" in sys.modules:
    import importlib.util
    import os
    import subprocess
    _kit = "/content/lorakit-nb"
    if not os.path.isdir(_kit):
        if not os.environ.get("LORAKIT_REPO"):
            raise RuntimeError("Set the kit's git address first, in a cell above: %env LORAKIT_REPO=<the URL "
                               "you opened this notebook from>, then run this cell again")
        subprocess.check_call(["git", "clone", "--depth", "1", os.environ["LORAKIT_REPO"], _kit])
    _spec = importlib.util.spec_from_file_location("lorakit_colab", _kit + "/lorakit_nb/colab.py")
    _colab = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_colab)
    _colab.install(_kit)  # pip with the runtime's pinned versions as constraints; says if a restart is needed
'''


def _canon(name: str) -> str:
    """PEP 503 name. Example: "Jupyter_Client" -> "jupyter-client"."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def colab_pinned_names() -> set[str]:
    """The packages whose installed version the kit must keep: google-colab's ``==`` requirements (where
    google-colab is installed), the kernel/widget packages it is known to pin, numpy and torch.

    Example (google-colab requiring "ipykernel==6.17.1", "pandas==2.2.2"):
    -> {"ipykernel", "pandas", "ipywidgets", "jupyter-client", "notebook", "numpy", "torch"}
    """
    names = {_canon(n) for n in COLAB_KERNEL_PINS + RUNTIME_IMPORTED}
    try:
        requires = md.requires("google-colab") or []
    except md.PackageNotFoundError:
        requires = []
    for req in requires:
        m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==", req)
        if m and "extra ==" not in req:
            names.add(_canon(m.group(1)))
    return names


def pinned_versions(names=None) -> dict[str, str]:
    """{name: installed version} for the pinned names that are installed (the runtime's own freeze)."""
    names = colab_pinned_names() if names is None else names
    return {n: v for n in sorted(names) if (v := _installed(n)) is not None}


def constraints_text(pins: dict[str, str]) -> str:
    """pip constraints, one ``name==version`` a line. Example: {"numpy": "2.1.3"} -> "numpy==2.1.3\\n"."""
    return "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()))


def _all_versions() -> dict[str, str]:
    return {_canon(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}


def imported_and_changed(before: dict[str, str], after: dict[str, str], modules=None) -> list[str]:
    """Distributions whose version changed and one of whose top-level modules is already imported.

    Example: numpy 2.1.3 -> 2.3.0 with "numpy" in sys.modules -> ["numpy"]
    """
    modules = sys.modules if modules is None else modules
    dist_modules: dict[str, set[str]] = {}
    for module, dists in md.packages_distributions().items():
        for dist in dists:
            dist_modules.setdefault(_canon(dist), set()).add(module)
    changed = [n for n, v in after.items() if n in before and before[n] != v]
    return sorted(n for n in changed if any(m in modules for m in dist_modules.get(n, {n.replace("-", "_")})))


def install(kit: str = KIT_DIR, extras: str = "serve", quiet: bool = True) -> dict:
    """Install the kit at `kit` into this Python without replacing any pinned package; then work from
    its notebooks/ folder. Returns {"pins", "restart"}; raises RuntimeError naming what pip would change.
    """
    pins = pinned_versions()
    before = _all_versions()
    with tempfile.NamedTemporaryFile("w", suffix="-colab-constraints.txt", delete=False) as f:
        f.write(constraints_text(pins))
    target = f"{kit}[{extras}]" if extras else kit
    cmd = [sys.executable, "-m", "pip", "install", *(["-q"] if quiet else []), "-c", f.name, "-e", target]
    try:
        subprocess.check_call(cmd)
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"pip could not install the kit without replacing a package this runtime pins "
                           f"({', '.join(f'{n}=={v}' for n, v in pins.items())}; constraints in {f.name}); "
                           "pip's message above names the conflict. Nothing pinned was changed.") from err
    after = _all_versions()
    moved = {n: (v, after.get(n)) for n, v in pins.items() if after.get(n) != v}
    if moved:
        raise RuntimeError(f"pip changed pinned packages despite the constraints: {moved}. "
                           "Runtime > Disconnect and delete runtime restores them.")
    if kit not in sys.path:
        sys.path.insert(0, kit)  # importable now, without waiting for the editable install's .pth
    os.chdir(os.path.join(kit, "notebooks"))  # relative paths (../data) as in a local checkout
    restart = imported_and_changed(before, after)
    if restart:
        print(f"Restart needed: pip upgraded {restart}, which this runtime had already imported. "
              "Runtime > Restart session, then run all again (nothing Colab pins was changed).")
    else:
        print(f"lorakit-nb installed; kept {len(pins)} pinned packages as they were "
              f"({', '.join(f'{n} {v}' for n, v in pins.items())}). No restart needed.")
    return {"pins": pins, "restart": restart}
