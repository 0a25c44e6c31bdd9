"""Measure a deblurring method on images: a trained generator or a classical baseline.

- :func:`evaluate_pairs` / :func:`evaluate_methods`: PSNR and SSIM per image and mean with the
  pinned definitions of :mod:`deblur.metrics`, plus the MATLAB-style 3-D SSIM (labelled
  ``ssim_matlab3d``) that MPRNet / NAFNet tables report, and the blurred input's own numbers.
- :func:`robustness_table`: the sharp images blurred with a Gaussian, a median filter and straight
  motion blur of growing size (seed 002): how a generator copes with blur it was not trained on.
- Their Markdown tables go through :mod:`deblur.study.render`, like the thesis tables.

The entry points ``deblur.evaluate`` and ``deblur.robustness`` compose the config and call these.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from torch import nn

from deblur.baselines import BASELINES, MissingKernelError, run_baseline
from deblur.config import eval_slug
from deblur.data.blur import apply_kernel, gaussian_kernel, linear_motion_kernel, median_blur
from deblur.data.io import read_image, to_tensor, write_image
from deblur.data.pairs import Pair
from deblur.inference import deblur_image, resolve_device
from deblur.metrics import image_metrics, psnr, ssim
from deblur.models.load import load_generator
from deblur.study.render import markdown

METRICS = ("psnr", "ssim", "ssim_matlab3d")


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
    """A short name of a method: the baseline, the generator's class, or the checkpoint's run."""
    if isinstance(method, nn.Module):
        return type(method).__name__
    if str(method) in BASELINES:
        return str(method)
    return eval_slug([f"ckpt={method}"]).split("/", 1)[0]


def _check_kernels(name: str, pairs: Sequence[Pair]) -> None:
    """A kernel-based baseline needs every pair's true kernel: one paragraph naming the folder
    they are read from and a missing file, as on disk."""
    missing = [p for p in pairs if p.kernel is None]
    if missing:
        first = missing[0]
        depth = len(Path(first.name).parts)
        ups = first.blur.parents
        if depth < len(ups) and ups[depth - 1].name and depth > 0:
            root = ups[depth]  # <root>/<blur folder>/<name>.<ext>
            on_disk = first.blur.relative_to(root).as_posix()
        else:
            root, on_disk = first.blur.parent, first.blur.name
        kernel_dir = f"{root}/kernel/"
        rel = Path(on_disk)
        tail = rel.parts[1:] if len(rel.parts) > 1 else (rel.name,)
        example = Path("kernel", *tail)
        example = example.with_suffix(".npy")
        raise MissingKernelError(
            f"baseline={name} needs the true blur kernel of every image, but {len(missing)} "
            f"of {len(pairs)} pairs have none, no known kernel (e.g. {on_disk} in '{root}'); "
            "kernels are read "
            f"from '{kernel_dir}', one <relative name of the blurred image>.npy each "
            f"(e.g. {example.as_posix()}). "
            f"Fix: add the kernel files under '{kernel_dir}' (or use data=embedded, which "
            "saves them), or use baseline=identity or a trained model (ckpt=...) on data "
            "without kernels."
        )


def _evaluate_one(
    pair: Pair, run: Callable[[np.ndarray], np.ndarray]
) -> tuple[dict[str, Any], np.ndarray, float]:
    """The per-image row of ``pair`` (metrics of the output and of the blurred input), the
    output ``run`` made of its blurred image, and the seconds ``run`` took."""
    blur, sharp = read_image(pair.blur), read_image(pair.sharp)
    if blur.shape != sharp.shape:
        raise ValueError(
            f"Pair {pair.name}: blurred {pair.blur} is {blur.shape[1]}x{blur.shape[0]} but "
            f"sharp {pair.sharp} is {sharp.shape[1]}x{sharp.shape[0]}; fix the dataset."
        )
    start = time.perf_counter()
    out = run(blur)
    seconds = time.perf_counter() - start
    t_sharp = to_tensor(sharp).unsqueeze(0)
    got = image_metrics(to_tensor(out).unsqueeze(0), t_sharp)
    inp = image_metrics(to_tensor(blur).unsqueeze(0), t_sharp)
    row: dict[str, Any] = {"name": pair.name, "blur": str(pair.blur)}
    row.update({k: round(float(v[0]), 6) for k, v in got.items()})
    row.update({f"input_{k}": round(float(v[0]), 6) for k, v in inp.items()})
    return row, out, seconds


def _model_of(method: str | Path | nn.Module, use_ema: bool) -> tuple[nn.Module | None, str]:
    """(the generator to run, or None for a baseline; the baseline's name or "")."""
    if isinstance(method, nn.Module):
        return method, ""
    name = str(method)
    return (None if name in BASELINES else load_generator(name, use_ema=use_ema)), name


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
    model, name = _model_of(method, use_ema)
    params = dict((baseline_params or {}).get(name, {})) if model is None else {}
    if model is None and name != "identity":
        _check_kernels(name, pairs)
    per_image: list[dict[str, Any]] = []
    busy = 0.0
    for pair in tqdm(pairs, desc=f"evaluate {method_label(method)}", disable=not progress):
        row, out, seconds = _evaluate_one(
            pair,
            lambda blur, pair=pair: (
                deblur_image(model, blur, tile=tile, overlap=overlap, device=dev, bf16=bf16)
                if model is not None
                else run_baseline(name, blur, pair.kernel, name=pair.name, **params)
            ),
        )
        busy += seconds
        if images_dir is not None:
            write_image(Path(images_dir) / f"{pair.name.replace('/', '__')}.png", out)
        per_image.append(row)
    n = len(per_image)
    frame = pd.DataFrame(per_image)
    return {
        "method": label or method_label(method),
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


_DIGITS = {"PSNR (dB)": ".2f", "SSIM": ".4f", "SSIM MATLAB-3D": ".4f"}
_DIGITS |= {"input PSNR": ".2f", "input SSIM": ".4f", "s / image": ".3f"}


def results_table(results: Sequence[Mapping[str, Any]], data_name: str = "") -> str:
    """One Markdown row per evaluated method (means), the input's metrics in the last columns."""
    rows = []
    for r in results:
        s, f, i = r["split"], r["final"], r["input"]
        rows.append(
            {
                "method": r["method"],
                "data": data_name or r.get("data", ""),
                "split": s,
                "images": r["n_images"],
                "PSNR (dB)": f[f"{s}/psnr"],
                "SSIM": f[f"{s}/ssim"],
                "SSIM MATLAB-3D": f[f"{s}/ssim_matlab3d"],
                "input PSNR": i[f"{s}/psnr"],
                "input SSIM": i[f"{s}/ssim"],
                "s / image": r["seconds_per_image"],
            }
        )
    return markdown(pd.DataFrame(rows), _DIGITS)


def per_image_table(result: Mapping[str, Any]) -> str:
    """Markdown table of every image of one result."""
    names = {"name": "image", "psnr": "PSNR (dB)", "ssim": "SSIM"}
    names |= {"ssim_matlab3d": "SSIM MATLAB-3D", "input_psnr": "input PSNR"}
    names |= {"input_ssim": "input SSIM"}
    frame = pd.DataFrame(result["per_image"])[list(names)].rename(columns=names)
    return markdown(frame, _DIGITS)


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
    return results, results_table(results, data_name)


# --------------------------------------------------------------------------- robustness

Blur = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]


def _gaussian(sigma: float | None) -> Blur:
    def blur(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
        return apply_kernel(img, gaussian_kernel(size, sigma))

    return blur


def _median(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    return median_blur(img, size)


def _motion(img: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    return apply_kernel(img, linear_motion_kernel(float(length), float(rng.uniform(0, 180))))


def robustness_table(
    model: nn.Module,
    sharp_images: Sequence[np.ndarray],
    sizes: Sequence[int] = (5, 9, 13),
    motion_lengths: Sequence[int] = (5, 9, 13, 17, 21),
    gaussian_sigma: float | None = None,
    seed: int = 0,
    progress: bool = True,
    **deblur_kwargs: Any,
) -> list[dict[str, Any]]:
    """One row per (blur type, size): mean PSNR / SSIM of the blurred input and of the model."""
    from tqdm import tqdm

    conditions: list[tuple[str, int, Blur]] = [
        *(("gaussian", s, _gaussian(gaussian_sigma)) for s in sizes),
        *(("median", s, _median) for s in sizes),
        *(("motion", n, _motion) for n in motion_lengths),
    ]
    rows = []
    for kind, size, blur in tqdm(conditions, desc="robustness", disable=not progress):
        rng = np.random.default_rng(seed)  # the same angle per image for every motion length
        vals: dict[str, list[float]] = {"input_psnr": [], "input_ssim": [], "psnr": [], "ssim": []}
        for sharp in sharp_images:
            blurred = blur(sharp, size, rng)
            out = deblur_image(model, blurred, **deblur_kwargs)
            t_sharp = to_tensor(sharp).unsqueeze(0)
            t_in, t_out = to_tensor(blurred).unsqueeze(0), to_tensor(out).unsqueeze(0)
            vals["input_psnr"].append(float(psnr(t_in, t_sharp)[0]))
            vals["input_ssim"].append(float(ssim(t_in, t_sharp)[0]))
            vals["psnr"].append(float(psnr(t_out, t_sharp)[0]))
            vals["ssim"].append(float(ssim(t_out, t_sharp)[0]))
        row: dict[str, Any] = {"blur": kind, "size": int(size), "images": len(sharp_images)}
        row.update({k: round(float(np.mean(v)), 4) for k, v in vals.items()})
        row["psnr_gain"] = round(row["psnr"] - row["input_psnr"], 4)
        rows.append(row)
    return rows


def robustness_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The robustness table in Markdown."""
    names = {"blur": "blur", "size": "size", "images": "images", "input_psnr": "input PSNR"}
    names |= {"psnr": "model PSNR", "psnr_gain": "gain (dB)", "input_ssim": "input SSIM"}
    names |= {"ssim": "model SSIM"}
    frame = pd.DataFrame(list(rows))[list(names)].rename(columns=names)
    return markdown(
        frame, _DIGITS | {"model PSNR": ".2f", "gain (dB)": "+.2f", "model SSIM": ".4f"}
    )


def robustness_plot(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> Path:
    """PSNR vs kernel size / motion length, one panel per blur type, model vs blurred input."""
    from matplotlib.figure import Figure  # no pyplot state: any backend, no GUI

    frame = pd.DataFrame(list(rows))
    kinds = list(frame["blur"].unique())
    fig = Figure(figsize=(4.2 * len(kinds), 3.6), layout="tight")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    for ax, kind in zip(axes, kinds):
        sel = frame[frame["blur"] == kind].set_index("size")
        sel["input_psnr"].plot(ax=ax, style="o--", color="tab:gray", label="blurred input")
        sel["psnr"].plot(ax=ax, style="o-", color="tab:blue", label="model")
        ax.set_title(kind)
        ax.set_xlabel("motion length (px)" if kind == "motion" else "kernel size (px)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_xticks(list(sel.index))
        ax.grid(alpha=0.3)
    axes[0].legend()
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path
