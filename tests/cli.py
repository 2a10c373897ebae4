"""Run the deqexp console script in a subprocess and read what a run wrote."""
import os
import subprocess
import sys

import pandas as pd


def deqexp(*args, cwd=None, env=None, timeout=300):
    """``deqexp ARGS`` as a subprocess; returns the CompletedProcess (text)."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run([sys.executable, "-m", "deqexp.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=timeout)


def run_dir_args(path):
    return [f"hydra.run.dir={path}"]


def metrics(run_dir):
    return pd.read_csv(run_dir / "metrics.csv")


def interruptible():
    """``preexec_fn`` for a child that the test will send SIGINT: a shell that starts CI in the
    background (no job control) passes SIGINT on as ignored, and Python then keeps ignoring it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
