"""One prepared GPU check (issue 14): tests, precision curves, throughput, latency, data loader.

Run through ``benchmarks/gpu_check.sh`` (installs carried wheels first). Phases, each in its own
process with its own time budget under one global deadline; a phase that fails or runs out of
time is recorded and the next one still runs:

``env``         device, versions, a bf16 matmul and a device copy (the two ceilings)
``tests``       ``make test-gpu`` (the ``gpu``-marked tests)
``curves``      the thesis cell (FPN-MobileNetV2, DoubleGAN, RaGAN-LS, pixel + VGG19 +
                adversarial, random weights) and WGAN-GP, in 32-true / bf16-mixed / 16-mixed:
                per-iteration loss curves, their finiteness, the final validation PSNR
``throughput``  ``benchmarks/train_throughput.py --matrix`` at batch 1 and 16 (each switch
                alone, all together)
``inference``   FPN-MobileNetV2 on 1280x720, fp32 vs bf16 (latency; outputs compared as PSNR)
``data``        DataLoader pairs/s from a synthetic GoPro folder (generated here), with and
                without the RAM cache, augment_on=cpu vs gpu

Everything lands in ``--out``: ``gpu_check.json`` (all phases), ``gpu_check.md`` (the summary),
``pytest.txt``, ``RESULTS.md`` (benchmarks/RESULTS.md with the throughput table appended) and
``log.txt``: five files (the device tool brings back at most eight).

    benchmarks/gpu_check.sh                            # on the GPU machine, $OUT set
    benchmarks/gpu_check.sh --device cpu --tiny --out /tmp/check   # seconds: checks the script
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
PHASES = ("env", "tests", "curves", "throughput", "inference", "data")

# seconds per phase (a phase gets at most this, and never more than the deadline leaves)
BUDGET_FULL = {
    "env": 30,
    "tests": 110,
    "curves": 150,
    "throughput": 150,
    "inference": 40,
    "data": 70,
}
BUDGET_TINY = {
    "env": 20,
    "tests": 40,
    "curves": 60,
    "throughput": 50,
    "inference": 20,
    "data": 30,
}
RESERVE_S = 10  # kept back for the summary


# ----------------------------------------------------------------------------- helpers
def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default, allow_nan=True))
    tmp.replace(path)


def _json_default(o: Any) -> Any:
    try:
        return float(o)
    except (TypeError, ValueError):
        return str(o)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def finite(values: list[float]) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def _throughput_module():
    """benchmarks/train_throughput.py (the throughput phase's script) as a module."""
    return load_module("train_throughput", BENCH / "train_throughput.py")


def load_module(name: str, path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def resolve_device(name: str):
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "gpu_check.py: --device cuda but torch sees no CUDA GPU. Run it on the GPU machine, "
            "or use --device cpu --tiny to check the script."
        )
    return torch.device(name)


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- phase: env
def phase_env(args, work: Path) -> dict[str, Any]:
    import pytorch_lightning as pl
    import torch

    from deblur.eval.inference import device_name

    device = resolve_device(args.device)
    out: dict[str, Any] = {
        "device": device_name(device),
        "device_type": device.type,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        "pytorch_lightning": pl.__version__,
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    for mod in ("hydra", "omegaconf", "albumentations", "timm", "torchvision", "cv2", "numpy"):
        with contextlib.suppress(Exception):
            out[mod] = __import__(mod).__version__
    # the device gets a copy of the working tree, maybe without .git: the commit comes in a
    # file: `git rev-parse --short HEAD > .commit` here, then carry [".commit"] in the call
    commit_file = ROOT / ".commit"
    if commit_file.is_file():
        out["git"] = commit_file.read_text().strip()
    else:
        with contextlib.suppress(Exception):
            out["git"] = subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
            ).stdout.strip()
    if shutil.which("nvidia-smi"):
        q = "name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit"
        with contextlib.suppress(Exception):
            out["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
    # the two ceilings: a large matmul (bf16 on GPU, fp32 on CPU) and a device copy
    tt = _throughput_module()
    n = 1024 if args.tiny else (8192 if device.type == "cuda" else 2048)
    flops, what = tt.matmul_peak(device, n)
    out["matmul_flops"], out["matmul"] = flops, what
    numel = (2**20 if args.tiny else 2**30) // 4  # floats: 1 MiB / 1 GiB
    a = torch.rand(numel, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        b.copy_(a)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    out["copy_bytes_per_s"] = 2 * a.numel() * 4 / best  # bytes read + written
    return out


# ----------------------------------------------------------------------------- phase: tests
def pytest_counts(text: str) -> dict[str, int]:
    """``{"passed": 6, "skipped": 1, ...}`` from pytest's last summary line."""
    counts: dict[str, int] = {}
    for line in reversed(text.splitlines()):
        head = line.strip("= ").split(" in ")[0]
        if " in " in line and any(w in head for w in ("passed", "failed", "skipped", "error")):
            for part in head.split(","):
                bits = part.strip().split()
                if len(bits) == 2 and bits[0].isdigit():
                    counts[bits[1]] = int(bits[0])
            break
    return counts


def phase_tests(args, work: Path) -> dict[str, Any]:
    log_path = work / "pytest.txt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.tiny:  # only the GPU test file: in CPU mode its tests skip
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/train/test_train_gpu.py"]
    elif shutil.which("make"):
        cmd = ["make", "test-gpu", f"PY={sys.executable}"]
    else:
        cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu"]
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
    text = log_path.read_text(errors="replace")
    counts = pytest_counts(text)
    return {
        "command": " ".join(cmd),
        "rc": proc.returncode,
        "counts": counts,
        "seconds": time.perf_counter() - t0,
        "tail": text[-3000:],
    }


# ----------------------------------------------------------------------------- phase: curves
CURVE_LOSSES = ("ragan_ls", "wgangp")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def _curve_callback():
    import torch
    from pytorch_lightning.callbacks import Callback

    class LossCurve(Callback):
        """Every logged ``train/*`` value of every iteration, kept on the device until the end
        (no host sync per step)."""

        def __init__(self) -> None:
            self.steps: list[dict[str, Any]] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            row = {}
            for k, v in trainer.callback_metrics.items():
                if k.startswith("train/") and isinstance(v, torch.Tensor) and v.numel() == 1:
                    row[k] = v.detach().float().clone()
            self.steps.append(row)

        def curves(self) -> dict[str, list[float]]:
            keys = sorted({k for s in self.steps for k in s})
            out = {}
            for k in keys:
                vals = [s.get(k) for s in self.steps]
                if all(v is not None for v in vals):
                    out[k] = torch.stack(vals).cpu().tolist()
                else:
                    out[k] = [float(v) if v is not None else None for v in vals]
            return out

    return LossCurve()


def _train_run(overrides: list[str], run_dir: Path, callbacks: list) -> dict[str, Any]:
    """The entry point's code path (compose -> managed_run -> fit_gan), in this process."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from deblur.config import compose
    from deblur.runs import managed_run
    from deblur.systems.fit import fit_gan

    cfg = compose("train", overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return managed_run(
        cfg, "gan", lambda d, rec: fit_gan(cfg, d, rec, extra_callbacks=callbacks), run_dir=run_dir
    )


def curve_overrides(args, loss: str, precision: str, device) -> list[str]:
    gpu = device.type == "cuda"
    base = [
        "gen=fpn_mobilenetv2",
        "disc=double",
        "backbone=nlayer",
        f"loss={loss}",
        "pretrained=false",
        "model.warmup_epochs=0",
        "seed=0",
        "data=embedded",
        f"data.crop_size={args.curve_crop}",
        "data.batch_size=1",
        f"data.num_workers={0 if args.tiny else 4}",
        f"data.max_val_pairs={args.curve_val}",
        f"trainer.accelerator={'gpu' if gpu else 'cpu'}",
        f"trainer.precision={precision}",
        f"trainer.limit_val_batches={args.curve_val}",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "model.val_image_strips=0",
    ]
    if args.tiny:  # the smoke sizes of conf/debug/smoke.yaml
        base += [
            "data.embedded.long_side=128",
            "data.embedded.blurs_per_photo=1",
            "data.embedded.kernel_size=15",
            "backbone.ndf=16",
            "backbone.patch_head_channels=32",
        ]
    return base


def train_pairs(overrides: list[str]) -> int:
    """Training pairs of the composed data config (builds the embedded data once)."""
    from hydra.utils import instantiate

    from deblur.config import compose

    cfg = compose("train", overrides)
    dm = instantiate(cfg.data, task="paired", _recursive_=False)
    dm.prepare_data()
    return max(1, len(dm.train_pairs))


def phase_curves(args, work: Path) -> dict[str, Any]:
    import torch

    device = resolve_device(args.device)
    # one epoch of `iters` batches: the embedded train split must be at least that long
    runs: list[dict[str, Any]] = []
    result = {"iterations": args.curve_iters, "crop": args.curve_crop, "runs": runs}
    out_path = work / "curves.partial.json"
    n_train = None
    precisions = list(args.precisions)
    for loss in CURVE_LOSSES:
        for precision in precisions:
            t0 = time.perf_counter()
            entry: dict[str, Any] = {"loss": loss, "precision": precision}
            cb = _curve_callback()
            try:
                overrides = curve_overrides(args, loss, precision, device)
                if n_train is None:
                    n_train = train_pairs(overrides)
                # whole epochs over the train split, validation after the last one only
                epochs = max(1, math.ceil(args.curve_iters / n_train))
                per_epoch = math.ceil(args.curve_iters / epochs)
                overrides += [
                    f"trainer.max_epochs={epochs}",
                    f"trainer.limit_train_batches={per_epoch}",
                    f"trainer.check_val_every_n_epoch={epochs}",
                ]
                rec = _train_run(overrides, work / "runs" / f"{loss}_{precision}", [cb])
                entry.update(
                    status=rec.get("status"),
                    iterations=rec.get("iterations"),
                    val_psnr=(rec.get("final") or {}).get("val/psnr"),
                    val_psnr_input=(rec.get("input") or {}).get("val/psnr"),
                    images_per_s=rec.get("images_per_s"),
                    device=rec.get("device"),
                )
            except BaseException as err:  # noqa: BLE001 - recorded; the next run goes on
                entry.update(status="failed", error=f"{type(err).__name__}: {err}"[:2000])
                entry["traceback"] = traceback.format_exc()[-3000:]
                if isinstance(err, KeyboardInterrupt):
                    raise
            curves = cb.curves()
            entry["curves"] = curves
            entry["steps_recorded"] = len(cb.steps)
            entry["finite"] = bool(curves) and all(
                finite([v for v in vals if v is not None]) for vals in curves.values()
            )
            entry["seconds"] = time.perf_counter() - t0
            runs.append(entry)
            write_json(out_path, result)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result["closeness"] = closeness(runs)
    return result


def closeness(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per loss and precision: mean of the last quarter of each curve, relative to fp32's."""
    out = []
    for loss in {r["loss"] for r in runs}:
        ref = next((r for r in runs if r["loss"] == loss and r["precision"] == "32-true"), None)
        if not ref or not ref.get("curves"):
            continue
        for r in runs:
            if r["loss"] != loss or r is ref or not r.get("curves"):
                continue
            for key in ("train/g_pixel", "train/g_perceptual", "train/d"):
                a, b = ref["curves"].get(key), r["curves"].get(key)
                if not a or not b:
                    continue
                q = max(1, len(a) // 4)
                ma = statistics.fmean([v for v in a[-q:] if v is not None] or [math.nan])
                mb = statistics.fmean([v for v in b[-q:] if v is not None] or [math.nan])
                rel = abs(mb - ma) / abs(ma) if ma else math.nan
                out.append(
                    {
                        "loss": loss,
                        "precision": r["precision"],
                        "term": key,
                        "fp32_last_quarter": ma,
                        "last_quarter": mb,
                        "rel_diff": rel,
                    }
                )
    return out


# ----------------------------------------------------------------------------- phase: throughput
def phase_throughput(args, work: Path) -> dict[str, Any]:
    out_md = Path(args.out) / "RESULTS.md"
    if not out_md.exists() and (BENCH / "RESULTS.md").exists():
        shutil.copy(BENCH / "RESULTS.md", out_md)
    js = work / "throughput.partial.json"
    device = resolve_device(args.device)
    cmd = [sys.executable, str(BENCH / "train_throughput.py"), "--device", device.type]
    if args.tiny:
        cmd += ["--smoke", "--crop", "32", "--batch-sizes", "1", "--iters", "1", "--warmup", "1"]
        cmd += ["--threads", "1", "--matrix", "--variants", "all"]
    else:
        cmd += ["--matrix", "--batch-sizes", *map(str, args.batch_sizes)]
        cmd += ["--warmup", str(args.tp_warmup), "--iters", str(args.tp_iters)]
        cmd += ["--variants", *args.variants]
    cmd += ["--steps", "gan", "--json", str(js), "--out", str(out_md)]
    t0 = time.perf_counter()
    tt = _throughput_module()
    tt.main(cmd[2:])  # in this (phase) process: one import of torch less
    data = read_json(js) or {}
    data.update(command="benchmarks/train_throughput.py " + " ".join(cmd[2:]))
    data["seconds"] = time.perf_counter() - t0
    for row in data.get("rows", []):
        row.pop("times_s", None)
    return data


# ----------------------------------------------------------------------------- phase: inference
def phase_inference(args, work: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    from hydra.utils import instantiate

    from deblur.config import compose
    from deblur.eval.inference import PadCrop
    from deblur.eval.metrics import psnr

    device = resolve_device(args.device)
    w, h = (96, 64) if args.tiny else (1280, 720)
    warmup, runs = (1, 2) if args.tiny else (10, 50)
    torch.manual_seed(0)
    cfg = compose("train", ["gen=fpn_mobilenetv2", "pretrained=false"])
    net = PadCrop(instantiate(cfg.gen)).to(device).eval()
    dt = load_module("data_throughput", BENCH / "data_throughput.py")
    frame = dt.natural_like(np.random.default_rng(0), h, w)  # image-like input, not noise
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(127.5).sub(1).to(device)
    results: dict[str, Any] = {"size": f"{w}x{h}", "warmup": warmup, "runs": runs, "rows": []}
    outputs = {}
    torch.backends.cudnn.benchmark = device.type == "cuda"
    for name, dtype, cl in (
        ("fp32", None, False),
        ("bf16", torch.bfloat16, False),
        ("bf16 channels_last", torch.bfloat16, True),
    ):
        fmt = torch.channels_last if cl else torch.contiguous_format
        model = net.to(memory_format=fmt)
        inp = x.contiguous(memory_format=fmt)
        times = []
        with torch.inference_mode():
            for i in range(warmup + runs):
                sync(device)
                t0 = time.perf_counter()
                with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
                    y = model(inp)
                sync(device)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1000)
        outputs[name] = y.float().clamp(-1, 1)
        results["rows"].append(
            {
                "precision": name,
                "median_ms": statistics.median(times),
                "min_ms": min(times),
                "max_ms": max(times),
            }
        )
    ref = outputs["fp32"]
    for row in results["rows"]:
        out = outputs[row["precision"]]
        row["psnr_vs_fp32_db"] = float(psnr(out, ref)[0]) if row["precision"] != "fp32" else None
        row["max_abs_diff_vs_fp32"] = float((out - ref).abs().max())
        row["finite"] = bool(torch.isfinite(out).all())
    return results


# ----------------------------------------------------------------------------- phase: data
def _measure_loader(root: Path, workers: int, cache: bool, augment_on: str, args, device):
    import torch
    from hydra.utils import instantiate

    from deblur.config import compose

    crop = 64 if args.tiny else 256
    batch = 2 if args.tiny else 16
    cfg = compose(
        "train",
        [
            "data=gopro",
            f"data.root={root}",
            f"data.num_workers={workers}",
            f"data.cache={str(cache).lower()}",
            f"data.augment_on={augment_on}",
            f"data.crop_size={crop}",
            f"data.batch_size={batch}",
        ],
    )
    dm = instantiate(cfg.data, task="paired", _recursive_=False)
    t0 = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    loader = dm.train_dataloader()
    aug = getattr(dm, "_tensor_augment", None)
    seen, first, start, aug_s = 0, True, 0.0, 0.0
    epoch = 0
    while seen < args.min_pairs:
        loader.sampler.set_epoch(epoch)
        epoch += 1
        for b in loader:
            if aug is not None:  # the hook's work, on the device, timed on its own
                b = {
                    k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v)
                    for k, v in b.items()
                }
                sync(device)
                ta = time.perf_counter()
                b = aug(b, epoch=epoch)
                sync(device)
                aug_s += time.perf_counter() - ta
            if first:  # worker start-up and the first decode are not counted
                first, start, aug_s = False, time.perf_counter(), 0.0
                continue
            seen += b["blur"].shape[0]
            if seen >= args.min_pairs:
                break
    elapsed = time.perf_counter() - start
    del loader, dm
    return {
        "workers": workers,
        "cache": cache,
        "augment_on": augment_on,
        "batch": batch,
        "crop": crop,
        "pairs": seen,
        "pairs_per_s": seen / elapsed if elapsed > 0 else math.nan,
        "device_augment_ms_per_batch": (aug_s / max(1, seen // batch) * 1000) if aug else None,
        "setup_s": setup_s,
    }


def phase_data(args, work: Path) -> dict[str, Any]:
    import torch

    device = resolve_device(args.device)
    dt = load_module("data_throughput", BENCH / "data_throughput.py")
    root = work / "GOPRO_Large"
    t0 = time.perf_counter()
    if args.tiny:  # small frames: the layout and the loader are what is checked
        import numpy as np

        from deblur.data.blur import apply_kernel, motion_kernel
        from deblur.data.io import write_image

        rng = np.random.default_rng(0)
        for i in range(args.data_pairs):
            for split in ("train",) + (("test",) if i == 0 else ()):
                seq = f"GOPR{i % 2:04d}_11_00" if split == "train" else "GOPR9999_11_00"
                sharp = dt.natural_like(rng, 120, 160)
                write_image(root / split / seq / "sharp" / f"{i:06d}.png", sharp)
                write_image(
                    root / split / seq / "blur" / f"{i:06d}.png",
                    apply_kernel(sharp, motion_kernel(9, rng)),
                )
        mb = None
    else:
        mb = dt.make_gopro(root, args.data_pairs, 2)
    torch.set_num_threads(1)
    result: dict[str, Any] = {
        "pairs_on_disk": args.data_pairs,
        "frame": "160x120" if args.tiny else "1280x720",
        "mb_per_png": mb,
        "generate_s": time.perf_counter() - t0,
        "cpu_count": os.cpu_count(),
        "rows": [],
    }
    out_path = work / "data.partial.json"
    for augment_on in ("cpu", "gpu"):
        for cache in (False, True):
            for workers in args.data_workers:
                try:
                    row = _measure_loader(root, workers, cache, augment_on, args, device)
                except Exception as err:  # noqa: BLE001 - recorded; the next setting goes on
                    row = {
                        "workers": workers,
                        "cache": cache,
                        "augment_on": augment_on,
                        "error": f"{type(err).__name__}: {err}"[:1000],
                    }
                result["rows"].append(row)
                write_json(out_path, result)
    return result


# ----------------------------------------------------------------------------- summary
def _f(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int | float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(head: list[str], rows: list[list[Any]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(str(c) for c in r) + " |" for r in rows),
        "",
    ]


def _result(report: dict[str, Any], phase: str) -> dict[str, Any]:
    return (report["phases"].get(phase) or {}).get("result") or {}


def targets(report: dict[str, Any]) -> list[list[Any]]:
    """Issue 14's targets next to what this run measured (n/a where a phase gave nothing)."""
    rows = _result(report, "throughput").get("rows", [])

    def best(batch: int, want_bf16: bool) -> float | None:
        vals = [
            r["images_per_s"]
            for r in rows
            if r.get("batch") == batch
            and (r.get("precision", "").startswith("bf16") or not want_bf16)
        ]
        return max(vals) if vals else None

    b16, b1 = best(16, True), best(1, False)
    inf = {r["precision"]: r for r in _result(report, "inference").get("rows", [])}
    bf16 = inf.get("bf16") or {}
    grid_h = 12 * 200_000 / b1 / 3600 if b1 else None
    return [
        ["thesis cell, batch 16, bf16 (best variant)", ">= 600 img/s", _f(b16, 1)],
        ["batch 1 (best variant)", ">= 120 img/s", _f(b1, 1)],
        ["FPN-MobileNetV2 1280x720 bf16 latency", "<= 3 ms", _f(bf16.get("median_ms"), 2)],
        [
            "bf16 output vs fp32 output (PSNR)",
            "(>= 0.05 dB gap budget)",
            _f(bf16.get("psnr_vs_fp32_db"), 1) + " dB",
        ],
        ["12 x 200k iterations at batch 1, one run at a time", "<= 6 h", _f(grid_h, 1) + " h"],
    ]


def markdown(report: dict[str, Any]) -> str:
    env = _result(report, "env")
    lines = [
        "# GPU check (benchmarks/gpu_check.py)",
        "",
        f"- device: {env.get('device', 'n/a')} ({env.get('device_type', '?')}); "
        f"{env.get('nvidia_smi', '')}",
        f"- versions: Python {env.get('python')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, "
        f"cuDNN {env.get('cudnn')}, Lightning {env.get('pytorch_lightning')}, "
        f"albumentations {env.get('albumentations')}, hydra {env.get('hydra')}",
        f"- date: {env.get('date')}; commit {env.get('git') or 'n/a'}; total {report.get('total_s')} s",
        f"- ceilings measured here: {_f((env.get('matmul_flops') or 0) / 1e12, 1)} TFLOP/s "
        f"({env.get('matmul')}), device copy {_f((env.get('copy_bytes_per_s') or 0) / 1e9, 0)} GB/s",
        *(
            ["- **tiny mode: checks the script, the numbers mean nothing**"]
            if report["args"].get("tiny")
            else []
        ),
        "",
        "## Phases",
        "",
        *_table(
            ["phase", "status", "seconds", "budget s", "error"],
            [
                [
                    k,
                    v.get("status"),
                    v.get("seconds", ""),
                    v.get("budget_s", ""),
                    (v.get("error") or "")[:160],
                ]
                for k, v in report["phases"].items()
            ],
        ),
        "## Targets (issue 14)",
        "",
        *_table(["target", "wanted", "measured"], targets(report)),
    ]
    tests = _result(report, "tests")
    if tests:
        lines += [
            "## make test-gpu",
            "",
            f"`{tests.get('command')}`: rc {tests.get('rc')}, {tests.get('counts')}",
            "",
        ]
    curves = _result(report, "curves")
    if curves.get("runs"):
        rows = []
        for r in curves["runs"]:
            c = r.get("curves") or {}
            g = [v for v in c.get("train/g_pixel", []) if v is not None]
            rows.append(
                [
                    r["loss"],
                    r["precision"],
                    r.get("status"),
                    r.get("iterations"),
                    r.get("finite"),
                    _f(g[0] if g else None, 4),
                    _f(statistics.fmean(g[-max(1, len(g) // 4) :]) if g else None, 4),
                    _f(r.get("val_psnr")),
                    _f(r.get("val_psnr_input")),
                    _f(r.get("images_per_s"), 1),
                    (r.get("error") or "")[:120],
                ]
            )
        lines += [
            f"## Loss curves ({curves.get('iterations')} iterations, crop {curves.get('crop')}, batch 1)",
            "",
            *_table(
                [
                    "loss",
                    "precision",
                    "status",
                    "iters",
                    "finite",
                    "g_pixel first",
                    "g_pixel last 1/4",
                    "val PSNR",
                    "input PSNR",
                    "img/s",
                    "error",
                ],
                rows,
            ),
        ]
        close = curves.get("closeness") or []
        if close:
            lines += _table(
                ["loss", "precision", "term", "fp32 last 1/4", "this last 1/4", "rel. diff"],
                [
                    [
                        c["loss"],
                        c["precision"],
                        c["term"],
                        _f(c["fp32_last_quarter"], 4),
                        _f(c["last_quarter"], 4),
                        _f(c["rel_diff"], 3),
                    ]
                    for c in close
                ],
            )
    tp = _result(report, "throughput")
    if tp.get("rows"):
        lines += [
            "## Training throughput (train_throughput.py, synthetic device batches)",
            "",
            *_table(
                [
                    "variant",
                    "batch",
                    "precision",
                    "img/s median",
                    "img/s wall",
                    "ms/iter",
                    "peak MiB",
                    "MFU %",
                ],
                [
                    [
                        r["variant"],
                        r["batch"],
                        r["precision"],
                        _f(r["images_per_s"], 1),
                        _f(r["images_per_s_wall"], 1),
                        _f(r["ms_per_iter_median"], 1),
                        _f(r["peak_mib"], 0),
                        _f((r.get("mfu") or math.nan) * 100, 1),
                    ]
                    for r in tp["rows"]
                ],
            ),
        ]
    inf = _result(report, "inference")
    if inf.get("rows"):
        lines += [
            f"## Generator inference ({inf.get('size')}, median of {inf.get('runs')})",
            "",
            *_table(
                ["precision", "median ms", "min ms", "PSNR vs fp32 (dB)", "max |diff|", "finite"],
                [
                    [
                        r["precision"],
                        _f(r["median_ms"]),
                        _f(r["min_ms"]),
                        _f(r.get("psnr_vs_fp32_db"), 1),
                        _f(r.get("max_abs_diff_vs_fp32"), 4),
                        r.get("finite"),
                    ]
                    for r in inf["rows"]
                ],
            ),
        ]
    data = _result(report, "data")
    if data.get("rows"):
        lines += [
            f"## Data loader ({data.get('pairs_on_disk')} synthetic GoPro pairs {data.get('frame')}, "
            f"{data.get('cpu_count')} cores)",
            "",
            *_table(
                [
                    "augment_on",
                    "RAM cache",
                    "workers",
                    "batch",
                    "pairs/s",
                    "device augment ms/batch",
                    "error",
                ],
                [
                    [
                        r.get("augment_on"),
                        r.get("cache"),
                        r.get("workers"),
                        r.get("batch", ""),
                        _f(r.get("pairs_per_s"), 1),
                        _f(r.get("device_augment_ms_per_batch"), 2),
                        (r.get("error") or "")[:100],
                    ]
                    for r in data["rows"]
                ],
            ),
        ]
    return "\n".join(lines) + "\n"


def short_table(report: dict[str, Any]) -> str:
    """The few lines printed last (the device tool's reply shows the end of the output)."""
    lines = ["phase        status   seconds"]
    for k, v in report["phases"].items():
        lines.append(f"{k:<12} {v.get('status', '?'):<8} {v.get('seconds', '')}")
    lines += [f"{t[0]}: {t[2]} (wanted {t[1]})" for t in targets(report)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver
WORKERS = {
    "env": phase_env,
    "tests": phase_tests,
    "curves": phase_curves,
    "throughput": phase_throughput,
    "inference": phase_inference,
    "data": phase_data,
}


def run_worker(args) -> int:
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    set_threads(args)
    os.environ.setdefault("DEBLUR_CACHE", str(work / "cache"))
    os.environ.setdefault("DEBLUR_RUNS", str(work / "runs"))
    try:
        data = WORKERS[args.worker](args, work)
    except BaseException as err:  # noqa: BLE001 - the parent records it
        write_json(
            work / f"{args.worker}.error.json",
            {"error": f"{type(err).__name__}: {err}"[:2000], "traceback": traceback.format_exc()},
        )
        return 1
    write_json(work / f"{args.worker}.json", data)
    return 0


def run_phase(phase: str, argv: list[str], work: Path, timeout: float, log) -> dict[str, Any]:
    """One phase in its own process group, killed at ``timeout``; its JSON plus the status."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", phase, "--work", str(work)]
    cmd += argv
    t0 = time.perf_counter()
    status, rc = "ok", None
    with open(work / f"{phase}.log", "w") as fh:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            status = "timeout"
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    seconds = time.perf_counter() - t0
    data = read_json(work / f"{phase}.json")
    err = read_json(work / f"{phase}.error.json")
    if status == "ok" and rc != 0:
        status = "failed"
    if data is None:  # what a phase cut short had written so far
        data = read_json(work / f"{phase}.partial.json")
    log_tail = (work / f"{phase}.log").read_text(errors="replace")[-4000:]
    entry = {
        "status": status,
        "rc": rc,
        "seconds": round(seconds, 1),
        "budget_s": round(timeout, 1),
        "result": data,
        "error": (err or {}).get("error"),
        "log_tail": log_tail if status != "ok" else log_tail[-800:],
    }
    log(f"[{phase}] {status} in {seconds:.1f} s (budget {timeout:.0f} s)")
    return entry


def set_threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def run_inline(phase: str, args, work: Path, budget: float, log) -> dict[str, Any]:
    """One phase in this process (--inline: no import per phase, no kill at the budget; a
    phase over its budget is marked 'over budget')."""
    set_threads(args)
    os.environ.setdefault("DEBLUR_CACHE", str(work / "cache"))
    os.environ.setdefault("DEBLUR_RUNS", str(work / "runs"))
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"budget_s": round(budget, 1)}
    try:
        entry.update(status="ok", result=WORKERS[phase](args, work))
    except Exception as err:  # noqa: BLE001 - recorded; the next phase goes on
        entry.update(
            status="failed",
            error=f"{type(err).__name__}: {err}"[:2000],
            log_tail=traceback.format_exc()[-4000:],
            result=read_json(work / f"{phase}.partial.json"),
        )
    seconds = time.perf_counter() - t0
    if entry["status"] == "ok" and seconds > budget:
        entry["status"] = "over budget"
    entry["seconds"] = round(seconds, 1)
    log(f"[{phase}] {entry['status']} in {seconds:.1f} s (budget {budget:.0f} s, inline)")
    return entry


def worker_argv(args) -> list[str]:
    """The options a worker needs (everything but --out handling and phase selection)."""
    a = ["--device", args.device, "--out", str(args.out)]
    if args.tiny:
        a.append("--tiny")
    a += ["--curve-iters", str(args.curve_iters), "--curve-crop", str(args.curve_crop)]
    a += ["--curve-val", str(args.curve_val), "--precisions", *args.precisions]
    a += ["--batch-sizes", *map(str, args.batch_sizes), "--variants", *args.variants]
    a += ["--tp-warmup", str(args.tp_warmup), "--tp-iters", str(args.tp_iters)]
    a += ["--data-pairs", str(args.data_pairs), "--min-pairs", str(args.min_pairs)]
    a += ["--data-workers", *map(str, args.data_workers), "--threads", str(args.threads)]
    return a


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tiny", action="store_true", help="tiny sizes: checks the script (CPU, s)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "runs/gpu_check"))
    p.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    p.add_argument("--deadline", type=float, help="global limit in s (default 470, tiny 120)")
    p.add_argument("--budget", nargs="*", default=[], help="phase=seconds overrides")
    p.add_argument("--curve-iters", type=int, help="iterations per curve run (300; tiny 2)")
    p.add_argument("--curve-crop", type=int, help="training crop of the curve runs (256; tiny 32)")
    p.add_argument("--curve-val", type=int, help="validation images (4; tiny 1)")
    p.add_argument("--precisions", nargs="+", help="default 32-true bf16-mixed 16-mixed")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    p.add_argument(
        "--variants",
        nargs="+",
        help="switch sets of the throughput matrix (default: train_throughput.MATRIX_DEFAULT)",
    )
    p.add_argument("--tp-warmup", type=int, default=10)
    p.add_argument("--tp-iters", type=int, default=40)
    p.add_argument("--data-pairs", type=int, help="synthetic GoPro pairs (20; tiny 3)")
    p.add_argument("--min-pairs", type=int, help="pairs timed per loader setting (320; tiny 4)")
    p.add_argument("--data-workers", type=int, nargs="+", help="default 0 8 16 (tiny 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in the phases")
    p.add_argument(
        "--inline", action="store_true", help="phases in this process (no per-phase kill)"
    )
    p.add_argument("--worker", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    tiny = args.tiny
    defaults = {
        "curve_iters": 2 if tiny else 300,
        "curve_crop": 32 if tiny else 256,
        "curve_val": 1 if tiny else 4,
        "precisions": ["32-true"] if tiny else list(PRECISIONS),
        "data_pairs": 3 if tiny else 20,
        "min_pairs": 4 if tiny else 320,
        "data_workers": [0] if tiny else [0, 8, 16],
        "deadline": 120.0 if tiny else 470.0,
        "variants": list(_throughput_module().MATRIX_DEFAULT),
    }
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if tiny and args.threads == 0:
        args.threads = 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args)
    t_start = float(os.environ.get("GPU_CHECK_T0") or time.time())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="deblur_gpu_check_"))
    budgets = dict(BUDGET_TINY if args.tiny else BUDGET_FULL)
    for item in args.budget:
        name, _, sec = item.partition("=")
        budgets[name] = float(sec)
    log_file = open(out / "log.txt", "a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    log(f"gpu_check: device={args.device} tiny={args.tiny} out={out} work={work}")
    report: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "phases": {},
    }
    argv_w = worker_argv(args)
    for phase in args.phases:
        left = args.deadline - (time.time() - t_start) - RESERVE_S
        if left < 5:
            report["phases"][phase] = {"status": "skipped", "error": "global deadline reached"}
            log(f"[{phase}] skipped: global deadline reached")
            continue
        budget = min(budgets[phase], left)
        if args.inline:
            report["phases"][phase] = run_inline(phase, args, work, budget, log)
        else:
            report["phases"][phase] = run_phase(phase, argv_w, work, budget, log)
        write_json(out / "gpu_check.json", report)
    if (work / "pytest.txt").exists():
        shutil.copy(work / "pytest.txt", out / "pytest.txt")
    report["total_s"] = round(time.time() - t_start, 1)
    write_json(out / "gpu_check.json", report)
    (out / "gpu_check.md").write_text(markdown(report))
    log(f"gpu_check: done in {report['total_s']} s; summary in {out / 'gpu_check.md'}")
    print(short_table(report))
    log_file.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
