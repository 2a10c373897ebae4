"""`deqexp verify`: the table passes on the defaults and fails (exit 1) when the solve is cut short."""
from deqexp.paper.verify import main


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
    from deqexp.run.identity import folder_name as _dirname

    a, b = ["x=" + "1" * 300, "y=1"], ["x=" + "1" * 300, "y=2"]
    assert len(_dirname(a)) <= 200 and _dirname(a) != _dirname(b)
    assert _dirname([]) == "defaults" and _dirname(["init=kglm"]) == "init=kglm"


def test_folder_names_leave_out_only_keys_that_do_not_change_results():
    from deqexp.run.identity import folder_name as _dirname

    # sorted, so the order on the command line does not matter
    assert _dirname(["trainer.seed=1", "init=naive"]) == _dirname(["init=naive", "trainer.seed=1"])
    assert _dirname(["init=naive", "trainer.threads=1", "logger.wandb.mode=online", "force=true",
                     "name=x", "paths.output=/tmp"]) == "init=naive"
    # experiment and data folder change results: they name the folder (issue: shared folders)
    assert _dirname(["experiment=paper/e1_smoke"]) != _dirname(["experiment=paper/e6_smoke"])
    assert _dirname(["paths.data=/a"]) != _dirname(["paths.data=/b"])
    assert _dirname(["+trainer.threadsx=1"]) != "defaults"  # a prefix match, not a substring
