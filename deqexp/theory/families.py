"""Exponential families (and M-estimator losses) that give a DEQ its activation.

THEORY.md section 3: the kGLM with log-partition ``a`` has the DEQ activation
``sigma = a'``. Each family gives ``T``, ``a``, ``a'`` (:meth:`Family.mean`) and
``a''`` (:meth:`Family.variance_operator`, as a product with a vector so that the
categorical family's C x C Hessian never has to be formed), in forms that do not
overflow for ``|theta|`` up to 1e3.

The sufficient statistic is T(y) = y for every family here (THEORY.md section 3, one-hot y
for categorical), so the data enter the DEQ unchanged as its input t.

Shapes: scalar families act elementwise; the categorical family keeps its C
classes on the last axis, so ``theta`` is ``(..., n, C)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


class FamilyDataError(ValueError):
    """Data outside a family's support (e.g. bernoulli data that is not 0/1)."""


@dataclass(frozen=True)
class Family:
    """A one-parameter exponential family in canonical form, or an M-estimator.

    ``likelihood`` is False for entries whose ``a`` is convex but not a
    log-partition function (THEORY.md section 3): they define a regularised
    M-estimator, not a likelihood.
    """

    name: str = "gaussian"
    likelihood: bool = True
    support: str = "real"
    classes: int = 0  # >0 only for categorical: size of the trailing class axis

    @property
    def sup_variance(self) -> float:
        """``sup a''`` (the contraction constant of THEORY.md section 4); inf if unbounded."""
        raise NotImplementedError

    def log_partition(self, theta: Tensor) -> Tensor:
        """``a(theta)`` elementwise (summed over classes for categorical)."""
        raise NotImplementedError

    def mean(self, theta: Tensor) -> Tensor:
        """``a'(theta)``: the DEQ activation sigma."""
        raise NotImplementedError

    def mean_(self, theta: Tensor) -> Tensor:
        """``a'(theta)`` computed in place on a temporary ``theta`` (no-grad solver loops)."""
        return self.mean(theta)

    def variance(self, theta: Tensor) -> Tensor:
        """``a''(theta)`` elementwise (scalar families)."""
        raise NotImplementedError

    def variance_operator(self, theta: Tensor):
        """``v -> a''(theta) v``, the activation's (symmetric) Jacobian, with ``a''(theta)``
        computed once: the backward solve applies it every iteration."""
        d = self.variance(theta)
        return lambda v: d * v

    def sample(self, theta: Tensor, gen: torch.Generator) -> Tensor:
        """Draw data at natural parameters ``theta`` (M-estimators: mean plus unit Gaussian noise)."""
        mean = self.mean(theta)
        return mean + torch.randn(mean.shape, generator=gen, dtype=mean.dtype)

    def validate(self, y: Tensor) -> None:
        """Raise :class:`FamilyDataError` naming the problem when ``y`` is outside the support."""
        if not torch.isfinite(y).all():
            raise FamilyDataError(f"family '{self.name}': data contains NaN or inf")

    def describe(self) -> str:
        """A one-line label: name, likelihood or M-estimator, support."""
        kind = "likelihood" if self.likelihood else "M-estimator (not a likelihood)"
        return f"{self.name}: {kind}, data in {self.support}"


def _check_values(family: Family, y: Tensor, ok: Tensor, expected: str) -> None:
    Family.validate(family, y)
    if not bool(ok.all()):
        bad = y[~ok].flatten()[:3].tolist()
        raise FamilyDataError(
            f"family '{family.name}' expects data in {expected}, got values such as {bad}; "
            "choose a family that fits the data (e.g. family=gaussian for real values)"
        )


class Gaussian(Family):
    """Unit-variance Gaussian: sigma = identity; the kGLM is kernel ridge regression."""

    sup_variance = 1.0

    def log_partition(self, theta):
        return 0.5 * theta**2

    def mean(self, theta):
        return theta

    def variance(self, theta):
        return torch.ones_like(theta)


class Bernoulli(Family):
    """Bernoulli on {0,1}: sigma = sigmoid; the kGLM is kernel logistic regression."""

    sup_variance = 0.25

    def log_partition(self, theta):
        return F.softplus(theta)

    def mean(self, theta):
        return torch.sigmoid(theta)

    def mean_(self, theta):
        return theta.sigmoid_()

    def variance(self, theta):
        p = torch.sigmoid(theta)
        return p * (1 - p)

    def sample(self, theta, gen):
        return torch.bernoulli(torch.sigmoid(theta), generator=gen)

    def validate(self, y):
        _check_values(self, y, (y == 0) | (y == 1), "{0, 1}")


@dataclass(frozen=True)
class Binomial(Family):
    """Binomial with ``trials`` = N: sigma = N sigmoid."""

    trials: int = 1

    @property
    def sup_variance(self):
        return self.trials / 4.0

    def log_partition(self, theta):
        return self.trials * F.softplus(theta)

    def mean(self, theta):
        return self.trials * torch.sigmoid(theta)

    def variance(self, theta):
        p = torch.sigmoid(theta)
        return self.trials * p * (1 - p)

    def sample(self, theta, gen):
        p = torch.sigmoid(theta)[..., None].expand(*theta.shape, self.trials)
        return torch.bernoulli(p, generator=gen).sum(-1)

    def validate(self, y):
        ok = (y >= 0) & (y <= self.trials) & (y == torch.round(y))
        _check_values(self, y, ok, f"the integers 0..{self.trials}")


class Poisson(Family):
    """Poisson: sigma = exp; a'' is unbounded, so forward iteration needs care."""

    sup_variance = math.inf

    def log_partition(self, theta):
        return torch.exp(theta)

    def mean(self, theta):
        return torch.exp(theta)

    def variance(self, theta):
        return torch.exp(theta)

    def sample(self, theta, gen):
        return torch.poisson(torch.exp(theta), generator=gen)

    def validate(self, y):
        _check_values(self, y, y >= 0, "[0, inf) (counts)")


class Spin(Family):
    """Spin on {-1,+1}: a = log(2 cosh theta), sigma = tanh."""

    sup_variance = 1.0

    def log_partition(self, theta):
        # log(2 cosh t) = |t| + log1p(exp(-2|t|)), stable for large |t|
        t = theta.abs()
        return t + torch.log1p(torch.exp(-2 * t))

    def mean(self, theta):
        # tanh = 2 sigmoid(2 theta) - 1: exact to ~1 ulp of 1 in absolute terms, and on CPUs
        # several times faster than torch.tanh (this is the hot loop of every E1 solve)
        return 2 * torch.sigmoid(2 * theta) - 1

    def mean_(self, theta):
        return theta.mul_(2).sigmoid_().mul_(2).sub_(1)

    def variance(self, theta):
        return 1 - self.mean(theta) ** 2

    def sample(self, theta, gen):
        if not self.likelihood:
            return super().sample(theta, gen)
        # P(y = +1) = e^theta / (2 cosh theta) = sigmoid(2 theta)
        return 2 * torch.bernoulli(torch.sigmoid(2 * theta), generator=gen) - 1

    def validate(self, y):
        if self.likelihood:
            _check_values(self, y, (y == -1) | (y == 1), "{-1, +1}")
        else:
            Family.validate(self, y)


@dataclass(frozen=True)
class Categorical(Family):
    """Categorical over ``classes`` with one-hot data on the last axis: sigma = softmax."""

    sup_variance = 0.5

    def log_partition(self, theta):
        return torch.logsumexp(theta, dim=-1)

    def mean(self, theta):
        return torch.softmax(theta, dim=-1)

    def variance_operator(self, theta):
        p = torch.softmax(theta, dim=-1)

        def apply(v):
            pv = p * v
            return pv - p * pv.sum(-1, keepdim=True)

        return apply

    def sample(self, theta, gen):
        p = torch.softmax(theta, dim=-1).reshape(-1, self.classes)
        idx = torch.multinomial(p, 1, generator=gen).reshape(theta.shape[:-1])
        return F.one_hot(idx, self.classes).to(theta.dtype)

    def validate(self, y):
        if y.shape[-1] != self.classes:
            raise FamilyDataError(
                f"family 'categorical' with classes={self.classes} expects one-hot data with "
                f"{self.classes} entries on the last axis, got shape {tuple(y.shape)}"
            )
        ok = ((y == 0) | (y == 1)).all(-1) & (y.sum(-1) == 1)
        _check_values(self, y, ok.unsqueeze(-1).expand_as(y), "one-hot vectors")


class ReLU(Family):
    """M-estimator with a = max(theta, 0)^2 / 2: sigma = ReLU (not a likelihood)."""

    sup_variance = 1.0

    def log_partition(self, theta):
        return 0.5 * F.relu(theta) ** 2

    def mean(self, theta):
        return F.relu(theta)

    def mean_(self, theta):
        return theta.relu_()

    def variance(self, theta):
        return (theta > 0).to(theta.dtype)


FAMILIES = {
    "gaussian": lambda **kw: Gaussian("gaussian"),
    "bernoulli": lambda **kw: Bernoulli("bernoulli", support="{0,1}"),
    "binomial": lambda trials=1, **kw: Binomial("binomial", support=f"0..{trials}", trials=trials),
    "poisson": lambda **kw: Poisson("poisson", support="[0,inf)"),
    "spin": lambda **kw: Spin("spin", support="{-1,+1}"),
    # log(2cosh) on real-valued data: the same sigma = tanh, as an M-estimator (E1)
    "tanh": lambda **kw: Spin("tanh", likelihood=False, support="real"),
    "categorical": lambda classes=2, **kw: Categorical(
        "categorical", support="one-hot", classes=classes
    ),
    "relu": lambda **kw: ReLU("relu", likelihood=False, support="real"),
}


def get_family(name: str, trials: int = 1, classes: int = 2) -> Family:
    """Build a family by name; unknown names raise a ValueError listing the choices."""
    if name not in FAMILIES:
        raise ValueError(f"unknown family '{name}'; choose one of {sorted(FAMILIES)}")
    if trials < 1 or classes < 2:
        raise ValueError(f"family '{name}': need trials >= 1 and classes >= 2")
    return FAMILIES[name](trials=trials, classes=classes)
