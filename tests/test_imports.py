"""The package's import graph: a stage imports only earlier stages and shared modules, and no module circle.

Stages follow the course: lora (01) < text (02) < speech (03) < export (04) < serve (05); `exercises/nbNN` belong
to stage NN. Shared modules at the top level and `models/` (plumbing) import no stage. `cli` and `runner` are
entry points and may import anything. Imports inside functions count too: a late import still couples two
rooms. Example: speech/score.py importing export.ct2 (stage 03 -> 04) fails here.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "lorakit_nb"
STAGES = {"lora": 1, "text": 2, "speech": 3, "export": 4, "serve": 5}
ENTRY_POINTS = {"lorakit_nb.cli", "lorakit_nb.runner"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every lorakit_nb module `path` imports (relative imports resolved; `from pkg import mod` -> pkg.mod)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lorakit_nb")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if base.startswith("lorakit_nb"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    modules = {module_name(p) for p in PKG.rglob("*.py")}
    return {m for m in found if m in modules and m != this}


def stage(module: str) -> int:
    parts = module.split(".")
    if module in ENTRY_POINTS:
        return 99
    if len(parts) > 2 and parts[1] == "exercises" and parts[2].startswith("nb"):
        return int(parts[2][2:4])
    return STAGES.get(parts[1], 0) if len(parts) > 1 else 0


GRAPH = {module_name(p): imports_of(p) for p in PKG.rglob("*.py")}


def test_the_graph_sees_known_edges():
    assert "lorakit_nb.lora.layer" in GRAPH["lorakit_nb.export.merge"] or any(
        m.startswith("lorakit_nb.speech") for m in GRAPH["lorakit_nb.export.merge"])
    assert stage("lorakit_nb.exercises.nb02") == 2 and stage("lorakit_nb.serve.app") == 5 and stage("lorakit_nb.io") == 0


def test_stages_only_import_earlier_stages():
    backwards = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if stage(t) > stage(m))
    assert not backwards, "a room imports a later room (move the code to the earlier room or up to shared):\n" + \
        "\n".join(backwards)


def test_no_import_circles():
    """Depth-first search for a back edge; the circle is reported as a path."""
    circles, state = [], {}

    def visit(m, path):
        state[m] = "open"
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == "open":
                circles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    # a package's __init__ importing its own modules is not a circle worth reporting
    circles = [c for c in circles if not all(p.startswith(c.split(" -> ")[0]) for p in c.split(" -> ")[1:2])]
    assert not circles, "import circles:\n" + "\n".join(circles)
