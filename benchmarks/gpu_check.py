"""One prepared GPU check (issue 20): every question of the first device hour, in one call.

Run through ``benchmarks/gpu_check.sh`` (installs the carried wheels first). Phases, in this
order, each in its own process with its own time budget (killed at it) under one global
deadline; a phase that fails or runs out of time is recorded and the next one still runs. The
key rows come first, the rows cut first when time runs out come last:

``env``          device, versions, the commit (from ``--commit-file``), a bf16 matmul, a copy
``key``          the key rows: the thesis cell's training step at batch 16 and batch 1 with every
                 switch on (bf16, channels_last, fused Adam, no per-step health check, cuDNN
                 benchmark), and the loader that must feed it (RAM cache + GPU augmentation,
                 cores - 2 workers, batch 16)
``e2e``          a real ``python -m deblur.train`` on synthetic GoPro PNGs (1280x720), batch 16,
                 cores - 2 workers, cache on, augment_on=gpu, bf16, 100 iterations: img/s from
                 its metrics.json and the share of time the loop waited for data
``correctness``  bf16-mixed against fp32 (TF32 off) from the same start weights and batches, at
                 batch 1 and 16: step-0 losses equal (bf16 rounding), every loss term's mean over
                 the last quarter within 10 %: "pass" / "fail" per batch size
``compile``      ``model.compile=true``: the key bs16 row compiled, WGAN-GP compiled (its
                 gradient penalty is a double backward) training a few iterations, and batch 1
                 with ``model.compile_mode=reduce-overhead`` (CUDA graphs)
``tests``        ``tests/train/test_train_gpu.py`` (the ``gpu``-marked tests)
``inference``    FPN-MobileNetV2 on 1280x720, fp32 vs bf16 (latency; outputs compared as PSNR)
``data``         the other loader rows: augment_on cpu/gpu x RAM cache off/on x 8/16 workers,
                 with enough pairs on disk that every worker has whole batches to make
``throughput``   the rest of ``train_throughput.py --matrix`` (each switch alone), batch 16 first

Everything lands in ``--out``: ``gpu_check.json`` (all phases), ``gpu_check.md`` (the summary,
with the issue's targets), ``pytest.txt``, ``RESULTS.md`` (benchmarks/RESULTS.md with the
throughput tables appended), ``e2e_train.txt`` (the training run's output) and ``log.txt``: six
files (the device tool brings back at most eight).

    benchmarks/gpu_check.sh                            # on the GPU machine, $OUT set
    benchmarks/gpu_check.sh --device cpu --tiny --out /tmp/check   # checks the script (CPU)
"""

from __future__ import annotations

import argparse
import contextlib
import gc
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deblur.runs import RunRecord

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
PHASES = (
    "env",
    "key",
    "e2e",
    "correctness",
    "compile",
    "tests",
    "inference",
    "data",
    "throughput",
)

# Seconds per phase: a phase gets at most this, and never more than the deadline leaves. They
# add up to 380 s, so that the first run (plus the machine's start) and a warm rerun of about
# three minutes fit in one 15-minute device slot.
BUDGET_FULL = {
    "env": 10,
    "key": 55,
    "e2e": 55,
    "correctness": 65,
    "compile": 90,
    "tests": 35,
    "inference": 15,
    "data": 30,
    "throughput": 25,
}
BUDGET_TINY = {
    "env": 40,
    "key": 90,
    "e2e": 120,
    "correctness": 120,
    "compile": 150,
    "tests": 60,
    "inference": 40,
    "data": 60,
    "throughput": 60,
}
BUDGET_LIMIT_S = 380  # what BUDGET_FULL may add up to (tests/bench/test_gpu_check.py)
INSTALL_S = 10  # gpu_check.sh's wheel install, before this script starts (GPU_CHECK_T0)
RESERVE_S = 10  # kept back for the summary
DEADLINE_FULL = sum(BUDGET_FULL.values()) + INSTALL_S + RESERVE_S  # 400 s after gpu_check.sh starts
DEADLINE_TINY = sum(BUDGET_TINY.values()) + RESERVE_S
KILL_GRACE_S = 10  # SIGTERM, then this long, then SIGKILL

# The loss terms compared by the correctness phase, and its thresholds.
TERMS = ("train/d", "train/g_adv", "train/g_pixel", "train/g_perceptual")
STEP0_TOL = 0.05  # step 0: same weights, same batch; bf16 rounding only
LAST_QUARTER_TOL = 0.10  # |relative difference| of the last quarter's means
ABS_FLOOR = 1e-3  # relative differences of terms near zero are taken against this

# The targets (the summary shows them next to what was measured).
TARGET_BS16 = 600.0  # img/s, thesis cell, batch 16
TARGET_BS1 = 120.0  # img/s, batch 1
TARGET_INFER_MS = 3.0  # FPN-MobileNetV2, 1280x720
TARGET_GRID_H = 6.0  # 12 runs x 200k iterations at batch 1, one at a time

# The synthetic GoPro folder shared by the key, e2e, correctness and data phases.
VAL_SEQ = "GOPR9998_00_00"  # a small sequence the runs validate on (data.val_sequences)
TEST_SEQ = "GOPR9999_00_00"
TRAIN_SEQS = 4


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


def error_text(err: BaseException, limit: int = 2000) -> str:
    return f"{type(err).__name__}: {err}"[:limit]


def cores() -> int:
    """CPU cores this process may use (the affinity mask, else os.cpu_count())."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def feeding_workers() -> int:
    """Loader workers that feed one GPU: every core but two (the training process and its
    pin-memory thread), as ``data.num_workers=auto`` picks on a GPU trainer."""
    return max(0, cores() - 2)


def load_module(name: str, path: Path):
    import importlib.util

    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _throughput_module():
    """benchmarks/train_throughput.py as a module (the key, compile and throughput phases)."""
    return load_module("train_throughput", BENCH / "train_throughput.py")


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


def free_device(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- synthetic GoPro
def dataset_pairs(args) -> int:
    """Training pairs on disk: enough for one e2e epoch of ``e2e_iters`` batches, for every
    loader row (``workers x batch x 4``: whole batches for every worker, several times) and for
    the correctness runs."""
    workers = [*args.data_workers, feeding_workers(), 1]
    need = [
        args.e2e_iters * args.e2e_batch,
        max(workers) * args.loader_batch * 4,
        max(args.curve_batches) * 20,  # a correctness epoch (curve_overrides)
    ]
    return args.data_pairs or max(need)


def _write_unique(root: Path, index: int, h: int, w: int) -> tuple[Path, Path]:
    import numpy as np

    from deblur.data.blur import apply_kernel, motion_kernel
    from deblur.data.io import write_image

    dt = sys.modules["data_throughput"]
    rng = np.random.default_rng(1000 + index)
    sharp = dt.natural_like(rng, h, w)
    blur = apply_kernel(sharp, motion_kernel(31 if w >= 640 else 9, rng))
    base = root / "unique"
    s, b = base / f"sharp_{index:04d}.png", base / f"blur_{index:04d}.png"
    write_image(s, sharp)
    write_image(b, blur)
    return b, s


def _place(src: Path, dst: Path) -> None:
    """A hard link to ``src`` (same bytes, no disk), a copy where links are not possible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def synthetic_gopro(work: Path, args) -> Path:
    """``<work>/GOPRO_Large`` in GoPro's layout (made once, shared by the phases): ``pairs``
    training pairs in TRAIN_SEQS sequences, 2 validation pairs (VAL_SEQ) and 1 test pair.

    A few distinct image-like frames are rendered and written as PNGs; the training files are
    hard links to them, so every file is still decoded on its own (same decode cost as
    distinct frames) while writing 1,600 pairs takes seconds."""
    root = work / "GOPRO_Large"
    pairs = dataset_pairs(args)
    stamp = root / "made.json"
    made = read_json(stamp) or {}
    if made.get("pairs", 0) >= pairs and made.get("frame") == args.frame:
        return root
    shutil.rmtree(root, ignore_errors=True)
    w, h = map(int, args.frame.split("x"))
    n_unique = 4 if args.tiny else 16
    t0 = time.perf_counter()
    load_module("data_throughput", BENCH / "data_throughput.py")  # once, before the threads
    with ThreadPoolExecutor(max_workers=max(1, min(8, cores()))) as pool:
        unique = list(pool.map(lambda i: _write_unique(root, i, h, w), range(n_unique)))
    for i in range(pairs):
        b, s = unique[i % n_unique]
        seq = root / "train" / f"GOPR{i % TRAIN_SEQS:04d}_00_00"
        _place(b, seq / "blur" / f"{i:06d}.png")
        _place(s, seq / "sharp" / f"{i:06d}.png")
    for split, seq, n in (("train", VAL_SEQ, 2), ("test", TEST_SEQ, 1)):
        for j in range(n):
            b, s = unique[(j + 1) % n_unique]
            _place(b, root / split / seq / "blur" / f"{j:06d}.png")
            _place(s, root / split / seq / "sharp" / f"{j:06d}.png")
    info = {
        "pairs": pairs,
        "frame": args.frame,
        "unique_frames": n_unique,
        "mb_per_png": statistics.fmean(p.stat().st_size for pair in unique for p in pair) / 1e6,
        "generate_s": round(time.perf_counter() - t0, 2),
    }
    write_json(stamp, info)
    return root


def dataset_info(work: Path) -> dict[str, Any]:
    return read_json(work / "GOPRO_Large" / "made.json") or {}


def gopro_overrides(root: Path, batch: int, crop: int, pairs: int | None) -> list[str]:
    """data=gopro on the synthetic folder: validation on VAL_SEQ (one pair)."""
    out = [
        "data=gopro",
        f"data.root={root}",
        f"data.val_sequences=[{VAL_SEQ}]",
        "data.max_val_pairs=1",
        f"data.batch_size={batch}",
        f"data.crop_size={crop}",
    ]
    return out + ([f"data.max_train_pairs={pairs}"] if pairs else [])


# ----------------------------------------------------------------------------- phase: env
def read_commit(path: Path | None) -> str:
    """The commit of the checked-out tree, from the file passed in (``--commit-file``): the
    device gets a copy of the working tree, not its .git. Made here with
    ``git describe --always --dirty > .commit`` (carried with the wheels)."""
    if path and Path(path).is_file():
        return Path(path).read_text().strip() or "n/a (empty commit file)"
    return f"n/a (no commit file at {path})"


def _versions(out: dict[str, Any]) -> None:
    for mod in ("hydra", "omegaconf", "albumentations", "timm", "torchvision", "cv2", "numpy"):
        with contextlib.suppress(Exception):
            out[mod] = __import__(mod).__version__
    if shutil.which("nvidia-smi"):
        q = "name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit"
        with contextlib.suppress(Exception):
            out["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()


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
        "cores": cores(),
        "feeding_workers": feeding_workers(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "git": read_commit(args.commit_file),
    }
    _versions(out)
    # the two ceilings: a large matmul (bf16 on GPU, fp32 on CPU) and a device copy
    tt = _throughput_module()
    n = 1024 if args.tiny else (8192 if device.type == "cuda" else 2048)
    out["matmul_flops"], out["matmul"] = tt.matmul_peak(device, n)
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


GPU_TESTS = "tests/train/test_train_gpu.py"


def phase_tests(args, work: Path) -> dict[str, Any]:
    """The ``gpu``-marked tests (on a CPU they skip: the command and its parsing are checked)."""
    log_path = work / "pytest.txt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", GPU_TESTS]
    t0 = time.perf_counter()
    with open(log_path, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
    text = log_path.read_text(errors="replace")
    return {
        "command": " ".join(["python", *cmd[1:]]),
        "rc": proc.returncode,
        "counts": pytest_counts(text),
        "seconds": time.perf_counter() - t0,
        "tail": text[-3000:],
    }


# ----------------------------------------------------------------------------- throughput rows
def run_throughput(args, work: Path, phase: str, variants: list[str]) -> dict[str, Any]:
    """``train_throughput.py --matrix --steps gan`` for ``variants`` at --batch-sizes, in this
    process; its rows land in ``<phase>.partial.json`` as they come (a kill keeps them)."""
    out_md = Path(args.out) / "RESULTS.md"
    if not out_md.exists() and (BENCH / "RESULTS.md").exists():
        shutil.copy(BENCH / "RESULTS.md", out_md)
    js = work / f"{phase}.partial.json"
    device = resolve_device(args.device)
    cmd = ["--device", device.type, "--matrix", "--variants", *variants, "--steps", "gan"]
    cmd += ["--batch-sizes", *map(str, args.batch_sizes)]
    if args.tiny:
        cmd += ["--smoke", "--crop", "32", "--iters", "1", "--warmup", "1", "--threads", "1"]
    else:
        cmd += ["--warmup", str(args.tp_warmup), "--iters", str(args.tp_iters)]
    cmd += ["--json", str(js), "--out", str(out_md)]
    t0 = time.perf_counter()
    _throughput_module().main(cmd)
    data = read_json(js) or {}
    data["command"] = "benchmarks/train_throughput.py " + " ".join(cmd)
    data["seconds"] = time.perf_counter() - t0
    for row in data.get("rows", []):
        row.pop("times_s", None)
    return data


# ----------------------------------------------------------------------------- loader rows
def loader_pairs(workers: int, batch: int, on_disk: int) -> int:
    """Pairs a loader row reads: whole batches for every worker, four times over."""
    return min(on_disk, max(1, workers) * batch * 4)


def _to_device(batch: dict[str, Any], device) -> dict[str, Any]:
    import torch

    return {
        k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()
    }


def _time_loader(loader, aug, device, warm: int, args) -> dict[str, float]:
    """Pairs/s of ``loader`` after its first ``warm`` batches (each worker's first batch holds
    its start-up); every batch is moved to the device, the GPU augmentation (``aug``) timed
    on its own. Stops at ``--min-pairs`` pairs or ``--row-seconds`` seconds."""
    seen = batches = 0
    start, aug_s, epoch = None, 0.0, 0
    while epoch < 100:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        epoch += 1
        for b in loader:
            b = _to_device(b, device)
            took = 0.0
            if aug is not None:  # the hook's work, on the device
                sync(device)
                ta = time.perf_counter()
                b = aug(b, epoch=epoch)
                sync(device)
                took = time.perf_counter() - ta
            batches += 1
            if start is None:
                if batches >= warm:
                    sync(device)
                    start = time.perf_counter()
                continue
            aug_s += took
            seen += int(b["blur"].shape[0])
            if seen >= args.min_pairs or time.perf_counter() - start >= args.row_seconds:
                sync(device)
                return {"pairs": seen, "seconds": time.perf_counter() - start, "aug_s": aug_s}
    raise RuntimeError(f"the loader gave {batches} batches in {epoch} epochs: too few to time")


def measure_loader(root: Path, workers: int, cache: bool, augment_on: str, args, device):
    """One loader row: the real train DataLoader of data=gopro on the synthetic folder."""
    from hydra.utils import instantiate

    from deblur.config import compose

    batch, crop = args.loader_batch, args.loader_crop
    pairs = loader_pairs(workers, batch, dataset_pairs(args))
    overrides = gopro_overrides(root, batch, crop, pairs)
    overrides += [
        f"data.num_workers={workers}",
        f"data.cache={str(cache).lower()}",
        f"data.augment_on={augment_on}",
    ]
    dm = instantiate(compose("train", overrides).data, task="paired", _recursive_=False)
    t0 = time.perf_counter()
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    loader = dm.train_dataloader()
    aug = getattr(dm, "_tensor_augment", None)
    timed = _time_loader(loader, aug, device, max(1, workers), args)
    del loader, dm
    gc.collect()
    rate = timed["pairs"] / timed["seconds"] if timed["seconds"] > 0 else math.nan
    return {
        "workers": workers,
        "cache": cache,
        "augment_on": augment_on,
        "batch": batch,
        "crop": crop,
        "pairs_read": pairs,
        "pairs": timed["pairs"],
        "pairs_per_s": rate,
        "pairs_per_s_per_worker": rate / max(1, workers),
        "device_augment_ms_per_batch": (
            timed["aug_s"] / max(1, timed["pairs"] // batch) * 1000 if aug is not None else None
        ),
        "setup_s": setup_s,
    }


def loader_row(root: Path, workers: int, cache: bool, augment_on: str, args, device):
    """measure_loader, or the row with its error (the next row still runs)."""
    try:
        return measure_loader(root, workers, cache, augment_on, args, device)
    except Exception as err:  # noqa: BLE001 - recorded; the next setting goes on
        return {
            "workers": workers,
            "cache": cache,
            "augment_on": augment_on,
            "error": error_text(err, 1000),
        }


# ----------------------------------------------------------------------------- phase: key
def phase_key(args, work: Path) -> dict[str, Any]:
    """The rows that decide the GPU's first hour, before anything else: bs16 and bs1 with every
    switch on (train_throughput's ``all``), then the loader that must feed bs16."""
    import torch

    device = resolve_device(args.device)
    result = run_throughput(args, work, "key", ["all"])
    part = work / "key.partial.json"
    write_json(part, result)
    free_device(device)
    root = synthetic_gopro(work, args)
    result["dataset"] = dataset_info(work)
    torch.set_num_threads(1)
    result["loader"] = loader_row(root, feeding_workers(), True, "gpu", args, device)
    return result


# ----------------------------------------------------------------------------- phase: e2e
PROFILE_ENV = "GPU_CHECK_PROFILE"


def data_wait_profiler(path: str | None = None):
    """A Lightning profiler for the e2e run (``+trainer.profiler._target_=gpu_check.
    data_wait_profiler``): the start and end of every training fetch (Lightning's
    ``train_dataloader_next``), host-to-device move (``batch_to_device``, the GPU augmentation
    included) and step (``run_training_batch``), written as JSON to ``path`` (default: the
    file named by $GPU_CHECK_PROFILE) when the fit ends. Host clock, no device sync."""
    from pytorch_lightning.profilers import Profiler

    class DataWait(Profiler):
        def __init__(self, out: str) -> None:
            super().__init__()
            self.out = out
            self.open: dict[str, float] = {}
            self.events: dict[str, list[tuple[float, float]]] = {"fetch": [], "move": []}
            self.events["step"] = []
            self.in_train = False

        def start(self, action_name: str) -> None:
            self.open[action_name] = time.perf_counter()

        def stop(self, action_name: str) -> None:
            end = time.perf_counter()
            begin = self.open.pop(action_name, None)
            if begin is None:
                return
            if action_name.endswith("train_dataloader_next"):
                self.events["fetch"].append((begin, end))
                self.in_train = True
            elif action_name == "run_training_batch":
                self.events["step"].append((begin, end))
                self.in_train = False
            elif action_name.endswith(".batch_to_device") and self.in_train:
                self.events["move"].append((begin, end))

        def teardown(self, stage: str | None) -> None:
            if self.events["step"]:
                write_json(Path(self.out), self.events)
            super().teardown(stage)

    return DataWait(path or os.environ[PROFILE_ENV])


def data_wait(events: dict[str, list], batch: int, skip: int) -> dict[str, Any]:
    """The share of the training loop's wall time spent waiting in next(loader), over the
    iterations after the first ``skip`` (worker start-up, cuDNN autotuning)."""
    steps = events.get("step") or []
    if not steps:
        return {"error": "the profiler recorded no training step"}
    skip = min(skip, len(steps) // 4)
    fetches = sorted(events.get("fetch") or [])
    # the fetch that made step `skip`'s batch is the last one to start before that step
    before = [f for f in fetches if f[0] <= steps[skip][0]]
    t0 = before[-1][0] if before else steps[skip][0]
    t1 = steps[-1][1]

    def inside(kind: str) -> float:
        return sum(e - b for b, e in events.get(kind) or [] if b >= t0 and e <= t1)

    window = max(t1 - t0, 1e-9)
    n = len(steps) - skip
    return {
        "iterations_profiled": len(steps),
        "skipped": skip,
        "window_s": window,
        "wait_s": inside("fetch"),
        "wait_share": inside("fetch") / window,
        "move_share": inside("move") / window,
        "step_share": inside("step") / window,
        "images_per_s_after_skip": batch * n / window,
    }


#: the thesis default cell (FPN-MobileNetV2, DoubleGAN, RaGAN-LS), random weights: e2e and curves
THESIS_CELL = (
    "gen=fpn_mobilenetv2",
    "disc=double",
    "backbone=nlayer",
    "loss=ragan_ls",
    "pretrained=false",
)


def e2e_overrides(args, root: Path, workers: int, device) -> list[str]:
    gpu = device.type == "cuda"
    out = [
        *THESIS_CELL,
        "seed=0",
        "sweep_name=gpu_check_e2e",
        *gopro_overrides(root, args.e2e_batch, args.e2e_crop, args.e2e_iters * args.e2e_batch),
        f"data.num_workers={workers}",
        "data.cache=true",
        "data.augment_on=gpu",
        f"trainer.accelerator={'gpu' if gpu else 'cpu'}",
        "trainer.precision=bf16-mixed",
        "trainer.max_epochs=1",
        # one epoch of exactly e2e_iters batches = e2e_iters iterations (global_step counts the
        # D and the G step, 2 per iteration: max_steps would have to be 2 x e2e_iters)
        f"trainer.limit_train_batches={args.e2e_iters}",
        "trainer.limit_val_batches=1",
        f"trainer.benchmark={str(gpu).lower()}",
        "trainer.enable_progress_bar=false",
        "model.warmup_epochs=0",
        "model.channels_last=true",
        "optim.fused=true",
        "+trainer.profiler._target_=gpu_check.data_wait_profiler",
    ]
    if args.tiny:  # debug=smoke's thin critics
        out += ["backbone.ndf=16", "backbone.patch_head_channels=32", "model.val_image_strips=0"]
    return out


def _run_record(runs: Path) -> tuple[dict[str, Any], Path | None]:
    found = sorted(runs.rglob("metrics.json"))
    return (read_json(found[-1]) or {}, found[-1]) if found else ({}, None)


def phase_e2e(args, work: Path) -> dict[str, Any]:
    """A real ``python -m deblur.train`` from PNG files, as a user would start it."""
    device = resolve_device(args.device)
    root = synthetic_gopro(work, args)
    workers = feeding_workers()
    runs, profile = work / "e2e_runs", work / "e2e_profile.json"
    cmd = [sys.executable, "-m", "deblur.train", *e2e_overrides(args, root, workers, device)]
    env = {**os.environ, "DEBLUR_RUNS": str(runs), PROFILE_ENV: str(profile)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH), env.get("PYTHONPATH")) if p)
    env["NO_ALBUMENTATIONS_UPDATE"] = "1"
    if args.tiny:
        env["OMP_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    with open(Path(args.out) / "e2e_train.txt", "w") as fh:
        fh.write("$ python -m deblur.train " + " ".join(cmd[3:]) + "\n\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
    rec, path = _run_record(runs)
    res = rec.get("result") or {}  # metrics.json: the task's result nested
    events = read_json(profile) or {}
    skip = 1 if args.tiny else max(10, workers)
    result = {
        "command": "python -m deblur.train " + " ".join(cmd[3:]),
        "rc": proc.returncode,
        "seconds": time.perf_counter() - t0,
        "metrics_json": str(path) if path else None,
        "status": rec.get("status"),
        "iterations": res.get("iterations"),
        "images_per_s": res.get("images_per_s"),
        "device": res.get("device"),
        "val_psnr": (res.get("final") or {}).get("val/psnr"),
        "batch": args.e2e_batch,
        "crop": args.e2e_crop,
        "workers": workers,
        "dataset": dataset_info(work),
        "data_wait": data_wait(events, args.e2e_batch, skip) if events else {"error": "none"},
    }
    write_json(work / "e2e.partial.json", result)
    if proc.returncode != 0 or rec.get("status") != "finished":
        tail = (Path(args.out) / "e2e_train.txt").read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"python -m deblur.train exited {proc.returncode} with status {rec.get('status')!r}"
            f"; the end of its output:\n{tail}"
        )
    if result["iterations"] != args.e2e_iters:
        raise RuntimeError(
            f"the e2e run did {result['iterations']} iterations, not the {args.e2e_iters} asked"
        )
    return result


# ----------------------------------------------------------------------------- phase: correctness
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

        def curves(self) -> dict[str, list[float | None]]:
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


def _train_run(overrides: list[str], run_dir: Path, callbacks: list) -> RunRecord:
    """The entry point's code path (compose -> managed_run -> fit), in this process."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from deblur.config import compose
    from deblur.runs import managed_run
    from deblur.systems.fit import fit

    cfg = compose("train", overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return managed_run(
        cfg, "gan", lambda d, rec: fit(cfg, d, rec, extra_callbacks=callbacks), run_dir=run_dir
    )


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 matmuls and convolutions on or off (the fp32 reference runs with them off)."""
    import torch

    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def curve_overrides(args, root: Path, batch: int, precision: str, device) -> list[str]:
    """The thesis cell on the synthetic folder, seed 0 (same start weights and batches in
    every precision), one validation at the end; whole epochs of 20 batches."""
    gpu = device.type == "cuda"
    per_epoch = 20
    epochs = max(1, math.ceil(args.curve_iters / per_epoch))
    out = [
        *THESIS_CELL,
        "model.warmup_epochs=0",
        "seed=0",
        *gopro_overrides(root, batch, args.curve_crop, batch * per_epoch),
        f"data.num_workers={0 if args.tiny else min(8, feeding_workers())}",
        "data.cache=true",
        "data.augment_on=cpu",
        f"trainer.accelerator={'gpu' if gpu else 'cpu'}",
        f"trainer.precision={precision}",
        f"trainer.max_epochs={epochs}",
        f"trainer.limit_train_batches={math.ceil(args.curve_iters / epochs)}",
        f"trainer.check_val_every_n_epoch={epochs}",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "model.val_image_strips=0",
        "model.health_check_every=0",
    ]
    if args.tiny:
        out += ["backbone.ndf=16", "backbone.patch_head_channels=32"]
    return out


def curve_run(args, work: Path, root: Path, batch: int, precision: str, device) -> dict:
    """One training run's per-iteration loss curves (the fp32 one with TF32 off)."""
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"batch": batch, "precision": precision}
    reference = precision == "32-true"
    entry["tf32"] = "off" if reference else "torch's defaults"
    cb = _curve_callback()
    try:
        with tf32(False) if reference else contextlib.nullcontext():
            overrides = curve_overrides(args, root, batch, precision, device)
            rec = _train_run(overrides, work / "runs" / f"curve_b{batch}_{precision}", [cb])
        entry.update(
            status=rec.status,
            iterations=rec.result.iterations,
            val_psnr=(rec.result.final or {}).get("val/psnr"),
            images_per_s=rec.result.images_per_s,
        )
    except Exception as err:  # noqa: BLE001 - recorded; the next run goes on
        entry.update(status="failed", error=error_text(err))
        entry["traceback"] = traceback.format_exc()[-3000:]
    entry["curves"] = cb.curves()
    entry["steps_recorded"] = len(cb.steps)
    entry["finite"] = bool(entry["curves"]) and all(
        finite([v for v in vals if v is not None]) for vals in entry["curves"].values()
    )
    entry["seconds"] = time.perf_counter() - t0
    free_device(device)
    return entry


def _rel(a: float, b: float) -> float:
    return abs(b - a) / max(abs(a), ABS_FLOOR)


def _term_check(key: str, ref: list, run: list) -> dict[str, Any]:
    a = [v for v in ref if v is not None]
    b = [v for v in run if v is not None]
    q = max(1, min(len(a), len(b)) // 4)
    ma, mb = statistics.fmean(a[-q:]), statistics.fmean(b[-q:])
    return {
        "term": key,
        "step0_fp32": a[0],
        "step0": b[0],
        "step0_rel": _rel(a[0], b[0]),
        "fp32_last_quarter": ma,
        "last_quarter": mb,
        "rel_diff": _rel(ma, mb),
        "steps_in_quarter": q,
    }


def verdict(ref: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """ "pass" when both runs finished with finite curves, every term's step-0 value agrees
    within STEP0_TOL and its last-quarter mean within LAST_QUARTER_TOL; else "fail" + why."""
    out: dict[str, Any] = {"batch": run["batch"], "precision": run["precision"], "terms": []}
    why = [
        f"{r['precision']} run {r.get('status')}: {r.get('error') or 'not finite'}"
        for r in (ref, run)
        if r.get("status") != "finished" or not r.get("finite")
    ]
    for key in TERMS:
        a, b = (ref.get("curves") or {}).get(key), (run.get("curves") or {}).get(key)
        if not a or not b or any(v is None for v in a[:1] + b[:1]):
            why.append(f"{key} not recorded in both runs")
            continue
        t = _term_check(key, a, b)
        out["terms"].append(t)
        if not t["step0_rel"] <= STEP0_TOL:
            why.append(f"{key} at step 0: {t['step0']:.5g} vs fp32 {t['step0_fp32']:.5g}")
        if not t["rel_diff"] < LAST_QUARTER_TOL:
            why.append(f"{key} last quarter off by {t['rel_diff']:.1%}")
    out["verdict"] = "fail" if why else "pass"
    out["why"] = why
    return out


def phase_correctness(args, work: Path) -> dict[str, Any]:
    device = resolve_device(args.device)
    root = synthetic_gopro(work, args)
    result: dict[str, Any] = {
        "iterations": args.curve_iters,
        "crop": args.curve_crop,
        "thresholds": {"step0": STEP0_TOL, "last_quarter": LAST_QUARTER_TOL},
        "runs": [],
        "verdicts": [],
    }
    part = work / "correctness.partial.json"
    for batch in args.curve_batches:
        ref = curve_run(args, work, root, batch, "32-true", device)
        result["runs"].append(ref)
        write_json(part, result)
        run = curve_run(args, work, root, batch, "bf16-mixed", device)
        result["runs"].append(run)
        result["verdicts"].append(verdict(ref, run))
        write_json(part, result)
    return result


# ----------------------------------------------------------------------------- phase: compile
@contextlib.contextmanager
def eager_backend(enabled: bool):
    """--tiny on a CPU: ``nn.Module.compile()`` with dynamo's ``eager`` backend (the same graph
    capture, guards and recompiles, no inductor code generation: seconds instead of minutes)."""
    import torch

    if not enabled:
        yield
        return
    original = torch.nn.Module.compile

    def compile_eager(self, *a, **k):
        k.setdefault("backend", "eager")
        k.pop("mode", None)  # modes are inductor's (reduce-overhead: CUDA graphs)
        return original(self, *a, **k)

    torch.nn.Module.compile = compile_eager
    try:
        yield
    finally:
        torch.nn.Module.compile = original


def compiled_row(args, name: str, extra: list[str], batch: int, warm: int, iters: int, device):
    """The key variant (every switch on; fp32 in --tiny) with ``model.compile=true``: GANSystem
    compiles G, D and the VGG itself (the config path, not the benchmark harness)."""
    import torch

    from deblur.systems.fit import build_system

    tt = _throughput_module()
    variant = tt.BASELINE if args.tiny else tt.matrix_variant("all")
    crop = 32 if args.tiny else 256
    cfg = tt.gan_config(variant, crop, batch, ["model.compile=true", *extra])
    data = tt.random_batch(batch, crop, device, ("blur", "sharp"))
    torch.manual_seed(0)
    torch._dynamo.reset()
    t0 = time.perf_counter()
    with tt.quiet(), eager_backend(args.tiny):
        system = build_system(cfg)
        timer = tt.fit_timed(system, data, variant, device, warm, iters, count_flops=False)
    total = time.perf_counter() - t0
    logged = {}
    with contextlib.suppress(Exception):
        for k, v in system.trainer.callback_metrics.items():
            if k.startswith("train/"):
                logged[k] = float(v)
    row = tt.Row(
        "GAN train step",
        name,
        batch,
        f"{crop}x{crop}",
        variant.precision,
        timer.times,
        timer.last_end - timer.first_timed,
        timer.memory.mib(),
    )
    out = tt.row_dict(row)
    out.pop("times_s", None)
    out.update(
        overrides=["model.compile=true", *extra],
        backend="eager (tiny)" if args.tiny else "inductor",
        warmup_iterations=warm,
        warmup_s=total - row.wall_s,
        losses=logged,
        finite=bool(logged) and finite(list(logged.values())),
    )
    out["status"] = "trained" if out["finite"] else "not finite"
    del system
    free_device(device)
    return out


def phase_compile(args, work: Path) -> dict[str, Any]:
    device = resolve_device(args.device)
    big = 2 if args.tiny else 16
    rows: list[dict[str, Any]] = []
    result = {"rows": rows}
    # batch 1 is launch-bound: reduce-overhead captures G's, D's and the VGG's graphs as CUDA graphs
    for name, extra, batch, warm, iters in (
        ("all + model.compile (ragan_ls)", [], big, 5, 20),
        ("all + model.compile, loss=wgangp", ["loss=wgangp"], big, 3, 5),
        ("all + compile_mode=reduce-overhead", ["model.compile_mode=reduce-overhead"], 1, 5, 40),
    ):
        if args.tiny:
            warm, iters = 2, 1
        try:
            rows.append(compiled_row(args, name, extra, batch, warm, iters, device))
        except Exception as err:  # noqa: BLE001 - recorded; the next row still runs
            rows.append(
                {
                    "variant": name,
                    "batch": batch,
                    "overrides": ["model.compile=true", *extra],
                    "status": "failed",
                    "error": error_text(err),
                    "traceback": traceback.format_exc()[-3000:],
                }
            )
        write_json(work / "compile.partial.json", result)
    return result


# ----------------------------------------------------------------------------- phase: inference
def phase_inference(args, work: Path) -> dict[str, Any]:
    import numpy as np
    import torch
    from hydra.utils import instantiate

    from deblur.config import compose
    from deblur.eval.inference import PadCrop

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
            {"precision": name, "median_ms": statistics.median(times), "min_ms": min(times)}
        )
    _compare_outputs(results["rows"], outputs)
    return results


def _compare_outputs(rows: list[dict[str, Any]], outputs: dict[str, Any]) -> None:
    import torch

    from deblur.eval.metrics import psnr

    ref = outputs["fp32"]
    for row in rows:
        out = outputs[row["precision"]]
        row["psnr_vs_fp32_db"] = float(psnr(out, ref)[0]) if row["precision"] != "fp32" else None
        row["max_abs_diff_vs_fp32"] = float((out - ref).abs().max())
        row["finite"] = bool(torch.isfinite(out).all())


# ----------------------------------------------------------------------------- phase: data
def data_settings(args) -> list[tuple[str, bool, int]]:
    """(augment_on, cache, workers), most telling first: the GPU path with the cache at every
    worker count, then the cached CPU path, then both uncached (the disk-bound ceilings)."""
    order = [("gpu", True), ("cpu", True), ("gpu", False), ("cpu", False)]
    return [(aug, cache, w) for aug, cache in order for w in args.data_workers]


def phase_data(args, work: Path) -> dict[str, Any]:
    import torch

    device = resolve_device(args.device)
    root = synthetic_gopro(work, args)
    torch.set_num_threads(1)
    result: dict[str, Any] = {
        "dataset": dataset_info(work),
        "cores": cores(),
        "batch": args.loader_batch,
        "crop": args.loader_crop,
        "rows": [],
    }
    for augment_on, cache, workers in data_settings(args):
        result["rows"].append(loader_row(root, workers, cache, augment_on, args, device))
        write_json(work / "data.partial.json", result)
    return result


# ----------------------------------------------------------------------------- phase: throughput
def phase_throughput(args, work: Path) -> dict[str, Any]:
    """The rest of the matrix (each switch alone on the fp32 baseline, batch 16 first): what
    each switch is worth. Cut first when time runs out (the rows so far are kept)."""
    return run_throughput(args, work, "throughput", list(args.variants))


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


def train_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every measured training-step row (key, compile, throughput), tagged with its phase."""
    out = []
    for phase in ("key", "compile", "throughput"):
        for r in _result(report, phase).get("rows", []):
            if r.get("images_per_s") is not None:
                out.append({**r, "phase": phase})
    return out


def best_row(rows: list[dict[str, Any]], batch: int, bf16: bool) -> dict[str, Any] | None:
    ok = [
        r
        for r in rows
        if r.get("batch") == batch
        and (not bf16 or str(r.get("precision", "")).startswith("bf16"))
        and isinstance(r.get("images_per_s"), int | float)
        and math.isfinite(r["images_per_s"])
    ]
    return max(ok, key=lambda r: r["images_per_s"]) if ok else None


def _met(value: Any, wanted: float, at_least: bool) -> str:
    if not isinstance(value, int | float) or not math.isfinite(value):
        return "n/a"
    return "yes" if (value >= wanted if at_least else value <= wanted) else "NO"


def _which(r: dict[str, Any] | None) -> str:
    return f" ({r['variant']}, {r['phase']})" if r else ""


def _speed_targets(report: dict[str, Any]) -> list[list[Any]]:
    """The speed targets; "batch 16" is the largest --batch-sizes entry (2 in --tiny)."""
    a = report["args"]
    big = max(a.get("batch_sizes") or [16])
    rows = train_rows(report)
    b16, b1 = best_row(rows, big, True), best_row(rows, 1, False)
    v16 = b16["images_per_s"] if b16 else None
    v1 = b1["images_per_s"] if b1 else None
    e2e = _result(report, "e2e")
    e2e_rate = e2e.get("images_per_s")
    wait = (e2e.get("data_wait") or {}).get("wait_share")
    inf = [r for r in _result(report, "inference").get("rows", []) if "bf16" in r["precision"]]
    ms = min((r["median_ms"] for r in inf), default=None)
    grid_h = 12 * 200_000 / v1 / 3600 if v1 else None
    rate = (_result(report, "key").get("loader") or {}).get("pairs_per_s")
    img, pairs = f">= {TARGET_BS16:.0f} img/s", f">= {TARGET_BS16:.0f} pairs/s"
    lb = a.get("loader_batch")
    return [
        [f"thesis cell, batch {big}, bf16, device batches (best row)", img,
         _f(v16, 1) + _which(b16), _met(v16, TARGET_BS16, True)],
        [f"thesis cell, batch {a.get('e2e_batch')}, from PNGs (e2e, metrics.json)", img,
         _f(e2e_rate, 1), _met(e2e_rate, TARGET_BS16, True)],
        ["e2e: share of the loop waiting for data (host side)", "small",
         _f(wait * 100 if wait is not None else None, 1) + " %", ""],
        [f"loader alone: cache + GPU augment, cores - 2 workers, batch {lb}", pairs,
         _f(rate, 1), _met(rate, TARGET_BS16, True)],
        ["batch 1 (best row)", f">= {TARGET_BS1:.0f} img/s", _f(v1, 1) + _which(b1),
         _met(v1, TARGET_BS1, True)],
        ["FPN-MobileNetV2 1280x720 latency (best bf16 row)", f"<= {TARGET_INFER_MS:.0f} ms",
         _f(ms, 2), _met(ms, TARGET_INFER_MS, False)],
        ["grid: 12 x 200k iterations at batch 1, one run at a time", f"<= {TARGET_GRID_H:.0f} h",
         _f(grid_h, 1) + " h", _met(grid_h, TARGET_GRID_H, False)],
    ]  # fmt: skip


def _check_targets(report: dict[str, Any]) -> list[list[Any]]:
    out = []
    for v in _result(report, "correctness").get("verdicts", []):
        out.append(
            [f"bf16 vs fp32 (TF32 off), batch {v['batch']}", "pass", v["verdict"],
             "yes" if v["verdict"] == "pass" else "NO"]
        )  # fmt: skip
    for r in _result(report, "compile").get("rows", []):
        ok = r.get("status") == "trained"
        out.append(
            [f"trains: {r.get('variant')}", "trained", r.get("status"), "yes" if ok else "NO"]
        )
    tests = _result(report, "tests")
    if tests:
        counts = tests.get("counts") or {}
        bad = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
        ok = tests.get("rc") == 0 and counts.get("passed", 0) > 0 and not bad
        skipped = counts.get("skipped") and not counts.get("passed")
        out.append(
            ["tests/train/test_train_gpu.py", "all pass", counts,
             "skipped (no GPU)" if skipped else ("yes" if ok else "NO")]
        )  # fmt: skip
    return out


def targets(report: dict[str, Any]) -> list[list[Any]]:
    """The issue's targets and checks next to what this run measured (n/a where a phase gave
    nothing): [what, wanted, measured, met]."""
    return _speed_targets(report) + _check_targets(report)


def _header(report: dict[str, Any]) -> list[str]:
    env = _result(report, "env")
    tiny = report["args"].get("tiny")
    return [
        "# GPU check (benchmarks/gpu_check.py)",
        "",
        f"- device: {env.get('device', 'n/a')} ({env.get('device_type', '?')}); "
        f"{env.get('nvidia_smi', '')}; {env.get('cores')} cores",
        f"- versions: Python {env.get('python')}, torch {env.get('torch')}, CUDA {env.get('cuda')}, "
        f"cuDNN {env.get('cudnn')}, Lightning {env.get('pytorch_lightning')}, "
        f"albumentations {env.get('albumentations')}, hydra {env.get('hydra')}",
        f"- date: {env.get('date')}; commit {env.get('git') or 'n/a'}; total {report.get('total_s')} s "
        f"(deadline {report['args'].get('deadline')} s)",
        f"- ceilings measured here: {_f((env.get('matmul_flops') or 0) / 1e12, 1)} TFLOP/s "
        f"({env.get('matmul')}), device copy {_f((env.get('copy_bytes_per_s') or 0) / 1e9, 0)} GB/s",
        *(["- **tiny mode: checks the script, the numbers mean nothing**"] if tiny else []),
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
                    (v.get("error") or "").replace("\n", " ")[:160],
                ]
                for k, v in report["phases"].items()
            ],
        ),  # fmt: skip
        "## Targets (issue 20)",
        "",
        *_table(["target", "wanted", "measured", "met"], targets(report)),
    ]


TRAIN_HEAD = ["variant", "batch", "precision", "img/s median", "img/s wall", "ms/iter", "peak MiB",
              "MFU %"]  # fmt: skip


def _train_cells(r: dict[str, Any]) -> list[Any]:
    return [
        r.get("variant"),
        r.get("batch"),
        r.get("precision"),
        _f(r.get("images_per_s"), 1),
        _f(r.get("images_per_s_wall"), 1),
        _f(r.get("ms_per_iter_median"), 1),
        _f(r.get("peak_mib"), 0),
        _f((r.get("mfu") or math.nan) * 100, 1),
    ]


LOADER_HEAD = ["augment_on", "RAM cache", "workers", "batch", "pairs read", "pairs/s",
               "pairs/s per worker", "device augment ms/batch", "setup s", "error"]  # fmt: skip


def _loader_cells(r: dict[str, Any]) -> list[Any]:
    return [
        r.get("augment_on"),
        r.get("cache"),
        r.get("workers"),
        r.get("batch", ""),
        r.get("pairs_read", ""),
        _f(r.get("pairs_per_s"), 1),
        _f(r.get("pairs_per_s_per_worker"), 1),
        _f(r.get("device_augment_ms_per_batch"), 2),
        _f(r.get("setup_s"), 1),
        (r.get("error") or "")[:100],
    ]


def _key_section(report: dict[str, Any]) -> list[str]:
    key = _result(report, "key")
    if not key:
        return []
    lines = ["## Key rows (every switch on; synthetic batches already on the device)", ""]
    lines += _table(TRAIN_HEAD, [_train_cells(r) for r in key.get("rows", [])])
    if key.get("loader"):
        ds = key.get("dataset") or {}
        lines += [
            f"The loader that must feed batch 16 ({ds.get('pairs')} synthetic GoPro pairs "
            f"{ds.get('frame')} on disk):",
            "",
            *_table(LOADER_HEAD, [_loader_cells(key["loader"])]),
        ]
    return lines


def _e2e_section(report: dict[str, Any]) -> list[str]:
    e = _result(report, "e2e")
    if not e:
        return []
    w = e.get("data_wait") or {}
    share = lambda k: _f(w[k] * 100, 1) + " %" if isinstance(w.get(k), int | float) else "n/a"  # noqa: E731
    return [
        "## End to end: python -m deblur.train from PNG files",
        "",
        f"`{e.get('command')}`",
        "",
        *_table(
            [
                "status",
                "iterations",
                "batch",
                "workers",
                "img/s (metrics.json)",
                "img/s after warm-up",
                "waiting for data",
                "moving + GPU augment",
                "in the step",
            ],
            [
                [
                    e.get("status"),
                    e.get("iterations"),
                    e.get("batch"),
                    e.get("workers"),
                    _f(e.get("images_per_s"), 1),
                    _f(w.get("images_per_s_after_skip"), 1),
                    share("wait_share"),
                    share("move_share"),
                    share("step_share"),
                ]
            ],
        ),  # fmt: skip
        f"Shares of the wall time of iterations {w.get('skipped')}..{w.get('iterations_profiled')} "
        "(host clock, Lightning's profiler hooks `train_dataloader_next`, `batch_to_device`, "
        "`run_training_batch`, passed as `+trainer.profiler`). The step makes no host sync, so "
        "the host runs ahead of the GPU by its launch queue: the waiting share is an upper bound "
        "of the GPU's idle share. metrics.json's img/s includes the warm-up iterations; compare "
        "the loader alone in the key rows.",
        "",
    ]


def _correctness_section(report: dict[str, Any]) -> list[str]:
    c = _result(report, "correctness")
    if not c.get("runs"):
        return []
    th = c.get("thresholds") or {}
    lines = [
        f"## Correctness: bf16-mixed vs fp32 (TF32 off), {c.get('iterations')} iterations, "
        f"crop {c.get('crop')}",
        "",
        f"Same seed (start weights, batches); pass = every term within {th.get('step0', 0):.0%} "
        f"at step 0 and its last-quarter mean within {th.get('last_quarter', 0):.0%} of fp32's.",
        "",
    ]
    lines += _table(
        ["batch", "precision", "status", "iters", "finite", "val PSNR", "img/s", "error"],
        [
            [r["batch"], r["precision"], r.get("status"), r.get("iterations"), r.get("finite"),
             _f(r.get("val_psnr")), _f(r.get("images_per_s"), 1), (r.get("error") or "")[:120]]
            for r in c["runs"]
        ],
    )  # fmt: skip
    for v in c.get("verdicts", []):
        lines += [f"**batch {v['batch']}: {v['verdict']}**" + "".join(
            f"; {w}" for w in v.get("why", [])[:6]), ""]  # fmt: skip
        lines += _table(
            ["term", "fp32 step 0", "bf16 step 0", "rel.", "fp32 last 1/4", "bf16 last 1/4",
             "rel. diff"],
            [
                [t["term"], _f(t["step0_fp32"], 4), _f(t["step0"], 4), _f(t["step0_rel"], 3),
                 _f(t["fp32_last_quarter"], 4), _f(t["last_quarter"], 4), _f(t["rel_diff"], 3)]
                for t in v.get("terms", [])
            ],
        )  # fmt: skip
    return lines


def _compile_section(report: dict[str, Any]) -> list[str]:
    rows = _result(report, "compile").get("rows", [])
    if not rows:
        return []
    return [
        "## torch.compile (model.compile=true, every other switch on)",
        "",
        *_table(
            ["variant", "batch", "status", "backend", "img/s median", "warm-up s", "peak MiB",
             "error"],
            [
                [r.get("variant"), r.get("batch"), r.get("status"), r.get("backend", ""),
                 _f(r.get("images_per_s"), 1), _f(r.get("warmup_s"), 1), _f(r.get("peak_mib"), 0),
                 (r.get("error") or "").replace("\n", " ")[:160]]
                for r in rows
            ],
        ),
    ]  # fmt: skip


def _rest_sections(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    tests = _result(report, "tests")
    if tests:
        lines += ["## GPU tests", "", f"`{tests.get('command')}`: rc {tests.get('rc')}, "
                  f"{tests.get('counts')}", ""]  # fmt: skip
    inf = _result(report, "inference")
    if inf.get("rows"):
        lines += [f"## Generator inference ({inf.get('size')}, median of {inf.get('runs')})", ""]
        lines += _table(
            ["precision", "median ms", "min ms", "PSNR vs fp32 (dB)", "max |diff|", "finite"],
            [
                [r["precision"], _f(r["median_ms"]), _f(r["min_ms"]),
                 _f(r.get("psnr_vs_fp32_db"), 1), _f(r.get("max_abs_diff_vs_fp32"), 4),
                 r.get("finite")]
                for r in inf["rows"]
            ],
        )  # fmt: skip
    data = _result(report, "data")
    if data.get("rows"):
        ds = data.get("dataset") or {}
        lines += [
            f"## Data loader ({ds.get('pairs')} synthetic GoPro pairs {ds.get('frame')} on disk, "
            f"{data.get('cores')} cores, crop {data.get('crop')})",
            "",
            *_table(LOADER_HEAD, [_loader_cells(r) for r in data["rows"]]),
        ]
    tp = _result(report, "throughput")
    if tp.get("rows"):
        lines += ["## Training throughput (each switch alone; synthetic device batches)", ""]
        lines += _table(TRAIN_HEAD, [_train_cells(r) for r in tp["rows"]])
    return lines


def markdown(report: dict[str, Any]) -> str:
    lines = _header(report)
    for section in (_key_section, _e2e_section, _correctness_section, _compile_section):
        lines += section(report)
    lines += _rest_sections(report)
    return "\n".join(lines) + "\n"


def short_table(report: dict[str, Any]) -> str:
    """The few lines printed last (the device tool's reply shows the end of the output)."""
    lines = ["phase        status       seconds  budget"]
    for k, v in report["phases"].items():
        lines.append(
            f"{k:<12} {v.get('status', '?'):<12} {v.get('seconds', ''):>7}  {v.get('budget_s', '')}"
        )
    lines += [f"{t[0]}: {t[2]} (wanted {t[1]}; met: {t[3] or '-'})" for t in targets(report)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- driver
WORKERS = {
    "env": phase_env,
    "key": phase_key,
    "e2e": phase_e2e,
    "correctness": phase_correctness,
    "compile": phase_compile,
    "tests": phase_tests,
    "inference": phase_inference,
    "data": phase_data,
    "throughput": phase_throughput,
}


def _phase_env(work: Path) -> None:
    os.environ.setdefault("DEBLUR_CACHE", str(work / "cache"))
    os.environ.setdefault("DEBLUR_RUNS", str(work / "runs"))
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def set_threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def run_worker(phase: str, work: Path) -> int:
    """A phase in this (child) process, with the options the driver saved in args.json."""
    args = argparse.Namespace(**read_json(work / "args.json"))
    _phase_env(work)
    set_threads(args)
    try:
        data = WORKERS[phase](args, work)
    except BaseException as err:  # noqa: BLE001 - the parent records it
        write_json(
            work / f"{phase}.error.json",
            {"error": error_text(err, 4000), "traceback": traceback.format_exc()},
        )
        return 1
    write_json(work / f"{phase}.json", data)
    return 0


def _wait_or_kill(proc: subprocess.Popen, timeout: float) -> tuple[str, int | None]:
    try:
        return "ok", proc.wait(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)  # the phase and everything it started
    try:
        proc.wait(timeout=KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return "timeout", proc.returncode


def run_phase(phase: str, work: Path, timeout: float, log) -> dict[str, Any]:
    """One phase in its own process group, killed at ``timeout``; its JSON plus the status."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", phase, "--work", str(work)]
    t0 = time.perf_counter()
    with open(work / f"{phase}.log", "w") as fh:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
        status, rc = _wait_or_kill(proc, timeout)
    seconds = time.perf_counter() - t0
    data = read_json(work / f"{phase}.json")
    err = read_json(work / f"{phase}.error.json")
    if status == "ok" and rc != 0:
        status = "failed"
    if data is None:  # what a phase cut short had written so far
        data = read_json(work / f"{phase}.partial.json")
    log_tail = (work / f"{phase}.log").read_text(errors="replace")[-4000:]
    log(f"[{phase}] {status} in {seconds:.1f} s (budget {timeout:.0f} s)")
    return {
        "status": status,
        "rc": rc,
        "seconds": round(seconds, 1),
        "budget_s": round(timeout, 1),
        "result": data,
        "error": (err or {}).get("error") or (f"killed at its budget ({timeout:.0f} s)"
                                              if status == "timeout" else None),
        "log_tail": log_tail if status != "ok" else log_tail[-800:],
    }  # fmt: skip


def run_inline(phase: str, args, work: Path, budget: float, log) -> dict[str, Any]:
    """One phase in this process (--inline: no import per phase, no kill at the budget; a
    phase over its budget is marked 'over budget')."""
    set_threads(args)
    _phase_env(work)
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"budget_s": round(budget, 1)}
    try:
        entry.update(status="ok", result=WORKERS[phase](args, work))
    except Exception as err:  # noqa: BLE001 - recorded; the next phase goes on
        entry.update(
            status="failed",
            error=error_text(err),
            log_tail=traceback.format_exc()[-4000:],
            result=read_json(work / f"{phase}.partial.json"),
        )
    seconds = time.perf_counter() - t0
    if entry["status"] == "ok" and seconds > budget:
        entry["status"] = "over budget"
    entry["seconds"] = round(seconds, 1)
    log(f"[{phase}] {entry['status']} in {seconds:.1f} s (budget {budget:.0f} s, inline)")
    return entry


# The rest of the throughput matrix (the key phase measures `all`): bf16 alone first, the
# fp32 baseline, then each other switch alone.
REST_VARIANTS = ["bf16", "baseline", "channels_last", "fused", "no_health_check", "cudnn_benchmark"]

# option: (full, tiny) defaults
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "deadline": (float(DEADLINE_FULL), float(DEADLINE_TINY)),
    "curve_iters": (100, 4),
    "curve_crop": (256, 32),
    "curve_batches": ([1, 16], [1, 2]),
    "e2e_iters": (100, 4),
    "e2e_batch": (16, 2),
    "e2e_crop": (256, 32),
    "batch_sizes": ([16, 1], [2, 1]),
    "variants": (REST_VARIANTS, ["baseline"]),
    "loader_batch": (16, 2),
    "loader_crop": (256, 32),
    "data_workers": ([8, 16], [0]),
    "min_pairs": (640, 4),
    "row_seconds": (3.0, 2.0),
    "frame": ("1280x720", "160x120"),
}


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--curve-iters", type=int, help="iterations per correctness run (100; tiny 4)")
    p.add_argument("--curve-crop", type=int, help="crop of the correctness runs (256; tiny 32)")
    p.add_argument("--curve-batches", type=int, nargs="+", help="correctness (1 16; tiny 1 2)")
    p.add_argument("--e2e-iters", type=int, help="iterations of the e2e run (100; tiny 4)")
    p.add_argument("--e2e-batch", type=int, help="batch of the e2e run (16; tiny 2)")
    p.add_argument("--e2e-crop", type=int, help="crop of the e2e run (256; tiny 32)")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="key/throughput (16 1; tiny 2 1)")
    p.add_argument(
        "--variants", nargs="+", help=f"throughput phase (default {' '.join(REST_VARIANTS)})"
    )
    p.add_argument("--tp-warmup", type=int, default=10)
    p.add_argument("--tp-iters", type=int, default=40)
    p.add_argument("--loader-batch", type=int, help="batch of the loader rows (16; tiny 2)")
    p.add_argument("--loader-crop", type=int, help="crop of the loader rows (256; tiny 32)")
    p.add_argument("--data-workers", type=int, nargs="+", help="data phase (8 16; tiny 0)")
    p.add_argument("--min-pairs", type=int, help="pairs timed per loader row (640; tiny 4)")
    p.add_argument("--row-seconds", type=float, help="at most this long per loader row (3)")
    p.add_argument("--data-pairs", type=int, help="training pairs on disk (default: enough)")
    p.add_argument("--frame", help="synthetic frame size WxH (1280x720; tiny 160x120)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads in the phases")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--tiny", action="store_true", help="tiny sizes: checks the script (CPU)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "runs/gpu_check"))
    p.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    p.add_argument(
        "--deadline", type=float, help=f"global limit in s (default {DEADLINE_FULL}, tiny more)"
    )
    p.add_argument("--budget", nargs="*", default=[], help="phase=seconds overrides")
    p.add_argument(
        "--commit-file",
        type=Path,
        default=ROOT / ".commit",
        help="file holding the commit (git describe --always --dirty > .commit, carried)",
    )
    _options(p)
    p.add_argument("--inline", action="store_true", help="phases in this process (no kill)")
    p.add_argument("--worker", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, (full, tiny) in DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    if args.tiny and args.threads == 0:
        args.threads = 1
    return args


def phase_budgets(args) -> dict[str, float]:
    budgets = dict(BUDGET_TINY if args.tiny else BUDGET_FULL)
    for item in args.budget:
        name, _, sec = item.partition("=")
        if name not in budgets or not sec.replace(".", "", 1).isdigit():
            raise SystemExit(
                f"gpu_check.py: --budget {item!r} is not phase=seconds with a phase of "
                f"{', '.join(PHASES)} (e.g. --budget compile=120)."
            )
        budgets[name] = float(sec)
    return budgets


def run_phases(args, work: Path, report: dict[str, Any], t_start: float, log) -> None:
    budgets = phase_budgets(args)
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
            report["phases"][phase] = run_phase(phase, work, budget, log)
        write_json(Path(args.out) / "gpu_check.json", report)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return run_worker(args.worker, Path(args.work))
    t_start = float(os.environ.get("GPU_CHECK_T0") or time.time())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="deblur_gpu_check_"))
    plain = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(work / "args.json", plain)
    log_file = open(out / "log.txt", "a")

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        log_file.write(line + "\n")
        log_file.flush()

    log(f"gpu_check: device={args.device} tiny={args.tiny} out={out} work={work}")
    report: dict[str, Any] = {"args": plain, "phases": {}}
    try:
        run_phases(args, work, report, t_start, log)
    finally:
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
