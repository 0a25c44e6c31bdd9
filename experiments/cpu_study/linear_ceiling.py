"""How far can a *linear* inverse filter go on data=embedded? A closed-form answer.

    python experiments/cpu_study/linear_ceiling.py [--fresh-per-photo 36] [--size 15] [--out CSV]

What `experiment=cpu_10min` / `cpu_30min` learn is, in effect, one k x k colour filter added to
the input (experiments/cpu_study/README.md). This script fits that filter by least squares
instead of by SGD, so its validation gain is the ceiling of the learned recipes, and it asks
what a blur-adaptive bank of such filters could add by giving it an oracle:

- ``stored``: one filter fitted on the 40 stored training pairs (what `train_blur=fixed` sees);
- ``fresh``: one filter fitted on ``--fresh-per-photo`` new blurs of every training photo
  (new camera-shake kernel and noise each, the distribution of `train_blur=fresh`);
- ``oracle_length``: one filter per blur-length bin (7-13, 14-20, 21-30 px), fitted on the fresh
  blurs, each validation image filtered with the filter of its *true* length: the best a bank
  with a perfect blind length estimator could do;
- ``oracle_length_direction``: the same with 4 dominant-direction bins x 3 length bins.

Fits are ridge-regularised normal equations over ``--pixels`` random pixels per image.
Validation is the embedded real-photo validation set (8 pairs of 2 photos), PSNR as in
training (uint8 levels). Prints one Markdown table (gain over the input per length bin) and
writes every image's gain to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from deblur.data import io
from deblur.data.blur import CameraShake, random_motion_blur
from deblur.data.embedded import build_embedded
from deblur.data.pairs import read_embedded
from deblur.eval.metrics import psnr

REPO = Path(__file__).resolve().parents[2]
BUILD_KEYS = (
    "long_side",
    "blurs_per_photo",
    "kernel_size",
    "min_length",
    "max_length",
    "noise_sigma",
    "seed",
    "photos",
)
LENGTH_BINS = [(7, 14), (14, 21), (21, 31)]
LENGTH_LABELS = [f"{lo}-{hi - 1} px" for lo, hi in LENGTH_BINS]
DIRECTIONS = 4


def embedded_config():
    """data.embedded as conf/data/embedded.yaml sets it (build keys and blur keys)."""
    return OmegaConf.load(REPO / "conf" / "data" / "embedded.yaml").embedded


def length_bin(length: float) -> int:
    return next(i for i, (lo, hi) in enumerate(LENGTH_BINS) if lo <= length < hi)


def direction_bin(kernel: np.ndarray) -> int:
    """Bin of the kernel's dominant direction (principal axis of its mass), DIRECTIONS bins."""
    ys, xs = np.mgrid[: kernel.shape[0], : kernel.shape[1]]
    w = kernel / kernel.sum()
    dy, dx = ys - (w * ys).sum(), xs - (w * xs).sum()
    cyy, cxx, cxy = (w * dy * dy).sum(), (w * dx * dx).sum(), (w * dy * dx).sum()
    angle = (0.5 * np.degrees(np.arctan2(2 * cxy, cxx - cyy))) % 180
    width = 180 / DIRECTIONS
    return int(((angle + width / 2) % 180) // width)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """H x W x 3 uint8 RGB -> 1 x 3 x H x W float64 in [-1, 1] (the training range)."""
    return io.to_tensor(image)[None].double()


class Normal:
    """Accumulated normal equations of one least-squares filter: sum X^T X, sum X^T Y."""

    def __init__(self, size: int) -> None:
        n = 3 * size * size + 1
        self.xtx = np.zeros((n, n))
        self.xty = np.zeros((n, 3))
        self.images = 0

    def add(self, other: tuple[np.ndarray, np.ndarray]) -> None:
        self.xtx += other[0]
        self.xty += other[1]
        self.images += 1

    def solve(self, name: str, ridge: float = 1e-4) -> np.ndarray:
        if self.images == 0:
            raise SystemExit(
                f"linear_ceiling: no fresh blur fell in the bin '{name}', so its filter cannot be "
                "fitted. Raise --fresh-per-photo (the default, 36, fills every bin at --seed 1)."
            )
        n = self.xtx.shape[0]
        reg = ridge * np.trace(self.xtx) / n * np.eye(n)
        return np.linalg.solve(self.xtx + reg, self.xty)


def normal_terms(
    blurred: np.ndarray, sharp: np.ndarray, size: int, pixels: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """X^T X and X^T Y of ``pixels`` random pixels: X = the k x k x 3 window of the blurred
    image (reflect-padded) plus a constant, Y = the sharp pixel's residual (sharp - blurred)."""
    x = to_tensor(blurred)
    h, w = blurred.shape[:2]
    idx = torch.from_numpy(rng.choice(h * w, min(pixels, h * w), replace=False))
    windows = F.unfold(F.pad(x, [size // 2] * 4, mode="reflect"), size)[0][:, idx].T.numpy()
    design = np.hstack([windows, np.ones((len(windows), 1))])
    target = (to_tensor(sharp) - x)[0].reshape(3, -1)[:, idx].T.numpy()
    return design.T @ design, design.T @ target


def apply_filter(weights: np.ndarray, blurred: np.ndarray, size: int) -> torch.Tensor:
    """G(x) = clamp(x + filter(x)), as gen.deep_branch=false computes it."""
    x = to_tensor(blurred)
    kernel = torch.from_numpy(weights[:-1].T.copy()).reshape(3, 3, size, size)
    bias = torch.from_numpy(weights[-1].copy())
    residual = F.conv2d(F.pad(x, [size // 2] * 4, mode="reflect"), kernel, bias)
    return (x + residual).clamp(-1.0, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh-per-photo", type=int, default=36)
    parser.add_argument("--size", type=int, default=15, help="odd filter size (gen.linear_skip)")
    parser.add_argument("--pixels", type=int, default=12000, help="random pixels per image")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="CSV of every image's gain")
    args = parser.parse_args(argv)
    if args.size % 2 == 0:
        parser.error(f"--size must be odd, got {args.size}")
    start = time.perf_counter()
    cfg = embedded_config()
    root = build_embedded(None, **{k: cfg[k] for k in BUILD_KEYS})
    pairs = read_embedded(root)
    rng = np.random.default_rng(args.seed)
    size = args.size

    stored = Normal(size)
    for pair in pairs["train"]:
        stored.add(
            normal_terms(
                io.read_image(pair.blur), io.read_image(pair.sharp), size, args.pixels, rng
            )
        )

    shake = CameraShake(cfg.kernel_size, cfg.min_length, cfg.max_length, cfg.noise_sigma)
    fresh = Normal(size)
    by_length = [Normal(size) for _ in LENGTH_BINS]
    by_both = {(a, d): Normal(size) for a in range(len(LENGTH_BINS)) for d in range(DIRECTIONS)}
    photos = {pair.group: pair.sharp for pair in pairs["train"]}
    for sharp_path in photos.values():
        sharp = io.read_image(sharp_path)
        for _ in range(args.fresh_per_photo):
            length = float(rng.uniform(shake.min_length, shake.max_length))
            blurred, kernel = random_motion_blur(
                sharp, rng, shake.kernel_size, length, shake.noise_sigma
            )
            terms = normal_terms(blurred, sharp, size, args.pixels, rng)
            fresh.add(terms)
            by_length[length_bin(length)].add(terms)
            by_both[(length_bin(length), direction_bin(kernel))].add(terms)

    filters = {"stored": stored.solve("stored"), "fresh": fresh.solve("fresh")}
    length_filters = [n.solve(f"length {i}") for i, n in enumerate(by_length)]
    both_filters = {
        key: n.solve(f"length {key[0]}, direction {key[1]}") for key, n in by_both.items()
    }

    manifest_lengths = _val_lengths(root)
    rows = []
    for pair in pairs["val"]:
        blurred, sharp = io.read_image(pair.blur), io.read_image(pair.sharp)
        target = to_tensor(sharp)
        base = float(psnr(to_tensor(blurred), target)[0])
        length = manifest_lengths[pair.name]
        chosen = dict(filters)
        chosen["oracle_length"] = length_filters[length_bin(length)]
        kernel = io.read_kernel(pair.kernel)
        chosen["oracle_length_direction"] = both_filters[
            (length_bin(length), direction_bin(kernel))
        ]
        for method, weights in chosen.items():
            gain = float(psnr(apply_filter(weights, blurred, size), target)[0]) - base
            rows.append(
                {
                    "method": method,
                    "image": pair.name,
                    "length": length,
                    "input_psnr": base,
                    "gain_db": gain,
                }
            )
    frame = pd.DataFrame(rows)
    frame["bin"] = [LENGTH_LABELS[length_bin(x)] for x in frame["length"]]
    table = frame.pivot_table(index="method", columns="bin", values="gain_db", aggfunc="mean")
    table = table[LENGTH_LABELS]
    table["all"] = frame.groupby("method")["gain_db"].mean()
    order = ["stored", "fresh", "oracle_length", "oracle_length_direction"]
    print(
        f"linear {size}x{size} filter, least squares; fresh blurs: {args.fresh_per_photo} per "
        f"training photo x {len(photos)} photos; {args.pixels} pixels per image; seed "
        f"{args.seed}; {time.perf_counter() - start:.0f} s on the CPU"
    )
    print("gain over the blurred input (dB), embedded validation set:")
    print(table.loc[order].round(3).to_markdown())
    if args.out is not None:
        frame.to_csv(args.out, index=False, float_format="%.4f")
        print(f"per image: {args.out}")
    return 0


def _val_lengths(root: Path) -> dict[str, float]:
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    return {
        f"{p['photo']}/{p['index']:03d}": p["length"]
        for p in manifest["pairs"]
        if p["split"] == "val"
    }


if __name__ == "__main__":
    sys.exit(main())
