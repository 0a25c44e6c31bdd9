"""Every documented combination of precision x fused Adam x clipping x compile x loss either
trains (two real iterations, here on the CPU) or is refused before the run, in one paragraph
that names the keys.

The verdict of all 144 combinations is checked in the default suite (``check_values`` on the
composed config, CPU and GPU accelerators). Training: the combinations the CPU supports
(fp16 AMP needs CUDA) run two G and D iterations each; a covering subset (every pair of values
of any two factors at least once, over the eager ones) and the compiled WGAN-GP in the default
suite, all 96 under ``-m slow``. The default suite's compiled row uses the ``aot_eager``
backend: dynamo and aot_autograd (where a double backward through a compiled critic would
fail) without inductor's minutes of C++ codegen; the slow run compiles with inductor, as a GPU
run does.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch import nn

from deblur.config import compose
from deblur.config.checks import ConfigValueError, check_values
from deblur.systems.fit import build_system

PRECISIONS = ["32-true", "bf16-mixed", "16-mixed"]
FUSED = [False, True]
CLIPS = [0.0, 1.0]
COMPILE = [False, True]
LOSSES = ["gan", "lsgan", "wgangp", "ragan", "ragan_ls", "none"]
ALL = list(itertools.product(PRECISIONS, FUSED, CLIPS, COMPILE, LOSSES))
ON_CPU = [c for c in ALL if c[0] != "16-mixed"]


@functools.cache
def _base(loss, accelerator):
    over = ["debug=smoke", f"loss={loss}", f"trainer.accelerator={accelerator}"]
    # the smallest generator: the switches, not the network, are under test
    return compose("train", [*over, "gen=resnet_cpu"])


def _config(precision, fused, clip, compiled, loss, accelerator="cpu"):
    """The composed run config of one combination, and its command-line overrides."""
    cfg = copy.deepcopy(_base(loss, accelerator))
    over = {
        "trainer.precision": precision,
        "optim.fused": fused,
        "optim.grad_clip": clip,
        "model.compile": compiled,
    }
    for key, value in over.items():
        OmegaConf.update(cfg, key, value)
    return cfg, [f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in over.items()]


def _refusal(precision, fused, clip, accelerator):
    """The keys a refusal must name, or None where the combination must train."""
    if precision == "16-mixed" and accelerator == "cpu":
        return ["trainer.precision=16-mixed", "trainer.accelerator=cpu"]
    if precision == "16-mixed" and fused and clip > 0:
        return ["trainer.precision=16-mixed", "optim.fused=true", f"optim.grad_clip={clip}"]
    return None


@pytest.mark.parametrize("accelerator", ["cpu", "gpu"])
def test_every_combination_is_accepted_or_refused_naming_its_keys(accelerator):
    for combo in ALL:
        cfg, over = _config(*combo, accelerator=accelerator)
        keys = _refusal(combo[0], combo[1], combo[2], accelerator)
        if keys is None:
            check_values(cfg, over)
            continue
        with pytest.raises(ConfigValueError) as err:
            check_values(cfg, over)
        msg = str(err.value)
        assert all(k in msg for k in keys) and "Fix:" in msg and "\n" not in msg, (combo, msg)


def _covering(rows):
    """A subset of ``rows`` holding every pair of values of any two factors at least once
    (greedy: add the row that covers most uncovered pairs until none is left)."""

    def pairs(row):
        return {(i, row[i], j, row[j]) for i, j in itertools.combinations(range(len(row)), 2)}

    todo = set().union(*(pairs(r) for r in rows))
    chosen = []
    while todo:
        best = max(rows, key=lambda r: len(pairs(r) & todo))
        chosen.append(best)
        todo -= pairs(best)
    return chosen


EAGER = [c for c in ON_CPU if not c[3]]
#: the default suite: every value pair of the eager combinations, and the compiled WGAN-GP (its
#: penalty's double backward is the one a compiled graph could refuse) in bf16 with clipping
DEFAULT_ROWS = [*_covering(EAGER), ("bf16-mixed", False, 1.0, True, "wgangp")]


class _Batches(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        sharp = torch.rand(3, 32, 32, generator=g) * 2 - 1
        return {"blur": sharp.roll(1, -1), "sharp": sharp, "name": f"p{i}"}


class _Terms(pl.Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append({k: float(v) for k, v in trainer.callback_metrics.items()})


def _train_two(combo, monkeypatch, backend):
    if combo[3] and backend != "inductor":
        original = nn.Module.compile
        monkeypatch.setattr(nn.Module, "compile", lambda m, **kw: original(m, backend=backend))
    torch._dynamo.reset()
    cfg, over = _config(*combo)
    check_values(cfg, over)
    OmegaConf.resolve(cfg)
    torch.manual_seed(0)
    system = build_system(cfg)
    terms = _Terms()
    trainer = pl.Trainer(
        accelerator="cpu",
        precision=combo[0],
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[terms],
    )
    loader = torch.utils.data.DataLoader(_Batches(), batch_size=1)
    trainer.fit(system, train_dataloaders=loader)
    assert int(system.iteration) == 2 and len(terms.seen) == 2, combo
    for step in terms.seen:
        assert step["train/g_total"] == step["train/g_total"], combo  # not NaN
        assert all(math.isfinite(v) for v in step.values()), (combo, step)
    if combo[4] != "none":
        assert "train/d" in terms.seen[-1], combo  # D trained too


@pytest.mark.parametrize("combo", DEFAULT_ROWS, ids=lambda c: "-".join(map(str, c)))
def test_a_covering_subset_trains_two_iterations(combo, monkeypatch):
    _train_two(combo, monkeypatch, backend="aot_eager")


@pytest.mark.slow
@pytest.mark.parametrize("combo", ON_CPU, ids=lambda c: "-".join(map(str, c)))
def test_every_cpu_combination_trains_two_iterations(combo, monkeypatch):
    _train_two(combo, monkeypatch, backend="inductor")


def test_the_covering_subset_covers_every_pair_and_the_check_sees_a_missing_row():
    """Power of the subset: it holds every value pair; dropping a row leaves one uncovered."""

    def pairs(rows):
        return {
            (i, r[i], j, r[j]) for r in rows for i, j in itertools.combinations(range(len(r)), 2)
        }

    rows = _covering(EAGER)
    assert pairs(rows) == pairs(EAGER) and len(rows) < len(EAGER) // 3
    assert any(pairs(rows[:k] + rows[k + 1 :]) != pairs(EAGER) for k in range(len(rows)))


def test_compile_mode_reaches_torch_compile_and_a_wrong_one_is_named(monkeypatch):
    """model.compile_mode=reduce-overhead (CUDA graphs at batch 1) is passed to every compiled
    network; a mode torch.compile does not have is refused naming the key."""
    seen = []
    monkeypatch.setattr(nn.Module, "compile", lambda m, **kw: seen.append(kw))
    over = ["model.compile=true", "model.compile_mode=reduce-overhead"]
    build_system(compose("train", ["debug=smoke", *over]))
    assert seen == [{"mode": "reduce-overhead"}] * 3  # G, D, VGG
    with pytest.raises(ConfigValueError, match=r"model\.compile_mode=fast .*reduce-overhead"):
        build_system(
            compose("train", ["debug=smoke", "model.compile=true", "model.compile_mode=fast"])
        )
