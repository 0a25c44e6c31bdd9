"""CUDA / mixed-precision checks (``make test-gpu``): deselected by default, need a GPU."""

from __future__ import annotations

import math

import pytest
import torch

from entry_runs import run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "32-true"])
@pytest.mark.parametrize("loss", ["wgangp", "ragan_ls"])
def test_gan_trains_on_gpu_with_finite_losses(tmp_path, cache_dir, precision, loss):
    """Manual optimization under AMP, the WGAN-GP double backward and the fp16 scaler included."""
    rec = run(
        "train",
        [
            f"loss={loss}",
            "disc=double",
            "trainer.accelerator=gpu",
            f"trainer.precision={precision}",
            "trainer.limit_train_batches=8",
            "data.max_train_pairs=8",  # debug=smoke keeps 4 pairs (4 batches an epoch) otherwise
            "optim.grad_clip=1.0",
        ],
        tmp_path,
    )
    assert rec.status == "finished" and rec.result.device.startswith("cuda")
    assert math.isfinite(rec.result.final["val/psnr"]) and rec.result.iterations == 8
