"""Finished runs: reload one (:func:`load_run`) and evaluate it again, on its own data set or
another one (``deqexp eval RUN_DIR [key=value ...]``)."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .build import JobData, Member, build_model, load_job_data, members_from_config, resolve_device
from .checkpoints import MODEL, atomic_replace
from .metrics import Totals, all_norms, evaluate, rows
from .schemas import Config, ConfigError
from .sinks import CsvLog, metric_columns
from .validation import validate


@dataclass
class LoadedRun:
    """A finished run: its resolved config, its members, the data it was built on and its
    model with the saved parameters."""

    cfg: object
    members: list[Member]
    job: JobData
    model: torch.nn.Module


# what an evaluation may change: the data and how the fixed point is solved; everything else
# (model, init, kernel, family, optimiser, training) is fixed by the saved parameters
EVAL_GROUPS = ("dataset", "solver")
EVAL_KEYS = ("trainer.batch_size", "trainer.jac_samples", "trainer.dtype")


def _saved_config(folder: Path):
    try:
        saved = OmegaConf.load(folder / "config.yaml")
    except Exception as err:  # yaml's own parser errors
        raise ConfigError(f"{folder / 'config.yaml'} is not readable YAML ({type(err).__name__}); "
                          "the run's folder is damaged: rerun the training with force=true") from None
    if not isinstance(saved, DictConfig) or not {"dataset", "model", "trainer"} <= set(saved.keys()):
        raise ConfigError(f"{folder / 'config.yaml'} is empty or holds no run's config; the run's folder "
                          "is damaged: rerun the training with force=true")
    try:  # typed again by the schema (the saved file is plain YAML)
        return OmegaConf.merge(OmegaConf.structured(Config), saved)
    except Exception as err:
        raise ConfigError(f"{folder / 'config.yaml'} does not fit deqexp's config schema "
                          f"({str(err).splitlines()[0]}); was it written by another version?") from None


def _typed(key: str, value, current):
    """``value`` (parsed from the command line) as ``current``'s type, or a ConfigError."""
    if current is None or isinstance(value, type(current)):
        return value
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{key}={value!r} is not valid: the run's value is {current!r} "
                      f"({type(current).__name__})")


def apply_overrides(cfg, overrides) -> None:
    """Apply ``deqexp eval``'s overrides to a run's config: ``group=option`` replaces the group
    (as Hydra composes it), ``key=value`` sets a key the config has, with its type."""
    from .config import compose

    if isinstance(overrides, str) or not all(isinstance(o, str) for o in overrides):
        raise ConfigError(f"overrides must be a list of 'key=value' strings, got {overrides!r}")
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. dataset.n_test=1000)")
        group = key.split(".", 1)[0]
        if group not in EVAL_GROUPS and key not in EVAL_KEYS:
            raise ConfigError(f"{key} cannot change at evaluation: the saved parameters fix the model, "
                              f"its init, kernel, family and training; change "
                              f"{', '.join(g + '[.KEY]' for g in EVAL_GROUPS)} or {', '.join(EVAL_KEYS)}")
        if "." not in key:  # a group switch: the option as Hydra composes it
            try:
                cfg[key] = compose(f"{key}={raw}")[key]
            except Exception as err:
                raise ConfigError(f"{key}={raw}: {str(err).splitlines()[0]}") from None
            continue
        current = OmegaConf.select(cfg, key, default="<missing>")
        if current == "<missing>":
            raise ConfigError(f"unknown key '{key}' in the run's config")
        value = OmegaConf.from_dotlist([f"v={raw}"]).v
        OmegaConf.update(cfg, key, _typed(key, value, current), merge=False)


def _saved_parameters(folder: Path, which: str, device) -> dict:
    """model.pt's ``which`` state (tensors only: nothing executable is unpickled)."""
    try:
        saved = torch.load(folder / MODEL, map_location=device, weights_only=True)
        return saved[which]
    except Exception as err:
        raise ConfigError(f"{folder / MODEL} is not a readable deqexp model ({type(err).__name__}); "
                          "rerun the training with force=true") from None


def load_run(path, which: str = "final", overrides: list[str] = (), device: str = "cpu") -> LoadedRun:
    """The run in folder ``path`` with its ``final`` or ``best`` parameters (the best per member,
    by validation loss where the run has a validation split, else by test loss); ``overrides``
    change what :data:`EVAL_GROUPS` / :data:`EVAL_KEYS` allow first: the data set
    (``dataset=images``, ``dataset.n_test=1000``) or the solver."""
    if path is None or not isinstance(path, (str, Path)):
        raise ConfigError(f"load_run needs a run's folder (a path), got {path!r}")
    folder = Path(path)
    if not (folder / MODEL).exists() or not (folder / "config.yaml").exists():
        raise ConfigError(f"{folder} holds no saved model (model.pt and config.yaml); point to the "
                          "folder of a finished run")
    if which not in ("final", "best"):
        raise ConfigError(f"which={which!r}: choose final or best")
    cfg = _saved_config(folder)
    apply_overrides(cfg, overrides)
    validate(cfg)
    dev = resolve_device(device)
    dtype = torch.float64 if cfg.trainer.dtype == "float64" else torch.float32
    members = members_from_config(cfg)
    job = load_job_data(cfg, members, dev, dtype)
    model = build_model(cfg, job, members, dev, dtype)
    try:
        model.load_state_dict(_saved_parameters(folder, which, dev))
    except RuntimeError as err:  # shapes that do not fit, e.g. another data set's locations
        why = str(err).splitlines()[-1].strip()
        raise ConfigError(f"the saved model does not fit this data set ({why}); a dense DEQ's "
                          "width is its data's number of locations") from None
    model.eval()
    return LoadedRun(cfg, members, job, model)


def evaluate_run(run: LoadedRun) -> list[dict]:
    """metrics.csv-style rows (one per member) of the run's model on its data set now."""
    cfg, job, model = run.cfg, run.job, run.model
    kind, bs = job.meta.loss, cfg.trainer.batch_size
    test = evaluate(model, job, job.test_x, job.test_y, kind, bs)
    train = evaluate(model, job, job.train_x, job.train_y, kind, bs)
    val = evaluate(model, job, job.val_x, job.val_y, kind, bs) if job.val_x is not None else None
    alive = torch.isfinite(test["loss"])
    norms = all_norms(model, job, cfg.trainer.jac_samples)
    return rows(run.members, -1, train, test, Totals(), norms, 0.0, alive, val)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deqexp eval",
        description="Evaluate a finished run's saved model (model.pt) again, on its own data set "
                    "or with overrides of the data and the solver: dataset=NAME (a group switch), "
                    "dataset.n_test=1000, solver.forward.tol=1e-8, trainer.batch_size=...; prints "
                    "the same metrics as training and writes them to eval.csv in the run's folder.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*",
                        help="dataset[.KEY]=..., solver[.KEY]=..., trainer.batch_size|jac_samples|dtype=...")
    parser.add_argument("--which", default="final", choices=["final", "best"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="CSV path (default: RUN_DIR/eval.csv)")
    args = parser.parse_args(argv)
    out = args.out or args.run_dir / "eval.csv"
    try:
        _check_writable(out)
        found = evaluate_run(load_run(args.run_dir, args.which, args.overrides, args.device))
    except (ConfigError, ValueError) as err:
        print(f"deqexp eval: error: {err}", file=sys.stderr)
        return 2
    for r in found:
        print(f"member {r['member']} ({r['init']}, seed {r['seed']}): test loss {r['test_loss']:.6g}, "
              f"train loss {r['train_loss']:.6g}, converged {r['converged_frac']:.0%}")
    try:
        atomic_replace(out, lambda tmp: _write_rows(tmp, found))
    except OSError as err:
        print(f"deqexp eval: error: --out {out} could not be written ({err.strerror}); the metrics above "
              "are all there is: choose another path", file=sys.stderr)
        return 2
    return 0


def _write_rows(path: Path, found: list[dict]) -> None:
    log = CsvLog(path, metric_columns("val_loss" in found[0]))
    log.log(found)
    log.close()


def _check_writable(out: Path) -> None:
    """Refuse, before the evaluation, an ``--out`` that is a folder or whose folder cannot take a
    file (probed by writing one: ``os.access`` says yes to root on /proc)."""
    parent = out.parent if str(out.parent) else Path(".")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name, e.g. {out / 'eval.csv'}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".deqexp-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ConfigError(f"--out {out}: {parent} is not a folder you can write to ({err.strerror}); "
                          "choose another path") from None
