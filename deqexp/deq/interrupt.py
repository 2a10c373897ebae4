"""A stop asked for from outside a solve, read by every solver loop (torch-free, so that the
light commands that handle signals do not load torch)."""
from __future__ import annotations


class Interrupted(Exception):
    """A stop was asked for (:attr:`Interrupt.asked`) in the middle of a solve or an epoch."""


class Interrupt:
    """Set from outside the solve (deqexp.run.signals sets ``asked`` in its signal handler):
    every solver loop reads it once an iteration, a Python attribute and no host sync, and
    raises :class:`Interrupted`, so that a stop signal acts within one iteration even in a
    solve that would run for hours."""

    asked = False

    @classmethod
    def check(cls) -> None:
        if cls.asked:
            raise Interrupted("a stop was asked for")
