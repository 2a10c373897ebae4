#!/usr/bin/env python3
"""deqexp benchmarks: one table, every ratio measured in the same run (`make bench`).

1. solvers at E1's size: forward + implicit backward, per solver and init, next to torchdeq's
   solvers of the same names (if torchdeq is installed: pip install -e '.[bench]');
2. one E1 training epoch: deqexp against a textbook DEQ written below (residual `.item()`
   every iteration, hook-based backward, input injection recomputed every iteration), same data,
   init, tolerance and max_iter;
2b. one E1 epoch at the paper's size per init, 1 and 2 threads: deqexp against the line-by-line
   re-implementation of the authors' loop that the fidelity tests carry (bench_authors.py);
3. ensemble scaling: epoch time for E members / (E x the one-member time);
4. one E2 epoch on 32x32 3-channel images: images per second, forward and backward.

Writes results/bench/bench.csv and bench.md. `--quick` shrinks every size (for the tests).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from deqexp.data import skimage_images, smooth  # noqa: E402
from deqexp.deq.gradients import GradientSettings  # noqa: E402
from deqexp.deq.inits import InitSpec, initialise  # noqa: E402
from deqexp.deq.models import ConvDEQ, DenseDEQ  # noqa: E402
from deqexp.deq.settings import SolverSettings  # noqa: E402
from deqexp.run.build import CPU_GROUP_VALUES  # noqa: E402
from deqexp.run.config import compose  # noqa: E402
from deqexp.theory.families import get_family  # noqa: E402
from deqexp.theory.kernels import build_kernel  # noqa: E402
from scripts.bench_authors import bench_authors  # noqa: E402

E1_KERNEL = build_kernel(**compose("kernel=e1").kernel)  # conf/kernel/e1.yaml
ROWS: list[dict] = []


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat: int) -> float:
    """Shortest wall time of ``fn()`` over ``repeat`` calls after one warm-up call (the least
    disturbed by other load on a shared machine)."""
    fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def add(section, case, metric, value, ratio=None, note=""):
    ROWS.append({"section": section, "case": case, "metric": metric, "value": value,
                 "ratio": ratio, "note": note})
    r = "" if ratio is None else f"  ratio {ratio:.3g}"
    print(f"[{section}] {case:<42} {metric:<22} {value:.4g}{r} {note}", flush=True)


def e1_model(init: str, solver: str, tol: float, max_iter: int, ensemble: int, device, dtype):
    data = smooth(0, n_train=1, n_test=1)
    n = data.x_in.shape[0]
    m = DenseDEQ(n, n, n, get_family("tanh"), ensemble, solver=SolverSettings(solver, tol, max_iter),
                 gradient=GradientSettings(solver, tol, max_iter), dtype=torch.float64)
    specs = [InitSpec(init, scale=1.0 if init == "kglm" else None)] * ensemble
    initialise(m, specs, list(range(ensemble)), kernel=E1_KERNEL, x_in=data.x_in, x_out=data.x_out)
    return m.to(device=device, dtype=dtype)


def e1_batch(n_train: int, members: int, device, dtype):
    ds = [smooth(s, n_train=n_train, n_test=1) for s in range(members)]
    x = torch.stack([d.train_input for d in ds]).to(device, dtype)
    y = torch.stack([d.train_target for d in ds]).to(device, dtype)
    return x, y


# --------------------------------------------------------------------------- 1. solvers
def bench_solvers(n_train, device, dtype, repeat, tol=1e-4, max_iter=50):
    x, y = e1_batch(n_train, 1, device, dtype)
    try:
        from torchdeq import get_deq
    except ImportError:
        get_deq = None
    names = {"forward": "fixed_point_iter", "anderson": "anderson", "broyden": "broyden"}
    for init in ("kglm", "random"):
        for solver in ("forward", "anderson", "broyden"):
            model = e1_model(init, solver, tol, max_iter, 1, device, dtype)

            def step():
                model.zero_grad()
                ((model(x) - y) ** 2).mean().backward()

            t = timed(step, device, repeat)
            with torch.no_grad():
                res = model.run(x).forward
            case = f"{init} {solver} (N={n_train}, tol={tol:g})"
            add("1 solvers", case, "deqexp s/step", t)
            add("1 solvers", case, "deqexp fwd iters", float(res.iterations.float().mean()))
            add("1 solvers", case, "deqexp fwd residual", float(res.residual.max()))
            if get_deq is None:
                continue
            deq = get_deq(f_solver=names[solver], b_solver=names[solver], f_max_iter=max_iter,
                          b_max_iter=max_iter, f_tol=tol, b_tol=tol, f_stop_mode="rel",
                          b_stop_mode="rel")
            info_box = {}

            def tdq_step():
                model.zero_grad()
                inj = model._inject(model.members(), x)[0]
                w = model.W[0]
                z_out, info = deq(lambda z: torch.tanh(z @ w.T + inj), torch.zeros_like(inj))
                info_box["info"] = info
                z = z_out[-1]
                out = z @ model.V[0].T + x[0] @ model.Q[0].T + model.c[0]
                ((out - y[0]) ** 2).mean().backward()

            t_tdq = timed(tdq_step, device, repeat)
            add("1 solvers", case, "torchdeq s/step", t_tdq, t / t_tdq, "ratio = deqexp / torchdeq")
            info = info_box["info"]
            add("1 solvers", case, "torchdeq fwd iters", float(info["nstep"].float().mean()))


def bench_adjoint(n_train, device, dtype, repeat, tol=1e-4, max_iter=50):
    """The implicit gradient's adjoint solve: fixed-point iteration against GMRES (which
    needs no contraction), on E1's kGLM model at init and with W scaled by 1.5 (an expansive map)."""
    x, y = e1_batch(n_train, 1, device, dtype)
    for scale in (1.0, 1.5):
        base = None
        for name in ("forward", "gmres"):
            model = e1_model("kglm", "anderson", tol, max_iter, 1, device, dtype)
            model.gradient = GradientSettings(name, tol, max_iter)
            with torch.no_grad():
                model.W.mul_(scale)
            box = {}

            def step():
                model.zero_grad()
                out = model.run(x)
                ((out.out - y) ** 2).mean().backward()
                box["bwd"] = out.backward.result

            t = timed(step, device, repeat)
            base = base or t
            case = f"kglm, norm of W x{scale:g}, adjoint {name} (N={n_train})"
            add("1b adjoint", case, "s/step", t, t / base, "ratio = / fixed-point adjoint")
            add("1b adjoint", case, "bwd iters", float(box["bwd"].iterations.float().mean()))
            add("1b adjoint", case, "bwd converged", float(box["bwd"].converged.float().mean()))


# --------------------------------------------------------------------------- 2. textbook
class TextbookDEQ(torch.nn.Module):
    """A DEQ as tutorials write it: nn.Linear layers, `.item()` residual checks, hook backward."""

    def __init__(self, n, tol, max_iter):
        super().__init__()
        self.W = torch.nn.Linear(n, n, bias=False)
        self.U = torch.nn.Linear(n, n)
        self.V = torch.nn.Linear(n, n)
        self.Q = torch.nn.Linear(n, n, bias=False)
        self.tol, self.max_iter = tol, max_iter

    def f(self, z, x):
        return torch.tanh(self.W(z) + self.U(x))

    def solve(self, g, z0):
        z = z0
        for _ in range(self.max_iter):
            gz = g(z)
            res = ((gz - z).norm() / (gz.norm() + 1e-12)).item()
            z = gz
            if res < self.tol:
                break
        return z

    def forward(self, x):
        with torch.no_grad():
            z = self.solve(lambda z: self.f(z, x), torch.zeros_like(x))
        z = self.f(z, x)
        if z.requires_grad:
            z0 = z.clone().detach().requires_grad_()
            f0 = self.f(z0, x)

            def hook(grad):
                return self.solve(lambda u: torch.autograd.grad(f0, z0, u, retain_graph=True)[0] + grad,
                                  grad)

            z.register_hook(hook)
        return self.V(z) + self.Q(x)


def bench_textbook(n_train, device, dtype, repeat, tol=1e-2, max_iter=25):
    """E1 epoch: the textbook DEQ against deqexp with the same solver and stopping rule (the
    residual of the whole batch, as the textbook and the paper), and with Anderson."""
    x, y = e1_batch(n_train, 1, device, dtype)
    book = TextbookDEQ(x.shape[-1], tol, max_iter).to(device, dtype)
    ref = e1_model("kglm", "forward", tol, max_iter, 1, device, dtype)
    with torch.no_grad():
        book.W.weight.copy_(ref.W[0])
        book.U.weight.copy_(ref.U[0])
        book.U.bias.copy_(ref.b[0])
        book.V.weight.copy_(ref.V[0])
        book.V.bias.copy_(ref.c[0])
        book.Q.weight.copy_(ref.Q[0])
        l_book = float(((book(x[0]) - y[0]) ** 2).mean())
    opt_book = torch.optim.Adam(book.parameters(), lr=1e-3)

    def epoch_book():
        opt_book.zero_grad()
        ((book(x[0]) - y[0]) ** 2).mean().backward()
        opt_book.step()

    t_book = timed(epoch_book, device, repeat)
    case = f"E1 epoch, kglm, N={n_train}, tol={tol:g}, max_iter={max_iter}"
    add("2 textbook", case, "textbook s/epoch", t_book)
    for solver, label in (("forward", "deqexp forward"), ("anderson", "deqexp anderson")):
        ours = e1_model("kglm", solver, tol, max_iter, 1, device, dtype)
        ours.solver.stop = ours.gradient.stop = "member"
        opt = torch.optim.Adam(ours.parameters(), lr=1e-3)

        def epoch_ours(model=ours, opt=opt):
            opt.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            opt.step()

        with torch.no_grad():
            l_ours = float(((ours(x) - y) ** 2).mean())
        t = timed(epoch_ours, device, repeat)
        add("2 textbook", case, f"{label} s/epoch", t, t / t_book, "ratio = deqexp / textbook")
        add("2 textbook", case, f"{label} fwd iters", float(ours.run(x).forward.iterations.float().mean()))
        add("2 textbook", case, f"{label} loss diff", abs(l_ours - l_book), None,
            "training loss at init, deqexp vs textbook")


# --------------------------------------------------------------------------- 3. ensembles
def bench_ensemble(n_train, device, dtype, repeat, sizes=(1, 4, 16, 64)):
    """Epoch time of E members / (E x one member): all members in one group, and in the
    runner's default groups (about 1M values each on a CPU; one group on a GPU)."""
    base = None
    auto = None if device.type != "cpu" else max(1, CPU_GROUP_VALUES // (n_train * 100))
    for e in sizes:
        x, y = e1_batch(n_train, e, device, dtype)
        for chunk in [None] + ([auto] if auto and auto < e else []):
            model = e1_model("kglm", "forward", 1e-2, 25, e, device, dtype)
            model.member_chunk = chunk
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)

            def epoch(model=model, opt=opt):
                opt.zero_grad()
                ((model(x) - y) ** 2).flatten(1).mean(1).sum().backward()
                opt.step()

            t = timed(epoch, device, repeat)
            base = base or t
            groups = "one group" if chunk is None else f"groups of {chunk}"
            add("3 ensemble", f"E={e} members, N={n_train} each, {groups}", "s/epoch", t,
                t / (e * base), "ratio = t(E) / (E t(1))")


# --------------------------------------------------------------------------- 4. E2 epoch
def bench_conv(n_images, device, dtype, repeat, members=(1, 100)):
    data = skimage_images(0, n_train=n_images, n_test=1)
    x = data.train_input[None].to(device, dtype)
    y = data.train_target[None].to(device, dtype)
    for e in members:
        # one scale for every member (0.9, inside the sweep's convergent range) so that the
        # members need similar iteration counts and images/s compare like with like
        specs = [InitSpec("kglm" if i % 2 == 0 else "random", scale=0.9) for i in range(e)]
        model = ConvDEQ(3, 5, get_family("relu"), e, solver=SolverSettings("forward", 1e-2, 50),
                        gradient=GradientSettings("forward", 1e-2, 50), readout="mean",
                        dtype=torch.float64)
        initialise(model, specs, list(range(e)), image_size=(32, 32))
        model = model.to(device, dtype)
        batch = 10

        def forward_only():
            with torch.no_grad():
                for i in range(0, n_images, batch):
                    model(x[:, i : i + batch])

        def train_epoch():
            for i in range(0, n_images, batch):
                model.zero_grad()
                ((model(x[:, i : i + batch]) - y[:, i : i + batch]) ** 2).flatten(1).mean(1).sum().backward()

        reps = repeat if e == 1 else 1
        tf = timed(forward_only, device, reps)
        tt = timed(train_epoch, device, reps)
        case = f"E2 epoch, {n_images} images, batch 10, E={e}"
        add("4 conv", case, "member-images/s fwd", n_images * e / tf)
        add("4 conv", case, "member-images/s train", n_images * e / tt)
        add("4 conv", case, "fwd iters (mean)", float(model.run(x[:, :10]).forward.iterations.float().mean()))


def bench_runner(device, repeat: int, quick: bool):
    """Where an epoch's time goes in the runner: the training pass against the evaluation of
    both splits and the operator norms that every logged epoch adds (trainer.eval_every)."""
    from deqexp.run.build import build_model, load_job_data, members_from_config
    from deqexp.run.metrics import evaluate, jacobian_norm, operator_norms
    from deqexp.run.optimizers import make_optimizer
    from deqexp.run.train import train_epoch

    cases = {"E1 default (smooth, 2,000 seq.)": ["dataset.n_train=200"] if quick else [],
             "binary digits, kernel logistic": ["family=bernoulli", "dataset=binary_digits", "kernel=se",
                                                *(["dataset.n_train=20"] if quick else [])],
             "E2 quick (conv, 36 members)": ["experiment=paper/e2_quick", "trainer.ensemble.seeds=1",
                                            *(["dataset.n_train=20"] if quick else [])]}
    for label, overrides in cases.items():
        cfg = compose(*overrides, "trainer.device=" + device.type)
        members = members_from_config(cfg)
        job = load_job_data(cfg, members, device, torch.float32)
        model = build_model(cfg, job, members, device, torch.float32)
        opt, sched = make_optimizer(cfg, model, 2)
        gens = [torch.Generator().manual_seed(1)]
        alive = torch.ones(len(members), dtype=torch.bool, device=device)
        bs, kind = cfg.trainer.batch_size, job.meta.loss
        step = lambda: train_epoch(model, job, opt, sched, gens, kind, bs, alive)  # noqa: E731
        t_train = timed(step, device, repeat)
        t_eval = timed(lambda: evaluate(model, job, job.test_x, job.test_y, kind, bs), device, repeat)
        t_train_split = timed(lambda: evaluate(model, job, job.train_x, job.train_y, kind, bs),
                              device, repeat)
        t_norm = timed(lambda: operator_norms(model, job), device, repeat)
        samples = cfg.trainer.jac_samples
        t_jac = timed(lambda: jacobian_norm(model, job, samples), device, repeat)
        add("5 runner", label, "train pass s/epoch", t_train)
        add("5 runner", label, "test-split evaluation s/epoch", t_eval, t_eval / t_train,
            "ratio = evaluation / train pass")
        add("5 runner", label, "training-split evaluation s/epoch", t_train_split, t_train_split / t_train,
            "only with trainer.eval_train=true (the paper presets); else first and last epochs")
        add("5 runner", label, "operator norms s/epoch", t_norm, t_norm / t_train,
            "ratio = norms / train pass; trainer.eval_every=k divides both")
        add("5 runner", label, f"jac_norm ({samples} samples) s/epoch", t_jac, t_jac / t_train,
            "ratio = jac_norm / train pass")
        add("5 runner", label, "diagnostics by default s/epoch", t_eval + t_norm + t_jac,
            (t_eval + t_norm + t_jac) / t_train, "test split + norms + jac_norm, per evaluated epoch")


def bench_compare(runs: int, epochs: int) -> None:
    """``deqexp compare`` over ``runs`` synthetic completed runs (2 inits x runs/2 seeds) of
    ``epochs`` epochs each: reading, measuring, comparing and writing (issue 26: <= 10 s for
    1,000 runs of 800 epochs on the 2-core machine)."""
    import tempfile

    import numpy as np
    import pandas as pd
    import yaml

    from deqexp.sweep.compare import run_compare
    from deqexp.sweep.compare_report import write_outputs

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for r in range(runs):
            init, seed = ("kglm", "random")[r % 2], r // 2
            d = root / f"init={init},trainer.seed={seed}"
            d.mkdir()
            (d / "config.yaml").write_text(yaml.safe_dump(
                {"dataset": {"name": "smooth"}, "init": {"name": init, "scale": None},
                 "trainer": {"seed": seed, "epochs": epochs}, "task": "train"}))
            loss = np.exp(-np.arange(epochs + 1) / epochs) + rng.random()
            pd.DataFrame({"member": 0, "seed": seed, "init": init, "scale": "",
                          "epoch": np.arange(epochs + 1),
                          "train_loss": loss, "test_loss": loss, "fwd_iters_mean": 5.0, "fwd_residual": 1e-5,
                          "jac_norm": 0.5, **{f"{s}_n_{o}": 4 for s in ("fwd", "bwd")
                                              for o in ("converged", "cap", "stalled", "nonfinite")},
                          "status": "ok"}).to_csv(d / "metrics.csv", index=False)
            for name, text in (("FINGERPRINT", "f" * 16), ("COMPLETE", "f" * 16), ("summary.json", "{}")):
                (d / name).write_text(text + "\n")
        t0 = time.perf_counter()
        c = run_compare([root])
        write_outputs(c, root / "compare", wandb=False)
        elapsed = time.perf_counter() - t0
    add("6 compare", f"{runs} runs x {epochs + 1} epochs", "s (read, compare, write)", elapsed,
        None, "target <= 10 s on the 2-core machine (issue 26)")


COMMANDS = (["--version"], ["train", "--help"], ["train", "--cfg", "job"], ["status", "sweep"],
            ["explain", "trainer.rng"])


def bench_commands(repeat: int) -> None:
    """Everyday commands (issue 31: none imports torch, wandb or matplotlib): the shortest wall
    time of a fresh ``deqexp ...`` process in an empty folder, and its ratio to ``--version``
    (Python's start-up and the package's import)."""
    import subprocess
    import tempfile

    from omegaconf import OmegaConf

    def best(argv) -> float:
        times = []
        with tempfile.TemporaryDirectory() as tmp:
            sweep = Path(tmp) / "sweep"  # 3 jobs of E2's quick sweep, one of them started
            (sweep / "trainer.seed=0").mkdir(parents=True)
            (sweep / "trainer.seed=0" / "FINGERPRINT").write_text("0" * 16 + "\n")
            OmegaConf.save({"hydra": {"overrides": {"task": ["experiment=paper/e2_quick"]},
                                      "sweeper": {"params": {"trainer.seed": "range(0,3)"}}}},
                           sweep / "multirun.yaml")
            for _ in range(repeat):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "deqexp.cli", *argv], cwd=tmp,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # status: exit 1
                times.append(time.perf_counter() - t0)
        return min(times)

    times = [best(argv) for argv in COMMANDS]
    for argv, t in zip(COMMANDS, times):
        add("7 commands", "deqexp " + " ".join(argv), "s (fresh process)", t, t / times[0],
            "ratio: to deqexp --version")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or "cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--n-train", type=int, default=20000, help="E1 sequences (default 20000)")
    parser.add_argument("--ensemble-n", type=int, default=None,
                        help="sequences per member in the scaling test (default: 2000 on CPU)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="+",
                        choices=["solvers", "adjoint", "textbook", "authors", "ensemble", "conv", "runner",
                                 "compare", "commands"],
                        help="run only these sections")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    dtype = torch.float32
    n = 200 if args.quick else args.n_train
    ens_n = 50 if args.quick else (args.ensemble_n or (2000 if device.type == "cpu" else n))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    header = (f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
              f"float32")
    print(header, flush=True)
    conv_images = 20 if args.quick or device.type == "cpu" else 200
    sections = {
        "solvers": lambda: bench_solvers(n, device, dtype, args.repeat),
        "adjoint": lambda: bench_adjoint(n, device, dtype, args.repeat),
        "textbook": lambda: bench_textbook(n, device, dtype, args.repeat),
        "authors": lambda: bench_authors(n, 50 if args.quick else 2000, device, dtype, args.repeat,
                                         timed, add),
        "ensemble": lambda: bench_ensemble(ens_n, device, dtype, args.repeat,
                                           (1, 4) if args.quick else (1, 4, 16, 64)),
        "conv": lambda: bench_conv(conv_images, device, dtype, args.repeat,
                                   (1, 4) if args.quick else (1, 100)),
        "runner": lambda: bench_runner(device, args.repeat, args.quick),
        "compare": lambda: bench_compare(50 if args.quick else 1000, 40 if args.quick else 800),
        "commands": lambda: bench_commands(args.repeat),
    }
    for name, run in sections.items():
        if not args.only or name in args.only:
            run()
    args.out.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    df = pd.DataFrame(ROWS)
    df.to_csv(args.out / "bench.csv", index=False)
    table = df.to_markdown(index=False, floatfmt=".4g", missingval="")
    (args.out / "bench.md").write_text(f"# deqexp benchmark\n\n{header}\n\n{table}\n")
    print(f"wrote {args.out / 'bench.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
