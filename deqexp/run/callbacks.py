"""Hydra callbacks (``hydra.callbacks`` in conf/config.yaml): where the offline W&B runs can be
uploaded from, said once at the end of a run or of a whole sweep, not once per job.

Light on purpose: Hydra builds callbacks in every ``deqexp train``, so nothing here imports
torch or wandb.
"""
from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback

OFFLINE_GLOB = "offline-run-*"


def offline_runs(root: Path | str) -> list[Path]:
    """The offline W&B runs under ``root`` not yet uploaded, oldest first within a run folder
    (a resumed run's later attempts carry the same W&B id; `wandb sync` appends them in order)."""
    found = [d for d in Path(root).rglob(OFFLINE_GLOB) if d.is_dir() and d.parent.name == "wandb"]
    return sorted(d for d in found if not any(d.glob("*.wandb.synced")))


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def sync_hint(root: Path | str) -> str | None:
    """One line: how many offline W&B runs wait under ``root`` and the `wandb sync` that uploads
    them (a glob when there are several), or None when none waits."""
    runs = offline_runs(root)
    if not runs:
        return None
    if len(runs) == 1:
        return f"W&B (offline): upload later with: wandb sync {_shown(runs[0])}"
    depths = {len(d.relative_to(root).parts) for d in runs}
    if len(depths) == 1:  # every job folder at the same depth: one glob names them all
        stars = "/".join(["*"] * (depths.pop() - 2))
        where = f"{_shown(Path(root))}/{stars + '/' if stars else ''}wandb/{OFFLINE_GLOB}"
    else:
        where = " ".join(_shown(d) for d in runs)
    folders = len({d.parent.parent for d in runs})
    resumed = f" ({len(runs) - folders} from resumed attempts)" if len(runs) > folders else ""
    return f"W&B (offline): {len(runs)} runs{resumed}; upload later with: wandb sync {where}"


class WandbSyncHint(Callback):
    """Prints :func:`sync_hint` once, after a run (its folder) or a sweep (the sweep folder)."""

    def on_run_end(self, config, job_return=None, **kwargs) -> None:
        hydra_cfg = getattr(job_return, "hydra_cfg", None)
        if hydra_cfg is not None:
            self._say(hydra_cfg.hydra.runtime.output_dir)

    def on_multirun_end(self, config, **kwargs) -> None:
        self._say(config.hydra.sweep.dir)

    @staticmethod
    def _say(root) -> None:
        hint = sync_hint(root) if root and Path(root).is_dir() else None
        if hint:
            print(hint, flush=True)
