"""python -m deblur.predict: folders with junk, tiny images, side-by-side, videos, exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from tiny_nets import FPN_CFG, rgb

from deblur.checkpoints import save_generator_checkpoint
from deblur.config import compose
from deblur.data.io import read_image, write_image
from deblur.eval.predict import run_predict
from entry_runs import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gan_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = instantiate(FPN_CFG)
    return save_generator_checkpoint(tmp_path_factory.mktemp("ckpt") / "gan.ckpt", net, FPN_CFG)


@pytest.fixture()
def messy_folder(tmp_path: Path) -> Path:
    """Two good images (one 7x5, smaller than the stride), a text file and a corrupt PNG."""
    folder = tmp_path / "in"
    write_image(folder / "photo.png", rgb(40, 56))
    write_image(folder / "tiny.png", rgb(7, 5, seed=1))
    (folder / "notes.txt").write_text("not an image")
    good = (folder / "photo.png").read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    return folder


def cfg_for(ckpt: Path, inp: Path | str, out: Path, *extra: str):
    return compose(
        "predict", [f"ckpt={ckpt}", f"input={inp}", f"output={out}", "progress=false", *extra]
    )


def test_folder_with_junk_is_reported_not_skipped(gan_ckpt, messy_folder, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    summary = run_predict(cfg_for(gan_ckpt, messy_folder, out, "device=cpu"))
    assert summary.images == 2
    assert {p.name for p, _ in summary.failed} == {"notes.txt", "broken.png"}
    reasons = dict((p.name, why) for p, why in summary.failed)
    assert "not an image" in reasons["notes.txt"] and "truncated" in reasons["broken.png"]
    assert read_image(out / "photo.png").shape == (40, 56, 3)
    assert read_image(out / "tiny.png").shape == (7, 5, 3)
    printed = capsys.readouterr().out
    assert "processed 2 image(s)" in printed and "notes.txt" in printed and "broken.png" in printed


def test_side_by_side_tiles_and_glob(gan_ckpt, messy_folder, tmp_path) -> None:
    out = tmp_path / "sbs"
    summary = run_predict(
        cfg_for(
            gan_ckpt, f"{messy_folder}/p*.png", out, "side_by_side=true", "tile=32", "overlap=8"
        )
    )
    assert summary.images == 1 and not summary.failed
    pair = read_image(out / "photo.png")
    assert pair.shape == (40, 112, 3)
    assert np.array_equal(pair[:, :56], read_image(messy_folder / "photo.png"))


def test_video_to_mp4_and_to_frames(gan_ckpt, tmp_path) -> None:
    src = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 32))
    for i in range(3):
        writer.write(rgb(32, 48, seed=i))
    writer.release()
    summary = run_predict(cfg_for(gan_ckpt, src, tmp_path / "v"))
    assert summary.videos == 1 and summary.frames == 3
    cap = cv2.VideoCapture(str(tmp_path / "v" / "clip_deblurred.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 3
    summary = run_predict(cfg_for(gan_ckpt, src, tmp_path / "f", "video_as_frames=true"))
    assert sorted(p.name for p in (tmp_path / "f" / "clip").iterdir()) == [
        "frame_000000.png",
        "frame_000001.png",
        "frame_000002.png",
    ]


def test_cli_exit_codes(gan_ckpt, tmp_path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.txt").write_text("x")
    bad = cli(
        "deblur.predict",
        f"ckpt={gan_ckpt}",
        f"input={junk}",
        f"output={tmp_path / 'o'}",
        "progress=false",
        cwd=tmp_path,
        timeout=300,
    )
    assert bad.returncode == 1, bad.stderr
    assert "a.txt" in bad.stdout and "nothing could be processed" in bad.stderr
    assert not (tmp_path / "outputs").exists()  # no Hydra run folder in the working directory


def _video(path: Path, frames: int, fourcc: str = "MJPG") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (48, 32))
    for i in range(frames):
        writer.write(rgb(32, 48, seed=i))
    writer.release()
    return path


def _frames(path: Path) -> int:
    cap, n = cv2.VideoCapture(str(path)), 0
    while cap.read()[0]:
        n += 1
    return n


def test_inputs_sharing_a_name_get_distinct_outputs(gan_ckpt, tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    write_image(folder / "a.png", rgb(40, 56))
    write_image(folder / "a.jpg", rgb(24, 32, seed=1))
    write_image(folder / "b.png", rgb(16, 16, seed=2))
    _video(folder / "clip.avi", 3)
    _video(folder / "clip.mp4", 2, "mp4v")
    out = tmp_path / "out"
    summary = run_predict(cfg_for(gan_ckpt, folder, out, "device=cpu"))
    assert summary.images == 3 and summary.videos == 2 and not summary.failed
    assert len(set(summary.written)) == 5
    # same stem: the source suffix joins the name; a name nobody shares is kept as it is
    assert read_image(out / "a_png.png").shape == (40, 56, 3)
    assert read_image(out / "a_jpg.png").shape == (24, 32, 3)
    assert read_image(out / "b.png").shape == (16, 16, 3)
    assert not (out / "a.png").exists()
    assert _frames(out / "clip_avi_deblurred.mp4") == 3
    assert _frames(out / "clip_mp4_deblurred.mp4") == 2
    assert f"{folder / 'a.jpg'} -> {out / 'a_jpg.png'}" in capsys.readouterr().out
    run_predict(cfg_for(gan_ckpt, folder / "clip.*", tmp_path / "f", "video_as_frames=true"))
    assert len(list((tmp_path / "f" / "clip_avi").glob("frame_*.png"))) == 3
    assert len(list((tmp_path / "f" / "clip_mp4").glob("frame_*.png"))) == 2


def test_collisions_and_unwritable_output_are_refused_before_any_work(tmp_path) -> None:
    from deblur.inputs import OutputError

    folder = tmp_path / "in"
    for name in ("a.png", "a.jpg", "a_png.png"):  # a_png.png is also a.png's disambiguated name
        write_image(folder / name, rgb(16, 16))
    missing = tmp_path / "no.ckpt"  # never loaded: every check comes before the model
    out = tmp_path / "out"
    with pytest.raises(OutputError, match="a_png.png") as err:
        run_predict(cfg_for(missing, folder, out))
    assert "a.png" in str(err.value) and not out.exists()
    with pytest.raises(OutputError, match="overwrite the input"):
        run_predict(cfg_for(missing, folder / "a.png", folder))  # output folder = input folder
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(OutputError, match="cannot be created"):
        run_predict(cfg_for(missing, folder / "a.jpg", blocker / "out"))
    with pytest.raises(OutputError, match="is a file, not a folder"):
        run_predict(cfg_for(missing, folder / "a.jpg", blocker))
    with pytest.raises(OutputError, match="ext=png is not an image suffix"):
        run_predict(cfg_for(missing, folder / "a.jpg", out, "ext=png"))


def test_output_inside_a_recursive_input_is_not_read_back(gan_ckpt, tmp_path) -> None:
    folder = tmp_path / "photos"
    write_image(folder / "x.png", rgb(16, 16))
    write_image(folder / "sub" / "y.png", rgb(16, 16, seed=1))
    cfg = cfg_for(gan_ckpt, folder, folder / "sharp", "recursive=true")
    for _ in range(2):  # the second run must not deblur the first run's outputs
        summary = run_predict(cfg)
        assert summary.images == 2 and not summary.failed
    assert sorted(p.relative_to(folder / "sharp").as_posix() for p in summary.written) == [
        "sub/y.png",
        "x.png",
    ]
    assert not (folder / "sharp" / "sharp").exists()


def _predict_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return cli("deblur.predict", *overrides, "progress=false", cwd=tmp_path, timeout=300)


def test_cli_bad_output_or_checkpoint_is_one_paragraph(tmp_path) -> None:
    write_image(tmp_path / "a.png", rgb(16, 16))
    (tmp_path / "f").write_text("x")
    missing, inp = f"ckpt={tmp_path / 'missing.ckpt'}", f"input={tmp_path / 'a.png'}"
    proc = _predict_cli(tmp_path, missing, inp, f"output={tmp_path / 'f' / 'out'}")
    assert proc.returncode == 1, proc.stderr
    assert f"[deblur] error: output={tmp_path / 'f' / 'out'} cannot be created" in proc.stderr
    assert "Traceback" not in proc.stderr and "missing.ckpt" not in proc.stderr  # before the model
    proc = _predict_cli(tmp_path, missing, inp, f"output={tmp_path / 'out'}")
    assert proc.returncode == 1, proc.stderr
    assert f"[deblur] error: ckpt={tmp_path / 'missing.ckpt'}: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_random_weights_banner_when_a_checkpoint_is_loaded(gan_ckpt, tmp_path, caplog) -> None:
    import logging

    write_image(tmp_path / "in" / "a.png", rgb(32, 32))
    with caplog.at_level(logging.WARNING):
        summary = run_predict(cfg_for(gan_ckpt, tmp_path / "in", tmp_path / "out"))
    assert summary.images == 1
    assert "RANDOM WEIGHTS" not in caplog.text
    assert not logging.getLogger("deblur.models.weights").filters  # the filter is removed again
