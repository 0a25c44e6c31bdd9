"""``python -m deblur.robustness ckpt=<gan .ckpt> [data=...]``: the model on growing Gaussian,
median and motion blur, into ``robustness.md`` / ``.png`` and ``metrics.json``."""

from __future__ import annotations

from omegaconf import DictConfig

from deblur.config.cli import entry_point
from deblur.eval.robustness import run_robustness
from deblur.runs import managed_run


@entry_point("robustness")
def main(cfg: DictConfig) -> None:
    managed_run(cfg, "robustness", lambda run_dir, rec: run_robustness(cfg, run_dir, rec))


if __name__ == "__main__":
    main()
