"""Members held still (frozen, diverged) keep parameters and optimiser state bit for bit;
everything else moves exactly as torch.optim.Adam would move it."""
import pandas as pd
import pytest
import torch

from deqexp.run.batching import order_streams
from deqexp.run.build import build_model, load_job_data, members_from_config
from deqexp.run.folder import RunFolder
from deqexp.run.optimizers import MemberAdam, make_optimizer
from deqexp.run.runner import train_job
from deqexp.run.train import train_epoch
from tests.compose import compose_config


def _grads(steps, shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * 10.0 ** (t % 5 - 2) for t in range(steps)]


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("adam", [True, False])
def test_nothing_held_is_torch_adam_or_sgd_bit_for_bit(weight_decay, adam):
    start = torch.randn(4, 6, 3, generator=torch.Generator().manual_seed(1))
    a, b = start.clone().requires_grad_(), start.clone().requires_grad_()
    ref = (torch.optim.Adam if adam else torch.optim.SGD)([a], lr=0.01, weight_decay=weight_decay)
    ours = MemberAdam([b], lr=0.01, weight_decay=weight_decay, adam=adam)
    s_ref, s_ours = (torch.optim.lr_scheduler.CosineAnnealingLR(o, 25) for o in (ref, ours))
    for g in _grads(25, start.shape):
        a.grad, b.grad = g.clone(), g.clone()
        ref.step(), ours.step(), s_ref.step(), s_ours.step()
        assert torch.equal(a, b)


def test_a_held_member_is_a_parameter_without_gradient_in_torch_adam():
    """Member 1 held for the first 20 steps, member 2 for steps 5-9 (a freeze, then released),
    each against its own torch.optim.Adam that sees no gradient (grad None) while it is held."""
    e, steps = 3, 40
    held = lambda t: torch.tensor([False, t < 20, 5 <= t < 10])  # noqa: E731
    start = torch.randn(e, 5, generator=torch.Generator().manual_seed(2))
    stacked = start.clone().requires_grad_()
    ours = MemberAdam([stacked], lr=0.05)
    refs = [start[i].clone().requires_grad_() for i in range(e)]
    opts = [torch.optim.Adam([r], lr=0.05) for r in refs]
    grads = _grads(steps, start.shape, seed=3)
    for t, g in enumerate(grads):
        before = stacked.detach().clone()
        moments = {k: v.clone() for k, v in ours.state[stacked].items()} if ours.state else None
        stacked.grad = g.clone()
        ours.step([held(t)])
        for i in range(e):
            refs[i].grad = None if held(t)[i] else g[i].clone()
            opts[i].step()
            assert torch.equal(stacked[i], refs[i]), (t, i)
            if held(t)[i]:
                assert torch.equal(stacked[i], before[i])
                if moments:
                    assert all(torch.equal(ours.state[stacked][k][i], moments[k][i]) for k in moments)


SMALL = ("dataset.n_train=24", "dataset.n_test=8", "dataset.length=20", "logger=csv",
         "logger.progress=false", "trainer.checkpoint_every=0",
         "solver=forward")  # these tests were written for forward iteration, the default before 0.2


def _built(*overrides):
    cfg = compose_config(*SMALL, *overrides)
    members = members_from_config(cfg)
    job = load_job_data(cfg, members, torch.device("cpu"), torch.float32)
    return cfg, job, build_model(cfg, job, members, torch.device("cpu"), torch.float32)


def _initial(*overrides) -> dict:
    return _built(*overrides)[2].state_dict()


def _run(tmp_path, *overrides):
    cfg = compose_config(*SMALL, *overrides)
    train_job(cfg, RunFolder(tmp_path, "x"))
    final = torch.load(tmp_path / "model.pt", weights_only=True)["final"]
    return final, pd.read_csv(tmp_path / "metrics.csv")


def test_freeze_wu_epochs_holds_naive_w_and_u_then_releases_them(tmp_path):
    ens = ["trainer.ensemble.inits=[kglm,naive]", "trainer.freeze_wu_epochs=2"]
    final = {k: _run(tmp_path / str(k), *ens, f"trainer.epochs={k}")[0] for k in (1, 2, 3)}
    final[0] = _initial(*ens)
    for name in ("W", "U"):
        naive = [final[k][name][1] for k in range(4)]
        assert torch.equal(naive[0], naive[1]) and torch.equal(naive[1], naive[2]), name
        assert not torch.equal(naive[2], naive[3]), name  # released at epoch 3
        kglm = [final[k][name][0] for k in range(4)]
        assert not torch.equal(kglm[0], kglm[1]), name  # kglm is never frozen
    assert not torch.equal(final[0]["V"][1], final[1]["V"][1])  # naive's readout trains meanwhile
    # released, naive's first update is a fresh Adam's: about lr per entry (|m/sqrt(v)| = 1)
    lr = compose_config().optim.lr
    step = (final[3]["W"][1] - final[2]["W"][1]).abs()
    assert torch.allclose(step[step > 0], torch.full_like(step[step > 0], lr), rtol=1e-3)


def test_a_diverged_member_stays_exactly_where_it_died(tmp_path):
    # member 1 (scale 1000) blows up at once; member 0 trains on
    sweep = ["init=random", "trainer.ensemble.scales=[1,1000]", "dataset.length=100"]
    final = {k: _run(tmp_path / str(k), *sweep, f"trainer.epochs={k}") for k in (1, 2, 3)}
    df = final[3][1]
    assert (df[df.member == 1].status.iloc[1:] == "diverged").all()
    bits = lambda t: t.contiguous().view(torch.int32)  # noqa: E731  (NaN == NaN, bit for bit)
    for name, value in final[1][0].items():
        assert torch.equal(bits(final[2][0][name][1]), bits(value[1])), name
        assert torch.equal(bits(final[3][0][name][1]), bits(value[1])), name
        assert not torch.equal(final[3][0][name][0], value[0]), name


def test_the_loop_holds_a_member_marked_dead_with_its_moments():
    # a healthy member marked dead after an epoch of training (its Adam moments are non-zero):
    # the loop must leave its parameters and optimiser state exactly as they were
    cfg, job, model = _built("trainer.ensemble.seeds=2", "trainer.batch_size=8")
    opt, sched = make_optimizer(cfg, model, 2)
    gens = order_streams("deqexp", job, None)
    both = torch.tensor([True, True])
    train_epoch(model, job, opt, sched, gens, job.meta.loss, 8, both)
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    moments = {n: {k: v.clone() for k, v in opt.state[p].items()} for n, p in model.named_parameters()}
    for _ in range(2):
        alive, _ = train_epoch(model, job, opt, sched, gens, job.meta.loss, 8, torch.tensor([True, False]))
    assert alive.tolist() == [True, False]
    for n, p in model.named_parameters():
        assert torch.equal(p[1], params[n][1]) and not torch.equal(p[0], params[n][0]), n
        for k, v in opt.state[p].items():
            assert torch.equal(v[1], moments[n][k][1]), (n, k)
