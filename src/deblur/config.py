"""One place for configuration plumbing: the conf/ folder, custom resolvers, composing for tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def _find_conf_dir() -> Path:
    env = os.environ.get("DEBLUR_CONF")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "conf" / "train.yaml").is_file():
            return parent / "conf"
    raise FileNotFoundError(
        "Cannot find the deblur config folder `conf/` (looked above "
        f"{here}). Run from a clone of the repository installed with `pip install -e .`, "
        "or point the environment variable DEBLUR_CONF at the repository's conf/ folder."
    )


CONF_DIR: Path = _find_conf_dir()


def _dirname(override_dirname: str) -> str:
    """Run-folder name from Hydra's override_dirname ('default' when there are no overrides)."""
    return override_dirname if override_dirname else "default"


def register_resolvers() -> None:
    """Register the OmegaConf resolvers our YAML uses (idempotent)."""
    if not OmegaConf.has_resolver("dirname"):
        OmegaConf.register_new_resolver("dirname", _dirname)


register_resolvers()


def to_container(cfg: DictConfig | dict) -> dict[str, Any]:
    """Resolved plain-dict copy of a config (what checkpoints and metrics.json store)."""
    if isinstance(cfg, dict):
        return cfg
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


def compose(
    config_name: str, overrides: list[str] | None = None, return_hydra_config: bool = False
):
    """Compose a config the way the entry points do (for tests and notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(
            config_name=config_name,
            overrides=list(overrides or []),
            return_hydra_config=return_hydra_config,
        )
