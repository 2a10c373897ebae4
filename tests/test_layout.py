"""The package layout shows the architecture: subpackages in layers, every import pointing to
the same or a lower layer, no cycles between modules, and the flat layout's paths still import."""
import ast
import importlib
from pathlib import Path

import pytest

import deqexp

ROOT = Path(deqexp.__file__).parent
# a subpackage may import from its own layer's package and from any lower layer
LAYER = {"theory": 0, "data": 0, "deq": 1, "run": 2, "sweep": 3, "paper": 4, "cli": 5}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(text: str, name: str, is_package: bool = False) -> set[str]:
    """Every deqexp module that module ``name`` (source ``text``) imports, at module level or
    inside functions."""
    package = name if is_package else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("deqexp"):
                continue
            for alias in node.names:  # `from . import x` imports the module x
                sub = f"{target}.{alias.name}"
                path = ROOT.parent / sub.replace(".", "/")
                out.add(sub if path.with_suffix(".py").exists() or (path / "__init__.py").exists()
                        else target)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("deqexp")}
    return out - {name}


GRAPH = {_module_name(p): _imports(p.read_text(), _module_name(p))
         for p in ROOT.rglob("*.py") if p.name != "__init__.py"}


def _layer(module: str) -> int:
    return LAYER[module.split(".")[1]]


def _upward(graph) -> list:
    """Imports of a higher layer, or of another package of the same layer."""
    return [(m, t) for m, targets in graph.items() for t in targets
            if t != "deqexp" and (_layer(t) > _layer(m) or
                                  (_layer(t) == _layer(m) and t.split(".")[1] != m.split(".")[1]))]


def test_every_module_lives_in_a_layer_and_imports_only_downwards():
    assert {m.split(".")[1] for m in GRAPH} == set(LAYER)
    assert not _upward(GRAPH), _upward(GRAPH)


def test_the_import_graph_has_no_cycle():
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if state.get(t) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t in GRAPH and t not in state:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)


@pytest.mark.parametrize("line", ["from ..deq import operators", "    from ..run.runner import fingerprint",
                                  "import deqexp.paper.claims", "from deqexp.data.datasets import smooth"])
def test_the_checker_flags_a_planted_upward_import(line):
    # an upward (or sideways) import written into a theory module, at module level or in a
    # function, must be found and refused
    text = (ROOT / "theory" / "kernels.py").read_text()
    body = f"def f():\n{line}\n" if line.startswith(" ") else line + "\n"
    planted = {**GRAPH, "deqexp.theory.kernels": _imports(text + body, "deqexp.theory.kernels")}
    assert [m for m, _ in _upward(planted)] == ["deqexp.theory.kernels"]


def test_the_checker_resolves_relative_imports():
    assert GRAPH["deqexp.run.runner"] >= {"deqexp.run.build", "deqexp.data.datasets", "deqexp.run.tasks"}
    assert GRAPH["deqexp.paper.report"] >= {"deqexp.paper.claims", "deqexp.paper.figures",
                                           "deqexp.paper.presets"}
    assert GRAPH["deqexp.paper.presets"] >= {"deqexp.run.config", "deqexp.run.identity",
                                            "deqexp.sweep.status"}


def test_the_flat_paths_are_gone():
    # removed in 0.2.0 (CHANGELOG.md): one path per module
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("deqexp.kglm")


def test_public_names_are_reachable_where_users_reach_them():
    from deqexp.deq.models import ConvDEQ, DenseDEQ
    from deqexp.run.runs import load_run
    from deqexp.theory import kglm

    assert (deqexp.load_run, deqexp.DenseDEQ, deqexp.ConvDEQ) == (load_run, DenseDEQ, ConvDEQ)
    assert kglm.fit_kglm is deqexp.fit_kglm
    assert kglm.__spec__.name == "deqexp.theory.kglm"


def test_no_module_is_over_300_lines():
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"split these at their seams: {long}"
