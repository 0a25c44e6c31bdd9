"""Generator latency on one 1280x720 image: warm-up, then the median of N timed runs.

    python benchmarks/inference_latency.py                     # FPN-MobileNetV2, auto device
    python benchmarks/inference_latency.py --device cpu --runs 5 --gen resnet

Times the whole ``deblur.eval.inference`` path on a tensor already on the device (mirror padding to
the stride, the network, the crop back), in fp32 and under bf16 autocast, with
``torch.cuda.synchronize()`` around every timed run on a GPU (CUDA calls are asynchronous).
Random weights (pretrained=False): latency does not depend on them. Prints one Markdown row per
precision for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from deblur.eval.inference import PadCrop, device_name, resolve_device

CONF = Path(__file__).resolve().parents[1] / "conf" / "gen"


def build(gen: str) -> torch.nn.Module:
    """The generator of ``conf/gen/<gen>.yaml`` with random weights."""
    cfg = OmegaConf.create({"pretrained": False, "gen": OmegaConf.load(CONF / f"{gen}.yaml")})
    return instantiate(cfg.gen)


def time_model(
    model: torch.nn.Module, x: torch.Tensor, bf16: bool, warmup: int, runs: int
) -> list[float]:
    """Milliseconds per run (after ``warmup`` untimed runs)."""
    dev = x.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ctx = (
        (lambda: torch.autocast(device_type=dev.type, dtype=torch.bfloat16))
        if bf16
        else (lambda: torch.autocast(device_type=dev.type, enabled=False))
    )
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            sync()
            start = time.perf_counter()
            with ctx():
                model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--gen", default="fpn_mobilenetv2", help="conf/gen option")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument(
        "--precisions",
        default="auto",
        help="comma list of fp32,bf16; auto = fp32,bf16 on CUDA, fp32 on CPU (CPUs without "
        "AVX512-BF16/AMX emulate bf16: ~35x slower here)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    model = PadCrop(build(args.gen)).to(dev).eval()
    params = sum(q.numel() for q in model.parameters()) / 1e6
    x = torch.rand(1, 3, args.height, args.width, device=dev) * 2 - 1
    name = device_name(dev)
    print(
        f"# {args.gen} ({params:.2f} M params), {args.width}x{args.height}, device {dev} ({name}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"warm-up {args.warmup}, median of {args.runs}",
        flush=True,
    )
    print("| model | device | precision | image | median ms | min ms | max ms | torch |")
    print("|---|---|---|---|---|---|---|---|")
    precisions = args.precisions
    if precisions == "auto":
        precisions = "fp32,bf16" if dev.type == "cuda" else "fp32"
    for prec in [s.strip() for s in precisions.split(",") if s.strip()]:
        try:
            t = time_model(model, x, prec == "bf16", args.warmup, args.runs)
        except RuntimeError as err:  # e.g. bf16 unsupported on this device
            print(f"| {args.gen} | {dev} | {prec} | failed: {err} |")
            continue
        print(
            f"| {args.gen} | {dev.type} ({name}) | {prec} | {args.width}x{args.height} "
            f"| {statistics.median(t):.1f} | {min(t):.1f} | {max(t):.1f} | {torch.__version__} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
