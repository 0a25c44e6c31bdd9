"""python -m deblur.blur_score: a 0..1 blur score per image to CSV, unreadable files reported."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from tiny_nets import NLAYER_CFG, rgb

from deblur.checkpoints import save_classifier_checkpoint
from deblur.config import compose
from deblur.data.io import to_tensor, write_image
from deblur.eval.blur_score import blur_score, run_blur_score
from deblur.models.critics import BlurClassifierNet
from deblur.models.load import load_classifier


@pytest.fixture(scope="module")
def cls_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = BlurClassifierNet(NLAYER_CFG)
    return save_classifier_checkpoint(
        tmp_path_factory.mktemp("c") / "cls.ckpt", net, NLAYER_CFG, 32
    )


def test_score_is_sigmoid_of_the_logit_and_tiles_average_logits(cls_ckpt: Path) -> None:
    net = load_classifier(cls_ckpt)
    img = rgb(32, 64, 0)
    with torch.no_grad():
        whole = torch.sigmoid(net(to_tensor(img)[None])).item()
        left = net(to_tensor(img[:, :32])[None]).item()
        right = net(to_tensor(img[:, 32:])[None]).item()
    assert blur_score(net, img, tile=None, device="cpu") == pytest.approx(whole, abs=1e-6)
    tiled = torch.sigmoid(torch.tensor((left + right) / 2)).item()
    assert blur_score(net, img, tile=32, device="cpu") == pytest.approx(tiled, abs=1e-6)
    assert 0.0 < blur_score(net, rgb(5, 7, 1), tile=32, device="cpu") < 1.0  # tiny image


def test_csv_sorted_with_unreadable_files_reported(cls_ckpt: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "photos"
    for i in range(3):
        write_image(folder / f"p{i}.png", rgb(40, 48, i))
    (folder / "readme.md").write_text("#")
    (folder / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage")
    out = tmp_path / "scores.csv"
    summary = run_blur_score(
        compose(
            "blur_score", [f"ckpt={cls_ckpt}", f"input={folder}", f"output={out}", "progress=false"]
        )
    )
    assert len(summary.scores) == 3
    assert {p.name for p, _ in summary.failed} == {"readme.md", "bad.jpg"}
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert [r.keys() for r in rows][0] == {"path", "score"}
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert {Path(r["path"]).name for r in rows} == {"p0.png", "p1.png", "p2.png"}
    printed = capsys.readouterr().out
    assert "scored 3 image(s); 2 file(s) not scored" in printed and "bad.jpg" in printed


def _cfg(ckpt: Path, inp: Path, out: Path):
    return compose(
        "blur_score", [f"ckpt={ckpt}", f"input={inp}", f"output={out}", "progress=false"]
    )


def test_output_never_overwrites_an_input_and_is_checked_before_the_model(tmp_path: Path) -> None:
    from deblur.inputs import OutputError

    folder = tmp_path / "photos"
    write_image(folder / "p0.png", rgb(40, 48, 0))
    before = (folder / "p0.png").read_bytes()
    missing = tmp_path / "no.ckpt"  # never loaded: the output is checked first
    with pytest.raises(OutputError, match="name of an image"):
        run_blur_score(_cfg(missing, folder, folder / "p0.png"))
    assert (folder / "p0.png").read_bytes() == before
    with pytest.raises(OutputError, match="is a folder"):
        run_blur_score(_cfg(missing, folder, folder))
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="scores.csv: its folder .* is a file"):
        run_blur_score(_cfg(missing, folder, tmp_path / "f" / "scores.csv"))
    with pytest.raises(OutputError, match="cannot be created"):
        run_blur_score(_cfg(missing, folder, tmp_path / "f" / "sub" / "scores.csv"))


def test_same_stem_rows_stay_apart_and_a_rerun_skips_its_own_csv(cls_ckpt: Path, tmp_path: Path):
    folder = tmp_path / "photos"
    write_image(folder / "a.png", rgb(40, 48, 0))
    write_image(folder / "a.jpg", rgb(40, 48, 1))
    out = folder / "scores.csv"  # inside the input folder
    for _ in range(2):
        summary = run_blur_score(_cfg(cls_ckpt, folder, out))
        assert len(summary.scores) == 2 and summary.failed == []  # scores.csv is not an input
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert sorted(Path(r["path"]).name for r in rows) == ["a.jpg", "a.png"]
