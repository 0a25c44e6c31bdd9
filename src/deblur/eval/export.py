"""Export ``PadCrop(generator)`` with dynamic height and width (``formats.<name>`` of
``conf/export.yaml``: a suffix and an exporter), then check it against PyTorch on an odd size."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from deblur.eval.inference import PadCrop
from deblur.models.load import load_generator

Size = tuple[int, int] | list[int]


def _example(hw: Size, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, int(hw[0]), int(hw[1]), generator=g) * 2 - 1


def _wrapped(model: nn.Module, path: str | Path) -> tuple[nn.Module, Path]:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return PadCrop(model).eval(), Path(path)


def export_torchscript(model: nn.Module, path: str | Path, example_size: Size = (64, 96)) -> Path:
    """Trace ``PadCrop(model)`` to TorchScript and save it; loads back with ``torch.jit.load``."""
    wrapped, path = _wrapped(model, path)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings on shape checks; verified numerically
        torch.jit.trace(wrapped, _example(example_size), check_trace=False).save(str(path))
    return path


def export_onnx(
    model: nn.Module, path: str | Path, example_size: Size = (64, 96), opset: int | None = None
) -> Path:
    """Export ``PadCrop(model)`` to ONNX (dynamo exporter) with dynamic height and width."""
    if missing := [n for n in ("onnx", "onnxscript") if importlib.util.find_spec(n) is None]:
        raise ImportError(
            f"format=onnx needs the package(s) {', '.join(missing)}, not installed. Install the "
            "optional extra: pip install -e '.[export]' (onnx, onnxruntime, onnxscript)."
        )
    wrapped, path = _wrapped(model, path)
    dims = {i: torch.export.Dim(n, min=1, max=16384) for i, n in ((2, "height"), (3, "width"))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (_example(example_size),),
            str(path),
            input_names=["image"],
            output_names=["deblurred"],
            dynamic_shapes={"x": dims},
            dynamo=True,
            external_data=False,
            verbose=False,
            **({"opset_version": int(opset)} if opset else {}),
        )
    return path


def run_exported(path: str | Path, x: Tensor) -> Tensor:
    """Run an exported file (``.pt`` TorchScript or ``.onnx`` via onnxruntime) on ``x``."""
    if Path(path).suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(
                "Running an ONNX export needs onnxruntime: pip install -e '.[export]'."
            ) from err
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still works
        return torch.jit.load(str(path), map_location="cpu")(x)


def check_export(model: nn.Module, path: str | Path, size: Size = (67, 93)) -> float:
    """Max absolute difference between the export and PyTorch on an (odd-sized) random image."""
    x = _example(size, seed=1)
    with torch.no_grad():
        ref = PadCrop(model).eval()(x)
    got = run_exported(path, x)
    if got.shape != ref.shape:
        raise RuntimeError(
            f"Export {path} returned shape {tuple(got.shape)} for input {tuple(x.shape)} "
            f"(expected {tuple(ref.shape)}): its height/width are not dynamic."
        )
    return float((got - ref).abs().max())


def run_export(cfg: DictConfig, model: nn.Module | None = None) -> tuple[Path, float | None]:
    """Export the checkpoint's generator as the config says; (file, max abs diff or None)."""
    if cfg.format not in cfg.formats:
        raise ValueError(f"format={cfg.format}: choose one of {', '.join(cfg.formats)}.")
    fmt = cfg.formats[cfg.format]
    if model is None:
        model = load_generator(cfg.ckpt, use_ema=bool(cfg.use_ema))
    out = Path(cfg.out) if cfg.out else Path(str(cfg.ckpt)).with_suffix(fmt.suffix)
    path = instantiate(fmt.exporter)(model, out, list(cfg.example_size))
    print(f"[deblur.export] {cfg.format} written to {path}", flush=True)
    if not cfg.check:
        return path, None
    diff = check_export(model, path, list(cfg.check_size))
    ok = diff <= float(cfg.atol)
    print(
        f"[deblur.export] check on a {cfg.check_size[0]}x{cfg.check_size[1]} image: max abs "
        f"difference to PyTorch {diff:.2e} ({'OK' if ok else 'ABOVE'} atol {cfg.atol})",
        flush=True,
    )
    if not ok:
        raise RuntimeError(
            f"Export {path} differs from PyTorch by {diff:.2e} > atol {cfg.atol}; do not use it."
        )
    return path, diff
