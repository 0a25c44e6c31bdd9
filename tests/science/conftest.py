"""Fixtures of the science tests: the synthetic pairs and one blur classifier, built once per
session (they are read, never changed: tests copy what they modify)."""

from __future__ import annotations

import pytest
import torch
from synthetic_pairs import backbone_cfg, make_pairs, one_thread, train_classifier

from deblur.models.critics import BlurClassifierNet


@pytest.fixture(scope="session")
def pairs() -> dict[str, torch.Tensor]:
    """48 (sharp, blurred) pairs: 32 to train on, 16 held out."""
    return make_pairs()


@pytest.fixture(scope="session")
def nlayer_classifier(pairs) -> BlurClassifierNet:
    """The thin NLayer blur classifier (sharp 0 / blurred 1), trained 150 steps."""
    with one_thread():
        return train_classifier(backbone_cfg("nlayer"), pairs)
