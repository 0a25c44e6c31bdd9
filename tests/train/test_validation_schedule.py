"""Validation that costs little at thesis scale: every ``val_every_iterations`` iterations on a
fixed ``data.val_pairs_during_training`` subset while training, the whole split once for the
final weights (metrics.json's ``final``); best.ckpt is picked among the subset's validations."""

from __future__ import annotations

import pytorch_lightning as pl

from entry_runs import run


class Seen(pl.Callback):
    """(trainer function, validation batches, iteration) of every validation."""

    def __init__(self):
        self.runs = []

    def on_validation_end(self, trainer, pl_module):
        self.runs.append(
            (trainer.state.fn.value, int(trainer.num_val_batches[0]), pl_module._host_iteration)
        )


def test_subset_every_iteration_then_the_whole_split(tmp_path):
    seen = Seen()
    rec = run(
        "train",
        [
            "data.max_val_pairs=2",
            "trainer.limit_val_batches=null",
            "data.val_pairs_during_training=1",
            "val_every_iterations=1",
            "trainer.limit_train_batches=3",
        ],
        tmp_path,
        callbacks=[seen],
    )
    assert rec.status == "finished"
    # three iterations, a one-pair validation after each, then both pairs for the final weights
    assert seen.runs == [("fit", 1, 1), ("fit", 1, 2), ("fit", 1, 3), ("validate", 2, 3)]
    history = rec.result.history
    assert [h["iteration"] for h in history] == [1, 2, 3, 3]
    assert history[-1]["full_set"] == 1 and all("full_set" not in h for h in history[:-1])
    assert rec.result.final["val/psnr"] == history[-1]["val/psnr"]  # the whole split
    assert rec.result.best["val/psnr"] in [h["val/psnr"] for h in history[:-1]]  # a subset score


def test_by_default_every_epoch_on_the_whole_split(tmp_path):
    seen = Seen()
    rec = run(
        "train",
        ["data.max_val_pairs=2", "trainer.limit_val_batches=null"],
        tmp_path,
        callbacks=[seen],
    )
    assert rec.status == "finished"
    assert seen.runs == [("fit", 2, 2)]  # one epoch of two iterations, no extra validation
