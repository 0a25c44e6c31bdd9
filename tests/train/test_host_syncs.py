"""Zero host syncs per training iteration at production settings, counted on the CPU.

A ``TorchDispatchMode`` sees every ATen op of the step. Two kinds block a CUDA stream:
``aten._local_scalar_dense`` (``.item()``, ``float(t)``, ``if t:``, a tensor used as a Python
number) and ``aten.lift_fresh`` (``torch.tensor(<host data>)``, a Python-list index: a
host-to-device copy). ``torch.optim`` is left out (its CPU step counter is a host scalar by
design; on CUDA ``capturable``/``fused`` Adam keeps it on the device).

Counted: the training step (``on_train_batch_start`` to ``on_train_batch_end``: G and D steps,
losses, EMA, health check, logging). ``data.augment_on=gpu``'s warps run in
``on_after_batch_transfer`` and draw their parameters on the host: they reach the device in one
packed copy per batch (tests/data/test_data_loading.py counts it).
"""

from __future__ import annotations

import traceback
from collections import Counter

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from dispatch_window import DispatchWindow
from entry_runs import run

SYNC_OPS = {"aten._local_scalar_dense.default", "aten.lift_fresh.default"}


class SyncCounter(TorchDispatchMode):
    """Counts the blocking ops by name, with the innermost deblur frame that issued each."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if name in SYNC_OPS:
            stack = traceback.extract_stack()
            if not any("/torch/optim/" in f.filename for f in stack):
                ours = [f for f in stack if "/deblur/" in f.filename and "tests" not in f.filename]
                where = (
                    f"{ours[-1].filename.split('/deblur/')[-1]}:{ours[-1].lineno}" if ours else "?"
                )
                self.hits[f"{name} at {where}"] += 1
        return func(*args, **(kwargs or {}))


def count_steps() -> DispatchWindow:
    """A :class:`SyncCounter` over every training batch after the first."""
    return DispatchWindow(SyncCounter())


PRODUCTION = [
    "trainer.log_every_n_steps=50",
    "model.health_check_every=50",
    "model.ema_decay=0.999",
    "trainer.limit_train_batches=4",
    "data.max_train_pairs=4",
]


@pytest.mark.parametrize("loss", ["gan", "lsgan", "ragan", "ragan_ls", "wgangp", "none"])
def test_training_step_has_no_host_sync(tmp_path, cache_dir, loss):
    counting = count_steps()
    rec = run(
        "train",
        [f"loss={loss}", "disc=double", *PRODUCTION],
        tmp_path,
        callbacks=[counting],
    )
    assert rec.status == "finished"
    assert not counting.counter.hits, dict(counting.counter.hits)


def test_the_counter_sees_a_sync(tmp_path, cache_dir):
    """Power: a step that reads a loss on the host (``.item()``) is counted."""

    class ReadsLoss(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if counting.active:
                float(pl_module.iteration)
                pl_module.iteration.new_tensor([1.0])

    counting = count_steps()
    run("train", ["loss=lsgan", *PRODUCTION], tmp_path, callbacks=[ReadsLoss(), counting])
    kinds = {k.split(" at ")[0] for k in counting.counter.hits}
    assert kinds == SYNC_OPS, dict(counting.counter.hits)


def test_list_index_is_counted():
    """The op the health check used to issue twice per call (a Python-list index)."""
    x = torch.zeros(4)
    with SyncCounter() as counter:
        x[[0, 1]] = 1.0
    assert sum(counter.hits.values()) >= 1
