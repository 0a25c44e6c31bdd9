"""Data-loader throughput: pairs/s of 256x256 training crops from 1280x720 PNG pairs.

Builds a synthetic GoPro-layout folder in a temp dir and reads it through the real
``DeblurDataModule`` train loader (conf/data/gopro.yaml defaults: thesis augmentations),
with and without the RAM cache, for several worker counts, with the augmentations in the
workers (``data.augment_on=cpu``) or on the device (``gpu``: the workers cut uint8 patches; the
warps, run on the batch by the GPU, are not part of this count). Usage:

    python benchmarks/data_throughput.py [--pairs 20] [--workers 0 2] [--min-pairs 60]
        [--augment-on cpu gpu] [--batch-size 1]

With ``--workers 1`` one worker process does all the loading: its pairs/s is the figure per
worker core (the main process only receives batches).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra.utils import instantiate

from deblur.config import compose
from deblur.data.blur import apply_kernel, motion_kernel
from deblur.data.io import write_image
from deblur.eval.inference import device_name


def natural_like(rng: np.random.Generator, h: int = 720, w: int = 1280) -> np.ndarray:
    """Multi-scale noise + fine grain: compresses about like a real 720p frame."""
    img = np.zeros((h, w, 3), np.float32)
    for scale, amp in ((64, 90.0), (16, 40.0), (4, 18.0)):
        small = rng.normal(0.0, 1.0, (h // scale + 1, w // scale + 1, 3)).astype(np.float32)
        img += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0.0, 3.0, img.shape).astype(np.float32)
    return np.clip(img + 128.0, 0, 255).astype(np.uint8)


def make_gopro(root: Path, pairs: int, sequences: int, seed: int = 0) -> float:
    """Write ``pairs`` 1280x720 pairs in ``sequences`` train sequences (+1 test); MB per PNG."""
    rng = np.random.default_rng(seed)
    sizes = []
    for i in range(pairs):
        seq = f"GOPR{i % sequences:04d}_11_00"
        sharp = natural_like(rng)
        blur = apply_kernel(sharp, motion_kernel(31, rng))
        for split in ("train",) + (("test",) if i == 0 else ()):
            base = root / split / (seq if split == "train" else "GOPR9999_11_00")
            write_image(base / "sharp" / f"{i:06d}.png", sharp)
            sizes.append(write_image(base / "blur" / f"{i:06d}.png", blur).stat().st_size)
    return float(np.mean(sizes)) / 1e6


def measure(
    root: Path, workers: int, cache: bool, pre_crop: str, min_pairs: int, on: str, batch: int
) -> dict:
    cfg = compose(
        "train",
        [
            "data=gopro",
            f"data.root={root}",
            f"data.num_workers={workers}",
            f"data.cache={str(cache).lower()}",
            f"data.pre_crop_scale={pre_crop}",
            "data.crop_size=256",
            f"data.batch_size={batch}",
            f"data.augment_on={on}",
        ],
    )
    dm = instantiate(cfg.data, task="paired")
    start = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - start
    loader = dm.train_dataloader()
    seen, first, t0 = 0, True, 0.0
    while seen < min_pairs:
        for batch in loader:
            if first:  # exclude worker start-up and the first decode
                first, t0 = False, time.perf_counter()
                continue
            seen += batch["blur"].shape[0]
            if seen >= min_pairs:
                break
    elapsed = time.perf_counter() - t0
    return {"pairs_per_s": seen / elapsed, "setup_s": setup_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--sequences", type=int, default=2)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--min-pairs", type=int, default=60)
    parser.add_argument("--augment-on", nargs="+", default=["cpu"], choices=["cpu", "gpu"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--whole-frame",
        action="store_true",
        help="also measure pre_crop_scale=null (thesis order on whole frames)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="deblur_bench_") as tmp:
        root = Path(tmp) / "GOPRO_Large"
        t = time.perf_counter()
        mb = make_gopro(root, args.pairs, args.sequences)
        print(
            f"synthetic GoPro: {args.pairs} pairs 1280x720 in {args.sequences} sequences, "
            f"{mb:.2f} MB per PNG, written in {time.perf_counter() - t:.1f} s"
        )
        print(
            f"CPU: {device_name('cpu')}; os.cpu_count()={os.cpu_count()}; "
            f"python {platform.python_version()}, torch {torch.__version__}, cv2 {cv2.__version__}"
        )
        rows = []
        crops = ["1.6"] + (["null"] if args.whole_frame else [])
        settings = [
            (on, pre_crop, cache, workers)
            for on in args.augment_on
            for pre_crop in crops
            for cache in (False, True)
            for workers in args.workers
        ]
        for on, pre_crop, cache, workers in settings:
            if on == "gpu" and pre_crop == "null":
                continue  # the GPU path needs a patch (data.pre_crop_scale)
            r = measure(root, workers, cache, pre_crop, args.min_pairs, on, args.batch_size)
            rows.append((on, pre_crop, cache, workers, r))
            print(
                f"  measured augment_on={on} cache={cache} workers={workers} "
                f"pre_crop_scale={pre_crop}: {r['pairs_per_s']:.1f} pairs/s",
                flush=True,
            )
        print(f"\nbatch size {args.batch_size}, {args.min_pairs} pairs timed per row")
        print("| augment_on | pre_crop_scale | RAM cache | workers | pairs/s | setup s |")
        print("|---|---|---|---|---|---|")
        for on, pre_crop, cache, workers, r in rows:
            print(
                f"| {on} | {pre_crop} | {'yes' if cache else 'no'} | {workers} | "
                f"{r['pairs_per_s']:.1f} | {r['setup_s']:.1f} |"
            )


if __name__ == "__main__":
    main()
