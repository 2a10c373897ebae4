"""Write docs/reference/configuration.md from the schemas (deqexp.run.keys): every key with its
type, default and meaning. A test keeps the file equal to what this writes."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deqexp.run.keys import all_keys  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "reference" / "configuration.md"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render() -> str:
    """The page: one table per top-level group."""
    lines = ["# Configuration reference", "",
             "Every key of `deqexp train`, generated from the schemas by `scripts/write_docs.py` "
             "(`deqexp explain KEY` prints the same). Set one as `KEY=VALUE`; choose a group's option "
             "as `GROUP=OPTION` (`ls conf/GROUP/`). A data set's keys are listed per data set: "
             "`dataset[smooth].n_train` is `dataset.n_train` with `dataset=smooth`.", ""]
    group = None
    for k in all_keys():
        top = k.path.split(".")[0].split("[")[0]
        if top != group:
            group = top
            lines += ["", f"## `{group}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        lines.append(f"| `{k.path}` | {_cell(k.type)} | `{_cell(repr(k.default))}` | {_cell(k.help)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(render())
    print(f"wrote {OUT}")
