"""Run identity in one place (issue 28, item 1): `deqexp status` and `deqexp train` judge a
folder by the same rule, on a table of cases; the data digests cover every data key."""
import shutil

import pytest
import torch

from deqexp.run import identity
from deqexp.run.checkpoints import CHECKPOINT, LoopState, atomic_save, load_checkpoint
from deqexp.run.config import job_fingerprints
from deqexp.run.folder import FolderBusy, RunFolder
from deqexp.sweep.status import job_status


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _train_decision(folder, fp, digests) -> str:
    """What run_from_hydra does with the folder: skip it, refuse it, or run in it (on a copy,
    since starting a run clears old results)."""
    scratch = folder.parent / (folder.name + "-copy")
    shutil.copytree(folder, scratch)
    run = RunFolder(scratch, fp, digests)
    if run.is_complete():
        return "skip"
    try:
        run.start()
    except FolderBusy:
        return "refuse"
    return "run"


def _finished(folder, fp, digests=None):
    run = RunFolder(folder, fp, digests)
    run.start()
    run.finish({"members": []})


def _preset(tmp_path, epochs):
    exp = tmp_path / "conf" / "experiment"
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "mine.yaml").write_text(f"# @package _global_\ntrainer:\n  epochs: {epochs}\n")
    return [str(tmp_path / "conf")]


def _case(name, tmp_path):
    """(job overrides, config dirs) after building the folder under the old state of the world."""
    folder = tmp_path / "job"
    job, dirs = ["trainer.seed=3"], []
    if name == "changed preset default":
        job, dirs = ["experiment=mine"], _preset(tmp_path, 2)
    if name == "changed data file":
        (tmp_path / "my.npz").write_bytes(b"first")
        job = ["dataset=arrays", f"dataset.path={tmp_path / 'my.npz'}"]
    old = job_fingerprints([job], dirs)[0]
    digests = identity.data_digests({"path": str(tmp_path / "my.npz")}) if "data" in name else {}
    if name == "foreign COMPLETE":
        folder.mkdir()
        (folder / "COMPLETE").write_text("deadbeefdeadbeef\n")
        (folder / "summary.json").write_text("{}")
    elif name == "foreign checkpoint only":
        folder.mkdir()
        state = LoopState(4, torch.ones(1, dtype=torch.bool), [[1.0]], [0], torch.ones(1), {})
        atomic_save({"fingerprint": "deadbeefdeadbeef", "state": state}, folder / CHECKPOINT)
    else:
        _finished(folder, old, digests)
    if name == "changed preset default":
        _preset(tmp_path, 3)
    if name == "changed data file":
        (tmp_path / "my.npz").write_bytes(b"second")
    if name == "changed non-result key":
        job = [*job, "trainer.threads=2", "logger=csv"]
    return folder, job, dirs


@pytest.mark.parametrize("name, status, train", [
    ("unchanged", "complete", "skip"),
    ("changed preset default", "stale", "refuse"),
    ("changed data file", "stale", "refuse"),
    ("changed non-result key", "complete", "skip"),
    ("foreign COMPLETE", "stale", "refuse"),
    ("foreign checkpoint only", "interrupted", "run"),
])
def test_status_and_train_judge_a_folder_alike(tmp_path, name, status, train):
    folder, job, dirs = _case(name, tmp_path)
    fp = job_fingerprints([job], dirs)[0]
    digests = identity.data_digests({"path": str(tmp_path / "my.npz")}) if "data" in name else {}
    assert job_status(job, folder, fp).state == status
    assert _train_decision(folder, fp, digests) == train


def test_a_foreign_checkpoint_is_never_resumed(tmp_path, capsys):
    folder, _, _ = _case("foreign checkpoint only", tmp_path)
    assert load_checkpoint(folder, "0123456789abcdef", say=True) is None
    assert "belongs to another configuration; starting this run afresh" in capsys.readouterr().err


def test_folder_data_sets_given_by_root_are_hashed_file_by_file(tmp_path):
    root = tmp_path / "mnist"
    root.mkdir()
    (root / "a.idx").write_bytes(b"a")
    (root / "b.idx").write_bytes(b"b")
    before = identity.data_digests({"name": "mnist", "root": str(root)})
    assert sorted(before) == [str((root / n).resolve()) for n in ("a.idx", "b.idx")]
    cfg = {"dataset": {"name": "mnist", "root": str(root)}, "trainer": {"seed": 0}}
    fp = identity.fingerprint(cfg)
    (root / "b.idx").write_bytes(b"B")
    assert identity.fingerprint(cfg) != fp


def test_a_new_data_file_is_named_in_the_refusal(tmp_path):
    data = tmp_path / "arrays"
    data.mkdir()
    (data / "train_input.npy").write_bytes(b"x")
    ds = {"path": str(data)}
    before = identity.data_digests(ds)
    run = tmp_path / "run"
    _finished(run, "aaaa", before)
    (data / "val_input.npy").write_bytes(b"y")
    now = identity.data_digests(ds)
    assert identity.changed_files(before, now) == [str((data / "val_input.npy").resolve())]
    with pytest.raises(FolderBusy, match="val_input.npy"):
        RunFolder(run, "bbbb", now).start()


def test_result_keys_and_folder_names():
    assert not identity.is_result_key("trainer.threads") and identity.is_result_key("trainer.threadsx")
    assert identity.is_result_key("trainer.seed") and not identity.is_result_key("+hydra.job.name")
    assert identity.folder_name(["trainer.threads=2", "init=kglm"]) == "init=kglm"

