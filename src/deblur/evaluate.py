"""Evaluate a trained generator or a classical baseline on a data split.

``python -m deblur.evaluate ckpt=<gan .ckpt>`` or ``baseline=identity|wiener|richardson_lucy``,
with any ``data=`` option (``data=folder data.root=<dir with blur/ and sharp/> split=all``).
Per image and mean: PSNR and SSIM with the pinned definitions of :mod:`deblur.metrics`, plus the
MATLAB-style 3-D SSIM (labelled ``ssim_matlab3d``) that MPRNet / NAFNet tables report. Results
go to ``metrics.json`` (task ``evaluate``, with a ``per_image`` list) and ``results.md`` in the
run folder, and the Markdown table is printed. :func:`evaluate_methods` builds one table for
several methods (model vs identity vs Wiener vs Richardson-Lucy).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from torch import nn

from deblur.baselines import BASELINES, MissingKernelError, run_baseline
from deblur.config import CONF_DIR
from deblur.data.io import read_image, to_tensor, write_image
from deblur.data.pairs import Pair
from deblur.inference import deblur_image, load_generator, resolve_device
from deblur.metrics import image_metrics

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "ssim_matlab3d")
COLUMNS = {
    "psnr": "PSNR (dB)",
    "ssim": "SSIM",
    "ssim_matlab3d": "SSIM MATLAB-3D",
}


# --------------------------------------------------------------------------- run folder names


def _slug_value(key: str, value: str) -> str:
    if key == "ckpt":
        p = Path(value)
        parts = p.parts
        if "checkpoints" in parts:
            i = len(parts) - 1 - parts[::-1].index("checkpoints")
            run = "_".join(parts[max(0, i - 2) : i])
            return f"{run}_{p.stem}" if run else p.stem
        return f"{p.parent.name}_{p.stem}" if p.parent.name else p.stem
    return value.replace("/", "_").replace("\\", "_").strip("_.") or "_"


SLUG_EXCLUDE = ("overwrite", "runs_dir", "sweep_name", "device", "save_images", "progress")


def eval_slug(overrides: str | Sequence[str]) -> str:
    """Run-folder name ``<method>/<other overrides>`` from the command-line overrides.

    Takes Hydra's override list (``hydra.overrides.task``; a value may hold ``=`` or ``,``, as
    in a checkpoint of a sweep run) or an ``override_dirname`` string.
    """
    if isinstance(overrides, str):
        items = [s for s in overrides.split(",") if s]
    else:
        items = [str(s) for s in overrides]
    method, rest = "", []
    for item in sorted(items):
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        value = value.strip("'\"")
        if key in SLUG_EXCLUDE:
            continue
        if key in ("ckpt", "baseline"):
            method = _slug_value(key, value)
        else:
            rest.append(f"{key}={_slug_value(key, value)}")
    tail = ",".join(rest) or "default"
    if len(tail) > 120:
        tail = tail[:100] + "-" + hashlib.sha1(tail.encode()).hexdigest()[:8]
    return f"{method or 'no_method'}/{tail}"


if not OmegaConf.has_resolver("eval_slug"):
    OmegaConf.register_new_resolver("eval_slug", eval_slug)


# --------------------------------------------------------------------------- core


def pairs_for_split(cfg: DictConfig, split: str) -> list[Pair]:
    """The pairs of ``split`` (val | test | all) of the ``data`` config, full resolution."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, task="paired")
    if split == "val":
        return list(dm.val_pairs)
    if split == "test":
        return list(dm.test_pairs)
    if split == "all":
        seen: dict[Path, Pair] = {}
        for p in (*dm.train_pairs, *dm.val_pairs, *dm.test_pairs):
            seen.setdefault(p.blur, p)
        return list(seen.values())
    raise ValueError(f"split={split}: choose val, test or all.")


def method_label(method: str | Path | nn.Module) -> str:
    if isinstance(method, nn.Module):
        return type(method).__name__
    if str(method) in BASELINES:
        return str(method)
    return _slug_value("ckpt", str(method))


def evaluate_pairs(
    method: str | Path | nn.Module,
    pairs: Sequence[Pair],
    *,
    split: str = "val",
    baseline_params: Mapping[str, Any] | None = None,
    use_ema: bool = True,
    tile: int | None = None,
    overlap: int = 32,
    device: str = "auto",
    bf16: bool = False,
    images_dir: Path | None = None,
    progress: bool = True,
    label: str | None = None,
) -> dict[str, Any]:
    """Evaluate one method (baseline name, checkpoint path or generator) on ``pairs``.

    Returns ``{"method", "split", "n_images", "final": {"<split>/psnr": ...}, "input": {...},
    "per_image": [...], "seconds_per_image", "images_per_s", "device"}``.
    """
    from tqdm import tqdm

    if not pairs:
        raise ValueError(
            f"No pairs to evaluate in split '{split}'. Check data.root / the layout, or use "
            "split=all for a folder without its own val/test split."
        )
    dev = resolve_device(device)
    model: nn.Module | None = None
    name = str(method) if not isinstance(method, nn.Module) else ""
    if isinstance(method, nn.Module):
        model = method
    elif name not in BASELINES:
        model = load_generator(name, use_ema=use_ema)
    params = dict((baseline_params or {}).get(name, {})) if model is None else {}
    if model is None and name != "identity":
        missing = [p for p in pairs if p.kernel is None]
        if missing:
            raise MissingKernelError(
                f"baseline={name} needs the true blur kernel of every image, but {len(missing)} "
                f"of {len(pairs)} pairs have none (e.g. {missing[0].name}). This dataset has no "
                "known kernel: Wiener and Richardson-Lucy work on synthetic data that saved its "
                "kernels (data=embedded); use baseline=identity or a trained model otherwise."
            )
    per_image: list[dict[str, Any]] = []
    busy = 0.0
    for pair in tqdm(pairs, desc=f"evaluate {method_label(method)}", disable=not progress):
        blur, sharp = read_image(pair.blur), read_image(pair.sharp)
        if blur.shape != sharp.shape:
            raise ValueError(
                f"Pair {pair.name}: blurred {pair.blur} is {blur.shape[1]}x{blur.shape[0]} but "
                f"sharp {pair.sharp} is {sharp.shape[1]}x{sharp.shape[0]}; fix the dataset."
            )
        start = time.perf_counter()
        if model is not None:
            out = deblur_image(model, blur, tile=tile, overlap=overlap, device=dev, bf16=bf16)
        else:
            out = run_baseline(name, blur, pair.kernel, name=pair.name, **params)
        busy += time.perf_counter() - start
        if images_dir is not None:
            write_image(Path(images_dir) / f"{pair.name.replace('/', '__')}.png", out)
        t_sharp = to_tensor(sharp).unsqueeze(0)
        got = image_metrics(to_tensor(out).unsqueeze(0), t_sharp)
        inp = image_metrics(to_tensor(blur).unsqueeze(0), t_sharp)
        row: dict[str, Any] = {"name": pair.name, "blur": str(pair.blur)}
        row.update({k: round(float(v[0]), 6) for k, v in got.items()})
        row.update({f"input_{k}": round(float(v[0]), 6) for k, v in inp.items()})
        per_image.append(row)
    n = len(per_image)

    def mean(key: str) -> float:
        return round(float(np.mean([r[key] for r in per_image])), 6)

    return {
        "method": label or method_label(method),
        "method_kind": "model" if model is not None else "baseline",
        "split": split,
        "n_images": n,
        "final": {f"{split}/{k}": mean(k) for k in METRICS},
        "input": {f"{split}/{k}": mean(f"input_{k}") for k in METRICS},
        "seconds_per_image": round(busy / n, 4),
        "images_per_s": round(n / busy, 4) if busy > 0 else None,
        "device": str(dev) if model is not None else "cpu",
        "per_image": per_image,
    }


def markdown_table(results: Sequence[Mapping[str, Any]], data_name: str = "") -> str:
    """One Markdown row per evaluated method (means), input metrics in the last columns."""
    head = (
        "| method | data | split | images | PSNR (dB) | SSIM | SSIM MATLAB-3D "
        "| input PSNR | input SSIM | s / image |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in results:
        s = r["split"]
        f, i = r["final"], r["input"]
        lines.append(
            f"| {r['method']} | {data_name or r.get('data', '')} | {s} | {r['n_images']} "
            f"| {f[f'{s}/psnr']:.2f} | {f[f'{s}/ssim']:.4f} | {f[f'{s}/ssim_matlab3d']:.4f} "
            f"| {i[f'{s}/psnr']:.2f} | {i[f'{s}/ssim']:.4f} | {r['seconds_per_image']:.3f} |"
        )
    return "\n".join(lines)


def per_image_table(result: Mapping[str, Any]) -> str:
    """Markdown table of every image of one result."""
    lines = [
        "| image | PSNR (dB) | SSIM | SSIM MATLAB-3D | input PSNR | input SSIM |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["per_image"]:
        lines.append(
            f"| {r['name']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['ssim_matlab3d']:.4f} "
            f"| {r['input_psnr']:.2f} | {r['input_ssim']:.4f} |"
        )
    return "\n".join(lines)


def evaluate_methods(
    methods: Sequence[str | Path | nn.Module],
    pairs: Sequence[Pair],
    data_name: str = "",
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], str]:
    """Evaluate several methods on the same pairs: (results, Markdown table).

    ``methods``: baseline names (``identity``, ``wiener``, ``richardson_lucy``), GAN checkpoint
    paths or generator modules; ``kwargs`` as in :func:`evaluate_pairs`.
    """
    results = [evaluate_pairs(m, pairs, **kwargs) for m in methods]
    for r in results:
        r["data"] = data_name
    return results, markdown_table(results, data_name)


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
    pairs = pairs_for_split(cfg, str(cfg.split))
    result = evaluate_pairs(
        method,
        pairs,
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
    table = markdown_table([result], data_name)
    (run_dir / "results.md").write_text(
        f"# Evaluation: {result['method']} on {data_name} ({cfg.split})\n\n{table}\n\n"
        "PSNR: RGB, peak 255, per image on 8-bit levels, then averaged. SSIM: Gaussian 11x11, "
        "sigma 1.5, per channel (= scikit-image `structural_similarity(gaussian_weights=True, "
        "sigma=1.5, use_sample_covariance=False)`). SSIM MATLAB-3D: MATLAB `ssim` on the RGB "
        "array as a 3-D volume (MPRNet / NAFNet tables); not comparable to SSIM.\n\n"
        f"## Per image\n\n{per_image_table(result)}\n"
    )
    print(table, flush=True)
    result.update(
        {
            "ckpt": str(cfg.ckpt) if cfg.ckpt else None,
            "baseline": str(cfg.baseline) if cfg.baseline else None,
        }
    )
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from deblur.runs import managed_run

    record = managed_run(cfg, "evaluate", lambda run_dir, rec: run_evaluate(cfg, run_dir, rec))
    return (record.get("final") or {}).get(f"{cfg.split}/psnr")


if __name__ == "__main__":
    main()
