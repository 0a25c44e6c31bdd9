"""Fixtures of the science tests: the synthetic pairs and one blur classifier per module."""

from __future__ import annotations

import pytest
import torch
from synthetic_pairs import backbone_cfg, make_pairs, train_classifier

from deblur.models.critics import BlurClassifierNet


@pytest.fixture(scope="module")
def pairs() -> dict[str, torch.Tensor]:
    """48 (sharp, blurred) pairs: 32 to train on, 16 held out."""
    return make_pairs()


@pytest.fixture(scope="module")
def nlayer_classifier(pairs) -> BlurClassifierNet:
    """The thin NLayer blur classifier (sharp 0 / blurred 1), trained 150 steps."""
    return train_classifier(backbone_cfg("nlayer"), pairs)
