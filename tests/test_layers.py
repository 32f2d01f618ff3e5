"""The architecture's direction: lower layers never import higher ones, and no import cycles.

Checked on the source text (every ``import foldcnn...`` statement, also those inside functions),
so a lazy import that reaches up is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "foldcnn"

# What each lower layer must never import (docs/design.md and the project's layering: fold, models, checkpoints know nothing
# of training, inference, serving or the CLI; inference does not import training).
FORBIDDEN = {
    "foldcnn.errors": ("foldcnn.",),
    "foldcnn.tensors": ("foldcnn.",),
    "foldcnn.fold": ("foldcnn.models", "foldcnn.checkpoints", "foldcnn.data", "foldcnn.train", "foldcnn.infer",
                     "foldcnn.backends", "foldcnn.serve", "foldcnn.cli", "foldcnn.scaleout", "foldcnn.bench",
                     "foldcnn.workflows"),
    "foldcnn.models": ("foldcnn.train", "foldcnn.infer", "foldcnn.serve", "foldcnn.cli", "foldcnn.scaleout",
                       "foldcnn.bench", "foldcnn.backends", "foldcnn.workflows"),
    "foldcnn.checkpoints": ("foldcnn.train", "foldcnn.infer", "foldcnn.serve", "foldcnn.cli", "foldcnn.scaleout",
                            "foldcnn.bench", "foldcnn.backends", "foldcnn.workflows"),
    "foldcnn.backends": ("foldcnn.train", "foldcnn.infer", "foldcnn.serve", "foldcnn.cli", "foldcnn.scaleout",
                         "foldcnn.bench", "foldcnn.workflows"),
    "foldcnn.infer": ("foldcnn.train", "foldcnn.serve", "foldcnn.cli", "foldcnn.scaleout", "foldcnn.bench",
                      "foldcnn.workflows"),
    "foldcnn.train": ("foldcnn.workflows", "foldcnn.cli", "foldcnn.serve", "foldcnn.scaleout"),
    "foldcnn.serve": ("foldcnn.train", "foldcnn.cli", "foldcnn.workflows"),
    "foldcnn.scaleout": ("foldcnn.train", "foldcnn.cli", "foldcnn.serve", "foldcnn.workflows"),
    "foldcnn.bench": ("foldcnn.train", "foldcnn.cli", "foldcnn.workflows"),
    "foldcnn.scrape": ("foldcnn.train", "foldcnn.cli", "foldcnn.serve", "foldcnn.bench", "foldcnn.workflows"),
}
# The shared tables and timers sit under every layer that names a precision or times a call.
for _low in ("foldcnn.precision", "foldcnn.timing"):
    FORBIDDEN[_low] = ("foldcnn.fold", "foldcnn.analysis", *FORBIDDEN["foldcnn.fold"])
ALLOWED_EXCEPTIONS = {"foldcnn.train.checkpoint"}  # the alias module that re-exports foldcnn.checkpoints


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every foldcnn module this file imports (absolute names), wherever the statement stands."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("foldcnn"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("foldcnn") and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def _graph() -> dict[str, set[str]]:
    mods = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {m: {i for i in _imports(p) if i in mods and i != m} for m, p in mods.items()}


def test_lower_layers_do_not_import_higher_ones():
    bad = []
    for mod, deps in _graph().items():
        if mod in ALLOWED_EXCEPTIONS:
            continue
        for layer, forbidden in FORBIDDEN.items():
            if mod == layer or mod.startswith(layer + "."):
                bad += [f"{mod} imports {d}" for d in deps
                        if d.startswith(forbidden) and not (d == layer or d.startswith(layer + "."))]
    assert not bad, "\n".join(sorted(bad))


def _cycles(edges: dict[str, set[str]]) -> list[str]:
    """Every import loop of a graph (depth-first), as 'a -> b -> a'."""
    cycles, state = [], {}

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for d in sorted(edges.get(m, ())):
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    return cycles


def test_no_import_cycles_between_modules():
    graph = _graph()
    # A package's __init__ re-exports its submodules; an edge into the package itself is not a cycle.
    edges = {m: {d for d in deps if not (m.startswith(d + "."))} for m, deps in graph.items()}
    cycles = _cycles(edges)
    assert not cycles, "\n".join(cycles)


def test_importing_inference_does_not_import_training():
    code = ("import json, sys, foldcnn.infer, foldcnn.checkpoints, foldcnn.backends; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('foldcnn.train', 'foldcnn.cli')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def _room(module: str) -> str:
    """foldcnn.models.game -> foldcnn.models: the package (or top-level module) a module lives in."""
    return ".".join(module.split(".")[:2])


def test_no_import_cycles_between_rooms():
    """Packages import each other one way: a loop through two packages (models -> transform ->
    models, say) is caught here even when no single module imports itself back."""
    rooms: dict[str, set[str]] = {}
    for mod, deps in _graph().items():
        rooms.setdefault(_room(mod), set()).update(_room(d) for d in deps if _room(d) != _room(mod))
    rooms = {r: {d for d in deps if d != "foldcnn"} for r, deps in rooms.items() if r != "foldcnn"}
    cycles = _cycles(rooms)
    assert not cycles, "\n".join(cycles)


def _resolves(dotted: str) -> bool:
    """'foldcnn.infer.PredictOptions' -> True when importing the longest module prefix and getting the
    rest as attributes works."""
    import importlib

    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                obj = getattr(obj, name)
        except AttributeError:
            return False
        return True
    return False


def test_every_api_name_the_readme_gives_exists():
    """The README names public API by dotted path (foldcnn.infer.PredictOptions, ...): each resolves."""
    import re

    readme = "".join((SRC.parents[1] / name).read_text() for name in ("README.md", "docs/guide.md", "docs/export.md"))
    names = sorted({m.rstrip(".") for m in re.findall(r"\bfoldcnn(?:\.[A-Za-z_][A-Za-z0-9_]*)+", readme)})
    missing = [n for n in names if not _resolves(n)]
    assert not missing, f"named in README.md but not importable: {missing}"
