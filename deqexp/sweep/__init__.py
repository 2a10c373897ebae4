"""Sweeps at scale: the SLURM launcher (submitit) and ``deqexp status``."""
