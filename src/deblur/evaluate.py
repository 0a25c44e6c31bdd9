"""``python -m deblur.evaluate ckpt=<gan .ckpt>`` or ``baseline=identity|wiener|richardson_lucy``,
with any ``data=`` option: per image and mean PSNR / SSIM / MATLAB-3D SSIM of one method on a
split (:mod:`deblur.eval.evaluation`) into ``metrics.json`` and ``results.md`` of the run folder
``<runs_dir>/evaluate/<method>/<other overrides>``; the Markdown table is printed."""

from __future__ import annotations

from omegaconf import DictConfig

from deblur.cli import entry_point
from deblur.eval.evaluation import run_evaluate
from deblur.runs import managed_run


@entry_point("evaluate")
def main(cfg: DictConfig) -> float | None:
    record = managed_run(cfg, "evaluate", lambda run_dir, rec: run_evaluate(cfg, run_dir, rec))
    return (record.get("final") or {}).get(f"{cfg.split}/psnr")


if __name__ == "__main__":
    main()
