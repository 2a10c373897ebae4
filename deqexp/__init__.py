"""deqexp: deep equilibrium models initialised as kernelised GLMs, and an experiment runner.

The theory's pieces by name: :mod:`deqexp.families` (sigma = a'), :mod:`deqexp.kernels`,
:mod:`deqexp.kglm` (the exact inner solver), :mod:`deqexp.models` (DEQ layers),
:mod:`deqexp.inits` (the kGLM initialisation), :mod:`deqexp.solvers` and
:mod:`deqexp.gradients`. The runner: :mod:`deqexp.train`, :mod:`deqexp.config`,
:mod:`deqexp.logging`, :mod:`deqexp.report`. Sweeps at scale: :mod:`deqexp.cluster` (the SLURM
launcher), :mod:`deqexp.signals` (checkpoint on SIGTERM/SIGUSR2), :mod:`deqexp.sweeps`
(``deqexp status``).
"""

__version__ = "0.1.0"


def __getattr__(name):
    # ``deqexp.load_run(path)`` without importing torch when the package is imported
    if name == "load_run":
        from .runs import load_run

        return load_run
    raise AttributeError(f"module 'deqexp' has no attribute {name!r}")
