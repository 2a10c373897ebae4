"""The paper's presets and their runs: which jobs each experiment and profile has, their
fingerprints (composed afresh through :func:`deqexp.run.config.job_fingerprints`), and the
completed runs on disk that count for them."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..run.identity import MARKER

# every preset family that `make reproduce-paper` runs (conf/experiment/paper/EXP[_PROFILE])
EXPERIMENTS = ("e1", "e1_count", "e1_converged", "e2", "e2_pd", "e3", "e4", "e5", "e6", "stability_e1")
PROFILES = ("smoke", "quick", "full")
# experiments whose presets are not under conf/experiment/paper/
PRESET_DIRS = {"stability_e1": "stability/e1"}


def preset_base(exp: str) -> str:
    """The experiment's preset (full profile) and its runs' folder under runs/ or multirun/."""
    return PRESET_DIRS.get(exp, f"paper/{exp}")


def preset_name(exp: str, profile: str) -> str:
    return preset_base(exp) if profile == "full" else f"{preset_base(exp)}_{profile}"


def preset_jobs(exp: str, profile: str) -> list[list[str]]:
    """The overrides of each job that ``deqexp train [-m] experiment=paper/EXP_PROFILE`` runs."""
    from omegaconf import OmegaConf

    from ..run.config import compose
    from ..sweep.status import expand

    preset = f"experiment={preset_name(exp, profile)}"
    params = compose(preset, hydra=True).hydra.sweeper.get("params")
    return expand(OmegaConf.to_container(params) if params else {}, [preset])


@functools.lru_cache(maxsize=None)  # composing every job is the report's main cost; the presets
def preset_fingerprints(exp: str, profile: str) -> frozenset[str]:  # do not change in a process
    """The fingerprints of the preset's jobs: what a run must have to count for the profile."""
    from ..run.config import job_fingerprints

    return frozenset(job_fingerprints(preset_jobs(exp, profile)))


def _fingerprint_of(folder: Path) -> str:
    try:
        return (folder / "FINGERPRINT").read_text().strip()
    except OSError:
        return ""


@dataclass
class Found:
    """One experiment's completed runs: those of the preset (one per job) and the others."""

    runs: list[Path]
    others: list[Path]
    expected: int

    @property
    def complete(self) -> bool:
        return len(self.runs) == self.expected


def completed_runs(root: Path, exp: str, profile: str) -> Found:
    """The completed runs of one experiment and profile, split by whether their fingerprint is
    one of the preset's jobs (the first folder of each job counts; a copy is an other run)."""
    expected = preset_fingerprints(exp, profile)
    runs, others, seen = [], [], set()
    for kind in ("runs", "multirun"):
        base = root / kind / preset_base(exp) / profile
        for d in sorted(p.parent for p in base.rglob(MARKER)) if base.is_dir() else []:
            fp = _fingerprint_of(d)
            if fp in expected and fp not in seen:
                seen.add(fp)
                runs.append(d)
            else:
                others.append(d)
    return Found(runs, others, len(expected))


def load_metrics(dirs: list[Path], filename: str = "metrics.csv") -> pd.DataFrame:
    frames = []
    for i, d in enumerate(dirs):
        if (d / filename).exists():
            df = pd.read_csv(d / filename)
            df["run"] = i
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
