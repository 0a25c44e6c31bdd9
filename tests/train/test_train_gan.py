"""GAN system: frozen/unfrozen D, classifier checkpoints, exact resume, NaN detection, run folder."""

from __future__ import annotations

import json
import math

import pytest
import pytorch_lightning as pl
import torch

from deblur.config import compose
from deblur.errors import UserError
from deblur.systems.fit import build_system
from deblur.systems.gan import NonFiniteLossError, linear_decay_factor
from entry_runs import run


def _state(path, prefix):
    sd = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def classifier_ckpt(tmp_path_factory, cache_dir):
    """A smoke-trained NLayer blur classifier, as stage 1 of the study leaves it."""
    run_dir = tmp_path_factory.mktemp("clf")
    # 2 validation pairs = 4 images, both classes: the scores a GAN calibrates the classifier from
    over = ["backbone=nlayer", "data.max_val_pairs=2", "trainer.limit_val_batches=4"]
    rec = run("train_classifier", over, run_dir)
    assert rec.status == "finished", rec.error
    return run_dir / "checkpoints" / "best.ckpt"


def test_run_folder_layout_and_metrics(tmp_path, cache_dir):
    rec = run("train", ["loss=ragan", "disc=double"], tmp_path)
    assert rec.status == "finished"
    assert (tmp_path / "checkpoints" / "best.ckpt").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["choices"]["loss"] == "ragan" and m["choices"]["disc"] == "double"
    res = m["result"]  # the task's result, nested
    assert res["pretrained_weights"] is False and "RANDOM" in res["warning"]
    assert math.isfinite(res["final"]["val/psnr"]) and 0 < res["final"]["val/ssim"] <= 1
    assert res["iterations"] == 2 and res["images_per_s"] > 0
    assert not (tmp_path.parent / "lightning_logs").exists()


def test_cpu_10min_experiment_runs_its_recipe(tmp_path, cache_dir):
    """experiment=cpu_10min (issue 4's 10-minute CPU GAN) composes and trains under smoke."""
    rec = run("train", ["experiment=cpu_10min"], tmp_path)
    assert rec.status == "finished", rec.error
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["choices"]["gen"] == "resnet_cpu" and m["choices"]["disc"] == "patch"
    assert m["choices"]["loss"] == "lsgan"
    cfg = compose("train", ["experiment=cpu_10min"])
    assert cfg.trainer.max_time == "00:00:10:00" and cfg.pretrained is False
    assert cfg.model.ema_decay > 0 and cfg.model.content.perceptual_weight == 0
    assert cfg.gen.residual_gate is True  # the identity start (gen=resnet_cpu)
    assert cfg.gen.norm == "none"  # instance norm's deep branch made validation fade (measured)
    long = compose("train", ["experiment=cpu_30min"])
    assert long.trainer.max_time == "00:00:30:00" and long.gen.deep_branch is False
    # fresh kernels and a long EMA: with the stored blurs and EMA 0.95 one validation fell 0.86 dB
    # below the input (measured, experiments/cpu_study)
    assert long.data.embedded.train_blur == "fresh" and long.model.ema_decay == 0.999
    assert math.isfinite(m["result"]["final"]["val/psnr"])


def test_frozen_discriminator_is_unchanged_and_generator_learns(tmp_path, classifier_ckpt):
    rec = run(
        "train",
        ["disc=single", "loss=ragan", f"disc.checkpoint={classifier_ckpt}", "disc.frozen=true"],
        tmp_path,
    )
    assert rec.status == "finished" and rec.result.critic.frozen and rec.result.critic.pretrained
    clf = _state(classifier_ckpt, "net.")
    after = _state(tmp_path / "checkpoints" / "last.ckpt", "discriminator.critics.single.")
    assert clf.keys() == after.keys()
    negated = set(rec.result.critic.load_report["single"]["sign_flipped"])
    assert negated == {"head.2.weight", "head.2.bias"}  # blur score -> realness
    for k in clf:  # nothing else differs: the frozen D did not train
        assert torch.equal(-clf[k] if k in negated else clf[k], after[k]), k
    # the generator did learn (its weights moved from their seeded initialisation)
    pl.seed_everything(0)
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"][
            "cfg"
        ]
    )
    fresh = instantiate(cfg.gen).state_dict()
    trained = _state(tmp_path / "checkpoints" / "last.ckpt", "generator.")
    assert any(not torch.equal(fresh[k], trained[k]) for k in fresh if fresh[k].is_floating_point())


def test_unfrozen_pretrained_discriminator_changes(tmp_path, classifier_ckpt):
    rec = run(
        "train",
        ["disc=single", "loss=ragan", f"disc.checkpoint={classifier_ckpt}", "disc.frozen=false"],
        tmp_path,
    )
    assert rec.status == "finished"
    clf = _state(classifier_ckpt, "net.")
    after = _state(tmp_path / "checkpoints" / "last.ckpt", "discriminator.critics.single.")
    assert any(not torch.equal(clf[k], after[k]) for k in clf if clf[k].is_floating_point())


def test_classifier_checkpoint_of_other_backbone_fails_naming_both(tmp_path, classifier_ckpt):
    with pytest.raises(Exception) as err:
        run(
            "train",
            ["disc=single", "backbone=mobilenetv3_large", f"disc.checkpoint={classifier_ckpt}"],
            tmp_path,
        )
    msg = str(err.value)
    assert "nlayer" in msg and "mobilenetv3" in msg
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "failed" and "nlayer" in m["error"]["message"]


def test_missing_classifier_checkpoint_file(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match="no such file"):
        run("train", ["disc.checkpoint=/nonexistent/best.ckpt"], tmp_path)


def test_frozen_without_checkpoint_is_refused(tmp_path, cache_dir):
    with pytest.raises(UserError, match="disc.checkpoint"):
        run("train", ["disc.frozen=true"], tmp_path)


@pytest.mark.parametrize("disc", ["patch", "double"])
def test_frozen_fresh_patch_head_is_refused(tmp_path, classifier_ckpt, disc):
    """A classifier gives the patch critic only its trunk: frozen, G would learn from noise."""
    with pytest.raises(UserError, match=f"disc={disc} disc.frozen=true.*random patch head"):
        run(
            "train",
            [f"disc={disc}", f"disc.checkpoint={classifier_ckpt}", "disc.frozen=true"],
            tmp_path,
        )


def test_classifier_checkpoint_stores_its_validation_scores(classifier_ckpt):
    ckpt = torch.load(classifier_ckpt, weights_only=True)
    scores = ckpt["deblur_calibration"]
    n = len(scores["label"])
    assert n > 0 and len(scores["logit"]) == n == len(scores["grad_norm"])
    assert set(scores["label"].tolist()) == {0.0, 1.0}
    assert bool((scores["grad_norm"] > 0).all())


@pytest.mark.parametrize("loss", ["lsgan", "ragan_ls", "wgangp"])
def test_loaded_classifier_is_calibrated_for_the_loss(tmp_path, classifier_ckpt, loss):
    """The stored scores, mapped as the loss reads them: LSGAN sharp -> 1 / blurred -> 0 in
    least squares, RaGAN-LS a mean gap of 1, WGAN-GP a mean input-gradient norm of 1."""
    rec = run(
        "train",
        ["disc=single", f"loss={loss}", f"disc.checkpoint={classifier_ckpt}", "disc.frozen=true"],
        tmp_path,
    )
    assert rec.status == "finished", rec.error
    cal = rec.result.critic.load_report["single"]["calibration"]
    scores = torch.load(classifier_ckpt, weights_only=True)["deblur_calibration"]
    r = -scores["logit"].double() * cal["scale"] + cal["shift"]  # the critic's calibrated output
    sharp, blurred = r[scores["label"] == 0], r[scores["label"] == 1]
    if loss == "lsgan":  # residuals orthogonal to the regressors (1, r): least squares
        t = (scores["label"] == 0).double()
        assert abs(float((r - t).mean())) < 1e-6
        assert abs(float(((r - t) * (-scores["logit"].double())).mean())) < 1e-6
    elif loss == "ragan_ls":
        assert float(sharp.mean() - blurred.mean()) == pytest.approx(1.0, rel=1e-6)
    else:
        assert float(scores["grad_norm"].double().mean()) * cal["scale"] == pytest.approx(1.0)
    # the checkpoint's frozen critic is the classifier with the map folded into its last conv
    clf = _state(classifier_ckpt, "net.")
    after = _state(tmp_path / "checkpoints" / "last.ckpt", "discriminator.critics.single.")
    torch.testing.assert_close(after["head.2.weight"], -clf["head.2.weight"] * cal["scale"])
    torch.testing.assert_close(
        after["head.2.bias"], -clf["head.2.bias"] * cal["scale"] + cal["shift"]
    )


def test_classifier_without_stored_scores_is_refused_for_a_scale_reading_loss(
    tmp_path, classifier_ckpt
):
    old = tmp_path / "old.ckpt"
    ckpt = torch.load(classifier_ckpt, weights_only=True)
    del ckpt["deblur_calibration"]
    torch.save(ckpt, old)
    with pytest.raises(UserError, match="stores no validation scores.*disc.calibrate=false"):
        run("train", ["disc=single", "loss=lsgan", f"disc.checkpoint={old}"], tmp_path / "run")
    rec = run(
        "train",
        ["disc=single", "loss=lsgan", f"disc.checkpoint={old}", "disc.calibrate=false"],
        tmp_path / "run2",
    )
    assert rec.status == "finished" and "calibration" not in rec.result.critic.load_report["single"]


@pytest.mark.parametrize("loss", ["lsgan", "ragan_ls"])
def test_classifier_that_ranks_blurred_above_sharp_is_refused(tmp_path, classifier_ckpt, loss):
    """Calibration keeps the sign: a classifier whose validation scores put blurred above sharp
    (here: the stored labels swapped) would reward blur, so it is named, not rescaled."""
    swapped = tmp_path / "swapped.ckpt"
    ckpt = torch.load(classifier_ckpt, weights_only=True)
    ckpt["deblur_calibration"]["label"] = 1 - ckpt["deblur_calibration"]["label"]
    torch.save(ckpt, swapped)
    with pytest.raises(UserError, match="does not tell sharp from blurred.*disc.calibrate=false"):
        run("train", ["disc=single", f"loss={loss}", f"disc.checkpoint={swapped}"], tmp_path / "r")


def test_adversarial_gradient_share_and_sharpness_metrics_are_logged(tmp_path, classifier_ckpt):
    """val/adv_grad_share is ||grad_G w L_adv|| / ||grad_G L_content||: linear in w at the
    first G step (same weights, same batch); the sharpness, judge and D-ranking values
    of the final validation land in metrics.json."""
    shares = {}
    for w in (0.5, 1.0):
        rec = run(
            "train",
            [
                "loss=lsgan",
                "disc=patch",
                f"model.adv_weight={w}",
                "model.grad_share_every=2",  # of the smoke run's 2 iterations: the first only
                f"model.judge_checkpoint={classifier_ckpt}",
            ],
            tmp_path / f"w{w}",
        )
        assert rec.status == "finished", rec.error
        shares[w] = rec.result.final["val/adv_grad_share"]
    assert shares[1.0] > 0
    assert shares[1.0] == pytest.approx(2 * shares[0.5], rel=1e-4)
    final = rec.result.final
    # every N-th G step, not iteration: with a G step every 2nd batch (iteration 1), it is measured
    sparse = run("train", ["loss=lsgan", "loss.n_critic=2", "model.grad_share_every=2"], tmp_path)
    assert sparse.result.final["val/adv_grad_share"] > 0, sparse.result.final
    for key in ("grad_energy", "high_band", "judge_blur"):
        assert 0 < final[f"val/{key}"] and 0 < final[f"val/{key}_input"], key
    assert 0 < final["val/judge_blur"] < 1 and final["val/d_rank_acc"] in (0.0, 1.0)


class _StopAfterEpoch(pl.Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch + 1 >= self.epoch:
            trainer.should_stop = True


def test_exact_resume_matches_uninterrupted_run(tmp_path, cache_dir):
    over = ["loss=ragan_ls", "disc=double", "trainer.max_epochs=2", "model.ema_decay=0.9"]
    full = run("train", over, tmp_path / "full")
    assert full.status == "finished"
    part = run("train", over, tmp_path / "part", callbacks=[_StopAfterEpoch(1)])
    assert part.result.iterations == 2
    resumed = run(
        "train",
        [*over, f"ckpt_path={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}"],
        tmp_path / "part",
    )
    assert resumed.result.iterations == full.result.iterations == 4
    a = _state(tmp_path / "full" / "checkpoints" / "last.ckpt", "generator.")
    b = _state(tmp_path / "part" / "checkpoints" / "last.ckpt", "generator.")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert resumed.result.final["val/psnr"] == pytest.approx(
        full.result.final["val/psnr"], abs=1e-4
    )


def test_resume_under_max_steps_from_the_end_of_training_checkpoint_is_exact(tmp_path, cache_dir):
    """A run stopped between epochs writes last.ckpt at the end of training; resumed under
    trainer.max_steps, Lightning would replay the finished epoch as an empty one and run every
    later epoch one ahead (another sampler epoch: other data, other results)."""
    over = [
        "loss=ragan_ls",
        "disc=double",
        "trainer.max_epochs=100",
        "trainer.max_steps=16",  # 8 iterations, 2 per epoch
        "model.ema_decay=0.9",
    ]
    full = run("train", over, tmp_path / "full")
    part = run("train", over, tmp_path / "part", callbacks=[_StopAfterEpoch(1)])
    assert part.status != "finished" and part.result.iterations == 2
    resumed = run(
        "train",
        [*over, f"ckpt_path={tmp_path / 'part' / 'checkpoints' / 'last.ckpt'}"],
        tmp_path / "part",
    )
    assert [h["epoch"] for h in resumed.result.history] == [h["epoch"] for h in full.result.history]
    assert resumed.result.iterations == full.result.iterations == 8
    assert resumed.result.final["val/psnr"] == pytest.approx(
        full.result.final["val/psnr"], abs=1e-4
    )


def test_checkpoints_are_full_and_resume_refuses_other_files(tmp_path, classifier_ckpt):
    rec = run("train", ["loss=lsgan", "disc=patch"], tmp_path / "run")
    assert rec.status == "finished"
    ckpts = tmp_path / "run" / "checkpoints"
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(ckpts / name, map_location="cpu", weights_only=False)
        assert {"optimizer_states", "lr_schedulers", "loops", "deblur_rng"} <= set(ckpt), name
        assert len(ckpt["optimizer_states"]) == 2, name  # G and D
    weights_only = tmp_path / "weights.ckpt"
    full = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)
    torch.save({k: full[k] for k in ("state_dict", "hyper_parameters")}, weights_only)
    over = ["loss=lsgan", "disc=patch"]
    with pytest.raises(ValueError, match=r"holds weights only.*last\.ckpt"):
        run("train", [*over, f"ckpt_path={weights_only}"], tmp_path / "a")
    with pytest.raises(ValueError, match=r"comes from a classifier run"):
        run("train", [*over, f"ckpt_path={classifier_ckpt}"], tmp_path / "b")
    cut_off = tmp_path / "cut_off.ckpt"
    cut_off.write_bytes((ckpts / "last.ckpt").read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"not a readable Lightning checkpoint.*resume=never"):
        run("train", [*over, f"ckpt_path={cut_off}"], tmp_path / "d")
    with pytest.raises(FileNotFoundError, match=r"no such file.*last\.ckpt"):
        run("train", [*over, f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path / "c")


class _PoisonDiscriminator(pl.Callback):
    """After the first iteration, one discriminator weight becomes NaN (a blown-up D)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == 0:
            with torch.no_grad():
                next(pl_module.discriminator.parameters()).fill_(float("nan"))


def test_non_finite_loss_stops_with_iteration_and_term(tmp_path, cache_dir):
    with pytest.raises(NonFiniteLossError, match=r"iteration 1 .*term\(s\) d"):
        run("train", ["loss=gan", "disc=patch"], tmp_path, callbacks=[_PoisonDiscriminator()])
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["status"] == "failed" and m["error"]["type"] == "NonFiniteLossError"


@pytest.mark.parametrize(
    ("loss", "max_steps", "iterations"),
    [("lsgan", 6, 3), ("wgangp", 8, 6), ("none", 5, 5)],
)
def test_max_steps_counts_optimizer_steps_and_sets_schedule_length(
    tmp_path, cache_dir, loss, max_steps, iterations
):
    """trainer.max_steps limits global_step (a D step every batch, a G step every n_critic-th):
    the schedule must span the iterations the run will really do, not max_steps of them.
    wgangp with n_critic=3: 4 optimizer steps per 3 batches; none: 1 step per batch."""
    extra = ["loss.n_critic=3"] if loss == "wgangp" else []
    rec = run(
        "train",
        [f"loss={loss}", "disc=patch", *extra, f"trainer.max_steps={max_steps}"]
        + ["trainer.max_epochs=50"],
        tmp_path,
    )
    assert rec.status == "finished", rec.error
    assert rec.result.iterations == iterations
    assert rec.result.planned_iterations == iterations


def test_linear_decay_schedule():
    assert linear_decay_factor(0, 100, 0.5, 0.0) == 1.0
    assert linear_decay_factor(49, 100, 0.5, 0.0) == 1.0
    assert linear_decay_factor(75, 100, 0.5, 0.0) == pytest.approx(0.5)
    assert linear_decay_factor(100, 100, 0.5, 0.01) == pytest.approx(0.01)


@pytest.mark.parametrize("loss", ["wgangp", "ragan_ls"])
def test_bf16_mixed_precision_trains_with_finite_losses(tmp_path, cache_dir, loss):
    """bf16 autocast (CPU here; GPU is the default there) incl. the WGAN-GP double backward."""
    rec = run("train", [f"loss={loss}", "disc=double", "trainer.precision=bf16-mixed"], tmp_path)
    assert rec.status == "finished" and rec.result.precision == "bf16-mixed"
    assert math.isfinite(rec.result.final["val/psnr"])


def test_real_dataset_without_root_names_the_fix(tmp_path, cache_dir):
    from deblur.data.io import DataError

    with pytest.raises(DataError, match=r"data.root=/path/to/gopro"):
        run("train", ["data=gopro"], tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


class _WithFixedPart(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Linear(2, 2)
        self.fixed = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())

    def eval_by_design(self) -> dict[str, str]:
        return {"fixed": "a fixed part"}


def test_lightning_eval_mode_warning_is_kept_for_unexpected_modules():
    from deblur.systems.fit import _eval_modules_are_by_design

    m = _WithFixedPart()
    assert not _eval_modules_are_by_design(m)  # nothing in eval: nothing to silence
    m.fixed.eval()
    assert _eval_modules_are_by_design(m)
    m.net.eval()  # a trainable module left in eval mode: Lightning's warning must stay
    assert not _eval_modules_are_by_design(m)


def test_gan_run_does_not_warn_about_its_fixed_vgg(tmp_path, cache_dir, recwarn):
    rec = run("train", ["loss=lsgan", "disc=patch", "model.ema_decay=0.9"], tmp_path)
    assert rec.status == "finished"
    assert not [w for w in recwarn if "in eval mode" in str(w.message)]


def _set_status(run_dir, status: str) -> None:
    path = run_dir / "metrics.json"
    rec = json.loads(path.read_text())
    rec["status"] = status
    path.write_text(json.dumps(rec))


def test_run_cut_short_continues_from_last_ckpt_when_relaunched(tmp_path, cache_dir):
    over = ["loss=lsgan", "disc=patch", "trainer.max_epochs=2"]
    full = run("train", over, tmp_path / "full")
    part_dir = tmp_path / "part"
    run("train", over, part_dir, callbacks=[_StopAfterEpoch(1)])
    _set_status(part_dir, "running")  # as a job killed at its time limit leaves it
    again = run("train", over, part_dir)
    assert again.previous_status == "running"
    assert again.resumed_from == str(part_dir / "checkpoints" / "last.ckpt")
    assert again.result.iterations == full.result.iterations == 4
    assert [h["epoch"] for h in again.result.history] == [0, 1]  # the first attempt's epoch is kept
    assert again.result.final["val/psnr"] == pytest.approx(full.result.final["val/psnr"], abs=1e-4)
    assert not (part_dir / "attempts").exists()

    _set_status(part_dir, "interrupted")
    fresh = run("train", [*over, "resume=never"], part_dir)
    assert fresh.resumed_from is None and fresh.result.iterations == 4
    assert (part_dir / "attempts" / "1" / "checkpoints" / "last.ckpt").is_file()

    _set_status(part_dir, "failed")  # a failed run starts over: its error would repeat
    assert run("train", over, part_dir).resumed_from is None
    with pytest.raises(ValueError, match="resume=sometimes is not an option"):
        run("train", [*over, "resume=sometimes"], part_dir)


def test_ctrl_c_and_sigterm_count_as_interrupted():
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    from deblur.runs.managed import _stopped_from_outside

    assert _stopped_from_outside(KeyboardInterrupt())
    assert _stopped_from_outside(SIGTERMException())
    try:  # what Lightning raises after Ctrl-C: sys.exit(1) inside the KeyboardInterrupt handler
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise SystemExit(1) from None
    except SystemExit as err:
        assert _stopped_from_outside(err)
    assert not _stopped_from_outside(SystemExit(2)) and not _stopped_from_outside(ValueError())


def test_compiled_critic_leaves_the_gradient_penalty_eager():
    """model.compile=true compiles D's call in place; WGAN-GP's penalty (a double backward,
    which aot_autograd does not support on every torch) calls each critic head directly, so it
    never runs through the compiled graph."""
    system = build_system(
        compose("train", ["debug=smoke", "loss=wgangp", "model.compile=true", "disc=double"])
    )
    assert system.discriminator._compiled_call_impl is not None
    critics = list(system.discriminator.critics.values())
    assert critics and all(c._compiled_call_impl is None for c in critics)
