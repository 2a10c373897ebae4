"""deqexp: deep equilibrium models initialised as kernelised GLMs, and an experiment runner.

The theory's pieces by name: :mod:`deqexp.families` (sigma = a'), :mod:`deqexp.kernels`,
:mod:`deqexp.kglm` (the exact inner solver), :mod:`deqexp.models` (DEQ layers),
:mod:`deqexp.inits` (the kGLM initialisation), :mod:`deqexp.solvers` and
:mod:`deqexp.gradients`. The runner: :mod:`deqexp.train`, :mod:`deqexp.config`,
:mod:`deqexp.logging`, :mod:`deqexp.report`.
"""

__version__ = "0.1.0"
