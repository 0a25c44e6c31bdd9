"""python -m deblur.export: TorchScript and ONNX exports match PyTorch on odd-sized images."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from tiny_nets import FPN_CFG, RESNET_CFG

from deblur.checkpoints import save_generator_checkpoint
from deblur.config import compose
from deblur.eval.export import (
    check_export,
    export_onnx,
    export_torchscript,
    run_export,
    run_exported,
)
from deblur.eval.inference import PadCrop

HAS_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime", "onnxscript"))
needs_ort = pytest.mark.skipif(
    not HAS_ORT,
    reason="onnx / onnxruntime / onnxscript not installed (optional extra: pip install -e '.[export]')",
)


@pytest.fixture(scope="module")
def fpn():
    torch.manual_seed(0)
    return instantiate(FPN_CFG).eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return instantiate(RESNET_CFG).eval()


def test_torchscript_fpn_matches_on_odd_and_tiny_sizes(fpn, tmp_path: Path) -> None:
    path = export_torchscript(fpn, tmp_path / "g.pt", example_size=(64, 96))
    assert check_export(fpn, path, (67, 93)) <= 1e-4
    x = torch.rand(1, 3, 7, 5) * 2 - 1  # smaller than the stride
    with torch.no_grad():
        ref = PadCrop(fpn)(x)
    got = run_exported(path, x)
    assert got.shape == (1, 3, 7, 5) and (got - ref).abs().max() <= 1e-4


@needs_ort
def test_onnx_resnet_matches_with_dynamic_height_and_width(resnet, tmp_path: Path) -> None:
    path = export_onnx(resnet, tmp_path / "g.onnx", example_size=(32, 48))
    for size in [(37, 45), (9, 61)]:
        assert check_export(resnet, path, size) <= 1e-4


@needs_ort
@pytest.mark.slow
def test_onnx_fpn_matches(fpn, tmp_path: Path) -> None:
    path = export_onnx(fpn, tmp_path / "g.onnx")
    assert check_export(fpn, path, (67, 93)) <= 1e-4


def test_cli_config_exports_next_to_the_checkpoint(resnet, tmp_path: Path, capsys) -> None:
    ckpt = save_generator_checkpoint(tmp_path / "run" / "best.ckpt", resnet, RESNET_CFG)
    path, diff = run_export(compose("export", [f"ckpt={ckpt}", "format=torchscript"]))
    assert path == tmp_path / "run" / "best.pt" and path.is_file()
    assert diff is not None and diff <= 1e-4
    assert "max abs difference" in capsys.readouterr().out
    with pytest.raises(ValueError, match="torchscript, onnx"):
        run_export(compose("export", [f"ckpt={ckpt}", "format=tflite"]))


def test_every_format_of_the_config_names_its_suffix_and_exporter() -> None:
    """format=<name> picks formats.<name> of conf/export.yaml; opset= reaches the ONNX exporter."""
    cfg = compose("export", ["ckpt=x.ckpt", "opset=17"])
    assert list(cfg.formats) == ["torchscript", "onnx"]
    exporters = {name: instantiate(node.exporter) for name, node in cfg.formats.items()}
    assert exporters["torchscript"].func is export_torchscript
    assert exporters["onnx"].func is export_onnx and exporters["onnx"].keywords == {"opset": 17}
    assert {n: node.suffix for n, node in cfg.formats.items()} == {
        "torchscript": ".pt",
        "onnx": ".onnx",
    }
