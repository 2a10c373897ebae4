"""What an initialisation is, as configured: :class:`InitSpec` and the inits' names and default
scales. Free of torch, so that the config schemas load without it; the initialisations
themselves are :mod:`deqexp.deq.inits`."""
from __future__ import annotations

from dataclasses import dataclass

INITS = ("kglm", "naive", "random")
# each init's own default scale: ||W||_2 = 1 for the kernel inits (lambda = ||K||_2, as in E1),
# None (the framework's default layer init) for random
DEFAULT_SCALE = {"kglm": 1.0, "naive": 1.0, "random": None}


@dataclass
class InitSpec:
    """How one member is initialised."""

    name: str = "kglm"                 # kglm (the kGLM's weights) | naive | random (framework default)
    scale: float | None = 1.0          # target ||W||_2 (kglm/naive); N(0,(scale/divisor)^2) (random)
    lam: float | None = None           # explicit lambda (kglm/naive), overrides scale
    freeze_q: bool = False             # random: Q starts at 0 and is never trained (authors' E1;
                                       # naive's Q always starts at 0 and trains, as theirs)
    naive_lengthscale: float = 1.0     # naive: the SE kernel's length-scale it is built from
    random_divisor: float = 19.0       # random with a scale: N(0, (scale / divisor)^2) entries
    construction: str = "pd"           # conv kglm filters: 'pd' or the paper's 'paper'
    coupling: float = 0.0              # conv 'pd': weight of the shared cross-channel term
    lengthscale_low: float = 0.0       # conv: per-channel length-scales ~ U(low, high)
    lengthscale_high: float = 4.0      # conv: the upper end of that interval
    lengthscale_rng: str = "torch"     # conv kglm: draw them with the member's torch generator, or
                                       # 'numpy' as the authors (np.random.seed(seed), then uniform)
    prior_mean: float = 0.0            # dense kglm: constant prior mean of f, as biases b and c

    def __post_init__(self):
        if self.name not in INITS:
            raise ValueError(f"unknown init '{self.name}'; choose one of {list(INITS)}")
        if self.lam is not None and self.lam <= 0:
            raise ValueError(f"init.lam must be > 0, got {self.lam}")
        if self.scale is not None and self.scale <= 0:
            raise ValueError(f"init.scale must be > 0, got {self.scale}")
