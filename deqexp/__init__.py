"""deqexp: deep equilibrium models initialised as kernelised GLMs, and an experiment runner.

Module map (each layer imports only from the layers above it in this list):

- :mod:`deqexp.theory`: the result in formulas. ``families`` (sigma = a', a'', the losses),
  ``kernels``, ``filters`` (windowed kernels as conv filters), ``kglm`` (the exact kGLM solver).
- :mod:`deqexp.deq`: equilibrium layers. ``models`` (DenseDEQ, ConvDEQ), ``solvers`` (one
  signature, a result object), ``gradients`` (implicit, unrolled, one-step), ``operators``
  (convolutions, operator norms, Lanczos), ``linalg``, ``inits`` (kglm, naive, random).
- :mod:`deqexp.data`: ``datasets`` (the registry; importable from ``deqexp.data``) and
  ``readers`` (CIFAR-10 batches, MNIST IDX, TIFF folders).
- :mod:`deqexp.run`: one job. ``config`` (schemas), ``validation``, ``build``, ``train``,
  ``optimizers``, ``runner``, ``checkpoints``, ``signals``, ``logging`` (CSV, W&B),
  ``digests``, ``tasks`` (E4 agreement, E5 timing), ``runs`` (``load_run``, ``deqexp eval``).
- :mod:`deqexp.sweep`: many jobs. ``cluster`` (the SLURM launcher), ``status`` (``deqexp status``).
- :mod:`deqexp.paper`: ``claims``, ``figures``, ``report`` (``deqexp report``), ``verify``.
- :mod:`deqexp.cli`: the ``deqexp`` command.

``deqexp.load_run``, ``deqexp.DenseDEQ``, ``deqexp.ConvDEQ`` and ``deqexp.fit_kglm`` are
importable from here; the modules' former flat paths (``deqexp.kglm``, ``deqexp.models``, ...)
still import, as the modules above.
"""
import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# the flat layout's module paths, kept importable for users' code and notebooks
MOVED = {
    "families": "theory.families", "kernels": "theory.kernels", "filters": "theory.filters",
    "kglm": "theory.kglm", "models": "deq.models", "solvers": "deq.solvers",
    "gradients": "deq.gradients", "operators": "deq.operators", "inits": "deq.inits",
    "linalg": "deq.linalg", "readers": "data.readers", "config": "run.config",
    "validation": "run.validation", "build": "run.build", "train": "run.train",
    "optimizers": "run.optimizers", "runner": "run.runner", "runs": "run.runs",
    "checkpoints": "run.checkpoints", "logging": "run.logging", "digests": "run.digests",
    "signals": "run.signals", "analyses": "run.tasks", "cluster": "sweep.cluster",
    "sweeps": "sweep.status", "claims": "paper.claims", "figures": "paper.figures",
    "report": "paper.report", "verify": "paper.verify",
}
PUBLIC = {"load_run": "run.runs", "DenseDEQ": "deq.models", "ConvDEQ": "deq.models",
          "fit_kglm": "theory.kglm"}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import deqexp.kglm`` gives the module ``deqexp.theory.kglm`` itself (one object)."""

    def find_spec(self, fullname, path=None, target=None):
        short = fullname.removeprefix(__name__ + ".")
        if short in MOVED and fullname == f"{__name__}.{short}":
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{MOVED[spec.name.rsplit('.', 1)[1]]}")
        spec.loader_state = module.__spec__  # the import system sets the alias's spec on it
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # already executed under its own name


sys.meta_path.append(_MovedModules())


def __getattr__(name):
    # lazily, so that importing the package does not import torch
    if name in PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{PUBLIC[name]}"), name)
    raise AttributeError(f"module 'deqexp' has no attribute {name!r}")
