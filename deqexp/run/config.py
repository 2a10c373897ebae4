"""The run configuration: structured dataclasses registered with Hydra's ConfigStore.

One source of truth: the schemas and their defaults live here (the ``dataset`` schemas are
generated from the data-set functions' signatures, the solver settings are
:class:`deqexp.deq.settings.SolverSettings`), and the registries (families, kernels, solvers,
inits, data sets) give one option per entry (:func:`registry_options`). Every option of
every group is a YAML file under ``conf/<group>/`` that a user can read and copy (into their
own ``--config-dir``); the schema types each group, so a misspelt key in any of them is an
error naming the file, and :func:`validate` rejects invalid values before any training. The
files that hold registry options are written from the schemas by ``scripts/write_conf.py``
and kept equal to them by a test.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from ..data.signatures import registry as datasets
from ..deq.init_spec import DEFAULT_SCALE, INITS, InitSpec
from ..deq.settings import LINEAR_ONLY, SOLVER_NAMES, GradientSettings, SolverSettings
from .identity import folder_name, identify, resolve_data_paths
from .schemas import (
    Config,
    FamilyConf,
    KernelConf,
    LoggerConf,
    ModelConf,
    OptimConf,
    PathsConf,
    SolverConf,
    TrainerConf,
    dataset_schema,
)


def registry_options() -> dict[tuple[str, str], Any]:
    """The group options that the registries and schemas define, ``(group, name) -> node``:
    one per data set, family, base kernel, solver and init, and each schema's defaults.
    ``conf/<group>/<name>.yaml`` holds the same values for users to read and copy (written by
    ``scripts/write_conf.py``; a test keeps the files equal to these nodes)."""
    from ..theory.families import FAMILIES  # torch: only when the options are listed
    from ..theory.kernels import BASE_KERNELS

    out: dict[tuple[str, str], Any] = {}
    for name in datasets():
        out["dataset", name] = dataset_schema(name)()
    for name in FAMILIES:
        out["family", name] = FamilyConf(name=name)
    for name in [*BASE_KERNELS, "se*periodic"]:
        out["kernel", name.replace("*", "_x_")] = KernelConf(name=name)
    for name in [s for s in SOLVER_NAMES if s not in LINEAR_ONLY]:  # both solves: the backward one
        # must converge too (gmres solves the backward only: solver.backward.name=gmres)
        out["solver", name] = SolverConf(forward=SolverSettings(name=name),
                                         backward=GradientSettings(name=name))
    for name in INITS:
        out["init", name] = InitSpec(name=name, scale=DEFAULT_SCALE[name])
    out["model", "dense"] = ModelConf(kind="dense")
    out["optim", "adam"] = OptimConf()
    out["trainer", "default"] = TrainerConf()
    out["logger", "default"] = LoggerConf()
    out["paths", "default"] = PathsConf()
    return out


def dataset_schema_name(name: str) -> str:
    """The ConfigStore name of data set ``name``'s schema, which its YAML option extends."""
    return f"deqexp_dataset_{name}"


def register() -> None:
    """Register the schemas with Hydra's ConfigStore: the whole config's (every group but
    ``dataset`` is typed by it) and each data set's, which its YAML option extends. The
    options themselves are the YAML files under conf/<group>/."""
    cs = ConfigStore.instance()
    cs.store(name="deqexp_schema", node=Config)
    for name in datasets():
        cs.store(name=dataset_schema_name(name), node=dataset_schema(name))


CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


# --------------------------------------------------------------------------- resolvers
def _logspace(*args) -> list[float]:
    """``${deqexp_logspace:a,b,n[,a2,b2,n2,...]}``: concatenated numpy-style logspaces."""
    import numpy as np

    out = []
    for i in range(0, len(args), 3):
        out += [float(v) for v in np.logspace(float(args[i]), float(args[i + 1]), int(args[i + 2]))]
    return out


def register_resolvers() -> None:
    from omegaconf import OmegaConf

    for name, fn in (("deqexp_dirname", folder_name), ("deqexp_logspace", _logspace)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def compose(*overrides: str, hydra: bool = False):
    """The config ``deqexp train OVERRIDES`` would run (in-process, Hydra's compose API);
    with ``hydra=True`` the ``hydra`` node too (launcher, sweeper)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register()
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR, job_name="train"):
        return hydra_compose("config", list(overrides), return_hydra_config=hydra)


def job_fingerprints(jobs: list[list[str]], config_dirs: list[str] = ()) -> list[str]:
    """The fingerprint (:func:`deqexp.run.identity.fingerprint`) each job, given by its
    overrides, would run with now: composed afresh, so a changed preset, default or data file
    gives another fingerprint. ``config_dirs``: the sweep's ``--config-dir`` folders."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register()
    register_resolvers()
    extra = [f"hydra.searchpath=[{','.join('file://' + str(Path(d).resolve()) for d in config_dirs)}]"] \
        if config_dirs else []
    out = []
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR, job_name="train"):
        for job in jobs:
            cfg = hydra_compose("config", [*extra, *job])
            OmegaConf.resolve(cfg)
            resolve_data_paths(cfg)  # as train does
            out.append(identify(cfg)[0])
    return out
