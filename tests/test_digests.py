"""Run identity by content (issue 16, item 1): a regenerated data file is never "already
complete"; the refusal names the file; hashes are cached by path, size and mtime."""
import os

import numpy as np
import pytest
from omegaconf import OmegaConf

from deqexp.run import identity as digests
from deqexp.run.identity import fingerprint
from tests.cli import deqexp
from tests.compose import compose_config
from tests.test_arrays import _sequences


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _hash_calls(monkeypatch):
    calls, real = [], digests._sha256
    monkeypatch.setattr(digests, "_sha256", lambda p: calls.append(p.name) or real(p))
    return calls


def test_digests_are_content_hashes_cached_by_size_and_mtime(tmp_path, monkeypatch):
    folder = tmp_path / "data"
    folder.mkdir()
    for name, value in _sequences().items():
        np.save(folder / f"{name}.npy", value)
    calls = _hash_calls(monkeypatch)
    ds = OmegaConf.create({"path": str(folder)})
    first = digests.data_digests(ds)
    assert len(first) == 6 and len(calls) == 6
    import hashlib
    target = folder / "train_input.npy"
    assert first[str(target.resolve())] == hashlib.sha256(target.read_bytes()).hexdigest()[:16]
    assert digests.data_digests(ds) == first and len(calls) == 6  # cached: nothing read again
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes
    assert digests.data_digests(ds) == first and calls[6:] == ["train_input.npy"]
    np.save(target, _sequences()["train_input"] + 1.0)
    changed = digests.data_digests(ds)
    assert digests.changed_files(first, changed) == [str(target.resolve())]
    assert digests.data_digests(OmegaConf.create({"name": "smooth", "length": 100})) == {}


def test_the_fingerprint_follows_the_data_files_contents_only(tmp_path):
    np.savez(tmp_path / "my.npz", **_sequences())
    cfg = compose_config("dataset=arrays", f"dataset.path={tmp_path / 'my.npz'}")
    before = fingerprint(cfg)
    np.savez(tmp_path / "my.npz", **_sequences())  # rewritten, same contents
    assert fingerprint(cfg) == before
    data = _sequences()
    data["test_target"] = data["test_target"] * 2
    np.savez(tmp_path / "my.npz", **data)
    assert fingerprint(cfg) != before
    plain = compose_config()
    assert fingerprint(plain) == fingerprint(plain, {})  # generated data: as before hashing


@pytest.mark.slow
def test_a_regenerated_data_file_is_not_skipped_and_the_refusal_names_it(tmp_path):
    path = tmp_path / "my.npz"
    np.savez(path, **_sequences())
    run = ["train", "dataset=arrays", f"dataset.path={path}", "logger=csv", "trainer.epochs=2",
           f"paths.output={tmp_path}"]
    assert deqexp(*run, cwd=tmp_path).returncode == 0
    data = _sequences()
    data["test_target"] = data["test_target"] * 2
    np.savez(path, **data)
    stale = deqexp(*run, cwd=tmp_path)
    assert stale.returncode == 2 and "already complete" not in stale.stdout
    assert f"were made from other contents of {path}" in stale.stderr and "force=true" in stale.stderr
    fresh = deqexp(*run, "force=true", cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "already complete, skipped" in deqexp(*run, cwd=tmp_path).stdout
