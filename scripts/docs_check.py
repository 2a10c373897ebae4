"""Run the commands the docs show, and compare what they print with what the page says.

A checked block is a fenced block whose first line starts with ``$ ``: each ``$`` line (with
``\\`` continuations) is a shell command, run in order in one scratch folder; the other lines are
the output the page shows. Each shown line must appear, in order, among the lines the commands
printed. ``...`` alone skips any lines; ``...`` inside a line stands for any text; a number
matches a printed number within 5% (another CPU's rounding moves the last digits of a
200-epoch run; a changed default moves them further). Used by
``tests/test_docs_commands.py`` (CI) and by hand::

    python scripts/docs_check.py README.md docs/getting-started.md
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```")


@dataclass(frozen=True)
class Block:
    """A checked block: where it is, its commands and the output lines it shows."""
    source: str
    line: int
    commands: tuple[str, ...]
    shown: tuple[str, ...]


def blocks(path: Path) -> list[Block]:
    """The checked blocks of a Markdown file."""
    lines, found, i = Path(path).read_text().splitlines(), [], 0
    while i < len(lines):
        if FENCE.match(lines[i]) and i + 1 < len(lines) and lines[i + 1].startswith("$ "):
            start, body = i + 1, []
            i += 1
            while not FENCE.match(lines[i]):
                body.append(lines[i])
                i += 1
            found.append(_parse(str(path), start + 1, body))
        i += 1
    return found


def _parse(source: str, line: int, body: list[str]) -> Block:
    commands, shown, continued = [], [], False
    for text in body:
        if continued:
            commands[-1] += " " + text.strip().removesuffix("\\").strip()
        elif text.startswith("$ "):
            commands.append(text[2:].removesuffix("\\").strip())
        else:
            shown.append(text.rstrip())
        continued = text.endswith("\\")
    return Block(source, line, tuple(commands), tuple(shown))


NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
RTOL = 0.05


def _pattern(shown: str) -> tuple[re.Pattern, list[float]]:
    """A regex for a shown line (numbers as groups) and the numbers it shows."""
    parts, numbers = [], []
    for piece in shown.split("..."):
        at, text = 0, []
        for m in NUMBER.finditer(piece):
            text += [re.escape(piece[at:m.start()]), f"({NUMBER.pattern})"]
            numbers.append(float(m.group()))
            at = m.end()
        parts.append("".join(text) + re.escape(piece[at:]))
    return re.compile("^" + ".*".join(parts) + "$"), numbers


def _matches(shown: tuple[re.Pattern, list[float]], printed: str) -> bool:
    pattern, numbers = shown
    m = pattern.match(printed)
    return m is not None and all(abs(float(got) - want) <= RTOL * abs(want)
                                 for got, want in zip(m.groups(), numbers))


def mismatch(shown: tuple[str, ...], printed: list[str]) -> str | None:
    """None when every shown line appears in order among ``printed`` (``...`` as described
    above); else the first shown line that does not, with the printed lines near it."""
    at = 0
    for want in shown:
        if want.strip() == "...":
            continue
        pattern = _pattern(want)
        while at < len(printed) and not _matches(pattern, printed[at].rstrip()):
            at += 1
        if at == len(printed):
            return f"shown but not printed (in this order): {want!r}"
        at += 1
    return None


def run(block: Block, workdir: Path, timeout: int = 600) -> list[str]:
    """Run the block's commands in ``workdir`` (the repository's scripts/ linked in), in one
    shell, stopping at the first that fails; the lines they printed, stdout and stderr."""
    if not (workdir / "scripts").exists():
        (workdir / "scripts").symlink_to(ROOT / "scripts")
    script = "set -e\n" + "\n".join(block.commands)
    # under pytest-xdist OMP_NUM_THREADS=1 stays: more threads than cores would slow every test
    # several-fold; a long run's last digits may move with the thread count (hence the 5%)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.run(["bash", "-c", script], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if proc.returncode:
        raise RuntimeError(f"{block.source}:{block.line}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return (proc.stdout + proc.stderr).splitlines()


def check(block: Block, workdir: Path) -> str | None:
    """None when the block's commands print what it shows; else what differs."""
    why = mismatch(block.shown, run(block, workdir))
    return None if why is None else f"{block.source}:{block.line}: {why}"


def main(paths: list[str]) -> int:
    failures = 0
    for path in paths:
        for block in blocks(Path(path)):
            with tempfile.TemporaryDirectory() as tmp:
                why = check(block, Path(tmp))
            print(f"{'ok' if why is None else 'FAILED'}  {block.source}:{block.line}  "
                  f"{block.commands[0][:60]}" + ("" if why is None else f"\n    {why}"))
            failures += why is not None
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["README.md", "docs/getting-started.md"]))
