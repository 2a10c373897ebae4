"""Every config key with its type, default and meaning, read from the schemas themselves.

A schema field's meaning is the comment written beside it (continued on the comment lines
under it) or, failing that, the comment block right above it: the text is written once, in the
schema, and ``deqexp explain KEY``, ``deqexp train --help KEY`` and the docs' configuration
reference (``scripts/write_docs.py``) all print it from there. A data set's keys are its
function's keyword arguments; their meaning is the function's docstring.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import typing
from dataclasses import dataclass


@dataclass
class Key:
    """One config key."""

    path: str        # dotted, e.g. solver.forward.tol
    type: str
    default: object
    help: str


def field_comments(cls) -> dict[str, str]:
    """``{field: comment}`` for a dataclass, from its source (beside, under, or above a field)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):  # made at run time (the data set schemas)
            continue
        out.update(_comments_in(source))
    return out


FIELD = re.compile(r"^    (\w+)\s*:\s*[^=#]+?(\s*=[^#]*)?(#.*)?$")  # a field in a class body


def _comments_in(source: str) -> dict[str, str]:
    lines = source.splitlines()
    comment_only = lambda i: lines[i].strip().startswith("#")  # noqa: E731
    out = {}
    for i, line in enumerate(lines):
        m = FIELD.match(line)
        if not m:
            continue
        text = []
        if m.group(3):  # beside it, continued on the comment-only lines under it
            col = line.index("#")
            text.append(m.group(3).lstrip("# "))
            j = i + 1
            while j < len(lines) and comment_only(j) and lines[j].index("#") >= col - 2:
                text.append(lines[j].strip().lstrip("# "))
                j += 1
        else:  # the comment block right above it
            j = i - 1
            while j >= 0 and comment_only(j) and lines[j].startswith("    #"):
                text.insert(0, lines[j].strip().lstrip("# "))
                j -= 1
        if text:
            out[m.group(1)] = " ".join(t.rstrip() for t in text)
    return out


def _type_name(hint) -> str:
    text = str(hint) if getattr(hint, "__origin__", None) else getattr(hint, "__name__", str(hint))
    return text.replace("typing.", "").replace("NoneType", "None")


def keys_of(cls, prefix: str) -> list[Key]:
    """The keys of a schema dataclass, recursing into its dataclass-typed fields."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        hint = hints.get(f.name, f.type)
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            out += keys_of(hint, path + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append(Key(path, _type_name(hint), default, comments.get(f.name, "")))
    return out


def dataset_keys() -> list[Key]:
    """Each data set's keys (``dataset.KEY``, for ``dataset=NAME``), meanings from its docstring."""
    from ..data import signatures
    from .schemas import dataset_schema

    out = []
    for name in signatures.registry():
        doc = " ".join(signatures.description(name).split())
        for f in dataclasses.fields(dataset_schema(name)):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            what = {"name": f"the data set: {doc}", "val_fraction":
                    "share of the training split held out for validation (0: none), by seed"}.get(
                f.name, f"an option of dataset={name} (see its description: dataset.name)")
            out.append(Key(f"dataset[{name}].{f.name}", _type_name(f.type), default, what))
    return out


def all_keys() -> list[Key]:
    """Every key of the run configuration."""
    from .schemas import Config

    return [k for k in keys_of(Config, "") if k.path != "dataset"] + dataset_keys()


def explain(prefix: str = "") -> str:
    """The keys under ``prefix`` (all with ""), one block each; raises KeyError naming near
    matches when there is none."""
    keys = [k for k in all_keys() if not prefix or k.path == prefix or k.path.startswith(prefix + ".")
            or k.path.startswith(prefix + "[")]
    if not keys:
        near = difflib.get_close_matches(prefix, [k.path for k in all_keys()], n=3)
        raise KeyError(f"no config key {prefix!r}" + (f"; did you mean {', '.join(near)}?" if near else ""))
    return "\n".join(f"{k.path}  ({k.type}, default {k.default!r})\n    {k.help}" for k in keys)


def main(argv: list[str] | None = None) -> int:
    """``deqexp explain [KEY]``."""
    import sys

    argv = list(argv or [])
    if argv and argv[0] in ("-h", "--help"):
        print("usage: deqexp explain [KEY]\n\nEach config key under KEY (all without one) with its type, "
              "default and meaning, from the schemas. E.g. deqexp explain solver.forward")
        return 0
    try:
        print(explain(argv[0] if argv else ""))
    except KeyError as err:
        print(f"deqexp explain: error: {err.args[0]}", file=sys.stderr)
        return 2
    return 0
