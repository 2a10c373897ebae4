"""deqexp's Hydra plugin. Hydra instantiates launchers only from classes defined under the
``hydra_plugins`` namespace, so the SLURM launcher is declared here; its logic lives in
:mod:`deqexp.sweep.cluster`."""
from deqexp.sweep import cluster


class SlurmLauncher(cluster.SlurmLauncher):
    """``launcher=slurm``: see :class:`deqexp.sweep.cluster.SlurmLauncher`."""
