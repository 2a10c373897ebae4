"""Finished runs: reload one (:func:`load_run`) and evaluate it again, on its own data set or
another one (``deqexp eval RUN_DIR [key=value ...]``)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .build import JobData, Member, build_model, load_job_data, members_from_config, resolve_device
from .checkpoints import MODEL
from .config import Config, ConfigError
from .logging import CsvLog
from .train import Totals, all_norms, evaluate, rows


@dataclass
class LoadedRun:
    """A finished run: its resolved config, its members, the data it was built on and its
    model with the saved parameters."""

    cfg: object
    members: list[Member]
    job: JobData
    model: torch.nn.Module


def load_run(path, which: str = "final", overrides: list[str] = (), device: str = "cpu") -> LoadedRun:
    """The run in folder ``path`` with its ``final`` or ``best`` parameters (the best by test
    loss, per member); ``overrides`` (``key=value``) change its config first, e.g. the data set."""
    folder = Path(path)
    if not (folder / MODEL).exists() or not (folder / "config.yaml").exists():
        raise ConfigError(f"{folder} holds no saved model (model.pt and config.yaml); point to the "
                          "folder of a finished run")
    if which not in ("final", "best"):
        raise ConfigError(f"which={which!r}: choose final or best")
    # typed again by the schema (the saved file is plain YAML)
    cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(folder / "config.yaml"))
    for item in overrides:
        key, _, value = item.partition("=")
        if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
            raise ConfigError(f"unknown key '{key}' in the run's config")
        OmegaConf.update(cfg, key, OmegaConf.from_dotlist([f"v={value}"]).v, merge=False)
    dev = resolve_device(device)
    dtype = torch.float64 if cfg.trainer.dtype == "float64" else torch.float32
    members = members_from_config(cfg)
    job = load_job_data(cfg, members, dev, dtype)
    model = build_model(cfg, job, members, dev, dtype)
    saved = torch.load(folder / MODEL, map_location=dev, weights_only=False)
    model.load_state_dict(saved[which])
    model.eval()
    return LoadedRun(cfg, members, job, model)


def evaluate_run(run: LoadedRun) -> list[dict]:
    """metrics.csv-style rows (one per member) of the run's model on its data set now."""
    cfg, job, model = run.cfg, run.job, run.model
    kind, bs = job.meta.loss, cfg.trainer.batch_size
    test = evaluate(model, job, job.test_x, job.test_y, kind, bs)
    train = evaluate(model, job, job.train_x, job.train_y, kind, bs)
    alive = torch.isfinite(test["loss"])
    norms = all_norms(model, job, cfg.trainer.jac_samples)
    return rows(run.members, -1, train, test, Totals(), norms, 0.0, alive)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="deqexp eval",
        description="Evaluate a finished run's saved model (model.pt) again, on its own data set "
                    "or with overrides such as dataset.n_test=1000 or dataset=... ; prints the "
                    "same metrics as training and writes them to eval.csv in the run's folder.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("overrides", nargs="*", help="key=value changes to the run's config")
    parser.add_argument("--which", default="final", choices=["final", "best"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="CSV path (default: RUN_DIR/eval.csv)")
    args = parser.parse_args(argv)
    try:
        found = evaluate_run(load_run(args.run_dir, args.which, args.overrides, args.device))
    except (ConfigError, ValueError) as err:
        print(f"deqexp eval: error: {err}")
        return 2
    for r in found:
        print(f"member {r['member']} ({r['init']}, seed {r['seed']}): test loss {r['test_loss']:.6g}, "
              f"train loss {r['train_loss']:.6g}, converged {r['converged_frac']:.0%}")
    log = CsvLog(args.out or args.run_dir / "eval.csv")
    log.log(found)
    log.close()
    return 0
