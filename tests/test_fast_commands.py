"""Everyday commands load no torch, wandb or matplotlib (issue 31, item 5): their times are in
``make bench`` (section ``commands``); here only what they import, in one fresh process. The
config schemas read the data sets' options from source (:mod:`deqexp.data.signatures`), so
that reading must equal ``inspect``'s on the imported functions."""
import inspect
import subprocess
import sys
import typing

import pytest
from omegaconf import OmegaConf

from deqexp.data import signatures

HEAVY = ("torch", "wandb", "matplotlib")
SCRIPT = """
import sys
from deqexp.cli import main
for argv in {commands!r}:
    try:
        main(argv)
    except SystemExit:
        pass
    print("HEAVY", " ".join(argv[:2]), sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def test_everyday_commands_import_no_torch_wandb_or_matplotlib(tmp_path):
    sweep = tmp_path / "sweep"  # a sweep whose first job left a folder: status composes its config
    (sweep / "trainer.seed=0").mkdir(parents=True)
    (sweep / "trainer.seed=0" / "FINGERPRINT").write_text("0" * 16 + "\n")
    saved = {"hydra": {"overrides": {"task": ["experiment=paper/e2_quick"]},
                       "sweeper": {"params": {"trainer.seed": "range(0,2)"}}}}
    OmegaConf.save(saved, sweep / "multirun.yaml")
    commands = [["--version"], ["--help"], ["train", "--help"], ["train", "--cfg", "job"],
                ["explain", "solver.forward"], ["status", str(sweep)]]
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(commands=commands, heavy=HEAVY)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = [line for line in out.stderr.splitlines() if line.startswith("HEAVY")]
    assert len(lines) == len(commands), out.stderr[-2000:]
    assert all(line.endswith("[]") for line in lines), lines
    assert "stale" in out.stdout or "trainer.seed=0" in out.stdout  # status did read the job


@pytest.mark.parametrize("name", sorted(signatures.registry()))
def test_the_options_read_from_source_are_the_functions_own(name):
    from deqexp.data.datasets import DATASETS

    fn = DATASETS[name]
    hints = typing.get_type_hints(fn)
    expect = [(p.name, p.default) for p in inspect.signature(fn).parameters.values()
              if p.default is not inspect.Parameter.empty]
    got = signatures.options(name)
    assert [(o.name, o.default) for o in got] == expect
    for o in got:  # the annotation as written names the type the function declares
        assert eval(o.annotation, vars(typing), {"str": str}) == hints[o.name] or (
            o.annotation.replace(" ", "") in ("str|None",) and hints[o.name] == typing.Optional[str]), o
    assert signatures.description(name) == inspect.getdoc(fn)


def test_the_torch_free_solver_names_are_the_registrys():
    from deqexp.deq.settings import SOLVER_NAMES
    from deqexp.deq.solvers import SOLVERS

    assert SOLVER_NAMES == tuple(SOLVERS)
