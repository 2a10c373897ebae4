import os

import pytest
import torch
from hypothesis import settings

# CI draws the same property-test examples every run (a red CI must be reproducible);
# `make test` elsewhere draws new ones, to find what the fixed draws miss
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# under pytest-xdist each worker gets one core's worth of threads, and so do the deqexp
# processes its tests start (deqexp.run.runner.job_threads reads $OMP_NUM_THREADS): two
# workers on two cores, never more threads than cores
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _float64_and_seed():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    yield
    torch.set_default_dtype(old)


# the longest files first: pytest-xdist (--no-loadscope-reorder, see the Makefile) hands whole
# files to its workers in collection order, so the SLURM scenarios' waiting overlaps the rest
FIRST = ("test_slurm.py", "test_paper.py", "test_docs_commands.py", "test_cli.py", "test_runs.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST))


_started: set[str] = set()


def pytest_runtest_logreport(report):
    """Under pytest-xdist (whose progress is dots only), name each test file as it starts."""
    config = _CONFIG.get("config")
    if report.when != "setup" or config is None or os.environ.get("PYTEST_XDIST_WORKER") \
            or not getattr(config.option, "numprocesses", None):
        return
    path = report.nodeid.split("::")[0]
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if path not in _started and reporter is not None:
        _started.add(path)
        reporter.write(f"\n[{getattr(report.node, 'gateway', None) and report.node.gateway.id or ''}"
                       f"] {path} ")


_CONFIG: dict = {}


def pytest_configure(config):
    _CONFIG["config"] = config
