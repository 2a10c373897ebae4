"""Help per key (issue 31, item 3): every schema key carries its meaning once, in the schema;
`deqexp explain`, `deqexp train --help KEY` and the docs' configuration reference print it."""
import dataclasses

import pytest

from deqexp.run import keys
from deqexp.run.schemas import Config, TrainerConf
from tests.test_guards import in_process as run_cli


def test_every_key_of_every_schema_says_what_it_means():
    # a key added without a comment beside it (or a block above it) fails here
    silent = [k.path for k in keys.all_keys() if not k.help.strip()]
    assert not silent, silent
    # every leaf of the Config schema is listed (data sets per data set)
    listed = {k.path for k in keys.all_keys()}
    assert {f"trainer.{f.name}" for f in dataclasses.fields(TrainerConf)
            if not dataclasses.is_dataclass(f.type) and f.name not in ("ensemble", "jac_reg")} <= listed
    assert {"solver.forward.tol", "solver.backward.gradient", "init.coupling", "model.spectral.learned",
            "trainer.jac_reg.every", "dataset[smooth].n_train", "search.trial"} <= listed
    groups = {p.split(".")[0].split("[")[0] for p in listed}
    assert {f.name for f in dataclasses.fields(Config)} <= groups


def test_comments_are_read_beside_under_and_above_a_field():
    source = '''class X:
    a: int = 1     # beside
                   # and under
    # above b
    b: str = "x"
    c: float = 0.5
'''
    assert keys._comments_in(source) == {"a": "beside and under", "b": "above b"}


@pytest.mark.parametrize("args", [["explain", "trainer.jac_reg"], ["train", "--help", "trainer.jac_reg"]])
def test_explain_prints_type_default_and_meaning(capsys, args):
    code, out = run_cli(capsys, *args)
    assert code == 0
    assert out.splitlines() == [
        "trainer.jac_reg.weight  (float, default 0.0)", "    0: off",
        "trainer.jac_reg.every  (int, default 1)", "    on every k-th training step"]


def test_an_unknown_key_is_one_line_with_the_nearest(capsys):
    code, out = run_cli(capsys, "explain", "solver.forward.tl")
    (line,) = out.strip().splitlines()
    assert code == 2 and line.startswith(
        "deqexp explain: error: no config key 'solver.forward.tl'; did you mean solver.forward.tol")


def test_the_configuration_reference_is_generated_from_the_schemas():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "write_docs.py"
    spec = importlib.util.spec_from_file_location("write_docs", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.OUT.read_text() == module.render(), "run: python scripts/write_docs.py"


def test_version_is_the_packages(capsys):
    import deqexp

    code, out = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"deqexp {deqexp.__version__}"
