"""deqexp: deep equilibrium models initialised as kernelised GLMs, and an experiment runner.

Module map (each layer imports only from the layers above it in this list):

- :mod:`deqexp.theory`: the result in formulas. ``families`` (sigma = a', a'', the losses),
  ``kernels``, ``filters`` (windowed kernels as conv filters), ``kglm`` (the exact kGLM solver).
- :mod:`deqexp.deq`: equilibrium layers. ``models`` (DenseDEQ, ConvDEQ), ``solvers`` (one
  signature, a result object), ``gradients`` (implicit, unrolled, one-step), ``operators``
  (convolutions, operator norms, Lanczos), ``linalg``, ``inits`` (kglm, naive, random).
- :mod:`deqexp.data`: ``datasets`` (the registry; importable from ``deqexp.data``) and
  ``readers`` (CIFAR-10 batches, MNIST IDX, TIFF folders).
- :mod:`deqexp.run`: one job. ``identity`` (what makes two runs the same run), ``schemas`` and
  ``config`` (composing them), ``validation``, ``build``, ``train``, ``optimizers``, ``runner``,
  ``checkpoints``, ``signals``, ``folder`` (owner, lock, completion), ``sinks`` (CSV, W&B,
  progress), ``tasks`` (E4 agreement, E5 timing), ``runs`` (``load_run``, ``deqexp eval``).
- :mod:`deqexp.sweep`: many jobs. ``cluster`` (the SLURM launcher), ``status`` (``deqexp status``),
  ``compare`` with ``collect``, ``arms``, ``measures``, ``stats``, ``compare_report``
  (``deqexp compare``).
- :mod:`deqexp.paper`: ``claims``, ``figures``, ``report`` (``deqexp report``), ``verify``.
- :mod:`deqexp.cli`: the ``deqexp`` command.

``deqexp.load_run``, ``deqexp.DenseDEQ``, ``deqexp.ConvDEQ`` and ``deqexp.fit_kglm`` are
importable from here. The flat layout's module paths (``deqexp.kglm``, ``deqexp.models``, ...)
were removed in 0.2.0: CHANGELOG.md lists where each module lives now.
"""
import importlib

__version__ = "0.2.0"

PUBLIC = {"load_run": "run.runs", "DenseDEQ": "deq.models", "ConvDEQ": "deq.models",
          "fit_kglm": "theory.kglm"}


def __getattr__(name):
    # lazily, so that importing the package does not import torch
    if name in PUBLIC:
        return getattr(importlib.import_module(f"{__name__}.{PUBLIC[name]}"), name)
    raise AttributeError(f"module 'deqexp' has no attribute {name!r}")
