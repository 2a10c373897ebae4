"""`deqexp verify`: the table passes on the defaults and fails (exit 1) when the solve is cut short."""
from deqexp.verify import main


def test_verify_passes(capsys):
    assert main(["--kernels", "se", "matern32", "se*periodic"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "26 passed, 0 failed" in out
    for family in ("gaussian", "bernoulli", "binomial", "poisson", "spin", "categorical", "relu"):
        assert family in out
    assert "conv 5x5 (zeros)" in out and "conv 5x5 (circular)" in out


def test_verify_fails_when_not_converged(capsys):
    assert main(["--families", "bernoulli", "--kernels", "se", "--max-iter", "2", "--no-conv"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_long_run_folder_names_stay_distinct():
    from deqexp.cli import _dirname

    a, b = "x=" + "1" * 300 + ",y=1", "x=" + "1" * 300 + ",y=2"
    assert len(_dirname(a)) <= 200 and _dirname(a) != _dirname(b)
    assert _dirname("") == "defaults" and _dirname("init=kglm") == "init=kglm"
