"""Errors a person reads (issue 12, item 5): one paragraph naming the thing and the fix."""

from __future__ import annotations

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch.utils.data import DataLoader, Dataset

from deblur.checkpoints import CheckpointError, read_checkpoint, read_classifier_checkpoint
from deblur.config import compose
from deblur.config.checks import ConfigValueError, check_known_keys, check_overrides, check_values
from deblur.config.cli import _overrides_of, check_command_line, report, user_error_cause
from deblur.data.io import DataError
from deblur.errors import UserError
from deblur.models.critics import Discriminator, load_classifier_weights
from deblur.runs.identity import check_start
from entry_runs import cli


@pytest.fixture()
def bad_files(tmp_path):
    files = {"text": tmp_path / "notes.ckpt", "empty": tmp_path / "empty.ckpt"}
    files["text"].write_text("this is not a checkpoint\n")
    files["empty"].write_bytes(b"")
    for name, weights, task in (("gan", "generator.w", "gan"), ("clf", "net.w", "classifier")):
        files[name] = tmp_path / f"{name}.ckpt"
        cfg = {"cfg": {"task": task}}
        torch.save({"state_dict": {weights: torch.zeros(3)}, "hyper_parameters": cfg}, files[name])
    files["cut"] = tmp_path / "cut.ckpt"
    files["cut"].write_bytes(files["gan"].read_bytes()[: len(files["gan"].read_bytes()) // 2])
    return files


def test_every_wrong_file_gets_one_paragraph_naming_it(bad_files):
    cases = [
        (lambda: read_classifier_checkpoint(bad_files["text"]), "text", "a text file"),
        (lambda: read_classifier_checkpoint(bad_files["empty"]), "empty", "empty file"),
        (lambda: read_classifier_checkpoint(bad_files["cut"]), "cut", "not a complete"),
        (lambda: read_classifier_checkpoint(bad_files["gan"]), "gan", "comes from a gan run"),
        (lambda: read_checkpoint(bad_files["clf"], key="ckpt", task="gan"), "clf", "a classifier"),
    ]
    for call, name, words in cases:
        with pytest.raises(CheckpointError) as err:
            call()
        msg = str(err.value)
        assert str(bad_files[name]) in msg and words in msg and "\n" not in msg, msg
        assert isinstance(err.value, UserError)


def test_text_file_as_disc_checkpoint_is_named_not_an_index_error(bad_files):
    """It used to end in `IndexError: pop from empty list` inside torch."""
    disc: Discriminator = instantiate(compose("train", ["debug=smoke", "disc=single"]).disc.net)
    with pytest.raises(CheckpointError, match=r"disc\.checkpoint=.*notes\.ckpt.*text file"):
        load_classifier_weights(disc, bad_files["text"])


def test_cli_prints_one_paragraph_and_logs_the_traceback(bad_files, tmp_path, cache_dir):
    runs = tmp_path / "runs"
    proc = cli(
        "deblur.train",
        "debug=smoke",
        f"disc.checkpoint={bad_files['text']}",
        "sweep_name=e",
        runs=runs,
    )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("[deblur] error:")]
    assert len(errors) == 1 and str(bad_files["text"]) in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "HYDRA_FULL_ERROR" not in proc.stderr
    (log,) = (runs / "e").rglob("train.log")
    assert "Traceback" in log.read_text() and "CheckpointError" in log.read_text()
    (record,) = (runs / "e").rglob("metrics.json")  # refused inside the recorded run
    assert '"type": "CheckpointError"' in record.read_text()


def test_the_run_checks_its_start_files_before_its_body(bad_files):
    """runs.identity.check_start: a weights-only ckpt_path and a GAN file as the critic's
    classifier are refused (before any data or network is built); nothing to check passes."""
    with pytest.raises(CheckpointError, match="holds weights only"):
        check_start({"ckpt_path": str(bad_files["gan"])}, "gan", None, {})
    with pytest.raises(CheckpointError, match="comes from a gan run"):
        check_start({"ckpt_path": None}, "gan", None, {"disc.checkpoint": str(bad_files["gan"])})
    check_start({"ckpt_path": None}, "gan", None, {"disc.checkpoint": str(bad_files["clf"])})
    check_start({"ckpt": str(bad_files["text"])}, "evaluate", None, {"ckpt": "x"})


TYPE_CASES = [
    ("seed=x", r"seed=x: seed takes an integer"),
    ("trainer.max_epochs=abc", r"trainer\.max_epochs=abc: trainer\.max_epochs takes an integer"),
    ("pretrained=maybe", r"pretrained takes true or false"),
    ("+model.adv_wieght=0.1", r"'model\.adv_wieght' is not a key.*Did you mean model\.adv_weight"),
    ("+seeed=1", r"'seeed' is not a key.*Did you mean seed"),
]


@pytest.mark.parametrize(("override", "words"), TYPE_CASES)
def test_wrong_types_and_unknown_keys_name_the_key(override, words):
    cfg = compose("train", ["debug=smoke", override])
    with pytest.raises(ConfigValueError, match=words):
        check_overrides(cfg, "train", ["debug=smoke", override])


def test_good_overrides_pass_the_checks():
    over = ["debug=smoke", "loss=wgangp", "optim.lr_g=1", "trainer.max_time=00:00:01:00", "seed=3"]
    check_overrides(compose("train", over), "train", over)
    over = ["backbone=mobilenetv3_large", "optim.lr=0.001"]
    check_overrides(compose("train_classifier", over), "train_classifier", over)


@pytest.mark.parametrize("arg", ["data.root=/data/Données", "ckpt_path=/runs/a=b/last.ckpt"])
def test_unlexable_path_gets_the_quoting_hint(arg):
    with pytest.raises(UserError, match=r"cannot read the override.*\"'") as err:
        check_command_line(["debug=smoke", arg])
    assert arg in str(err.value)
    check_command_line(["debug=smoke", "ckpt_path='/runs/a=b/last.ckpt'", "-m", "seed=1,2"])


def test_user_error_raised_inside_hydra_instantiate_is_found_for_the_one_paragraph():
    """Hydra wraps constructor errors in InstantiationException: the entry point unwraps them."""
    try:
        try:
            raise UserError("data.augment_on must be one of ('cpu', 'gpu')")
        except UserError as err:
            raise InstantiationException("Error in call to target") from err
    except InstantiationException as wrapped:
        assert isinstance(user_error_cause(wrapped), UserError)
    assert user_error_cause(InstantiationException("a bug")) is None


# --------------------------------------------------------------------------- issue 22: ranges
RANGE_CASES = [
    ("optim.lr_g=-1", r"optim\.lr_g=-1 \(set on the command line\).*must be a number > 0"),
    ("optim.lr_d=0", r"optim\.lr_d=0 .*must be a number > 0"),
    ("model.adv_weight=-1", r"model\.adv_weight=-1 .*must be a number >= 0"),
    ("data.crop_size=0", r"data\.crop_size=0 .*an integer > 0 or null.*data\.crop_size=256"),
    ("data.batch_size=0", r"data\.batch_size=0 .*an integer > 0"),
    ("data.val_fraction=1.0", r"data\.val_fraction=1\.0 .*in \[0, 1\)"),
    ("model.ema_decay=1", r"model\.ema_decay=1 .*in \[0, 1\)"),
    ("optim.betas=[0.9,1.5]", r"optim\.betas=\[0\.9, 1\.5\]"),
    ("disc.frozen=true", r"disc\.frozen=true needs a pretrained discriminator"),
    ("disc=patch disc.frozen=true disc.checkpoint=c.ckpt", r"frozen random patch head"),
    ("loss=none disc.frozen=true", r"loss=none trains without a discriminator"),
]


@pytest.mark.parametrize(("overrides", "words"), RANGE_CASES)
def test_out_of_range_values_are_one_paragraph_naming_the_key(overrides, words):
    over = ["debug=smoke", *overrides.split()]
    with pytest.raises(ConfigValueError, match=words) as err:
        check_values(compose("train", over), over)
    msg = str(err.value)
    assert "\n" not in msg and any(w in msg for w in ("Fix:", "Give disc.checkpoint", "Drop"))


def test_in_range_values_pass_and_a_yaml_value_is_checked_too():
    over = ["debug=smoke", "optim.lr_g=1", "data.crop_size=null", "model.adv_weight=0"]
    check_values(compose("train", over), over)
    check_values(compose("train_classifier", ["optim.lr=0.01"]), ["optim.lr=0.01"])
    cfg = compose("train", ["debug=smoke"])
    cfg.optim.lr_g = -1.0  # as an experiment file would set it
    with pytest.raises(ConfigValueError, match=r"set by the composed config"):
        check_values(cfg, ["debug=smoke"])


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ("model.adv_wieght=1", r"Did you mean model\.adv_weight\? Fix: model\.adv_weight=1\."),
        ("gen.nrom=instance", r"Did you mean gen\.norm\?"),
        ("loss=gan,lsgan optim.lr_gg=1", r"'optim\.lr_gg' is not a key.*Did you mean optim\.lr_g"),
    ],
)
def test_unknown_key_without_plus_gets_the_close_match_not_hydras_plus_advice(overrides, words):
    with pytest.raises(ConfigValueError, match=words) as err:
        check_known_keys("train", ["debug=smoke", *overrides.split()])
    assert "+model" not in str(err.value)


def test_known_keys_pass_under_the_group_that_has_them():
    check_known_keys("train", ["gen=resnet_cpu", "gen.norm=none", "loss=gan,lsgan"])
    check_known_keys("train", ["-m", "gen=fpn_mobilenetv2,resnet_cpu", "gen.norm=none"][1:])


def test_plus_key_of_a_constructor_node_must_be_its_parameter():
    over = ["debug=smoke", "+data.crop_sise=32"]
    with pytest.raises(ConfigValueError, match=r"DeblurDataModule.*'crop_sise'.*data\.crop_size"):
        check_overrides(compose("train", over), "train", over)
    over = ["debug=smoke", "+trainer.accumulate_grad_batches=2"]  # a real Trainer parameter
    check_overrides(compose("train", over), "train", over)


def test_a_range_mistake_stops_the_cli_before_any_file_is_written(tmp_path):
    runs = tmp_path / "runs"
    proc = cli("deblur.train", "debug=smoke", "optim.lr_g=-1", runs=runs)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "[deblur] error: optim.lr_g=-1" in proc.stderr and "Traceback" not in proc.stderr
    assert not runs.exists() or not any(runs.rglob("*.json"))
    proc = cli("deblur.train", "debug=smoke", "model.adv_wieght=1", runs=runs)
    assert proc.returncode == 2 and "Did you mean model.adv_weight" in proc.stderr
    assert "+model.adv_wieght" not in proc.stderr


def test_an_error_from_a_loader_worker_is_its_own_paragraph():
    """A DataError raised in a DataLoader worker comes back with the worker's traceback in its
    message; the printed paragraph is the original message alone."""

    class Broken(Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise DataError("blur/g1/6.png is cut off. Fix: copy it again.")

    with pytest.raises(DataError) as err:
        next(iter(DataLoader(Broken(), num_workers=1)))
    assert "Original Traceback" in str(err.value)  # what torch hands back
    assert report(err.value) == "blur/g1/6.png is cut off. Fix: copy it again."


def test_key_check_leaves_other_config_folders_and_unknown_groups_to_hydra():
    """Keys of a user's own config folder (hydra.searchpath, --config-dir) are not in conf/: the
    check stays out of the way; a group option it cannot compose is Hydra's to report."""
    check_known_keys("train", ["hydra.searchpath=[file:///elsewhere]", "model.mine=1"])
    check_known_keys("train", ["experiment=not_in_conf", "model.adv_wieght=1"])
    assert _overrides_of(["--config-dir", "/elsewhere", "model.mine=1"]) == []
    assert _overrides_of(["model.adv_wieght=1"]) == ["model.adv_wieght=1"]
