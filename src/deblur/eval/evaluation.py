"""A deblurring method (generator or baseline) on image pairs: PSNR / SSIM / MATLAB-3D SSIM per
image and mean, and the blurred input's; the body of ``deblur.evaluate`` (``results.md``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from deblur.config import eval_slug
from deblur.data.io import read_image, to_tensor, write_image
from deblur.data.pairs import Pair
from deblur.eval.baselines import MissingKernelError, baseline_names, identity, load_baseline
from deblur.eval.inference import deblur_image, resolve_device
from deblur.eval.metrics import psnr, ssim, ssim_matlab3d
from deblur.models.load import load_generator
from deblur.runs import EvalResult, RunRecord
from deblur.study.render import markdown

METRICS = ("psnr", "ssim", "ssim_matlab3d")
NOTES = (
    "PSNR: RGB, peak 255, per image on 8-bit levels, then averaged. SSIM: Gaussian 11x11, "
    "sigma 1.5, per channel (= scikit-image `structural_similarity(gaussian_weights=True, "
    "sigma=1.5, use_sample_covariance=False)`). SSIM MATLAB-3D: MATLAB `ssim` on the RGB "
    "array as a 3-D volume (MPRNet / NAFNet tables); not comparable to SSIM."
)
HEADERS = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ssim_matlab3d": "SSIM MATLAB-3D"}
HEADERS |= {"input_psnr": "input PSNR", "input_ssim": "input SSIM"}  # per-image key -> column
COLUMNS = {"PSNR (dB)": ".2f", "SSIM": ".4f", "SSIM MATLAB-3D": ".4f", "input PSNR": ".2f"}
COLUMNS |= {"input SSIM": ".4f", "s / image": ".3f"}  # Markdown column -> format


def pairs_for_split(cfg: DictConfig, split: str) -> list[Pair]:
    """The pairs of ``split`` (val | test | all) of the ``data`` config."""
    if split not in ("val", "test", "all"):
        raise ValueError(f"split={split}: choose val, test or all.")
    dm = instantiate(cfg.data, task="paired")
    if split != "all":
        return list(getattr(dm, f"{split}_pairs"))
    seen: dict[Path, Pair] = {}
    for p in (*dm.train_pairs, *dm.val_pairs, *dm.test_pairs):
        seen.setdefault(p.blur, p)
    return list(seen.values())


def deblur_options(cfg: DictConfig) -> dict[str, Any]:
    return {"tile": cfg.tile, "overlap": cfg.overlap, "device": cfg.device, "bf16": cfg.bf16}


def ckpt_label(ckpt: str | Path) -> str:
    """A checkpoint's run and file (``gan_loss=ragan_best``)."""
    return eval_slug([f"ckpt={ckpt}"]).split("/", 1)[0]


def _check_kernels(name: str, pairs: Sequence[Pair]) -> None:
    """Every pair has its true kernel, else one paragraph naming the kernel folder and a file."""
    missing = [p for p in pairs if p.kernel is None]
    if not missing:
        return
    blur, depth = missing[0].blur, len(Path(missing[0].name).parts)
    root = blur.parents[depth] if 0 < depth < len(blur.parents) else blur.parent  # <root>/blur/
    on_disk = blur.relative_to(root)
    example = Path("kernel", *(on_disk.parts[1:] or on_disk.parts)).with_suffix(".npy")
    raise MissingKernelError(
        f"baseline={name} needs the true blur kernel of every image, but {len(missing)} of "
        f"{len(pairs)} pairs have no known kernel (e.g. {on_disk.as_posix()} in '{root}'). Fix: "
        f"add them as '{root}/kernel/<relative name of the blurred image>.npy' (e.g. "
        f"{example.as_posix()}), use data=embedded (which saves them), or baseline=identity or a "
        "trained model (ckpt=...)."
    )


def _method(method: Any, use_ema: bool) -> tuple[nn.Module | None, Callable | None, str]:
    """(generator, baseline function, label) of a generator, checkpoint, baseline name or function."""
    if isinstance(method, nn.Module):
        return method, None, type(method).__name__
    if callable(method):
        return None, method, getattr(method, "func", method).__name__
    if str(method) in baseline_names():
        return None, load_baseline(str(method)), str(method)
    return load_generator(str(method), use_ema=use_ema), None, ckpt_label(method)


def measure(
    images: Mapping[str, np.ndarray], sharp: np.ndarray, metrics=(psnr, ssim, ssim_matlab3d)
) -> dict[str, float]:
    """``{"<prefix><metric>": value}`` of each ``{prefix: uint8 image}`` against ``sharp``."""
    t_sharp = to_tensor(sharp).unsqueeze(0)
    return {
        prefix + f.__name__: round(float(f(to_tensor(image).unsqueeze(0), t_sharp)[0]), 6)
        for prefix, image in images.items()
        for f in metrics
    }


def evaluate_pairs(
    method: str | Path | nn.Module | Callable,
    pairs: Sequence[Pair],
    *,
    split: str = "val",
    use_ema: bool = True,
    images_dir: Path | None = None,
    progress: bool = True,
    **deblur: Any,
) -> dict[str, Any]:
    """One method on ``pairs`` (``deblur``: options of :func:`deblur_image`): the record fields
    method, method_kind, split, n_images, final / input (``<split>/psnr``...), speed, per_image."""
    if not pairs:
        raise ValueError(
            f"No pairs to evaluate in split '{split}'. Check data.root / the layout, or use "
            "split=all for a folder without its own val/test split."
        )
    deblur["device"] = dev = resolve_device(deblur.get("device", "auto"))
    model, baseline, label = _method(method, use_ema)
    if baseline is not None and getattr(baseline, "func", baseline) is not identity:
        _check_kernels(label, pairs)
    per_image, busy = [], 0.0
    for pair in tqdm(pairs, desc=f"evaluate {label}", disable=not progress):
        blur, sharp = read_image(pair.blur), read_image(pair.sharp)
        if blur.shape != sharp.shape:
            raise ValueError(
                f"Pair {pair.name}: blurred {pair.blur} is {blur.shape[1]}x{blur.shape[0]} but "
                f"sharp {pair.sharp} is {sharp.shape[1]}x{sharp.shape[0]}; fix the dataset."
            )
        start = time.perf_counter()
        out = baseline(blur, pair.kernel) if baseline else deblur_image(model, blur, **deblur)
        busy += time.perf_counter() - start
        if images_dir is not None:
            write_image(Path(images_dir) / f"{pair.name.replace('/', '__')}.png", out)
        row = {"name": pair.name, "blur": str(pair.blur)}
        per_image.append(row | measure({"": out, "input_": blur}, sharp))
    frame, n = pd.DataFrame(per_image), len(per_image)
    return {
        "method": label,
        "method_kind": "model" if model is not None else "baseline",
        "split": split,
        "n_images": n,
        "final": {f"{split}/{k}": round(float(frame[k].mean()), 6) for k in METRICS},
        "input": {f"{split}/{k}": round(float(frame[f"input_{k}"].mean()), 6) for k in METRICS},
        "seconds_per_image": round(busy / n, 4),
        "images_per_s": round(n / busy, 4) if busy > 0 else None,
        "device": str(dev) if model is not None else "cpu",
        "per_image": per_image,
    }


def results_table(results: Sequence[Mapping[str, Any]], data_name: str = "") -> str:
    """One Markdown row per method (means), the input's metrics last."""
    rows = []
    for r in results:
        row = {"method": r["method"], "data": data_name or r.get("data", ""), "split": r["split"]}
        row |= {"images": r["n_images"]}
        for key, column in HEADERS.items():
            metric = key.removeprefix("input_")
            row[column] = r["final" if key == metric else "input"][f"{r['split']}/{metric}"]
        rows.append(row | {"s / image": r["seconds_per_image"]})
    return markdown(pd.DataFrame(rows), COLUMNS)


def evaluate_methods(
    methods: Sequence[str | Path | nn.Module | Callable],
    pairs: Sequence[Pair],
    data_name: str = "",
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], str]:
    """Several methods on the same pairs (as :func:`evaluate_pairs`): (results, Markdown)."""
    results = [evaluate_pairs(m, pairs, **kwargs) | {"data": data_name} for m in methods]
    return results, results_table(results, data_name)


def run_evaluate(cfg: DictConfig, run_dir: Path, record: RunRecord) -> None:
    """The body of one ``deblur.evaluate`` run: its result (an EvalResult), and ``results.md``."""
    if (cfg.ckpt is None) == (cfg.baseline is None):
        raise ValueError(
            "deblur.evaluate needs exactly one method: ckpt=<GAN checkpoint> or "
            f"baseline=<{'|'.join(baseline_names())}> (got ckpt={cfg.ckpt}, "
            f"baseline={'null' if cfg.baseline is None else cfg.baseline._target_})."
        )
    method = instantiate(cfg.baseline) if cfg.baseline is not None else str(cfg.ckpt)
    split, data_name = str(cfg.split), str(cfg.data.name)
    images = run_dir / "images" if cfg.save_images else None
    options = deblur_options(cfg) | {"use_ema": cfg.use_ema, "images_dir": images}
    result = evaluate_pairs(method, pairs_for_split(cfg, split), split=split, **options)
    table, names = results_table([result], data_name), {"name": "image"} | HEADERS
    per_image = pd.DataFrame(result["per_image"])[list(names)].rename(columns=names)
    (run_dir / "results.md").write_text(
        f"# Evaluation: {result['method']} on {data_name} ({split})\n\n{table}\n\n{NOTES}\n\n"
        f"## Per image\n\n{markdown(per_image, COLUMNS)}\n"
    )
    print(table, flush=True)
    baseline = result["method"] if cfg.baseline is not None else None
    ckpt = cfg.ckpt and str(cfg.ckpt)
    record.result = EvalResult(**result, data=data_name, ckpt=ckpt, baseline=baseline)
