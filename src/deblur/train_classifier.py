"""Blur-classifier training (stage 1): ``python -m deblur.train_classifier backbone=mobilenetv3_large``."""

from __future__ import annotations

from omegaconf import DictConfig

from deblur.config.cli import entry_point
from deblur.runs import managed_run
from deblur.systems.fit import fit


@entry_point("train_classifier")
def main(cfg: DictConfig) -> float | None:
    record = managed_run(cfg, "classifier", lambda run_dir, rec: fit(cfg, run_dir, rec))
    return (record.result.final or {}).get("val/acc")


if __name__ == "__main__":
    main()
