"""Evaluate a trained generator or a classical baseline on a data split.

``python -m deblur.evaluate ckpt=<gan .ckpt>`` or ``baseline=identity|wiener|richardson_lucy``,
with any ``data=`` option (``data=folder data.root=<dir with blur/ and sharp/> split=all``).
Per image and mean PSNR / SSIM / MATLAB-3D SSIM (:mod:`deblur.evaluation`) go to
``metrics.json`` (task ``evaluate``, with a ``per_image`` list) and ``results.md`` in the run
folder ``<runs_dir>/evaluate/<method>/<other overrides>``, and the Markdown table is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from deblur.baselines import BASELINES
from deblur.cli import entry_point
from deblur.evaluation import evaluate_pairs, pairs_for_split, per_image_table, results_table
from deblur.runs import managed_run

NOTES = (
    "PSNR: RGB, peak 255, per image on 8-bit levels, then averaged. SSIM: Gaussian 11x11, "
    "sigma 1.5, per channel (= scikit-image `structural_similarity(gaussian_weights=True, "
    "sigma=1.5, use_sample_covariance=False)`). SSIM MATLAB-3D: MATLAB `ssim` on the RGB "
    "array as a 3-D volume (MPRNet / NAFNet tables); not comparable to SSIM."
)


def run_evaluate(cfg: DictConfig, run_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The body of one evaluate run (inside :func:`deblur.runs.managed_run`)."""
    if bool(cfg.ckpt) == bool(cfg.baseline):
        raise ValueError(
            "deblur.evaluate needs exactly one method: ckpt=<GAN checkpoint> or "
            f"baseline=<{'|'.join(BASELINES)}> (got ckpt={cfg.ckpt}, baseline={cfg.baseline})."
        )
    method = str(cfg.ckpt or cfg.baseline)
    if cfg.baseline and method not in BASELINES:
        raise ValueError(f"Unknown baseline '{method}'; choose one of {', '.join(BASELINES)}.")
    data_name = str(cfg.data.get("name", ""))
    result = evaluate_pairs(
        method,
        pairs_for_split(cfg, str(cfg.split)),
        split=str(cfg.split),
        baseline_params=OmegaConf.to_container(cfg.baselines, resolve=True),  # type: ignore[arg-type]
        use_ema=bool(cfg.use_ema),
        tile=cfg.tile,
        overlap=int(cfg.overlap),
        device=str(cfg.device),
        bf16=bool(cfg.bf16),
        images_dir=run_dir / "images" if cfg.save_images else None,
    )
    result["data"] = data_name
    table = results_table([result], data_name)
    (run_dir / "results.md").write_text(
        f"# Evaluation: {result['method']} on {data_name} ({cfg.split})\n\n{table}\n\n{NOTES}\n\n"
        f"## Per image\n\n{per_image_table(result)}\n"
    )
    print(table, flush=True)
    result["ckpt"] = str(cfg.ckpt) if cfg.ckpt else None
    result["baseline"] = str(cfg.baseline) if cfg.baseline else None
    return result


@entry_point("evaluate")
def main(cfg: DictConfig) -> float | None:
    record = managed_run(cfg, "evaluate", lambda run_dir, rec: run_evaluate(cfg, run_dir, rec))
    return (record.get("final") or {}).get(f"{cfg.split}/psnr")


if __name__ == "__main__":
    main()
