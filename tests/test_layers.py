"""The package's import rules, read from the source with ``ast`` (see CONTRIBUTING.md, "Layers").

Imports only go down the layer list; nothing inside ``condense/`` imports the top-level package; ``eval`` never
imports ``methods``; ``methods/base.py`` imports nothing else from ``methods``; no file imports another file's
private (``_name``) objects or another package's private modules; the module graph has no circle. Function-level
imports count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "condense"

#: top-level module or subpackage of condense -> layer; a module imports only from its own layer or lower ones, and
#: within its own layer only from its own subpackage (data, models and augment are independent of each other).
LAYERS = {
    **dict.fromkeys(["_version", "errors", "registry", "config", "io", "seeding", "optim", "distributed"], 0),
    **dict.fromkeys(["data", "models", "augment"], 1),
    "labels": 1.5,  # the soft-label store and its views: an artifact format below SyntheticSet, which can carry one
    "synthetic": 2,
    "graph_summary": 2.5,  # graph summaries are SyntheticSets with their own tensors
    "published": 2.5,  # reads the authors' files (DC, MTT, DATM, SRe2L ...) into SyntheticSets
    "teachers": 2.7,  # a teacher is an artifact with its training; evaluation and recover read teachers
    **dict.fromkeys(["expert_trajectories", "eval", "recover"], 3),
    "methods": 4,
    "demo": 5,
    "bench": 5.5,  # condense bench / report: grids of cells over demo, methods and eval
    "cli": 6,
    "__main__": 7,
}
#: foundations may use each other (config uses errors and registry, io uses errors, models use seeding ...)
SHARED_LAYERS = {0}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    name = ".".join(parts)
    return name.removesuffix(".__init__")


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _imports(name: str) -> list[tuple[str, str | None, int]]:
    """(imported module, imported object or None, line) for every import in module ``name``, relative ones resolved."""
    tree = ast.parse(MODULES[name].read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if _is_package(name) else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for a in node.names:
                sub = f"{mod}.{a.name}"
                # 'from condense import seeding' still runs the package face first: flagged like 'import condense'
                is_module = sub in MODULES and mod != "condense"
                out.append((sub, None, node.lineno) if is_module else (mod, a.name, node.lineno))
    return [(m, obj, line) for m, obj, line in out if m == "condense" or m.startswith("condense.")]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT.parent)) if path.is_relative_to(ROOT.parent) else str(path)


def _top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations() -> list[str]:
    bad = []
    for me in MODULES:
        if me == "condense":
            continue  # the package face: lazy re-exports only (its own rule is tested below)
        mine = _top(me)
        for mod, obj, line in _imports(me):
            where = f"{_rel(MODULES[me])}:{line}"
            if mod == "condense":
                what = "import condense" if obj is None else f"from condense import {obj}"
                bad.append(f"{where} imports the top-level package ('{what}')")
                continue
            theirs = _top(mod)
            lm, lt = LAYERS.get(mine), LAYERS.get(theirs)
            if lm is None or lt is None:
                bad.append(f"{where}: '{mine}' or '{theirs}' has no layer in tests/test_layers.py LAYERS")
                continue
            if lt > lm or (lt == lm and theirs != mine and lm not in SHARED_LAYERS):
                bad.append(f"{where}: {me} (layer {lm}) imports {mod} (layer {lt}): imports only go down")
            if me == "condense.methods.base" and mod.startswith("condense.methods"):
                bad.append(f"{where}: methods/base.py imports {mod}; base imports nothing else from methods")
            if obj is not None and obj.startswith("_") and not obj.startswith("__") and mod != me:
                bad.append(f"{where}: imports the private name {mod}.{obj}")
            leaf = mod.rsplit(".", 1)
            if len(leaf) == 2 and leaf[1].startswith("_") and not leaf[1].startswith("__"):
                if not me.startswith(leaf[0] + ".") and me != leaf[0]:
                    bad.append(f"{where}: imports {mod}, a private module of another package")
    return bad


def test_layers_and_private_names():
    bad = _violations()
    assert not bad, "import rule violations:\n" + "\n".join(bad)


def test_no_import_circle():
    graph = {me: {m for m, _, _ in _imports(me) if m in MODULES and m != me} for me in MODULES if me != "condense"}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m) :] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_package_face_is_lazy():
    """``condense/__init__.py`` imports only the version and the error base at import time; the rest loads lazily."""
    tree = ast.parse(MODULES["condense"].read_text())
    eager = [
        n
        for n in tree.body
        if isinstance(n, (ast.Import, ast.ImportFrom)) and getattr(n, "module", None) not in (None, "__future__")
    ]
    names = sorted(n.module for n in eager if isinstance(n, ast.ImportFrom))
    assert names == ["condense._version", "condense.errors", "typing"], names


def test_rules_catch_a_bad_import(tmp_path, monkeypatch):
    """The checker itself fails on each kind of violation (so a green run means something)."""
    probes = {
        "eval/zz_probe.py": "from condense.methods.base import Method\n",
        "methods/base.py": "from condense.methods.mtt import MTT\n",
        "data/zz_probe.py": "from condense import synthetic\n",
        "io.py": "from condense.models.registry import _check_image_size\n",
    }
    for rel, text in probes.items():
        name = "condense." + rel.removesuffix(".py").replace("/", ".")
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        with monkeypatch.context() as mp:
            mp.setitem(MODULES, name, p)
            bad = [b for b in _violations() if str(p) in b]
        assert bad, f"the probe {rel} ({text.strip()}) was not flagged"


@pytest.mark.parametrize(
    "argv", [["--help"], ["run", "--help"], ["distill", "--help"], ["teachers", "train", "--help"]]
)
def test_help_does_not_import_torch(argv):
    code = (
        "import sys\nfrom condense.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'timm', 'kornia', 'sklearn') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in res.stdout or res.stdout.rstrip().endswith("HEAVY="), res.stdout[-500:]


def test_package_face_exports_resolve():
    import condense

    assert set(condense._EXPORTS) | {"__version__", "CondenseError"} == set(condense.__all__)
    for name in condense.__all__:
        assert getattr(condense, name) is not None
