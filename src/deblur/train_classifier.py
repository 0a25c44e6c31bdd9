"""Blur-classifier training (stage 1): ``python -m deblur.train_classifier backbone=mobilenetv3_large``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deblur.config import CONF_DIR
from deblur.runs import managed_run


@hydra.main(config_path=str(CONF_DIR), config_name="train_classifier", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from deblur.systems.fit import fit_classifier

    record = managed_run(cfg, "classifier", lambda run_dir, rec: fit_classifier(cfg, run_dir, rec))
    return (record.get("final") or {}).get("val/acc")


if __name__ == "__main__":
    main()
