"""Pretrained weights: local files load, offline failures explain themselves, random is loud."""

from __future__ import annotations

import logging
import urllib.error

import pytest
import timm
import torch
import torchvision
from huggingface_hub.errors import LocalEntryNotFoundError

from deblur.models import weights
from deblur.models.weights import (
    PretrainedWeightsError,
    create_timm,
    create_vgg19_features,
    warn_random_weights,
)


def test_local_file_loads_into_features_model(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("mobilenetv2_100")
    path = tmp_path / "mnv2.pth"
    torch.save(source.state_dict(), path)
    model = create_timm("mobilenetv2_100", True, str(path), features_only=True)
    assert torch.equal(model.conv_stem.weight, source.conv_stem.weight)
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, source.blocks[6][0].conv_pwl.weight)


def test_env_folder_is_searched(tmp_path, monkeypatch):
    torch.manual_seed(1)
    source = timm.create_model("mobilenetv2_100")
    torch.save(source.state_dict(), tmp_path / "mobilenetv2_100.pth")
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path))
    model = create_timm(
        "mobilenetv2_100", True, features_only=True, out_indices=(2,), feature_cls="getter"
    )
    assert torch.equal(model.model.conv_stem.weight, source.conv_stem.weight)


def test_missing_or_wrong_file_is_explained(tmp_path):
    with pytest.raises(PretrainedWeightsError, match=r"absent\.pth.*pretrained=false"):
        create_timm("mobilenetv2_100", True, str(tmp_path / "absent.pth"))
    torch.save({"something": torch.zeros(2)}, tmp_path / "wrong.pth")
    # timm loads feature extractors non-strictly: the wrong file must still be refused
    with pytest.raises(PretrainedWeightsError, match=r"wrong\.pth.*missing"):
        create_timm("mobilenetv2_100", True, str(tmp_path / "wrong.pth"), features_only=True)


def test_offline_timm_error_names_model_and_fixes(monkeypatch):
    real_create = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise LocalEntryNotFoundError("no connection")
        return real_create(name, pretrained=False, **kw)

    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(PretrainedWeightsError) as info:
        create_timm("efficientnet_b0", True, features_only=True)
    text = str(info.value)
    for needle in (
        "efficientnet_b0",
        "timm/efficientnet_b0",
        "weights_path=",
        "DEBLUR_WEIGHTS_DIR",
        "pretrained=false",
    ):
        assert needle in text
    assert isinstance(info.value, RuntimeError)


def test_offline_vgg_error_names_file(monkeypatch):
    def offline(weights=None):
        if weights is not None:
            raise urllib.error.URLError("no network")
        return torch.nn.Module()

    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(torchvision.models, "vgg19", offline)
    with pytest.raises(PretrainedWeightsError, match=r"vgg19-dcbb9e9d\.pth.*pretrained=false"):
        create_vgg19_features(True)


def test_random_weights_are_loud(caplog):
    with caplog.at_level(logging.WARNING, logger="deblur.models.weights"):
        warn_random_weights("the thing")
    record = caplog.records[-1]
    assert record.levelno == logging.WARNING
    assert "RANDOM WEIGHTS" in record.getMessage() and "the thing" in record.getMessage()
    with caplog.at_level(logging.WARNING, logger="deblur.models.weights"):
        create_timm("mobilenetv2_100", False, features_only=True)
    assert "RANDOM WEIGHTS: timm model 'mobilenetv2_100'" in caplog.records[-1].getMessage()


def test_vgg_features_file_loads(tmp_path):
    torch.manual_seed(0)

    class Source(torch.nn.Module):  # a VGG19 without its 100 M-parameter classifier
        def __init__(self):
            super().__init__()
            self.features = create_vgg19_features(False)

    source = Source()
    path = tmp_path / "vgg.pth"
    torch.save(source.state_dict(), path)
    features = create_vgg19_features(True, str(path))
    assert torch.equal(features[14].weight, source.features[14].weight)
    assert len(features) == len(source.features)


def test_load_generator_hides_the_random_weights_banner_of_its_rebuild(tmp_path, caplog):
    """A checkpoint's generator is rebuilt with random weights the trained ones replace: no
    RANDOM WEIGHTS banner for it (and the filter only while loading)."""
    from hydra.utils import instantiate

    from deblur.checkpoints import save_generator_checkpoint
    from deblur.models.load import load_generator

    cfg = {"_target_": "deblur.models.fpn.FPNGenerator", "fpn_channels": 16, "head_channels": 8}
    cfg |= {"backbone": "mobilenetv2_100", "pretrained": False}
    path = save_generator_checkpoint(tmp_path / "g.ckpt", instantiate(cfg), cfg)
    caplog.clear()  # the banner of the network saved above
    with caplog.at_level(logging.WARNING, logger="deblur.models.weights"):
        load_generator(path)
        assert "RANDOM WEIGHTS" not in caplog.text
        caplog.clear()
        weights.warn_random_weights("a later network")
    assert "RANDOM WEIGHTS" in caplog.text  # the filter is gone after loading
