"""Launch overhead at batch 1: the thesis default (FPN-MobileNetV2, double critic, RaGAN-LS,
VGG19, EMA on, logging every 50 steps) dispatches <= 2,300 ATen ops per eager iteration, and
what surrounds the networks (losses, EMA, logging, health check) <= 200 of them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "op_count.py"


@pytest.fixture(scope="module")
def op_count():
    spec = importlib.util.spec_from_file_location("op_count", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["op_count"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("op_count", None)


OTHER = "other (losses, EMA, logging, health check)"


def test_thesis_default_stays_under_2300_ops_per_iteration(op_count):
    parts, iterations = op_count.ops_per_iteration(["debug=smoke"])
    assert iterations == 3
    assert sum(parts.values()) <= 2300, parts
    assert parts[OTHER] <= 200, parts


def test_the_count_sees_a_per_tensor_ema(op_count, monkeypatch):
    """Power: the EMA buffer copy one op per tensor (as before) puts the count over the target."""
    from deblur.systems.gan import GANSystem

    def per_tensor(self):
        with torch.no_grad():
            for e, c in zip(self.ema_generator.parameters(), self.generator.parameters()):
                e.lerp_(c, 1.0 - self.ema_decay)
            for e, c in zip(self.ema_generator.buffers(), self.generator.buffers()):
                e.copy_(c)

    monkeypatch.setattr(GANSystem, "_update_ema", per_tensor)
    parts, _ = op_count.ops_per_iteration(["debug=smoke"])
    assert sum(parts.values()) > 2300 and parts[OTHER] > 200, parts


def test_the_one_op_ema_is_the_ema():
    """Parameters move by (1 - decay) towards G's; buffers (BatchNorm statistics) are copied."""
    from deblur.config import compose
    from deblur.systems.fit import build_system

    system = build_system(compose("train", ["debug=smoke", "model.ema_decay=0.75"]))
    ema, gen = system.ema_generator, system.generator
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(1.0)
        for b in gen.buffers():
            b.add_(3)
    system._update_ema()
    for old, new, cur in zip(before, ema.parameters(), gen.parameters()):
        assert torch.allclose(new, old + 0.25 * (cur - old), atol=1e-6)
    buffers = list(zip(ema.buffers(), gen.buffers()))
    assert buffers and all(torch.equal(e, c) for e, c in buffers)
