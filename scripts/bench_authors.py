"""`make bench`, section "authors": one E1 epoch at the paper's size, deqexp against the
authors' loop, per init and thread count.

The authors' side is the line-by-line re-implementation that the fidelity tests check deqexp
against (tests/authors_loop.py); the deqexp side is the trainer's own epoch (``train_epoch``,
then ``evaluate`` on the train and test splits, as `experiment=paper/e1` logs them). Both start
from the same parameters, and the row notes the difference of their losses after the timed
epochs: the two do the same arithmetic, so the ratio compares implementations, not algorithms.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from deqexp.run.batching import order_streams  # noqa: E402
from deqexp.run.build import build_model, load_job_data, members_from_config  # noqa: E402
from deqexp.run.metrics import evaluate  # noqa: E402
from deqexp.run.optimizers import make_optimizer  # noqa: E402
from deqexp.run.train import train_epoch  # noqa: E402
from tests.authors_loop import authors_e1  # noqa: E402
from tests.compose import compose_config  # noqa: E402

INITS = ("kglm", "naive", "random")


def deqexp_epoch(init: str, n_train: int, n_test: int, device, dtype):
    """deqexp's E1 epoch for one member of ``init`` (a closure), its model and its data."""
    cfg = compose_config("experiment=paper/e1", f"dataset.n_train={n_train}", f"dataset.n_test={n_test}",
                         f"trainer.ensemble.inits=[{init}]", "trainer.ensemble.seeds=1",
                         "trainer.jac_samples=0")
    members = members_from_config(cfg)
    job = load_job_data(cfg, members, device, dtype)
    model = build_model(cfg, job, members, device, dtype)
    opt, sched = make_optimizer(cfg, model, 1)
    streams = order_streams("deqexp", job, members)
    streams.start(n_train)
    alive = torch.ones(1, dtype=torch.bool, device=device)

    def epoch():
        train_epoch(model, job, opt, sched, streams, "mse", 0, alive)
        losses = [evaluate(model, job, x, y, "mse", 0)["loss"] for x, y in
                  ((job.train_x, job.train_y), (job.test_x, job.test_y))]
        return [float(v[0]) for v in losses]

    return epoch, model, job, cfg


def authors_epoch(model, job, cfg):
    """The authors' E1 epoch from ``model``'s parameters: one full-batch Adam step, then the
    train and test losses without gradients."""
    frozen_q = bool(model.frozen.get("Q", torch.zeros(1, dtype=torch.bool))[0])
    p = {n: getattr(model, n)[0].detach().clone() for n in "WUbVcQ"}
    fwd = cfg.solver.forward
    net, train = authors_e1(p, not frozen_q, cfg.optim.lr, fwd.tol, fwd.max_iter)
    xtr, ytr, xte, yte = job.train_x[0], job.train_y[0], job.test_x[0], job.test_y[0]

    def epoch():
        train(xtr, ytr)
        with torch.no_grad():
            return [float(F.mse_loss(net(x), y)) for x, y in ((xtr, ytr), (xte, yte))]

    return epoch


def bench_authors(n_train: int, n_test: int, device, dtype, repeat: int, timed, add,
                  threads=(1, 2)) -> None:
    """Rows "deqexp s/epoch" with ratio = deqexp / authors, per thread count and init."""
    before = torch.get_num_threads()
    for t in threads:
        torch.set_num_threads(t)
        for init in INITS:
            ours, model, job, cfg = deqexp_epoch(init, n_train, n_test, device, dtype)
            theirs = authors_epoch(model, job, cfg)
            case = f"E1 epoch, {init}, N={n_train}, {t} thread(s)"
            t_theirs = timed(theirs, device, repeat)
            t_ours = timed(ours, device, repeat)
            gap = max(abs(a - b) for a, b in zip(ours(), theirs()))
            add("2b authors", case, "authors s/epoch", t_theirs)
            add("2b authors", case, "deqexp s/epoch", t_ours, t_ours / t_theirs,
                f"ratio = deqexp / authors; losses after {repeat + 2} epochs differ by {gap:.1e}")
    torch.set_num_threads(before)
