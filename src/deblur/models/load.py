"""Networks rebuilt from checkpoint files: :mod:`deblur.checkpoints` reads and checks the file
and hands over the state dict and the stored config; the builders here make the network."""

from __future__ import annotations

import logging
import os

from hydra.utils import instantiate
from torch import nn

from deblur.checkpoints import classifier_state, generator_state, given_as, load_state_strict
from deblur.models.critics import BlurClassifierNet

log = logging.getLogger(__name__)


def _no_banner(record: logging.LogRecord) -> bool:
    return "RANDOM WEIGHTS" not in record.getMessage()


def load_generator(
    path: str | os.PathLike, use_ema: bool = True, key: str | None = "ckpt"
) -> nn.Module:
    """A GAN checkpoint's generator (its EMA copy if stored and ``use_ema``) rebuilt from its
    ``gen`` config, eval mode, no gradients, without the RANDOM WEIGHTS banner of the rebuild."""
    state, gen_cfg, which = generator_state(path, use_ema, key)
    banner = logging.getLogger("deblur.models.weights")
    banner.addFilter(_no_banner)
    try:
        net: nn.Module = instantiate(gen_cfg, _convert_="all")
    finally:
        banner.removeFilter(_no_banner)
    load_state_strict(net, state, given_as(key, path), which)
    log.info("Loaded %s weights from %s", which, path)
    return net.eval().requires_grad_(False)


def load_classifier(path: str | os.PathLike, key: str | None = "ckpt") -> BlurClassifierNet:
    """The ``BlurClassifierNet`` of a blur-classifier checkpoint in eval mode (outputs logits);
    its ``crop_size`` attribute is the training crop size from the stored config (or None)."""
    state, backbone, crop = classifier_state(path, key)
    net = BlurClassifierNet(backbone)
    load_state_strict(net, state, given_as(key, path), "classifier")
    net.crop_size = crop
    return net.eval().requires_grad_(False)
