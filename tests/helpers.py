"""Small builders shared by the tests."""

import torch

from deqexp.deq.inits import InitSpec, initialise
from deqexp.deq.models import DenseDEQ
from deqexp.deq.settings import SolverSettings
from deqexp.theory import kglm
from deqexp.theory.families import get_family

FAMILY_NAMES = ["gaussian", "bernoulli", "binomial", "poisson", "spin", "tanh", "categorical", "relu"]


def sample_data(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """Data in the support of family ``name`` (binomial: 3 trials, categorical: 3 classes)."""
    g = torch.Generator().manual_seed(seed)
    if name in ("gaussian", "tanh", "relu"):
        return torch.randn(n, generator=g)
    if name == "bernoulli":
        return (torch.rand(n, generator=g) > 0.5).double()
    if name == "binomial":
        return torch.randint(0, 4, (n,), generator=g).double()
    if name == "poisson":
        return torch.poisson(2 * torch.ones(n), generator=g)
    if name == "spin":
        return torch.where(torch.rand(n, generator=g) > 0.5, 1.0, -1.0)
    if name == "categorical":
        return torch.nn.functional.one_hot(torch.randint(0, 3, (n,), generator=g), 3).double()
    raise ValueError(name)


def contraction_lambda(family, k):
    """The library's contraction lambda (THEORY.md section 4) for Gram matrix ``k``."""
    return kglm.contraction_lambda(family, torch.linalg.matrix_norm(k, 2))


def kglm_deq(family_name, kernel, x_in, x_out, lam, solver="anderson", tol=1e-13, max_iter=2000,
             ensemble=1):
    fam = get_family(family_name, trials=3, classes=3)
    m = DenseDEQ(len(x_in), len(x_in), len(x_out), fam, ensemble=ensemble, dtype=torch.float64,
                 solver=SolverSettings(solver, tol, max_iter))
    initialise(m, [InitSpec("kglm", lam=lam)] * ensemble, list(range(ensemble)),
               kernel=kernel, x_in=x_in, x_out=x_out)
    return m


def train_until_interrupted(monkeypatch, cfg, folder, epoch: int) -> None:
    """Run ``train_job`` and stop it with a KeyboardInterrupt as epoch ``epoch`` starts."""
    import pytest

    from deqexp.run import train as train_module
    from deqexp.run.runner import train_job

    real, calls = train_module.train_epoch, []

    def dies(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_epoch", dies)
    with pytest.raises(KeyboardInterrupt):
        train_job(cfg, folder)
    monkeypatch.setattr(train_module, "train_epoch", real)
