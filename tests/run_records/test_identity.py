"""Run identity (issue 12, items 1-2): what changes a result is part of a run's identity; a
relaunch or resume of another identity is refused naming the keys; paths never name folders."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hydra.core.hydra_config import HydraConfig

from deblur.config import compose, eval_slug, run_dirname
from deblur.config.compose import defines_the_run
from deblur.runs import RunConfigChangedError, run_identity
from entry_runs import run


def _metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_resume_from_a_checkpoint_of_another_config_is_refused(finished_gan, tmp_path):
    """`loss=wgangp ckpt_path=<ragan_ls last.ckpt>` used to end 'finished' without training,
    with the other run's PSNR and no checkpoints/ folder."""
    src, _ = finished_gan
    last = src / "checkpoints" / "last.ckpt"
    other = tmp_path / "wgangp"
    with pytest.raises(ValueError) as err:
        run("train", ["loss=wgangp", "disc=patch", f"ckpt_path={last}"], other)
    msg = str(err.value)
    assert str(last) in msg and "loss._target_ (RaGANLSLoss -> WGANGPLoss)" in msg
    assert "\n" not in msg  # one paragraph
    m = _metrics(other)
    assert m["status"] == "failed" and "final" not in m
    assert m["error"]["type"] == "CheckpointError"


def test_resume_of_a_finished_checkpoint_elsewhere_is_not_finished(finished_gan, tmp_path):
    """Same identity, but the checkpoint had already reached its end: nothing is trained, so
    the new folder must not become a 'finished' run carrying the other run's results."""
    src, _ = finished_gan
    resume = ["loss=ragan_ls", "disc=patch", f"ckpt_path={src / 'checkpoints' / 'last.ckpt'}"]
    with pytest.raises(RuntimeError, match="Nothing was trained"):
        run("train", resume, tmp_path / "copy")
    assert _metrics(tmp_path / "copy")["status"] == "failed"


def test_relaunch_with_another_data_root_is_refused_not_skipped(finished_gan, tmp_path):
    src, rec = finished_gan
    before = (src / "metrics.json").read_text()
    hydra_before = (src / ".hydra" / "config.yaml").read_text()
    with pytest.raises(RunConfigChangedError) as err:
        run("train", ["loss=ragan_ls", "disc=patch", f"data.root={tmp_path}"], src)
    msg = str(err.value)
    assert "data.root" in msg and str(tmp_path) in msg
    assert "overwrite=true" in msg and "sweep_name" in msg and "runs_dir" in msg
    assert (src / "metrics.json").read_text() == before  # the finished record is untouched
    assert (src / ".hydra" / "config.yaml").read_text() == hydra_before
    assert not (src / "attempts").exists()
    with pytest.raises(RunConfigChangedError, match=r"seed \(0 -> 1\)"):
        run("train", ["loss=ragan_ls", "disc=patch", "seed=1"], src)
    # the same command still skips, and relaunch options are not part of the identity
    again = run("train", ["loss=ragan_ls", "disc=patch", "data.num_workers=0"], src)
    assert again.ended == rec.ended


def test_identity_hashes_start_checkpoints_by_content_and_code_version_is_outside(
    finished_gan, tmp_path
):
    src, rec = finished_gan
    assert rec.identity["hash"] and "seed" in rec.identity["config"]
    assert rec.code["deblur"] and "code" not in json.dumps(list(rec.identity["config"]))
    where = ("runs_dir", "sweep_name", "overwrite")
    assert not any(k.startswith(where) for k in rec.identity["config"])
    a = tmp_path / "a" / "best.ckpt"
    a.parent.mkdir()
    torch.save({"state_dict": {"net.w": torch.zeros(2)}}, a)
    b = tmp_path / "elsewhere" / "copy.ckpt"
    b.parent.mkdir()
    shutil.copy(a, b)
    cfg = compose("train", ["debug=smoke"])
    cfg.disc.checkpoint = str(a)
    id_a = run_identity(cfg)
    cfg.disc.checkpoint = str(b)
    assert run_identity(cfg)["hash"] == id_a["hash"]  # same content, other path
    torch.save({"state_dict": {"net.w": torch.ones(2)}}, b)
    id_b = run_identity(cfg)
    assert id_b["hash"] != id_a["hash"]
    assert id_b["config"]["disc.checkpoint"].startswith("sha256:")


def test_a_path_override_never_becomes_nested_folders(tmp_path):
    ckpt = tmp_path / "runs" / "table4_2" / "backbone=nlayer" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x" * 10)
    cfg = compose("train", ["debug=smoke", f"disc.checkpoint='{ckpt}'", "loss=gan"], True)
    HydraConfig.instance().set_config(cfg)
    folder = cfg.hydra.run.dir.rsplit("/gan/", 1)[1]
    assert "/" not in folder
    assert folder.startswith("debug=smoke,disc.checkpoint=backbone-nlayer-")
    assert folder.endswith(",loss=gan")
    assert run_dirname(["loss=gan", "disc=single"]) == "disc=single,loss=gan"
    assert run_dirname([]) == "default"
    # hydra.overrides.task escapes ':' (trainer.max_time=00:00:10:00): no backslash in a folder
    assert run_dirname(["trainer.max_time=00\\:00\\:10\\:00"]) == "trainer.max_time=00:00:10:00"
    assert run_dirname(["data.root=/data/GOPRO", "overwrite=true", "seed=1"]) == "seed=1"


def test_one_list_of_keys_that_do_not_define_a_run():
    """IDENTITY_EXCLUDE decides the identity and both folder names: a key that leaves the
    identity names no folder (else a relaunch with it, e.g. evaluate device=cpu, was refused as
    'another configuration' in the same folder), and a key that names a folder defines the run."""
    base = ["loss=gan", "seed=1"]
    for key, value in [("data.cache", "true"), ("callbacks.last.every", "2"), ("resume", "never")]:
        assert not defines_the_run(key)
        assert run_dirname([*base, f"{key}={value}"]) == "loss=gan,seed=1"
    assert eval_slug(["baseline=identity", "device=cpu", "save_images=true", "split=test"]) == (
        "identity/split=test"
    )
    assert defines_the_run("data.cache_size") and defines_the_run("model.adv_weight")
    assert run_dirname(["model.adv_weight=0.1"]) == "model.adv_weight=0.1"
    cfg = compose("evaluate", ["baseline=identity"])
    ids = [run_identity(compose("evaluate", ["baseline=identity", o]))["hash"] for o in OTHERS]
    assert ids == [run_identity(cfg)["hash"]] * len(OTHERS)


OTHERS = ["device=cpu", "save_images=true", "data.num_workers=0"]
