"""Loading trained networks from checkpoints, padding, full-image and tiled inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from tiny_nets import FPN_CFG, NLAYER_CFG, rgb
from torch import nn

from deblur.checkpoints import (
    CheckpointError,
    save_classifier_checkpoint,
    save_generator_checkpoint,
)
from deblur.eval.inference import (
    blend_ramp,
    crop_to,
    deblur_image,
    deblur_tensor,
    device_name,
    pad_to_multiple,
    resolve_device,
    tile_starts,
)
from deblur.models.load import load_classifier, load_generator


def make_fpn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return instantiate(FPN_CFG).eval()


@pytest.fixture(scope="module")
def nets() -> tuple[nn.Module, nn.Module]:
    """(generator, EMA generator) with different random weights."""
    return make_fpn(0), make_fpn(1)


@pytest.fixture(scope="module")
def gan_ckpt(tmp_path_factory, nets) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "gan.ckpt"
    return save_generator_checkpoint(path, nets[0], FPN_CFG, ema_generator=nets[1])


@pytest.fixture(scope="module")
def cls_ckpt(tmp_path_factory) -> Path:
    from deblur.models.critics import BlurClassifierNet

    torch.manual_seed(0)
    net = BlurClassifierNet(NLAYER_CFG)
    return save_classifier_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "cls.ckpt", net, NLAYER_CFG, 32
    )


class LocalConv(nn.Module):
    """A purely local network (receptive-field radius 3, no global statistics)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 3, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.tanh(self.body(x)) + x, -1, 1)


# ----------------------------------------------------------------------------- padding


def test_pad_is_reflect_when_it_fits_and_crop_restores() -> None:
    x = torch.randn(1, 3, 37, 45)
    padded, size = pad_to_multiple(x, 32)
    assert padded.shape == (1, 3, 64, 64)
    assert torch.equal(padded, F.pad(x, (0, 19, 0, 27), mode="reflect"))
    assert torch.equal(crop_to(padded, size), x)


def test_pad_tiny_images_mirrors_repeatedly() -> None:
    x = torch.arange(5.0).view(1, 1, 1, 5)
    padded, size = pad_to_multiple(x, 16)
    assert padded[0, 0, 0].tolist() == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    one = torch.full((1, 3, 1, 1), 0.5)
    p1, _ = pad_to_multiple(one, 4, min_size=8)
    assert p1.shape == (1, 3, 8, 8) and torch.all(p1 == 0.5)


# ----------------------------------------------------------------------------- checkpoints


def test_load_generator_prefers_ema_and_reproduces_outputs(gan_ckpt: Path, nets) -> None:
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    loaded = load_generator(gan_ckpt)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        ema = loaded(x)
        raw = load_generator(gan_ckpt, use_ema=False)(x)
        assert torch.allclose(ema, nets[1](x), atol=1e-6)
        assert torch.allclose(raw, nets[0](x), atol=1e-6)
    assert not torch.allclose(ema, raw)


def test_checkpoint_errors_are_clear(tmp_path: Path, gan_ckpt: Path, cls_ckpt: Path) -> None:
    with pytest.raises(CheckpointError, match=r"ckpt=.*nope\.ckpt: no such file"):
        load_generator(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="comes from a classifier run.*deblur.blur_score"):
        load_generator(cls_ckpt)
    with pytest.raises(CheckpointError, match="comes from a gan run.*deblur.predict"):
        load_classifier(gan_ckpt)
    bad = torch.load(gan_ckpt, weights_only=True)
    bad["state_dict"] = {k: v for k, v in bad["state_dict"].items() if "final" not in k}
    torch.save(bad, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match=r"missing 2 keys.*final"):
        load_generator(tmp_path / "bad.ckpt", use_ema=False)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt is not a readable Lightning checkpoint"):
        load_generator(tmp_path / "junk.ckpt")
    torch.save({"state_dict": {"generator.w": torch.zeros(1)}}, tmp_path / "nocfg.ckpt")
    with pytest.raises(CheckpointError, match="no run config with a `gen` node"):
        load_generator(tmp_path / "nocfg.ckpt")


def test_load_classifier_restores_weights(cls_ckpt: Path) -> None:
    from deblur.models.critics import BlurClassifierNet

    torch.manual_seed(0)
    ref = BlurClassifierNet(NLAYER_CFG).eval()
    net = load_classifier(cls_ckpt)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(net(x), ref(x), atol=1e-6)
    assert net.crop_size == 32


# ----------------------------------------------------------------------------- inference


def test_deblur_image_any_size_including_smaller_than_stride(nets) -> None:
    model = nets[0]
    for h, w in [(7, 5), (37, 45), (64, 96)]:
        out = deblur_image(model, rgb(h, w), device="cpu")
        assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_tiled_equals_untiled_for_a_local_network() -> None:
    model = LocalConv().eval()
    img = rgb(100, 150, seed=3)
    full = deblur_image(model, img, device="cpu")
    tiled = deblur_image(model, img, tile=48, overlap=16, device="cpu")
    assert tile_starts(150, 48, 16) == [0, 32, 64, 96, 102]
    assert np.abs(full.astype(int) - tiled.astype(int)).max() <= 1  # float rounding at .5 only
    x = torch.rand(1, 3, 70, 90) * 2 - 1
    a = deblur_tensor(model, x, device="cpu")
    b = deblur_tensor(model, x, tile=40, overlap=16, device="cpu")
    assert torch.allclose(a, b, atol=1e-5)


def test_tiled_fpn_runs_and_tile_too_small_is_refused(nets) -> None:
    model = nets[0]
    out = deblur_image(model, rgb(90, 130), tile=64, overlap=16, device="cpu")
    assert out.shape == (90, 130, 3)
    with pytest.raises(ValueError, match="twice the overlap"):
        deblur_image(model, rgb(90, 130), tile=40, overlap=32, device="cpu")


def test_blend_ramps_of_neighbours_sum_to_one() -> None:
    overlap = 16
    a = blend_ramp(48, overlap, ramp_start=False, ramp_end=True)
    b = blend_ramp(48, overlap, ramp_start=True, ramp_end=False)
    assert torch.allclose(a[-overlap:] + b[:overlap], torch.ones(overlap))
    assert a[-overlap // 4 :].sum() == 0 and a[0] == 1  # zero weight where padding is seen


def test_device_name_and_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    name = device_name("cpu")
    assert isinstance(name, str) and name.strip() and name != "cuda"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no usable CUDA GPU"):
            resolve_device("cuda")


def test_a_timm_classifier_trained_from_imagenet_weights_loads_offline(tmp_path: Path) -> None:
    """The stored config says pretrained=true in the backbone and in its nested trunk nodes; the
    checkpoint holds the trained weights, so loading must not fetch ImageNet ones (offline here:
    a download attempt would fail)."""
    from deblur.config import compose, to_container
    from deblur.models.critics import BlurClassifierNet

    backbone = to_container(
        compose("train_classifier", ["backbone=mobilenetv3_large", "pretrained=false"]).backbone
    )
    torch.manual_seed(0)
    net = BlurClassifierNet(backbone).eval()
    trained_from_imagenet = {**backbone, "pretrained": True}
    for trunk in ("trunk", "patch_trunk"):
        trained_from_imagenet[trunk] = {**backbone[trunk], "pretrained": True}
    path = save_classifier_checkpoint(tmp_path / "cls.ckpt", net, trained_from_imagenet, 64)
    loaded = load_classifier(path)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded(x), net(x), atol=1e-5)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4 / ((a - b) ** 2).mean().clamp_min(1e-12)))


def test_tiles_share_the_whole_images_norm_statistics() -> None:
    """Instance norm: tiles normalised with whole-image statistics match whole-image output;
    each tile normalising itself (the old behaviour, ``shared_stats=False``) is far off."""
    from tiny_nets import RESNET_CFG

    torch.manual_seed(0)
    model = instantiate({**RESNET_CFG, "norm": "instance"}).eval()
    x = F.interpolate(torch.rand(1, 3, 24, 32), size=(96, 128), mode="bilinear") * 2 - 1
    x[..., :48, :] = x[..., :48, :] * 0.3 - 0.5  # a dark, flat top half: per-tile stats differ
    whole = deblur_tensor(model, x, device="cpu")
    exact = deblur_tensor(model, x, tile=64, overlap=32, device="cpu", stats_size=128)
    small = deblur_tensor(model, x, tile=64, overlap=32, device="cpu", stats_size=64)
    own = deblur_tensor(model, x, tile=64, overlap=32, device="cpu", shared_stats=False)
    print(_psnr(exact, whole), _psnr(small, whole), _psnr(own, whole))
    assert _psnr(exact, whole) >= 40
    assert _psnr(small, whole) >= 20  # stats of a 2x downscaled copy: approximate
    assert _psnr(own, whole) < _psnr(exact, whole) - 10
    for m in model.modules():  # the patched forwards are gone again
        assert "forward" not in m.__dict__


def test_tile_context_reads_far_content_and_keeps_only_the_tile() -> None:
    """A network whose output depends on pixels 12 away (a 25-wide box filter, zero padded):
    tiles without context differ near their edges; with context >= 12 they equal the whole."""

    class Wide(nn.Module):
        multiple, min_size = 1, 1

        def forward(self, x):
            return F.avg_pool2d(x, 25, stride=1, padding=12, count_include_pad=True)

    x = 0.8 + 0.1 * torch.rand(1, 3, 96, 120)
    whole = deblur_tensor(Wide(), x, device="cpu")
    plain = deblur_tensor(Wide(), x, tile=48, overlap=8, device="cpu")
    framed = deblur_tensor(Wide(), x, tile=48, overlap=8, device="cpu", context=12)
    assert (plain - whole).abs().max() > 0.05
    torch.testing.assert_close(framed, whole, atol=1e-5, rtol=0)


def test_shared_norm_stats_leave_no_hook_behind() -> None:
    """The statistics are recorded and applied through forward hooks, all removed on exit
    (also when the run inside fails)."""
    from deblur.eval.inference import shared_norm_stats

    norm = nn.GroupNorm(2, 4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), norm, nn.Conv2d(4, 3, 1)).eval()
    whole = torch.rand(1, 3, 32, 32)
    with shared_norm_stats(model, whole, torch.device("cpu")):
        assert len(norm._forward_hooks) == 1  # the applying hook, the recording one is gone
        ref = model(whole)
    assert not norm._forward_hooks
    torch.testing.assert_close(ref, model(whole), atol=1e-5, rtol=0)  # same stats: same output
    with pytest.raises(RuntimeError), shared_norm_stats(model, whole, torch.device("cpu")):
        model(torch.rand(1, 5, 8, 8))  # wrong channels
    assert not norm._forward_hooks
