"""Parameters and compute of every generator in conf/gen, beside DeblurGAN-v2's published figures.

Counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device (no real compute),
batch 1, random weights. FlopCounterMode counts convolutions and matrix products as
2 x multiply-adds (FLOPs); we also print MACs = FLOPs / 2, the unit most deblurring papers (and
likely DeblurGAN-v2's "GFLOPs") report. Element-wise ops, norms, activations, padding and
interpolation are not counted. Inputs are reflect-padded inside the generators (FPN: to a
multiple of 32, so 1280x720 runs as 1280x736; ResNet: multiple of 4), and the padded size is what
is counted.

Usage: python benchmarks/model_flops.py [--gens fpn_mobilenetv2 resnet] [--sizes 256x256 1280x720]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.flop_counter import FlopCounterMode

GEN_DIR = Path(__file__).resolve().parents[1] / "conf" / "gen"
# DeblurGAN-v2 (Kupyn et al., ICCV 2019), GoPro table / model zoo.
PUBLISHED = {
    "fpn_mobilenetv2": "FPN-MobileNet: 2.1 M params, 43.75 GFLOPs",
    "fpn_inception": "FPN-Inception: 411 GFLOPs",
}


def count(gen: torch.nn.Module, height: int, width: int) -> int:
    """FLOPs (2 x MACs) of one forward pass of a 1 x 3 x height x width image, on meta tensors."""
    x = torch.zeros(1, 3, height, width, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        gen(x)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gens", nargs="*", default=sorted(p.stem for p in GEN_DIR.glob("*.yaml")))
    parser.add_argument("--sizes", nargs="*", default=["256x256", "1280x720"], help="WxH")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # silence the random-weights banners
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]

    head = ["generator", "params (M)"]
    for w, h in sizes:
        head += [f"GMACs {w}x{h}", f"GFLOPs {w}x{h}"]
    head.append("published (DeblurGAN-v2)")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in args.gens:
        cfg = OmegaConf.create(
            {"pretrained": False, "gen": OmegaConf.load(GEN_DIR / f"{name}.yaml")}
        )
        gen = instantiate(cfg.gen).eval()
        params = sum(p.numel() for p in gen.parameters()) / 1e6
        gen = gen.to("meta")
        row = [name, f"{params:.2f}"]
        for w, h in sizes:
            flops = count(gen, h, w)
            row += [f"{flops / 2e9:.2f}", f"{flops / 1e9:.2f}"]
        row.append(PUBLISHED.get(name, ""))
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
