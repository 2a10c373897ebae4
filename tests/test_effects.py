"""Every setting reaches the model or is refused (issue 29, item 1, and the door checks of item
2): each schema key declares when it has an effect; a key given where it has none is one line
naming the switch it needs; a repeated key, a group given a list and a name that leaves the
output folder are refused before anything runs."""
import pytest

from deqexp import cli
from deqexp.run.effects import ALWAYS, NEEDS, check_effects, declared
from deqexp.run.keys import all_keys
from deqexp.run.schemas import ConfigError
from tests.compose import compose_config


def test_every_schema_key_declares_when_it_has_an_effect():
    silent = [k.path for k in all_keys() if declared(k.path.replace("[", ".").split("]")[0]) is None
              and declared(k.path) is None]
    assert not silent, f"declare these in deqexp/run/effects.py: {silent}"
    assert not set(NEEDS) & set(ALWAYS)


@pytest.mark.parametrize("given, needs", [
    (["model.spectral.target=2.0"], "model.recurrence=spectral"),
    (["model.monotone.margin=0.5"], "model.recurrence=monotone"),
    (["trainer.jac_reg.every=3"], "trainer.jac_reg.weight > 0"),
    (["solver.backward.gradient=unrolled", "solver.backward.name=anderson"],
     "solver.backward.gradient=implicit"),
    (["solver.backward.gradient=onestep", "solver.backward.tol=1e-6"], "solver.backward.gradient=implicit"),
    (["family.trials=5"], "family.name=binomial"),
    (["family.classes=3"], "family.name=categorical"),
    (["optim.eta_min=1e-5"], "optim.schedule=cosine"),
    (["trainer.freeze_wu_epochs=2"], "init=naive"),
    (["init.freeze_q=true"], "init=random"),
    (["model.kernel_size=3"], "model.kind=conv"),
    (["timing.trials=3"], "task=init_timing"),
    (["logger.wandb.enabled=false", "logger.wandb.project=x"], "logger.wandb.enabled=True"),
])
def test_a_key_where_it_has_no_effect_is_refused_naming_its_switch(given, needs):
    cfg = compose_config(*given)
    with pytest.raises(ConfigError, match=f"{given[-1].split('=')[0]} has no effect in this run: it needs "
                                          f"{needs.replace('|', '[|]')}"):
        check_effects(cfg, given)


@pytest.mark.parametrize("given", [
    ["model.recurrence=spectral", "model.spectral.target=2.0"],
    ["trainer.jac_reg.weight=0.1", "trainer.jac_reg.every=3"],
    ["family=binomial", "family.trials=5"],
    ["trainer.ensemble.inits=[kglm,naive]", "trainer.freeze_wu_epochs=2"],
    ["optim=adam_cosine", "optim.eta_min=1e-5"],
    ["solver.backward.tol=1e-6"],
])
def test_the_same_key_with_its_switch_runs(given):
    check_effects(compose_config(*given), given)


@pytest.mark.parametrize("argv, says", [
    (["stabiliser=[monotone,spectral]"], "choose one option of the group stabiliser"),
    (["trainer.epochs=2", "trainer.epochs=3"], "trainer.epochs is given twice (2 and 3)"),
    (["name=../.."], "give a relative folder name without '..'"),
    (["name=/tmp/x"], "give a relative folder name without '..'"),
])
def test_the_door_refuses_repeats_lists_and_escaping_names(argv, says):
    assert says in cli._check_argv(argv)


def test_a_refused_setting_leaves_a_failed_marker_and_exits_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["train", "family.trials=5", "logger=csv", f"paths.output={tmp_path}"])
    assert stop.value.code == 2
    assert "family.trials has no effect" in capsys.readouterr().err
    (failed,) = tmp_path.rglob("FAILED")
    assert "family.name=binomial" in failed.read_text() and not list(tmp_path.rglob("COMPLETE"))
