"""``hydra/sweeper=optuna``: deqexp's Optuna sweeper (current Optuna; not the unmaintained
hydra-optuna-sweeper, which pins optuna < 3). Hydra finds sweepers and their configs only under
the ``hydra_plugins`` namespace, so they are declared here; the logic lives in
:mod:`deqexp.sweep.search`."""
from hydra.core.config_store import ConfigStore

from deqexp.sweep import search


class OptunaSweeper(search.OptunaSweeper):
    """``hydra/sweeper=optuna``: see :class:`deqexp.sweep.search.OptunaSweeper`."""


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=search.OptunaSweeperConf,
                             provider="deqexp")
