"""deqexp report counts only the runs of a profile's presets, and guards the committed report."""
import json

import numpy as np
import pandas as pd

from deqexp.paper import presets, report
from deqexp.run.identity import MARKER
from tests.test_claims import _curves


def _fake_run(root, exp, profile, name, fingerprint, finals):
    d = root / "runs" / "paper" / exp / profile / name
    d.mkdir(parents=True)
    df = _curves(finals)
    df["jac_norm"] = 1.0
    df.to_csv(d / "metrics.csv", index=False)
    (d / "FINGERPRINT").write_text(fingerprint + "\n")
    (d / "summary.json").write_text("{}")
    (d / MARKER).write_text("")
    return d


def test_only_the_presets_runs_count_and_the_others_are_listed(tmp_path):
    (fp,) = presets.preset_fingerprints("e1", "smoke")
    five = [0.1 * i for i in range(1, 9)]  # 8 seeds: each test's p = 2/256, Holm over 2: 1/64
    _fake_run(tmp_path, "e1", "smoke", "experiment=paper_e1_smoke", fp,
              {"kglm": five, "naive": [v + 0.1 + v / 10 for v in five],
               "random": [v + 0.2 + v / 10 for v in five]})
    # the same preset with trainer.epochs=3 added: another fingerprint, and kglm loses there
    other = _fake_run(tmp_path, "e1", "smoke", "experiment=paper_e1_smoke,trainer.epochs=3", "0123abcd",
                      {"kglm": [v + 0.5 for v in five], "naive": five, "random": five})
    out = tmp_path / "out"
    ctx = report.Context(tmp_path, "smoke", out)
    found = report.report(ctx)
    assert found["e1"]["verdict"] == "held" and found["e1"]["runs"] == 1
    assert "over 8 seeds" in found["e1"]["evidence"]
    assert ctx.found["e1"].others == [other] and ctx.found["e1"].complete
    text = (out / "REPORT.md").read_text()
    assert "## Other runs (not counted)" in text and "trainer.epochs=3" in text
    assert json.loads((out / "claims.json").read_text())["e1"]["held"] is True
    missing = report.incomplete(report.Context(tmp_path, "smoke", out))
    assert "e1" not in missing and missing["e2"] == "0 of 1 jobs"


def test_the_report_corrects_its_verdicts_tests_together(tmp_path):
    # 6 seeds, every one won against both: each test's raw p = 2/64 = 0.031 would hold alone;
    # Holm over the report's two tests makes both 0.0625, so the claim is inconclusive
    (fp,) = presets.preset_fingerprints("e1", "smoke")
    six = [0.1 * i for i in range(1, 7)]
    _fake_run(tmp_path, "e1", "smoke", "experiment=paper_e1_smoke", fp,
              {"kglm": six, "naive": [v + 0.1 + v / 10 for v in six],
               "random": [v + 0.3 + v / 7 for v in six]})
    out = tmp_path / "out"
    found = report.report(report.Context(tmp_path, "smoke", out))
    assert found["e1"]["verdict"] == "inconclusive"
    assert "Wilcoxon signed-rank p = 0.0312, Holm-adjusted p = 0.0625" in found["e1"]["evidence"]
    tests = pd.read_csv(out / "corrected_tests.csv").set_index("test")
    assert list(tests.index) == ["e1: kglm vs naive", "e1: kglm vs random"]
    assert np.allclose(tests.p_wilcoxon, 1 / 32) and np.allclose(tests.p_holm, 1 / 16)
    text = (out / "REPORT.md").read_text()
    assert "Holm-adjusted over the 2 tests" in text and "## The corrected tests" in text


def test_the_committed_report_is_written_only_from_a_complete_profile(tmp_path, monkeypatch, capsys):
    committed = tmp_path / "results" / "paper"
    monkeypatch.setattr(report, "COMMITTED", committed)
    (fp,) = presets.preset_fingerprints("e1", "smoke")
    _fake_run(tmp_path, "e1", "smoke", "x", fp, {"kglm": [0.1], "naive": [0.2]})
    rc = report.main(["--profile", "smoke", "--root", str(tmp_path), "--out", str(committed)])
    err = capsys.readouterr().err
    assert rc == 2 and not committed.exists()
    assert "not complete" in err and "e2: 0 of 1 jobs" in err and "--overwrite-results" in err
    assert report.main(["--profile", "smoke", "--root", str(tmp_path), "--out", str(committed),
                        "--overwrite-results"]) == 0
    assert (committed / "REPORT.md").exists()
    # the default goes to ROOT/report/PROFILE, whatever is complete
    assert report.main(["--profile", "smoke", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "report" / "smoke" / "REPORT.md").exists()
