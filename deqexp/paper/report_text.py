"""REPORT.md's fixed text: the header that says how verdicts are reached, the list of runs not
counted, and the section that lists the report's family of corrected tests."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import claims

HEADER = ("# Reproducing \"Declarative nets that are equilibrium models\" (profile `{profile}`)\n\n"
          "The paper's claim: kGLM initialisation trains more stably and reaches lower error than "
          "random initialisation (E1-E3, E6); at initialisation the DEQ is the kGLM (E4); the "
          "initialisation is cheap (E5). Each section states its verdict in the runs found here, "
          "with the numbers and whether the DEQ was at its fixed point. Seeds are the pairs (the "
          "same data). **held** / **did not hold** need a paired two-sided Wilcoxon signed-rank "
          "test (`deqexp compare`'s engine) whose p, Holm-adjusted over the {tests} tests that "
          "decide a verdict in this report (listed at the end), is below {alpha}, in the claimed "
          "direction; **inconclusive** otherwise, **inconclusive (bound)** when it rests on a best "
          "scale at the edge of the sweep grid. E2/E3 choose each init's best scale on a "
          "validation split held out of the training data and report its test loss; the "
          "authors' choice on the test split is given beside it, as published. "
          "Settings: PAPER-PROTOCOL.md and `conf/experiment/paper/`.\n")


def verdict_word(verdict: str) -> str:
    return verdict if verdict == claims.MEASURED else f"**{verdict}**"


def others_note(found: dict, root: Path, profile: str) -> str:
    """A section listing completed runs under the profile's folders that no claim counts."""
    others = {exp: f.others for exp, f in found.items() if f.others}
    if not others:
        return ""
    lines = [f"- {exp}: " + ", ".join(f"`{d.relative_to(root) if d.is_relative_to(root) else d}`"
                                      for d in dirs) for exp, dirs in others.items()]
    return ("## Other runs (not counted)\n\nCompleted runs found under this profile's folders whose "
            f"configuration is not the `{profile}` preset's exactly (overrides that change "
            "results, or a copy of a counted run); no claim above uses them.\n\n" + "\n".join(lines) + "\n")


def family_note(table: pd.DataFrame, file: str) -> str:
    """The section that lists the corrected family: each test, its n, raw and adjusted p."""
    if table.empty:
        return ""
    rows = "\n".join(f"| {r.test} | {r.n_pairs} | {r.lower or '-'} | {r.p_wilcoxon:.3g} | {r.p_holm:.3g} |"
                     for r in table.itertuples())
    return ("## The corrected tests\n\nEvery paired test that decides a verdict above, one family: "
            f"Holm's step-down correction over its {int(table.p_wilcoxon.notna().sum())} tests "
            f"(a test without pairs has no p and is not counted). Per-epoch p-values in the tables "
            "are raw, a description only. `lower`: the side that ranks lower (base = kglm).\n\n"
            "| test | pairs | lower | p (Wilcoxon) | p (Holm) |\n|---|---|---|---|---|\n"
            f"{rows}\n\n- table: [{file}]({file})\n")
