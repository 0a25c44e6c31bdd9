"""Run a GAN training through managed_run as the entry point does, with an optional callback that
stops training after N epochs (what the exact-resume test needs and the command line cannot give).

    python tests/train/ddp_driver.py <run_dir> <stop_after_epoch or 0> <override> ...

Lightning's DDP launcher re-runs this script for the extra processes (LOCAL_RANK=1, ...), so every
rank takes the same path as under ``python -m deblur.train``: rank 0 owns the run folder, the
others follow it (deblur.systems.distributed.follow_rank_zero).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl

from deblur.config import compose
from deblur.runs import managed_run
from deblur.systems.fit import fit


class StopAfterEpoch(pl.Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def main(argv: list[str]) -> None:
    run_dir, stop, overrides = Path(argv[0]), int(argv[1]), argv[2:]
    cfg = compose("train", ["debug=smoke", *overrides])
    callbacks = [StopAfterEpoch(stop)] if stop > 0 else []
    rec = managed_run(
        cfg, "gan", lambda d, r: fit(cfg, d, r, extra_callbacks=callbacks), run_dir=run_dir
    )
    print(f"[driver] status={rec.status} iterations={rec.result.iterations}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
