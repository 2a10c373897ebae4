"""deqexp's Hydra plugin. Hydra instantiates launchers only from classes defined under the
``hydra_plugins`` namespace, so the SLURM launcher is declared here; its logic lives in
:mod:`deqexp.cluster`."""
from deqexp import cluster


class SlurmLauncher(cluster.SlurmLauncher):
    """``launcher=slurm``: see :class:`deqexp.cluster.SlurmLauncher`."""
