"""One run over several processes (DDP), tested with two CPU processes (gloo).

The GAN comparison is chosen to be exact: the generator is the InstanceNorm ResNet and its loss is
pixel MSE only (``model.adv_weight=0``, no VGG term in ``experiment=cpu_10min``), so a batch of 2
in one process and 2 processes x 1 image (gradients averaged by DDP) take the same step up to
float rounding; the samplers give the processes' batches together the one-process batches (same
crops). Three validation images over two processes: shards of 2 and 1 (+1 padding).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deblur.data.sampling import EpochSeededSampler, shard_positions
from entry_runs import cli, run

GAN = [
    "experiment=cpu_10min",
    "trainer.max_steps=-1",  # epochs bound these runs (trainer.max_epochs below), not steps
    "model.adv_weight=0",
    "model.ema_decay=0",
    "gen.identity_init=false",  # a random G: its validation PSNR moves with every step
    "data.embedded.blurs_per_photo=2",
    "data.max_val_pairs=3",
    "trainer.limit_val_batches=null",
    "trainer.max_epochs=2",
]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
HERE = Path(__file__).parent


def _cli(module: str, run_dir: Path, *overrides: str) -> dict:
    cli(
        module,
        "debug=smoke",
        *overrides,
        f"hydra.run.dir={run_dir}",
        env={"OMP_NUM_THREADS": "1"},
        check=True,
    )
    return json.loads((run_dir / "metrics.json").read_text())


def _driver(run_dir: Path, stop_after: int, *overrides: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(HERE / "ddp_driver.py"), str(run_dir), str(stop_after), *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory, cache_dir):
    """The one-process run: batch 2."""
    rec = run("train", [*GAN, "data.batch_size=2"], tmp_path_factory.mktemp("single"))
    assert rec.status == "finished", rec.error
    return rec


@pytest.fixture(scope="module")
def ddp(tmp_path_factory, cache_dir):
    """``python -m deblur.train ... trainer=ddp trainer.devices=2``: 2 processes x batch 1."""
    run_dir = tmp_path_factory.mktemp("ddp")
    return run_dir, _cli("deblur.train", run_dir, *GAN, *DDP)


def test_two_processes_validate_like_one(single, ddp):
    _, rec = ddp
    assert rec["status"] == "finished", rec.get("error")
    assert rec["result"]["iterations"] == single.result.iterations == 4
    assert (
        [h["epoch"] for h in rec["result"]["history"]]
        == [h["epoch"] for h in single.result.history]
        == [0, 1]
    )
    for mine, theirs in zip(rec["result"]["history"], single.result.history):
        # the same 3 images, each once (rank 0's alone, or a mean of the two ranks' means, or
        # the padding image counted twice would all give another value)
        assert mine["val/psnr_input"] == pytest.approx(theirs["val/psnr_input"], abs=1e-6)
        assert mine["val/ssim_input"] == pytest.approx(theirs["val/ssim_input"], abs=1e-6)
        # the same training up to float rounding of the gradient all-reduce
        assert mine["val/psnr"] == pytest.approx(theirs["val/psnr"], abs=1e-3)
        assert mine["val/ssim"] == pytest.approx(theirs["val/ssim"], abs=1e-4)
    # it trained: a random G's validation PSNR moves with every step (up or down)
    assert (
        abs(rec["result"]["history"][1]["val/psnr"] - rec["result"]["history"][0]["val/psnr"])
        > 0.05
    )


def test_ddp_run_folder_has_one_writer(ddp):
    run_dir, rec = ddp
    assert rec["launch"] and not (run_dir / "attempts").exists()
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "train_ddp_process_1.log").is_file()  # rank 1 ran, and logged apart
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


def test_same_weights_give_the_logged_metric_in_one_process(ddp):
    """The DDP run's last validation, redone in one process with its final weights."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from deblur.eval.metrics import psnr
    from deblur.systems.fit import build_system

    run_dir, rec = ddp
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    system = build_system(ckpt["hyper_parameters"]["cfg"])
    system.load_state_dict(ckpt["state_dict"])
    cfg = OmegaConf.create(ckpt["hyper_parameters"]["cfg"])
    dm = instantiate(cfg.data, task="paired", _recursive_=False)
    dm.setup("validate")
    gen = system.eval_generator().eval()
    with torch.no_grad():
        values = torch.cat([psnr(gen(b["blur"]).float(), b["sharp"]) for b in dm.val_dataloader()])
    assert len(values) == 3
    assert float(values.mean()) == pytest.approx(rec["result"]["history"][-1]["val/psnr"], abs=1e-5)


@pytest.mark.slow  # two more DDP launches (~1 min on 2 cores)
def test_ddp_resume_is_exact(ddp, tmp_path):
    """A DDP run cut short after epoch 1 and relaunched continues to the uninterrupted result."""
    run_dir, full = ddp
    part_dir = tmp_path / "part"
    part = _driver(part_dir, 1, *GAN, *DDP)
    # a callback's stop before the planned length is "stopped", never "finished"
    assert part["status"] == "stopped" and part["result"]["iterations"] == 2
    part["status"] = "interrupted"  # as a job stopped at its time limit leaves it
    (part_dir / "metrics.json").write_text(json.dumps(part))
    resumed = _driver(part_dir, 0, *GAN, *DDP)  # resume=auto: both ranks take last.ckpt
    assert resumed["resumed_from"] == str(part_dir / "checkpoints" / "last.ckpt")
    assert resumed["launch"] != part["launch"]
    assert resumed["result"]["iterations"] == full["result"]["iterations"] == 4
    assert [h["epoch"] for h in resumed["result"]["history"]] == [0, 1]
    assert resumed["result"]["final"]["val/psnr"] == pytest.approx(
        full["result"]["final"]["val/psnr"], abs=1e-5
    )
    a = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(part_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for k, v in a.items():
        if k.startswith(("generator.", "discriminator.")):
            assert torch.allclose(v, b[k], atol=1e-6), k


def test_classifier_under_ddp_counts_every_validation_image(tmp_path, cache_dir):
    """Stage 1 over two processes: val/loss and val/acc are over all 6 validation images."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from deblur.systems.fit import build_system

    over = [
        "data.embedded.blurs_per_photo=2",
        "data.max_val_pairs=3",
        "trainer.limit_val_batches=null",
        "data.val_batch_size=2",
    ]
    rec = _cli("deblur.train_classifier", tmp_path, *over, *DDP)
    assert rec["status"] == "finished", rec.get("error")
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    system = build_system(ckpt["hyper_parameters"]["cfg"]).eval()
    system.load_state_dict(ckpt["state_dict"])
    cfg = OmegaConf.create(ckpt["hyper_parameters"]["cfg"])
    dm = instantiate(cfg.data, task="classify", _recursive_=False)
    dm.setup("validate")
    losses, correct = [], []
    with torch.no_grad():
        for b in dm.val_dataloader():
            logits = system(b["image"])
            losses.append(
                torch.nn.functional.binary_cross_entropy_with_logits(
                    logits, b["label"], reduction="none"
                )
            )
            correct.append((torch.sigmoid(logits) > 0.5).float() == b["label"])
    losses, correct = torch.cat(losses), torch.cat(correct)
    assert len(losses) == 6
    assert float(losses.mean()) == pytest.approx(rec["result"]["final"]["val/loss"], abs=1e-5)
    assert 100 * float(correct.float().mean()) == pytest.approx(
        rec["result"]["final"]["val/acc"], abs=1e-4
    )


# ----------------------------------------------------------------------------- the pieces


def test_training_shards_are_disjoint_slices_of_the_one_process_epoch():
    one = EpochSeededSampler(7, seed=3)
    one.set_epoch(2)
    order = list(one)
    shards = []
    for rank in range(3):
        s = EpochSeededSampler(7, seed=3, num_replicas=3, rank=rank)
        s.set_epoch(2)
        shards.append(list(s))
    assert [len(s) for s in shards] == [2, 2, 2]  # 7 // 3: one item of this epoch left out
    got = [item for s in shards for item in s]
    assert len({i for i, *_ in got}) == 6  # no index twice
    # rank r's k-th item is position r + 3k of the one-process order, with the same seed
    for rank, shard in enumerate(shards):
        assert shard == [order[rank + 3 * k] for k in range(2)]
    other = EpochSeededSampler(7, seed=3, num_replicas=3, rank=0)
    other.set_epoch(3)
    assert list(other) != shards[0]


def test_validation_shards_take_every_image_and_pad_to_equal_length():
    assert shard_positions(3, 2, 0, "pad") == [0, 2]
    assert shard_positions(3, 2, 1, "pad") == [1, 3]  # 3 = padding (image 0 again)
    s = EpochSeededSampler(3, shuffle=False, num_replicas=2, rank=1)
    assert [i for i, *_ in s] == [1, 0]
    assert len(EpochSeededSampler(1, shuffle=False, num_replicas=4, rank=3)) == 1


def test_fewer_training_pairs_than_processes_is_refused():
    from deblur.data.io import DataError

    with pytest.raises(DataError, match=r"2 item\(s\) but the run has 4 processes"):
        EpochSeededSampler(2, num_replicas=4, rank=0)


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    import types

    import torch.distributed as dist

    from deblur.systems.distributed import gather_per_image

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)

    def all_gather(t):
        parts = [torch.zeros_like(t) for _ in range(world)]
        dist.all_gather(parts, t.contiguous())
        return torch.stack(parts)

    sampler = EpochSeededSampler(5, shuffle=False, num_replicas=world, rank=rank)
    module = types.SimpleNamespace(
        device=torch.device("cpu"),
        all_gather=all_gather,
        trainer=types.SimpleNamespace(
            world_size=world,
            testing=False,
            val_dataloaders=types.SimpleNamespace(sampler=sampler),
        ),
    )
    # the value of image i is 10 * i: what rank r holds, in its sampler's order (padding too)
    mine = [torch.tensor([10.0 * i]) for i, *_ in sampler]
    got = gather_per_image(module, {"v": mine, "w": [m.double() for m in mine]})
    if rank == 0:
        torch.save(got, out)
    dist.destroy_process_group()


@pytest.mark.slow  # 2 spawned processes (~20 s); the GAN test covers the gather end to end
def test_gather_per_image_puts_every_rank_back_in_dataset_order(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "gathered.pt"
    mp.start_processes(_gather_worker, args=(2, port, str(out)), nprocs=2, start_method="spawn")
    got = torch.load(out)
    assert got["v"].tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]  # 5 images, padding dropped
    assert got["v"].dtype == torch.float32 and got["w"].dtype == torch.float64


def test_spawn_strategies_are_refused():
    import pytorch_lightning as pl

    from deblur.systems.distributed import DistributedLaunchError, check_launcher

    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False)
    with pytest.raises(DistributedLaunchError, match="validation history"):
        check_launcher(trainer)


def test_rank_one_follows_rank_zero_record(tmp_path, monkeypatch):
    from omegaconf import OmegaConf
    from pytorch_lightning.utilities import rank_zero_only

    from deblur.runs.launch import DistributedLaunchError, follow_rank_zero

    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    for var in ("RANK", "SLURM_PROCID", "NODE_RANK", "DEBLUR_LAUNCH_ID", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("DEBLUR_LAUNCH", "launch-b")
    cfg = OmegaConf.create({"ckpt_path": None, "overwrite": False})
    seen = {}

    def body(run_dir, record):
        seen.update(ckpt_path=cfg.ckpt_path, record=record)
        record.result.final = {"val/psnr": 1.0}

    # a record of an earlier launch: rank 1 waits for its own (and gives up, naming the fix)
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "running", "launch": "launch-a"}))
    with pytest.raises(DistributedLaunchError, match="DEBLUR_RANK0_WAIT_S"):
        follow_rank_zero(cfg, body, tmp_path, timeout_s=0.2)
    assert not seen
    # rank 0 started this launch, resuming: rank 1 resumes from the same file, writes nothing
    rank0 = {
        "status": "running",
        "task": "gan",
        "launch": "launch-b",
        "resumed_from": "x/last.ckpt",
    }
    (tmp_path / "metrics.json").write_text(json.dumps(rank0))
    out = follow_rank_zero(cfg, body, tmp_path, timeout_s=5)
    assert seen["ckpt_path"] == "x/last.ckpt" and out.result.final == {"val/psnr": 1.0}
    assert json.loads((tmp_path / "metrics.json").read_text()) == rank0
    assert rank_zero_only.rank == 1  # Lightning's rank-zero-only writers stay quiet here
    # rank 0 failed before rank 1 joined
    failed = {**rank0, "status": "failed", "error": {"type": "ValueError", "message": "bad"}}
    (tmp_path / "metrics.json").write_text(json.dumps(failed))
    with pytest.raises(RuntimeError, match="ValueError: bad"):
        follow_rank_zero(cfg, body, tmp_path, timeout_s=5)


def test_slurm_ddp_launcher_matches_the_trainer():
    from deblur.config import compose

    over = ["hydra/launcher=submitit_slurm_ddp", "trainer=ddp", "trainer.num_nodes=2"]
    cfg = compose("train", over, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher.nodes == cfg.trainer.num_nodes == 2
    assert launcher.tasks_per_node == launcher.gpus_per_node  # one task per GPU
    assert launcher.max_num_timeout == 3 and launcher.timeout_min == 1440  # from submitit_slurm
    assert cfg.trainer.strategy == "ddp_find_unused_parameters_true"
