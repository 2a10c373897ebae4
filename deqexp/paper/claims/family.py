"""The family of paired tests behind one report's verdicts, Holm-corrected together.

Every claim check that decides a verdict registers its test here (a name and its raw two-sided
p, from :func:`deqexp.sweep.stats.compare_paired`, the engine of ``deqexp compare``). The
report is built twice: the first pass collects the family, :meth:`Family.correct` adjusts the
p-values (Holm), and the second pass writes each verdict from its adjusted p. Outside a report
(a claim check called on its own) a test is a family of one: its adjusted p is its raw p.
Tables show raw p-values only, as description; no verdict rests on them.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd

from deqexp.sweep.stats import holm


@dataclass
class Family:
    """Registered tests (name -> raw p) and, once corrected, their Holm-adjusted p."""

    raw: dict[str, float] = field(default_factory=dict)
    pairs: dict[str, int] = field(default_factory=dict)
    lower: dict[str, str] = field(default_factory=dict)
    adjusted: dict[str, float] | None = None
    section: str = ""  # the report section whose checks are running: names are prefixed with it

    def register(self, what: str, p: float, n: int, lower: str) -> str:
        """Record one verdict-deciding test; return its name in the family."""
        name = f"{self.section}: {what}" if self.section else what
        self.raw[name], self.pairs[name], self.lower[name] = p, n, lower
        return name

    def adjusted_p(self, name: str, p: float) -> float:
        """The test's Holm-adjusted p once the family is corrected; its raw p before."""
        return p if self.adjusted is None else self.adjusted.get(name, p)

    def correct(self) -> None:
        names = list(self.raw)
        self.adjusted = dict(zip(names, holm([self.raw[n] for n in names]).tolist()))

    @property
    def size(self) -> int:
        """Tests in the family (those with a p-value: a test with no pairs is not one)."""
        return sum(not math.isnan(p) for p in self.raw.values())

    def table(self) -> pd.DataFrame:
        return pd.DataFrame({"test": list(self.raw), "n_pairs": [self.pairs[n] for n in self.raw],
                             "lower": [self.lower[n] for n in self.raw],
                             "p_wilcoxon": list(self.raw.values()),
                             "p_holm": [self.adjusted_p(n, p) for n, p in self.raw.items()]})


_current = Family()


def current() -> Family:
    """The family that claim checks register with now."""
    return _current


@contextmanager
def using(family: Family):
    """Register the claim checks run inside with ``family``."""
    global _current
    before, _current = _current, family
    try:
        yield family
    finally:
        _current = before
