"""``deqexp verify``: kGLM-initialised DEQs against the exact kGLM solver, as a table.

For each family x kernel (and a convolutional case per padding) it draws data
from the family, builds the kGLM-initialised DEQ, runs its forward pass and
compares the fixed point and the predictions at new locations with the exact
solver's. Exit status 1 if any row fails.
"""
from __future__ import annotations

import argparse
import math

import torch

from ..deq.inits import InitSpec, initialise
from ..deq.models import ConvDEQ, DenseDEQ
from ..deq.settings import SolverSettings
from ..theory.families import FAMILIES, get_family
from ..theory.filters import grid_kernel_matrix
from ..theory.kernels import build_kernel
from ..theory.kglm import contraction_lambda, fit_kglm

DEFAULT_KERNELS = ("se", "matern32", "se*periodic")


def dense_row(fname: str, kname: str, n: int, solver: str, tol: float, seed: int,
              max_iter: int = 2000) -> dict:
    """One dense family x kernel check."""
    fam = get_family(fname, trials=3, classes=3)
    gen = torch.Generator().manual_seed(seed)
    x = torch.linspace(-3, 3, n, dtype=torch.float64)[:, None]
    xs = x[: n // 2] + 0.37
    kernel = build_kernel(kname, strict=False, lengthscale=1.0, period=3.0, period_lengthscale=1.4)
    k = kernel(x)
    theta = torch.sin(x[:, 0])
    t = fam.sample(theta[:, None].expand(n, fam.classes) if fam.classes else theta, gen)
    lam = contraction_lambda(fam, torch.linalg.matrix_norm(k, 2))
    exact = fit_kglm(k, t, fam, lam)
    model = DenseDEQ(n, n, len(xs), fam, dtype=torch.float64, solver=SolverSettings(solver, 1e-13, max_iter))
    initialise(model, [InitSpec("kglm", lam=lam)], [seed], kernel=kernel, x_in=x, x_out=xs)
    with torch.no_grad():
        z = model.fixed_point(t[None, None])[0, 0]
        run = model.run(t[None, None])
    return _row(fname, kname, n, lam, solver, run, z - exact.mean,
                run.out[0, 0] - exact.predict(kernel(xs, x))[0], tol, exact.converged)


def conv_row(padding: str, solver: str, tol: float, seed: int, size: int = 8,
             max_iter: int = 2000) -> dict:
    """A convolutional check: the conv DEQ against the dense kGLM with the windowed kernel."""
    fam = get_family("relu")
    model = ConvDEQ(2, 5, fam, padding=padding, readout="natural", dtype=torch.float64,
                    solver=SolverSettings(solver, 1e-13, max_iter))
    initialise(model, [InitSpec("kglm", scale=0.9, coupling=0.5)], [seed], image_size=(size, size))
    gen = torch.Generator().manual_seed(seed)
    t = torch.rand(1, 1, 2, size, size, generator=gen, dtype=torch.float64)
    k_over_lam = grid_kernel_matrix(model.U[0].detach(), size, size, padding)
    exact = fit_kglm(k_over_lam, t.reshape(-1), fam, 1.0)
    with torch.no_grad():
        z = model.fixed_point(t).reshape(-1)
        run = model.run(t)
    return _row("relu", f"conv 5x5 ({padding})", 2 * size * size, float("nan"), solver, run,
                z - exact.mean, run.out.reshape(-1) - exact.theta, tol, exact.converged)


def _row(family, kernel, n, lam, solver, run, dz, dpred, tol, exact_ok) -> dict:
    res = run.forward
    err_z, err_p = float(dz.abs().max()), float(dpred.abs().max())
    ok = exact_ok and bool(res.converged.all()) and err_z <= tol and err_p <= tol
    return {"family": family, "kernel": kernel, "n": n, "lambda": lam, "solver": solver,
            "iterations": int(res.iterations.max()), "max|dz|": err_z, "max|dpred|": err_p,
            "result": "pass" if ok else "FAIL"}


def format_table(rows: list[dict]) -> str:
    """Fixed-width text table of the rows (NaN shown as '-')."""
    from tabulate import tabulate

    clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
             for r in rows]
    return tabulate(clean, headers="keys", floatfmt=".3g", missingval="-", stralign="right")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deqexp verify",
        description="Check THEORY.md's result numerically: a DEQ whose weights are set to the kGLM "
                    "initialisation solves the kGLM in its forward pass. For each family x kernel "
                    "(and a convolutional DEQ per padding) it compares the DEQ's fixed point z* "
                    "and its predictions at new locations with an exact damped-Newton solve "
                    "(float64). Exits 1 if any row differs by more than --tol.")
    parser.add_argument("--families", nargs="+", default=sorted(FAMILIES), choices=sorted(FAMILIES))
    parser.add_argument("--kernels", nargs="+", default=list(DEFAULT_KERNELS),
                        help="kernel names, products as 'se*periodic' (default: %(default)s)")
    parser.add_argument("--n", type=int, default=30, help="observations per sample (default: 30)")
    parser.add_argument("--solver", default="anderson", choices=["forward", "anderson", "broyden"])
    parser.add_argument("--tol", type=float, default=1e-6, help="pass threshold (default: 1e-6)")
    parser.add_argument("--max-iter", type=int, default=2000, help="solver iterations (default: 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-conv", action="store_true", help="skip the convolutional rows")
    args = parser.parse_args(argv)
    rows = [dense_row(f, k, args.n, args.solver, args.tol, args.seed, args.max_iter)
            for f in args.families for k in args.kernels]
    if not args.no_conv:
        rows += [conv_row(p, args.solver, args.tol, args.seed, max_iter=args.max_iter)
                 for p in ("zeros", "circular")]
    print(format_table(rows))
    failed = sum(r["result"] != "pass" for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0
