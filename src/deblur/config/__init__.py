"""The config layer: composing the Hydra configs and naming run folders (``compose``), checking
every value a person sets (``checks``), and the entry points' wrapper (``cli``)."""

from deblur.config.compose import (
    CONF_DIR,
    IDENTITY_EXCLUDE,
    compose,
    eval_slug,
    run_dirname,
    to_container,
)

__all__ = ["CONF_DIR", "IDENTITY_EXCLUDE", "compose", "eval_slug", "run_dirname", "to_container"]
