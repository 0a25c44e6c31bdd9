"""``python -m deblur.evaluate ckpt=<gan .ckpt> | baseline=<conf/baseline name> [data=...]``:
PSNR / SSIM of one method into ``metrics.json`` and ``results.md`` of its run folder."""

from __future__ import annotations

from omegaconf import DictConfig

from deblur.config.cli import entry_point
from deblur.eval.evaluation import run_evaluate
from deblur.runs import managed_run


@entry_point("evaluate")
def main(cfg: DictConfig) -> float | None:
    record = managed_run(cfg, "evaluate", lambda run_dir, rec: run_evaluate(cfg, run_dir, rec))
    return (record.result.final or {}).get(f"{cfg.split}/psnr")


if __name__ == "__main__":
    main()
