"""Training throughput of the real LightningModules: images/s, peak memory and MFU per switch.

Times ``deblur.systems.gan.GANSystem`` (the reference configuration: FPN-MobileNetV2 generator,
DoubleGAN with NLayer critics, RaGAN-LS, pixel + VGG19 conv3_3 content loss, random weights)
inside a real ``pytorch_lightning.Trainer``, fed one pre-made synthetic batch that already sits on
the device (data loading is not measured), plus the blur-classifier step and generator inference
on 1280x720. Each iteration is timed between ``on_train_batch_start`` and ``on_train_batch_end``
(synchronised on a GPU), after warm-up; we report the median and p10/p90. FLOPs per image are
counted with ``torch.utils.flop_counter.FlopCounterMode`` on the first warm-up iteration of the
real step (forward, backward, both critics, VGG) and divided by a large matmul timed in the same
run (bf16 on a GPU, fp32 on a CPU) to give the model-FLOPs utilisation (MFU).

    python benchmarks/train_throughput.py --device cuda --matrix --out benchmarks/RESULTS.md
    python benchmarks/train_throughput.py --smoke            # seconds, CPU, tiny sizes
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import logging
import os
import platform
import re
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from deblur.config import compose, to_container
from deblur.eval.inference import device_name

SECTION = "## Training throughput"
REFERENCE = ["gen=fpn_mobilenetv2", "disc=double", "backbone=nlayer", "loss=ragan_ls"]
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


@dataclass(frozen=True)
class Variant:
    """One setting of the fast-path switches (the config keys GANSystem reads)."""

    name: str
    precision: str = "32-true"
    channels_last: bool = False
    fused: bool = False
    health_check_every: int = 1
    cudnn_benchmark: bool = False
    compile: bool = False

    def overrides(self) -> list[str]:
        """Hydra overrides of conf/train.yaml for this variant."""
        return [
            f"trainer.precision={self.precision}",
            f"trainer.benchmark={str(self.cudnn_benchmark).lower()}",
            f"model.channels_last={str(self.channels_last).lower()}",
            f"optim.fused={str(self.fused).lower()}",
            f"model.health_check_every={self.health_check_every}",
        ]


BASELINE = Variant("baseline fp32")
# Each switch alone on top of the fp32 baseline (--matrix), then all of them together.
SWITCHES: dict[str, dict[str, Any]] = {
    "bf16": {"precision": "bf16-mixed"},
    "channels_last": {"channels_last": True},
    "fused": {"fused": True},
    "no_health_check": {"health_check_every": 0},
    "cudnn_benchmark": {"cudnn_benchmark": True},
    "compile": {"compile": True},
}
MATRIX_DEFAULT = [
    "baseline",
    "bf16",
    "channels_last",
    "fused",
    "no_health_check",
    "cudnn_benchmark",
    "all",
]


def matrix_variant(name: str) -> Variant:
    """``baseline``, ``all`` (every switch but compile) or one switch of SWITCHES alone."""
    if name == "baseline":
        return BASELINE
    if name == "all":
        merged: dict[str, Any] = {}
        for key, sw in SWITCHES.items():
            if key != "compile":
                merged.update(sw)
        return replace(BASELINE, name="all (bf16+cl+fused+no-check+cudnn)", **merged)
    if name not in SWITCHES:
        raise ValueError(
            f"train_throughput.py: unknown --variants entry '{name}'. Choose from baseline, all, "
            f"{', '.join(SWITCHES)}."
        )
    return replace(BASELINE, name=f"+{name}", **SWITCHES[name])


@dataclass
class Row:
    """One measured line of the results table."""

    step: str
    variant: str
    batch: int
    size: str
    precision: str
    times_s: list[float]
    wall_s: float
    peak_mib: float
    flops_per_image: float | None = None
    flops_method: str = ""
    peak_flops: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def images_per_s(self, q: float = 0.5) -> float:
        """Images/s at quantile ``q`` of the per-iteration times (q=0.5: the median)."""
        t = quantile(self.times_s, 1.0 - q)  # fast iterations = high images/s
        return self.batch / t if t > 0 else float("nan")

    @property
    def wall_images_per_s(self) -> float:
        n = self.batch * len(self.times_s)
        return n / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def mfu(self) -> float | None:
        if not self.flops_per_image or not self.peak_flops:
            return None
        return self.flops_per_image * self.images_per_s() / self.peak_flops


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (q in [0, 1]) of a non-empty list."""
    if not values:
        raise ValueError("train_throughput.py: no timed iterations (raise --iters).")
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo, hi = int(pos), min(int(pos) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


# ---------------------------------------------------------------------------- device helpers
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mib() -> float:
    """Current resident set size of this process (MiB); peak RSS where /proc is missing."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """Peak memory of a block: ``torch.cuda.max_memory_allocated`` on a GPU, sampled RSS on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0.0

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.peak = rss_mib() if self.device.type != "cuda" else 0.0

    def sample(self) -> None:
        if self.device.type != "cuda":
            self.peak = max(self.peak, rss_mib())

    def mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        self.sample()
        return self.peak


def matmul_peak(device: torch.device, n: int, min_s: float = 0.1) -> tuple[float, str]:
    """FLOP/s of a timed ``n x n`` matmul: bf16 on a GPU, fp32 on a CPU (the MFU denominator);
    best of 3 trials of at least ``min_s`` seconds each."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.matmul(a, b)
    sync(device)
    start = time.perf_counter()
    torch.matmul(a, b)
    sync(device)
    reps = max(1, min(1000, int(min_s / max(time.perf_counter() - start, 1e-6))))
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        sync(device)
        best = min(best, (time.perf_counter() - start) / reps)
    return 2.0 * n**3 / best, f"{str(dtype).removeprefix('torch.')} {n}x{n} matmul"


# ---------------------------------------------------------------------------- data and timing
class RepeatedBatch(Dataset):
    """``length`` times the same pre-made batch (already on the device): no loading is timed."""

    def __init__(self, batch: dict[str, Tensor], length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.batch


def loader(batch: dict[str, Tensor], length: int) -> DataLoader:
    """A DataLoader yielding ``batch`` as is (``batch_size=None``: no collation, no copy)."""
    return DataLoader(RepeatedBatch(batch, length), batch_size=None, shuffle=False, num_workers=0)


class StepTimer(Callback):
    """Times each training batch (start to end hook, synchronised); FLOP-counts batch 0."""

    def __init__(self, warmup: int, memory: PeakMemory, count_flops: bool = True) -> None:
        self.warmup, self.memory, self.count_flops = warmup, memory, count_flops
        self.times: list[float] = []
        self.flops: int | None = None
        self.first_timed = self.last_end = 0.0
        self._t0 = 0.0
        self._counter: FlopCounterMode | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0 and self.count_flops:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        if batch_idx == self.warmup:
            self.memory.start()
        sync(pl_module.device)
        self._t0 = time.perf_counter()
        if batch_idx == self.warmup:
            self.first_timed = self._t0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(pl_module.device)
        end = time.perf_counter()
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops = int(self._counter.get_total_flops())
            self._counter = None
        if batch_idx >= self.warmup:
            self.times.append(end - self._t0)
            self.last_end = end
            self.memory.sample()

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self._counter = None


def compile_submodules(system: nn.Module) -> None:
    """In-place ``nn.Module.compile`` of G, D and the VGG (keys unchanged; whole-module compile
    breaks Lightning's toggle_optimizer)."""
    for name in ("generator", "discriminator", "net"):
        mod = getattr(system, name, None)
        if isinstance(mod, nn.Module):
            mod.compile()
    perceptual = getattr(getattr(system, "content_loss", None), "perceptual", None)
    features = getattr(perceptual, "features", None)
    if isinstance(features, nn.Module):
        features.compile()


def fit_timed(
    system: pl.LightningModule,
    batch: dict[str, Tensor],
    variant: Variant,
    device: torch.device,
    warmup: int,
    iters: int,
    count_flops: bool = True,
) -> StepTimer:
    """Run ``warmup + iters`` training batches of ``system`` in a real Trainer; the timer."""
    memory = PeakMemory(device)
    timer = StepTimer(warmup, memory, count_flops)
    if variant.compile:
        compile_submodules(system)
    with tempfile.TemporaryDirectory(prefix="deblur_bench_") as root:
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            precision=variant.precision,
            benchmark=variant.cudnn_benchmark if device.type == "cuda" else None,
            max_epochs=1,
            limit_train_batches=warmup + iters,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[timer],
            default_root_dir=root,
        )
        trainer.fit(system, train_dataloaders=loader(batch, warmup + iters))
    return timer


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Lightning's info lines, the random-weights banners and loader warnings."""
    names = ["pytorch_lightning", "lightning", "lightning_fabric", "deblur"]
    old = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    with warnings.catch_warnings(), open(os.devnull, "w") as devnull:
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(devnull):
            try:
                yield
            finally:
                for n, level in old.items():
                    logging.getLogger(n).setLevel(level)


# ---------------------------------------------------------------------------- the three steps
def random_batch(batch: int, crop: int, device: torch.device, keys: tuple[str, ...]) -> dict:
    gen = torch.Generator().manual_seed(0)
    return {k: (torch.rand(batch, 3, crop, crop, generator=gen) * 2 - 1).to(device) for k in keys}


def gan_config(variant: Variant, crop: int, batch: int, extra: list[str]) -> dict[str, Any]:
    """The resolved conf/train.yaml of the reference cell, random weights, encoder not frozen."""
    overrides = [
        *REFERENCE,
        "pretrained=false",
        "model.warmup_epochs=0",
        "model.ema_decay=0.0",
        f"data.crop_size={crop}",
        f"data.batch_size={batch}",
        *variant.overrides(),
        *extra,
    ]
    return to_container(compose("train", overrides))


# FLOPs per image of (step, batch, crop), counted once: a compiled variant reuses its eager count.
_FLOPS: dict[tuple[str, int, int], tuple[float, str]] = {}


def measure_step(
    step: str,
    build: Callable[[], pl.LightningModule],
    data: dict[str, Tensor],
    variant: Variant,
    device: torch.device,
    args: argparse.Namespace,
) -> Row:
    """Build a fresh system, fit it on ``data`` for warm-up + timed batches, return its Row.

    FLOPs: counted on the first warm-up batch; if the counter breaks the step, the run is
    repeated uncounted and forward FLOPs x 3 stand in (labelled "fwd x3")."""
    batch = next(iter(data.values())).shape[0]
    crop = next(iter(data.values())).shape[-1]
    key = (step, batch, crop)
    count = not variant.compile and key not in _FLOPS
    torch.manual_seed(0)
    with quiet():
        system = build()
        try:
            timer = fit_timed(system, data, variant, device, args.warmup, args.iters, count)
        except Exception:  # noqa: BLE001 - only when counting: retry without the counter
            if not count:
                raise
            count = False
            system = build()
            timer = fit_timed(system, data, variant, device, args.warmup, args.iters, False)
    if timer.flops:
        _FLOPS[key] = (timer.flops / batch, "counted")
    elif key not in _FLOPS and not variant.compile:
        fwd = forward_flops(system, data)
        _FLOPS[key] = (3 * fwd / batch, "fwd x3") if fwd else (float("nan"), "n/a")
    flops, method = _FLOPS.get(key, (float("nan"), "n/a"))
    row = Row(
        step,
        variant.name,
        batch,
        f"{crop}x{crop}",
        variant.precision,
        timer.times,
        timer.last_end - timer.first_timed,
        timer.memory.mib(),
        flops,
        method,
    )
    del system
    return row


def bench_gan(variant: Variant, batch: int, crop: int, device: torch.device, args) -> Row:
    """Time ``GANSystem.training_step`` (the real one) at ``batch`` x ``crop``^2."""
    from deblur.systems.fit import build_system

    cfg = gan_config(variant, crop, batch, args.override)
    data = random_batch(batch, crop, device, ("blur", "sharp"))
    return measure_step("GAN train step", lambda: build_system(cfg), data, variant, device, args)


def classifier_config(variant: Variant, crop: int, batch: int, extra: list[str]) -> dict:
    overrides = [
        "backbone=nlayer",
        "pretrained=false",
        f"data.crop_size={crop}",
        f"data.batch_size={batch}",
        f"trainer.precision={variant.precision}",
        *extra,
    ]
    return to_container(compose("train_classifier", overrides))


def bench_classifier(variant: Variant, batch: int, crop: int, device: torch.device, args) -> Row:
    """Time ``ClassifierSystem.training_step`` (BCE on the NLayer single critic)."""
    from deblur.systems.fit import build_system

    cfg = classifier_config(variant, crop, batch, args.classifier_override)
    data = random_batch(batch, crop, device, ("image",))
    data["label"] = (torch.arange(batch) % 2).float().to(device)
    return measure_step(
        "classifier train step", lambda: build_system(cfg), data, variant, device, args
    )


def forward_flops(system: pl.LightningModule, data: dict[str, Tensor]) -> int:
    """FLOPs of the step's forward passes in no_grad: the classifier's net, or G once, D on
    real and fake in the D step and the G step, and the content loss."""
    system = system.to(next(iter(data.values())).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if "image" in data:
            system(data["image"])
        else:
            fake = system.generator(data["blur"])
            for _ in range(2):
                system.discriminator(data["sharp"])
                system.discriminator(fake)
            system.content_loss(fake, data["sharp"])
    return int(counter.get_total_flops())


def bench_inference(variant: Variant, width: int, height: int, device: torch.device, args) -> Row:
    """Generator inference (eval, no_grad) on one ``width x height`` image."""
    from hydra.utils import instantiate

    torch.manual_seed(0)
    with quiet():
        cfg = compose("train", [*REFERENCE, "pretrained=false"])
        gen = instantiate(cfg.gen).to(device).eval()
    torch.backends.cudnn.benchmark = variant.cudnn_benchmark  # not left over from a Trainer
    fmt = torch.channels_last if variant.channels_last else torch.contiguous_format
    gen = gen.to(memory_format=fmt)
    x = (torch.rand(1, 3, height, width, device=device) * 2 - 1).contiguous(memory_format=fmt)
    bf16 = variant.precision.startswith("bf16")
    fp16 = variant.precision.startswith("16")
    dtype = torch.bfloat16 if bf16 else torch.float16
    memory = PeakMemory(device)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            gen(x)
        flops = counter.get_total_flops()
        times: list[float] = []
        memory.start()
        t_first = 0.0
        for i in range(args.warmup + args.iters):
            sync(device)
            start = time.perf_counter()
            if i == args.warmup:
                t_first = start
            with torch.autocast(device.type, dtype=dtype, enabled=bf16 or fp16):
                gen(x)
            sync(device)
            if i >= args.warmup:
                times.append(time.perf_counter() - start)
                memory.sample()
        wall = time.perf_counter() - t_first
    return Row(
        "G inference (eval, no_grad)",
        variant.name,
        1,
        f"{width}x{height}",
        variant.precision,
        times,
        wall,
        memory.mib(),
        float(flops),
        "counted",
    )


# ---------------------------------------------------------------------------- table
def flops_rate(v: float) -> str:
    return f"{v / 1e12:.1f} TFLOP/s" if v >= 1e12 else f"{v / 1e9:.1f} GFLOP/s"


def fmt(v: float | None, digits: int = 1) -> str:
    if v is None or v != v:  # None or NaN
        return "n/a"
    return f"{v:.{digits}f}"


TABLE_HEAD = (
    "| step | variant | batch | input | precision | img/s median | img/s p10-p90 | img/s wall "
    "| ms/iter median | peak mem (MiB) | GFLOP/img | MFU % |"
)


def table_row(r: Row) -> str:
    mfu = r.mfu
    flops = fmt(r.flops_per_image / 1e9 if r.flops_per_image else None, 2)
    if r.flops_method and r.flops_method != "counted" and flops != "n/a":
        flops += f" ({r.flops_method})"
    cells = [
        r.step,
        r.variant,
        str(r.batch),
        r.size,
        r.precision,
        fmt(r.images_per_s(0.5), 2),
        f"{fmt(r.images_per_s(0.1), 2)}-{fmt(r.images_per_s(0.9), 2)}",
        fmt(r.wall_images_per_s, 2),
        fmt(statistics.median(r.times_s) * 1000.0, 1),
        fmt(r.peak_mib, 0),
        flops,
        fmt(mfu * 100.0 if mfu is not None else None, 2),
    ]
    return "| " + " | ".join(cells) + " |"


def versions() -> str:
    out = f"torch {torch.__version__}, pytorch-lightning {pl.__version__}, Python {platform.python_version()}"
    if torch.cuda.is_available():
        out += f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
    return out


def report(
    rows: list[Row], device: torch.device, peak: tuple[float, str], args, command: str
) -> str:
    """The Markdown block (header lines + table) appended under SECTION."""
    when = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    label = f"CPU ({os.cpu_count()}-core machine)" if device.type == "cpu" else "GPU"
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    cores = (
        f", {os.cpu_count()} cores, torch threads: {torch.get_num_threads()}, load average "
        f"{load} at the end (other processes share these cores)"
    )
    mode = " — smoke mode (tiny sizes: checks the harness, not a measurement)" if args.smoke else ""
    lines = [
        f"### {label}: {device_name(device)} ({when}){mode}",
        "",
        f"- device: {device.type} ({device_name(device)}){cores if device.type == 'cpu' else ''}",
        f"- versions: {versions()}",
        f"- MFU denominator: {flops_rate(peak[0])} measured here ({peak[1]})",
        f"- {args.warmup} warm-up + {args.iters} timed iterations per row; images/s from the "
        "median (p10-p90) per-iteration time; 'wall' = all timed images / their wall time",
        "- GFLOP/img: FlopCounterMode on the first (warm-up) iteration of the real step "
        "(forward + backward of G, both critics and VGG19 conv3_3; matmul/conv only); inference "
        "rows: the generator's forward",
        *(
            ["- on a CPU, fused Adam and cudnn.benchmark are no-ops (GANSystem fuses on CUDA only)"]
            if device.type == "cpu"
            else []
        ),
        f"- command: `{command}`",
        "",
        TABLE_HEAD,
        "|" + "---|" * TABLE_HEAD.count(" | ") + "---|",
        *[table_row(r) for r in rows],
        "",
    ]
    return "\n".join(lines)


def append_section(path: Path, block: str, heading: str = SECTION) -> None:
    """Append ``block`` at the end of the ``heading`` section of ``path`` (created if missing),
    before the next ``## `` heading, so other sections of the file stay where they are."""
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    lines = text.splitlines()
    try:
        start = lines.index(heading)
    except ValueError:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n{block.rstrip()}\n"
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if re.match(r"^## ", lines[i])), len(lines)
        )
        head = "\n".join(lines[:end]).rstrip("\n")
        tail = "\n".join(lines[end:])
        text = f"{head}\n\n{block.rstrip()}\n" + (f"\n{tail}\n" if tail else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def row_dict(r: Row) -> dict[str, Any]:
    """One row as plain JSON values (times in seconds, derived figures included)."""
    mfu = r.mfu
    return {
        "step": r.step,
        "variant": r.variant,
        "batch": r.batch,
        "size": r.size,
        "precision": r.precision,
        "images_per_s": r.images_per_s(0.5),
        "images_per_s_p10": r.images_per_s(0.1),
        "images_per_s_p90": r.images_per_s(0.9),
        "images_per_s_wall": r.wall_images_per_s,
        "ms_per_iter_median": statistics.median(r.times_s) * 1000.0,
        "peak_mib": r.peak_mib,
        "flops_per_image": r.flops_per_image,
        "flops_method": r.flops_method,
        "mfu": mfu,
        "times_s": r.times_s,
        **r.extra,
    }


def write_json(path: Path, rows: list[Row], device: torch.device, peak: tuple[float, str]) -> None:
    """All rows so far, with the device and the MFU denominator (atomic rewrite)."""
    import json

    data = {
        "device": device_name(device),
        "device_type": device.type,
        "versions": versions(),
        "peak_flops": peak[0],
        "peak_method": peak[1],
        "rows": [row_dict(r) for r in rows],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(path)


# ---------------------------------------------------------------------------- command line
SMOKE = {
    "crop": 64,
    "batch_sizes": [1, 2],
    "iters": 2,
    "warmup": 1,
    "infer_size": [96, 64],
    "matmul_n": 1024,
}
FULL = {
    "crop": 256,
    "batch_sizes": [1, 16],
    "iters": 100,
    "warmup": 20,
    "infer_size": [1280, 720],
    "matmul_n": None,  # 8192 on a GPU, 2048 on a CPU
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--smoke", action="store_true", help="tiny CPU sizes (tests, harness check)")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="default 1 16 (smoke: 1 2)")
    p.add_argument("--crop", type=int, help="training crop side (default 256, smoke 64)")
    p.add_argument("--iters", type=int, help="timed iterations per row (default 100, smoke 2)")
    p.add_argument("--warmup", type=int, help="untimed iterations first (default 20, smoke 1)")
    p.add_argument("--infer-size", type=int, nargs=2, metavar=("W", "H"), help="default 1280 720")
    p.add_argument(
        "--matmul-n", type=int, help="side of the peak-FLOP/s matmul (default 8192 GPU, 2048 CPU)"
    )
    g = p.add_argument_group("switches (one configuration; --matrix measures them one at a time)")
    g.add_argument("--precision", default="32-true", choices=PRECISIONS)
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--fused", action="store_true", help="fused Adam (CUDA only)")
    g.add_argument("--no-health-check", action="store_true", help="model.health_check_every=0")
    g.add_argument("--cudnn-benchmark", action="store_true", help="trainer.benchmark=true")
    g.add_argument("--compile", action="store_true", help="torch.compile G, D and VGG (in place)")
    p.add_argument("--matrix", action="store_true", help="baseline fp32, then each switch alone")
    p.add_argument(
        "--variants",
        nargs="+",
        default=MATRIX_DEFAULT,
        help=f"with --matrix: from baseline, all, {', '.join(SWITCHES)}",
    )
    p.add_argument(
        "--steps",
        nargs="+",
        default=["gan", "classifier", "inference"],
        choices=["gan", "classifier", "inference"],
    )
    p.add_argument("--override", nargs="*", default=[], help="extra conf/train.yaml overrides")
    p.add_argument("--classifier-override", nargs="*", default=[])
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", type=Path, help="append the table to this Markdown file")
    p.add_argument(
        "--json", type=Path, help="write the rows here as JSON, rewritten after every row"
    )
    args = p.parse_args(argv)
    profile = SMOKE if args.smoke else FULL
    for key, value in profile.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.smoke and args.device == "auto":
        args.device = "cpu"
    if args.warmup < 1 or args.iters < 1:
        p.error("--warmup and --iters must be >= 1 (FLOPs are counted on the first warm-up step)")
    return args


def resolve(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "train_throughput.py: --device cuda but torch sees no CUDA GPU. Run it on a GPU "
            "machine, or use --device cpu (e.g. with --smoke)."
        )
    return torch.device(device)


def variants_of(args) -> list[Variant]:
    if args.matrix:
        return [matrix_variant(v) for v in args.variants]
    single = Variant(
        "custom",
        precision=args.precision,
        channels_last=args.channels_last,
        fused=args.fused,
        health_check_every=0 if args.no_health_check else 1,
        cudnn_benchmark=args.cudnn_benchmark,
        compile=args.compile,
    )
    switches = [
        s
        for s, on in [
            (args.precision, args.precision != "32-true"),
            ("channels_last", args.channels_last),
            ("fused", args.fused),
            ("no-health-check", args.no_health_check),
            ("cudnn-benchmark", args.cudnn_benchmark),
            ("compile", args.compile),
        ]
        if on
    ]
    return [replace(single, name="+".join(switches) if switches else "baseline fp32")]


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> tuple[list[Row], str]:
    """Measure every requested step and variant; return the rows and the Markdown block."""
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _run(args, log)
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, log: Callable[[str], None]) -> tuple[list[Row], str]:
    device = resolve(args.device)
    _FLOPS.clear()
    peak = matmul_peak(device, args.matmul_n or (8192 if device.type == "cuda" else 2048))
    log(f"# {device_name(device)}: {flops_rate(peak[0])} ({peak[1]}); {versions()}")
    log(TABLE_HEAD)
    rows: list[Row] = []

    def add(row: Row) -> None:
        row.peak_flops = peak[0]
        rows.append(row)
        log(table_row(row))
        if getattr(args, "json", None):
            write_json(args.json, rows, device, peak)
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    variants = variants_of(args)
    if "gan" in args.steps:
        for batch in args.batch_sizes:
            for v in variants:
                add(bench_gan(v, batch, args.crop, device, args))
    # The classifier and inference only see precision (and channels_last for inference).
    seen: set[tuple[str, bool]] = set()
    side = [v for v in variants if not v.compile]
    for v in side or variants:
        key = (v.precision, v.channels_last)
        if key in seen:
            continue
        seen.add(key)
        if "classifier" in args.steps and not v.channels_last:
            for batch in args.batch_sizes:
                add(bench_classifier(v, batch, args.crop, device, args))
        if "inference" in args.steps:
            add(bench_inference(v, *args.infer_size, device, args))
    command = "python benchmarks/train_throughput.py " + " ".join(getattr(args, "argv", []))
    return rows, report(rows, device, peak, args, command.strip())


def main(argv: list[str] | None = None) -> list[Row]:
    """Command-line entry point; returns the measured rows (the tests call it in-process)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    rows, block = run(args)
    if args.out:
        append_section(args.out, block)
        print(f"# appended to {args.out} under '{SECTION}'")
    return rows


if __name__ == "__main__":
    main()
