"""Build deqexp configs in-process with Hydra's compose API (fast: no subprocess)."""
from omegaconf import OmegaConf

from deqexp.run.config import compose


def compose_config(*overrides: str):
    """The job config that ``deqexp train OVERRIDES`` would run, resolved."""
    cfg = compose(*overrides)
    OmegaConf.resolve(cfg)
    return cfg
