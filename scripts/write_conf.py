#!/usr/bin/env python3
"""Write conf/<group>/<name>.yaml for every option that the registries and schemas define
(deqexp.run.config.registry_options): one file per data set, family, base kernel, solver and
init, and the schemas' defaults (model=dense, optim=adam, trainer, logger, paths). Run it after
changing a default in Python; tests/test_configs.py fails until the files match.

    python scripts/write_conf.py            # rewrite them
    python scripts/write_conf.py --check    # exit 1 if any differs
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omegaconf import OmegaConf

from deqexp.run.config import CONF_DIR, dataset_schema_name, registry_options

WHERE = {"dataset": "deqexp.data.datasets", "family": "deqexp.theory.families",
         "kernel": "deqexp.theory.kernels", "solver": "deqexp.deq.solvers (SolverSettings)",
         "init": "deqexp.deq.inits (InitSpec)", "model": "deqexp.run.schemas (ModelConf)",
         "optim": "deqexp.run.schemas (OptimConf)", "trainer": "deqexp.run.schemas (TrainerConf)",
         "logger": "deqexp.run.schemas (LoggerConf)", "paths": "deqexp.run.schemas (PathsConf)"}


def _summary(group: str, name: str) -> str:
    """One line on what the option is, from the registry entry's docstring where it has one."""
    from deqexp.data.datasets import DATASETS
    from deqexp.deq.solvers import SOLVERS
    from deqexp.theory.kernels import BASE_KERNELS

    table = {"dataset": DATASETS, "solver": SOLVERS, "kernel": BASE_KERNELS}.get(group, {})
    doc = (getattr(table.get(name), "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def text(group: str, name: str, node) -> str:
    """The YAML of one option: a header, the schema it extends (data sets), its values."""
    lines = [f"# {group}={name}: {_summary(group, name)}".rstrip(": "),
             f"# The values of {WHERE[group]}; copy this file into your own --config-dir",
             f"# ({group}/yourname.yaml) to make a variant. Written by scripts/write_conf.py."]
    if group == "dataset":
        lines += ["defaults:", f"  - /{dataset_schema_name(name)}@_here_   # the schema: types, "
                               "unknown keys refused", "  - _self_"]
    body = OmegaConf.to_yaml(OmegaConf.structured(node))
    return "\n".join(lines) + "\n" + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report files that differ; write nothing")
    args = parser.parse_args()
    stale = []
    for (group, name), node in registry_options().items():
        path = Path(CONF_DIR) / group / f"{name}.yaml"
        want = text(group, name, node)
        if path.exists() and path.read_text() == want:
            continue
        stale.append(str(path))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(want)
    verb = "differ" if args.check else "written"
    print(f"{len(stale)} file(s) {verb}" + "".join(f"\n  {p}" for p in stale))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
