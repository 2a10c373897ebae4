"""The data sets' options, read from the data-set functions' source (their keyword defaults,
annotations and docstrings) without importing them, so that the config schemas, ``deqexp
train --help``, ``--cfg job`` and ``deqexp status`` load without torch. The functions stay the
one source of the options; a test checks that this reading equals ``inspect``'s on the
imported functions."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Option:
    """One keyword option of a data-set function."""

    name: str
    annotation: str  # as written, e.g. "int", "str | None"
    default: object


@lru_cache(maxsize=None)
def _module(name: str) -> ast.Module:
    return ast.parse((HERE / f"{name}.py").read_text())


@lru_cache(maxsize=None)
def registry() -> dict[str, tuple[str, str]]:
    """``DATASETS`` of :mod:`deqexp.data.datasets`: data set name -> (module, function)."""
    tree = _module("datasets")
    home = {alias.asname or alias.name: node.module for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.level == 1 for alias in node.names}
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DATASETS":
            pairs = zip(node.value.keys, node.value.values)
            return {k.value: (home.get(v.id, "datasets"), v.id) for k, v in pairs}
    raise RuntimeError("deqexp/data/datasets.py defines no DATASETS")


def _function(name: str) -> ast.FunctionDef:
    module, fn = registry()[name]
    return next(n for n in _module(module).body if isinstance(n, ast.FunctionDef) and n.name == fn)


def _value(node: ast.expr, names: dict | None = None):
    """A default as written: literals, arithmetic on them (``1 / 7``) and the module's constants."""
    return eval(compile(ast.Expression(node), "<default>", "eval"),  # noqa: S307
                {"__builtins__": {}, **(names or {})})


@lru_cache(maxsize=None)
def _constants(module: str) -> dict:
    """The module's top-level ``NAME = literal`` assignments (e.g. a default tuple of names)."""
    out: dict = {}
    for node in _module(module).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = _value(node.value, out)
            except Exception:  # not a constant (a call, a class): not a default's value
                continue
    return out


def options(name: str) -> list[Option]:
    """Data set ``name``'s keyword options with defaults, in the function's order."""
    args, names = _function(name).args, _constants(registry()[name][0])
    plain = args.posonlyargs + args.args
    pairs = list(zip(plain[len(plain) - len(args.defaults):], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    return [Option(a.arg, ast.unparse(a.annotation) if a.annotation else "", _value(d, names))
            for a, d in pairs]


def description(name: str) -> str:
    """Data set ``name``'s docstring."""
    return ast.get_docstring(_function(name)) or ""
