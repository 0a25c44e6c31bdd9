"""Errors a person reads (issue 12, item 5): one paragraph naming the thing and the fix."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from deblur.checkpoints import CheckpointError, read_checkpoint, read_classifier_checkpoint
from deblur.cli import check_command_line
from deblur.config import ConfigValueError, check_overrides, compose
from deblur.errors import UserError
from deblur.models.critics import Discriminator, load_classifier_weights
from entry_runs import cli


@pytest.fixture()
def bad_files(tmp_path):
    files = {"text": tmp_path / "notes.ckpt", "empty": tmp_path / "empty.ckpt"}
    files["text"].write_text("this is not a checkpoint\n")
    files["empty"].write_bytes(b"")
    gan = tmp_path / "gan.ckpt"
    torch.save(
        {
            "state_dict": {"generator.w": torch.zeros(3)},
            "hyper_parameters": {"cfg": {"task": "gan"}},
        },
        gan,
    )
    clf = tmp_path / "clf.ckpt"
    torch.save(
        {
            "state_dict": {"net.w": torch.zeros(3)},
            "hyper_parameters": {"cfg": {"task": "classifier"}},
        },
        clf,
    )
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(gan.read_bytes()[: len(gan.read_bytes()) // 2])
    files.update(gan=gan, clf=clf, cut=cut)
    return files


def test_every_wrong_file_gets_one_paragraph_naming_it(bad_files):
    cases = [
        (lambda: read_classifier_checkpoint(bad_files["text"]), "text", "a text file"),
        (lambda: read_classifier_checkpoint(bad_files["empty"]), "empty", "empty file"),
        (lambda: read_classifier_checkpoint(bad_files["cut"]), "cut", "not a complete"),
        (lambda: read_classifier_checkpoint(bad_files["gan"]), "gan", "comes from a gan run"),
        (
            lambda: read_checkpoint(bad_files["clf"], key="ckpt", task="gan"),
            "clf",
            "classifier run",
        ),
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


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("seed=x", r"seed=x: seed takes an integer"),
        (
            "trainer.max_epochs=abc",
            r"trainer\.max_epochs=abc: trainer\.max_epochs takes an integer",
        ),
        ("pretrained=maybe", r"pretrained takes true or false"),
        (
            "+model.adv_wieght=0.1",
            r"'model\.adv_wieght' is not a key.*Did you mean model\.adv_weight",
        ),
        ("+seeed=1", r"'seeed' is not a key.*Did you mean seed"),
    ],
)
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
    from hydra.errors import InstantiationException

    from deblur.cli import user_error_cause
    from deblur.errors import UserError

    try:
        try:
            raise UserError("data.augment_on must be one of ('cpu', 'gpu')")
        except UserError as err:
            raise InstantiationException("Error in call to target") from err
    except InstantiationException as wrapped:
        assert isinstance(user_error_cause(wrapped), UserError)
    assert user_error_cause(InstantiationException("a bug")) is None
