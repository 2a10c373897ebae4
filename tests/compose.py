"""Build deqexp configs in-process with Hydra's compose API (fast: no subprocess)."""
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from deqexp.cli import CONF_DIR, register_resolvers
from deqexp.config import register


def compose_config(*overrides: str):
    """The job config that ``deqexp train OVERRIDES`` would run, resolved."""
    register()
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR, job_name="train"):
        cfg = compose(config_name="config", overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg
