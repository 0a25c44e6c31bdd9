"""Tiled against whole-image prediction on one large photo: PSNR of the difference and time.

    python benchmarks/tiling.py --ckpt runs/gan/.../checkpoints/last.ckpt       # a trained G
    python benchmarks/tiling.py --gen fpn_mobilenetv2                            # random weights

The photo is the embedded data's ``rocket`` (scikit-image) resized to 1600x1200 (``--size``).
For each tile size and context margin (``--contexts``) it runs the generator whole and tiled
(``deblur.eval.inference.deblur_tensor``, overlap 32), with the shared normalisation statistics (the
default) and without them (each tile normalising itself), and prints one Markdown row per setting: PSNR of tiled against whole (in
[-1, 1] -> [0, 1] units, peak 1), the largest absolute difference in 8-bit levels, and the
median wall time of ``--runs`` runs with its ratio to the whole image's. On the device it names.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from deblur.data.embedded import available_photos
from deblur.data.io import read_image, to_tensor
from deblur.eval.inference import PadCrop, deblur_tensor, device_name, resolve_device
from deblur.models.load import load_generator

CONF = Path(__file__).resolve().parents[1] / "conf" / "gen"


def build(gen: str) -> torch.nn.Module:
    cfg = OmegaConf.create({"pretrained": False, "gen": OmegaConf.load(CONF / f"{gen}.yaml")})
    return instantiate(cfg.gen).eval().requires_grad_(False)


def photo(size: tuple[int, int]) -> torch.Tensor:
    path = available_photos(["rocket"])["rocket"]
    rgb = cv2.resize(read_image(path), size, interpolation=cv2.INTER_CUBIC)
    return to_tensor(rgb).unsqueeze(0)


def timed(fn, runs: int) -> tuple[torch.Tensor, float]:
    out, times = None, []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default=None, help="a GAN checkpoint (else random --gen)")
    ap.add_argument("--gen", default="fpn_mobilenetv2")
    ap.add_argument("--size", type=int, nargs=2, default=[1600, 1200], help="width height")
    ap.add_argument("--tiles", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--contexts", type=int, nargs="+", default=[0], help="context margins (px)")
    ap.add_argument("--stats-size", type=int, default=512, help="long side the shared stats use")
    ap.add_argument("--no-own-stats", action="store_true", help="skip the rows without them")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    torch.manual_seed(0)
    net = load_generator(args.ckpt) if args.ckpt else build(args.gen)
    model = PadCrop(net)
    dev = resolve_device(args.device)
    x = photo(tuple(args.size))
    what = args.ckpt or f"{args.gen} (random weights)"
    print(
        f"{what}; {args.size[0]}x{args.size[1]}; overlap {args.overlap}; shared stats at long "
        f"side {args.stats_size}; {device_name(dev)}"
    )
    with torch.inference_mode():
        whole, t_whole = timed(lambda: deblur_tensor(model, x, None, device=dev), args.runs)
        print(
            "| tile | context | shared stats | PSNR vs whole (dB) | max diff (8-bit) | time (s) | x whole |"
        )
        print("|---|---|---|---|---|---|---|")
        print(f"| whole | - | - | - | - | {t_whole:.2f} | 1.00 |")
        shares = (True,) if args.no_own_stats else (True, False)
        settings = [(t, c, sh) for t in args.tiles for c in args.contexts for sh in shares]
        for tile, context, shared in settings:
            out, t = timed(
                lambda tile=tile, shared=shared, context=context: deblur_tensor(
                    model,
                    x,
                    tile,
                    args.overlap,
                    dev,
                    shared_stats=shared,
                    stats_size=args.stats_size,
                    context=context,
                ),
                args.runs,
            )
            a, b = (whole.clamp(-1, 1) + 1) / 2, (out.clamp(-1, 1) + 1) / 2
            mse = float(((a - b) ** 2).mean())
            psnr = float("inf") if mse == 0 else 10 * np.log10(1 / mse)
            worst = float((a - b).abs().max()) * 255
            print(
                f"| {tile} | {context} | {'yes' if shared else 'no'} | {psnr:.1f} | "
                f"{worst:.0f} | {t:.2f} | {t / t_whole:.2f} |"
            )


if __name__ == "__main__":
    main()
