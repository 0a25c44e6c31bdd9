"""GAN training (stage 2): ``python -m deblur.train loss=ragan disc=double backbone=nlayer``; a
sweep: ``python -m deblur.train -m loss=gan,lsgan,wgangp,ragan disc=single,patch,double``."""

from __future__ import annotations

from omegaconf import DictConfig

from deblur.config.cli import entry_point
from deblur.runs import managed_run
from deblur.systems.fit import fit


@entry_point("train")
def main(cfg: DictConfig) -> float | None:
    record = managed_run(cfg, "gan", lambda run_dir, rec: fit(cfg, run_dir, rec))
    return (record.result.final or {}).get("val/psnr")


if __name__ == "__main__":
    main()
