"""How deqexp's one-line messages are cut and printed: at a word boundary (the full text goes to
the run's FAILED file), and to a stdout that may be a closed pipe (``deqexp train | head``)."""
from __future__ import annotations

import io


def shorten(text: str, limit: int = 300) -> str:
    """``text`` on one line, cut at the last word boundary before ``limit`` with "..." added."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 3].rsplit(" ", 1)[0]
    return cut + " ..."


def tagged(label: str, text: str) -> str:
    """``text`` prefixed with a job's name, as its progress lines are (a sweep's jobs' lines
    can then be told apart)."""
    return f"[{label}] {text}" if label else text


def shown(override: str) -> str:
    """An override as the command line writes it: Hydra's sweeper renders booleans as Python
    does (``logger.progress=False``); deqexp shows them one way, ``false``."""
    key, eq, value = str(override).partition("=")
    return f"{key}={value.lower()}" if eq and value in ("True", "False") else str(override)


class ClosedPipeSafe(io.TextIOBase):
    """A stdout that stops printing, and lets the program go on, when its reader has gone (a
    ``| head``): a closed pipe ends the output, not the run."""

    def __init__(self, stream):
        self.stream, self.closed_pipe = stream, False

    def write(self, text: str) -> int:
        if not self.closed_pipe:
            try:
                self.stream.write(text)
            except BrokenPipeError:
                self.closed_pipe = True
        return len(text)

    def flush(self) -> None:
        if not self.closed_pipe:
            try:
                self.stream.flush()
            except BrokenPipeError:
                self.closed_pipe = True

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self):
        return self.stream.encoding
