"""What an evaluation measures: the members' losses and solver statistics over a split, the
operator and Jacobian norms, the metrics.csv rows they make, the solver failure policy
(``solver.*.on_failure``) and the contraction note at the start of a run."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..deq.models import ConvDEQ
from ..deq.solver_loop import OUTCOMES
from ..theory.kglm import contraction_factor
from .batching import batches
from .build import JobData, Member
from .messages import tagged
from .schemas import ConfigError
from .sinks import OUTCOME_COLUMNS

Tensor = torch.Tensor


# --------------------------------------------------------------------------- losses and metrics
def member_loss(kind: str, out: Tensor, target: Tensor) -> Tensor:
    """Per-member mean loss ``(E,)``; targets may carry E or 1 on the leading axis."""
    if kind == "mse":
        return (out - target).pow(2).flatten(1).mean(1)
    if kind == "cross_entropy":
        e, b, m, c = out.shape
        tgt = target.expand(e, b, m).long()
        return F.cross_entropy(out.reshape(-1, c), tgt.reshape(-1), reduction="none").view(e, -1).mean(1)
    if kind == "bce":
        tgt = target.expand_as(out)
        return F.binary_cross_entropy_with_logits(out, tgt, reduction="none").flatten(1).mean(1)
    raise ConfigError(f"unknown loss '{kind}'")


class Totals:
    """Per-member sums over batches, kept on the device until the epoch ends."""

    def __init__(self):
        self.sums: dict[str, Tensor] = {}
        self.maxes: dict[str, Tensor] = {}
        self.counts: dict[str, Tensor] = {}  # summed, not averaged: samples per solver outcome
        self.count = 0

    def add(self, **values: Tensor) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach()
        self.count += 1

    def tally(self, res, prefix: str) -> None:
        """Add a solve's per-member outcome counts (``PREFIX_n_OUTCOME``)."""
        for name, n in res.counts().items():
            key = f"{prefix}_n_{name}"
            self.counts[key] = self.counts.get(key, 0) + n

    def max(self, **values: Tensor) -> None:
        for k, v in values.items():
            self.maxes[k] = torch.maximum(self.maxes[k], v) if k in self.maxes else v.detach()

    def mean(self, key: str) -> Tensor | None:
        return self.sums[key] / self.count if key in self.sums else None


def solve_stats(res, prefix: str) -> dict[str, Tensor]:
    """Per-member means of a solve's iterations, final residual and converged fraction."""
    return {f"{prefix}_iters": res.iterations.double().mean(1),
            f"{prefix}_residual": res.residual.double().mean(1),
            f"{prefix}_converged": res.converged.double().mean(1)}


def evaluate(model, job: JobData, x: Tensor, y: Tensor, loss_kind: str, batch_size: int) -> dict:
    """Loss and forward-solver statistics per member over a whole split (no gradients)."""
    tot = Totals()
    with torch.no_grad():
        for idx in batches(x.shape[1], batch_size, None):
            run = model.run(job.batch(x, idx))
            loss = member_loss(loss_kind, run.out, job.batch(y, idx))
            tot.add(loss=loss, **solve_stats(run.forward, "fwd"))
            tot.tally(run.forward, "fwd")
            tot.max(iters_max=run.forward.iterations.double().amax(1))
    out = {k: tot.mean(k) for k in tot.sums}
    out["iters_max"] = tot.maxes["iters_max"]
    return {**out, **tot.counts}


def operator_norms(model, job: JobData) -> dict[str, Tensor]:
    if isinstance(model, ConvDEQ):
        return model.operator_norms(*job.meta.train_input.shape[-2:])
    return model.operator_norms()


def jacobian_norm(model, job: JobData, samples: int) -> Tensor | None:
    """Per member, the largest ``||J||_2`` of the fixed-point map at the solution over the
    first ``samples`` test samples (= the norm of the map on that subset; None when 0)."""
    if samples <= 0:
        return None
    return model.jacobian_norms(job.member_view(job.test_x[:, :samples])).amax(1)


def all_norms(model, job: JobData, jac_samples: int) -> dict[str, Tensor | None]:
    """The norms that :func:`rows` logs: W's and U's operator norms and the Jacobian's."""
    return {**operator_norms(model, job), "J": jacobian_norm(model, job, jac_samples)}


def rows(members: list[Member], epoch: int, train, test, bwd: Totals, norms, epoch_time, alive,
         val=None) -> list[dict]:
    """metrics.csv rows (one per member) of an evaluated epoch; ``norms`` holds the operator
    norms of W and U and the Jacobian norm (``J``, None when not computed); ``val_loss`` only
    when there is a validation split (``val``)."""
    cols = {**({"val_loss": val["loss"]} if val is not None else {}),
        "train_loss": train["loss"] if train else None, "test_loss": test["loss"],
        "fwd_iters_mean": test["fwd_iters"], "fwd_iters_max": test["iters_max"],
        "fwd_residual": test["fwd_residual"], "converged_frac": test["fwd_converged"],
        "bwd_iters_mean": bwd.mean("bwd_iters"), "bwd_residual": bwd.mean("bwd_residual"),
        "bwd_converged_frac": bwd.mean("bwd_converged"), "op_norm_W": norms["W"],
        "op_norm_U": norms["U"], "jac_norm": norms.get("J"),
        **{k: test.get(k) for k in OUTCOME_COLUMNS if k.startswith("fwd")},
        **{k: bwd.counts.get(k) for k in OUTCOME_COLUMNS if k.startswith("bwd")},
    }
    host = {k: (v.double().cpu().tolist() if v is not None else [math.nan] * len(members))
            for k, v in cols.items()}
    alive = alive.cpu().tolist()
    out = []
    for m in members:
        row = {"member": m.index, "seed": m.seed, "init": m.spec.name,
               "scale": "" if m.spec.scale is None else m.spec.scale, "epoch": epoch,
               "epoch_time_s": round(epoch_time, 4), "status": "ok" if alive[m.index] else "diverged"}
        row.update({k: v[m.index] for k, v in host.items()})
        out.append(row)
    return out


class SolverFailure(RuntimeError):
    """``solver.*.on_failure=raise`` and some solve did not converge: the run stops."""


class FailureWatch:
    """``solver.forward.on_failure`` / ``solver.backward.on_failure`` over the outcome counts of
    the metrics rows (living members only: a diverged member is already recorded as such):
    ``warn`` says it once per run and solve, with the share of samples; ``raise`` stops the run."""

    WHAT = {"fwd": ("forward", "the test split's forward solves"),
            "bwd": ("backward", "the epoch's adjoint (backward) solves")}

    def __init__(self, cfg, label: str = "", warned=()):
        self.settings = {"fwd": cfg.solver.forward, "bwd": cfg.solver.backward}
        self.warned: set[str] = set(warned)  # said in an earlier attempt (a resumed run's checkpoint)
        self.label = label

    def check(self, epoch: int, rows: list[dict]) -> None:
        for solve, s in self.settings.items():
            mode = s.on_failure
            if mode == "ignore" or (mode == "warn" and solve in self.warned):
                continue
            n = {o: sum(r[f"{solve}_n_{o}"] for r in rows if r["status"] == "ok"
                        and math.isfinite(r[f"{solve}_n_{o}"])) for o in OUTCOMES}
            total = sum(n.values())
            if total == 0 or n["converged"] == total:
                continue
            key, what = self.WHAT[solve]
            shares = ", ".join(f"{o} {n[o] / total:.0%}" for o in OUTCOMES[1:])
            text = (f"{1 - n['converged'] / total:.0%} of {what} ({total - n['converged']:.0f} of "
                    f"{total:.0f} samples) did not reach solver.{key}.tol={s.tol} at epoch {epoch}: "
                    f"{shares} (solver.{key}.name={s.name}, max_iter={s.max_iter})")
            if mode == "raise":
                raise SolverFailure(f"{text}; solver.{key}.on_failure=raise stops the run. Raise "
                                    f"solver.{key}.max_iter, use solver=anderson, or set "
                                    f"solver.{key}.on_failure=warn to record it and go on")
            self.warned.add(solve)
            print(tagged(self.label, f"warning: {text}. Recorded per epoch in metrics.csv ({solve}_n_*); "
                         f"solver.{key}.on_failure=ignore silences this, =raise stops the run"), flush=True)


def note_contraction(model, job: JobData, members: list[Member], label: str = "") -> None:
    """Say once, at the start, which members begin outside THEORY.md section 4's contraction
    region (it may be deliberate: the paper's E1 sits on its border, E2 sweeps across it). Only
    for forward iteration, the one solver that needs the contraction (not Anderson, Broyden or
    Newton, and not the monotone parametrisation, which is solved by splitting)."""
    if model.solver.name != "forward" or model.recurrence.name == "monotone":
        return
    norms = operator_norms(model, job)["W"].double().cpu().tolist()
    factors = [contraction_factor(model.family, n) for n in norms]
    outside = [f for f in factors if not f < 1]
    if outside:
        print(tagged(label, f"note: {len(outside)} of {len(members)} member(s) start outside the "
                     f"contraction region (sup a'' ||W||_2 up to {max(outside):.3g} >= 1, THEORY.md "
                     "section 4): forward iteration may not reach its tolerance there (solver=anderson "
                     "or broyden usually does)"), flush=True)
