"""The report's tables and claim checks: pure pandas, no files (``deqexp report`` writes them).

A claim check returns ``(verdict, text)``. The verdict is one of :data:`VERDICTS`: ``held`` and
``did not hold`` need a paired two-sided Wilcoxon signed-rank test (``deqexp compare``'s engine;
seeds are the pairs: the same data) whose Holm-adjusted p over every verdict-deciding test of
the report (:mod:`.family`) is below :data:`ALPHA`, in the claimed direction; short of it the
claim is ``inconclusive`` (e.g. 3 seeds reach at best p = 0.25), and ``inconclusive (bound)``
when the verdict would rest on a best scale at the edge of the sweep grid. ``measured`` is a
measurement with no pass/fail (E5). A diverged seed
counts as an infinite loss: it loses every comparison and makes its mean infinite (the mean
over the seeds that finished is given beside it). ``text`` gives the numbers, the number of
seeds and p, and whether the fixed point was reached.

The checks live one module per experiment family: :mod:`.common` (verdicts, the paired test),
:mod:`.family` (the report's corrected tests),
:mod:`.curves` (E1, E6), :mod:`.sweeps` (E2, E3), :mod:`.analyses` (E4, E5) and
:mod:`.stability`; their public names import from here.
"""
from .analyses import agreement_claim, agreement_table, timing_claim, timing_table  # noqa: F401
from .common import (  # noqa: F401
    ALPHA,
    BOUND,
    HELD,
    INCONCLUSIVE,
    MEASURED,
    NOT_HELD,
    VERDICTS,
    Paired,
    Verdict,
    best_possible_p,
    combine,
    convergence_note,
    from_row,
    has_jacobian,
    outcome_share,
    paired,
    reported_epochs,
)
from .curves import compare_curves, count_sensitivity, curves_claim, curves_table, paired_at  # noqa: F401
from .family import Family, using  # noqa: F401
from .stability import STABILISERS, stabiliser_of, stability_claim, stability_table  # noqa: F401
from .sweeps import (  # noqa: F401
    best_scale_losses,
    has_validation,
    sweep_claim,
    sweep_convergence,
    sweep_table,
    unique_members,
)
