"""GAN training (stage 2): ``python -m deblur.train loss=ragan disc=double backbone=nlayer``.

A sweep: ``python -m deblur.train -m loss=gan,lsgan,wgangp,ragan disc=single,patch,double``.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from deblur.config import CONF_DIR
from deblur.runs import managed_run


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from deblur.systems.fit import fit_gan

    record = managed_run(cfg, "gan", lambda run_dir, rec: fit_gan(cfg, run_dir, rec))
    return (record.get("final") or {}).get("val/psnr")


if __name__ == "__main__":
    main()
