"""ATen ops dispatched per GAN training iteration, counted on this machine with a dispatch mode.

Every op is one kernel launch on CUDA (15-25 us each at batch 1), so the count bounds the
launch overhead of an iteration whatever the device. Counted from ``on_train_batch_start`` to
``on_train_batch_end`` of iterations 2.. (the first does lazy set-up), split by where the op
was issued: the networks' forward and backward, ``torch.optim``, and everything else (losses,
EMA, logging, the health check).

    python benchmarks/op_count.py                       # the thesis default at batch 1, EMA on
    python benchmarks/op_count.py optim.foreach=false   # extra overrides
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from dispatch_window import DispatchWindow  # noqa: E402  (shared with the host-sync test)
from entry_runs import run  # noqa: E402  (the tests' in-process runner)

BASE = [
    "gen=fpn_mobilenetv2",
    "disc=double",
    "loss=ragan_ls",
    "model.ema_decay=0.999",
    "trainer.log_every_n_steps=50",
    "trainer.limit_train_batches=4",
    "data.max_train_pairs=4",
]


class OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.parts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        files = [f.filename for f in traceback.extract_stack(limit=40)]
        if any("/torch/optim/" in f for f in files):
            part = "optimizers"
        elif any("/torch/autograd/" in f for f in files):
            part = "backward (networks and losses)"
        elif any("/deblur/models/" in f or "/torch/nn/modules/" in f for f in files):
            part = "network forward"
        else:
            part = "other (losses, EMA, logging, health check)"
        self.parts[part] += 1
        return func(*args, **(kwargs or {}))


def ops_per_iteration(extra: list[str]) -> tuple[dict[str, float], int]:
    """ATen ops per iteration by part (and the iterations counted) of one short real run."""
    count = DispatchWindow(OpCounter())
    with tempfile.TemporaryDirectory() as tmp:
        run("train", [*BASE, *extra], Path(tmp), callbacks=[count])
    n = max(count.iterations, 1)
    return {part: c / n for part, c in count.counter.parts.items()}, count.iterations


def main() -> None:
    parts, iterations = ops_per_iteration(sys.argv[1:])
    print(
        f"device: cpu (ops are counted, not timed); overrides: {' '.join([*BASE, *sys.argv[1:]])}"
    )
    print(f"iterations counted: {iterations}")
    for part, c in sorted(parts.items()):
        print(f"  {part:45s} {c:8.0f} ops/iteration")
    print(f"  {'total':45s} {sum(parts.values()):8.0f} ops/iteration")


if __name__ == "__main__":
    main()
