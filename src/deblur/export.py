"""Export a generator to TorchScript or ONNX with dynamic height and width.

``python -m deblur.export ckpt=<gan .ckpt> format=torchscript|onnx out=<file>``. The exported
module is :class:`deblur.inference.PadCrop` around the generator: mirror padding to the stride
(pure tensor arithmetic on the input size, so it stays dynamic), the network, the crop back.
Input and output: ``1 x 3 x H x W`` float32 RGB in [-1, 1], any H and W. After exporting, the
file is run on an odd-sized image and compared with PyTorch (``atol`` 1e-4 by default).
ONNX needs the optional extra ``export`` (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from deblur.cli import entry_point
from deblur.inference import PadCrop
from deblur.models.load import load_generator

log = logging.getLogger(__name__)

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}


def _example(hw: tuple[int, int] | list[int], seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, int(hw[0]), int(hw[1]), generator=g) * 2 - 1


def export_torchscript(
    model: nn.Module, path: str | Path, example_size: tuple[int, int] | list[int] = (64, 96)
) -> Path:
    """Trace ``PadCrop(model)`` to TorchScript and save it; loads back with ``torch.jit.load``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = PadCrop(model.eval()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on shape checks; verified numerically
        with torch.no_grad():
            traced = torch.jit.trace(wrapped, _example(example_size), check_trace=False)
        traced.save(str(path))
    return path


def _onnx_missing() -> str | None:
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            return name
    return None


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_size: tuple[int, int] | list[int] = (64, 96),
    opset: int | None = None,
) -> Path:
    """Export ``PadCrop(model)`` to ONNX (dynamo exporter) with dynamic batch, height, width."""
    missing = _onnx_missing()
    if missing:
        raise ImportError(
            f"format=onnx needs the package '{missing}', which is not installed. Install the "
            "optional extra: pip install -e '.[export]' (onnx, onnxruntime, onnxscript)."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = PadCrop(model.eval()).eval()
    dims = {
        2: torch.export.Dim("height", min=1, max=16384),
        3: torch.export.Dim("width", min=1, max=16384),
    }
    kwargs = {"opset_version": int(opset)} if opset else {}
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
            **kwargs,
        )
    return path


def run_exported(path: str | Path, x: Tensor) -> Tensor:
    """Run an exported file (``.pt`` TorchScript or ``.onnx`` via onnxruntime) on ``x``."""
    path = Path(path)
    if path.suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise ImportError(
                "Running an ONNX export needs onnxruntime: pip install -e '.[export]'."
            ) from err
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still works
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(x)


def check_export(
    model: nn.Module, path: str | Path, size: tuple[int, int] | list[int] = (67, 93)
) -> float:
    """Max absolute difference between the export and PyTorch on an (odd-sized) random image."""
    x = _example(size, seed=1)
    with torch.no_grad():
        ref = PadCrop(model.eval()).eval()(x)
    got = run_exported(path, x)
    if got.shape != ref.shape:
        raise RuntimeError(
            f"Export {path} returned shape {tuple(got.shape)} for input {tuple(x.shape)} "
            f"(expected {tuple(ref.shape)}): its height/width are not dynamic."
        )
    return float((got - ref).abs().max())


EXPORTERS = {"torchscript": export_torchscript, "onnx": export_onnx}


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | Path,
    example_size: tuple[int, int] | list[int] = (64, 96),
    opset: int | None = None,
) -> Path:
    """Export ``model`` in format ``fmt`` (torchscript | onnx) to ``out``."""
    if fmt not in EXPORTERS:
        raise ValueError(f"format={fmt}: choose one of {', '.join(EXPORTERS)}.")
    if fmt == "onnx":
        return export_onnx(model, out, example_size, opset)
    return export_torchscript(model, out, example_size)


def run_export(cfg: DictConfig, model: nn.Module | None = None) -> tuple[Path, float | None]:
    """Export the checkpoint's generator as the config says; (file, max abs diff or None)."""
    fmt = str(cfg.format)
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt}: choose one of {', '.join(FORMATS)}.")
    if model is None:
        model = load_generator(cfg.ckpt, use_ema=bool(cfg.use_ema))
    out = Path(cfg.out) if cfg.out else Path(str(cfg.ckpt)).with_suffix(FORMATS[fmt])
    path = export_model(model, fmt, out, list(cfg.example_size), cfg.opset)
    print(f"[deblur.export] {fmt} written to {path}", flush=True)
    diff = None
    if cfg.check:
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


@entry_point("export")
def main(cfg: DictConfig) -> None:
    run_export(cfg)


if __name__ == "__main__":
    main()
