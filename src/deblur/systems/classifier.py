"""The blur-classifier LightningModule (stage 1 of the study): sharp = 0, blurred = 1, BCE."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import BinaryAccuracy

from deblur.models.critics import CALIBRATION_KEY, calibration_scores
from deblur.systems.distributed import gather_per_image


class ClassifierSystem(pl.LightningModule):
    """Trains ``BlurClassifierNet`` so its weights can start a GAN's D; ``cfg`` (the resolved run
    config, saved as ``hyper_parameters["cfg"]``) holds the ``backbone`` that rebuilds it."""

    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        cfg: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"cfg": cfg}, logger=False)
        self.net, self.optimizer = net, optimizer
        self.train_acc = BinaryAccuracy()
        self._calibration: dict[str, Any] | None = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the last validation's scores: a GAN loading this classifier as its D maps the
        logits onto the scale its loss reads (``deblur.models.critics.load_classifier_weights``)."""
        if self._calibration is not None:
            checkpoint[CALIBRATION_KEY] = self._calibration

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).reshape(-1)

    def configure_optimizers(self):
        return self.optimizer(self.net.parameters())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits, target = self(batch["image"]), batch["label"].float().reshape(-1)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        self.train_acc.update(torch.sigmoid(logits.detach()), target.long())
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=target.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        # in percent, as val/acc (one TensorBoard chart holds both)
        self.log("train/acc", self.train_acc.compute() * 100.0, sync_dist=False)
        self.train_acc.reset()

    def on_validation_epoch_start(self) -> None:
        self._val = {k: [] for k in ("loss", "label", "logit", "grad_norm")}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # the logits and input-gradient norms a GAN calibrates this classifier from, per loss
        scores = calibration_scores(self.net, batch["image"])
        target = batch["label"].float().reshape(-1)
        # per image, so that the epoch's loss and accuracy count every image once (all DDP ranks)
        loss = F.binary_cross_entropy_with_logits(scores["logit"], target, reduction="none")
        for k, v in {"loss": loss.detach(), "label": target, **scores}.items():
            self._val[k].append(v)

    def on_validation_epoch_end(self) -> None:
        per_image = gather_per_image(self, getattr(self, "_val", {}))
        if not len(per_image.get("loss", ())):
            return
        scores = {k: per_image[k].cpu() for k in ("logit", "label", "grad_norm")}
        self._calibration = scores | {"step": int(self.global_step)}
        loss = per_image["loss"].mean()
        correct = (per_image["logit"] > 0).float() == per_image["label"]  # sigmoid > 0.5
        acc = correct.float().mean() * 100.0
        logs = {"val/loss": loss, "hp/val_loss": loss, "val/acc": acc, "hp/val_acc": acc}
        # the ranks hold the same values: max keeps them exact
        self.log_dict(logs, sync_dist=True, reduce_fx="max")
