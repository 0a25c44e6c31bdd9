"""A callback that holds a ``TorchDispatchMode`` over every training batch after the first (the
first does lazy set-up): used by the host-sync test and benchmarks/op_count.py."""

from __future__ import annotations

import pytorch_lightning as pl
from torch.utils._python_dispatch import TorchDispatchMode


class DispatchWindow(pl.Callback):
    def __init__(self, mode: TorchDispatchMode) -> None:
        self.counter, self.active, self.iterations = mode, False, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx >= 1:
            self.counter.__enter__()
            self.active = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.active:
            self.counter.__exit__(None, None, None)
            self.active, self.iterations = False, self.iterations + 1
