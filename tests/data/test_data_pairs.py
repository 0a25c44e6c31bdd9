"""Layout readers, pairing by path, group splits and bad-input errors (deblur.data.pairs)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from deblur.data.io import DataError, read_image
from deblur.data.pairs import (
    Pair,
    read_folder,
    read_gopro,
    read_hide,
    read_realblur,
    split_by_group,
    subsample,
)


def _img(path: Path, value: int, size: tuple[int, int] = (8, 10)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))
    return path


def _gopro(root: Path, seqs=("GOPR0001_11_00", "GOPR0002_11_00"), frames=("000001", "000010")):
    """Pixel value encodes (split, sequence, frame) so every pair can be checked by content."""
    value = 0
    for split in ("train", "test"):
        for seq in seqs:
            for frame in frames:
                value += 3
                # written in opposite orders so directory order differs between the two sides
                _img(root / split / seq / "sharp" / f"{frame}.png", value)
                _img(root / split / seq / "blur_gamma" / f"{frame}.png", value + 1)
            for frame in reversed(frames):
                _img(
                    root / split / seq / "blur" / f"{frame}.png", _value_of(root, split, seq, frame)
                )
    return root


def _value_of(root: Path, split: str, seq: str, frame: str) -> int:
    return int(read_image(root / split / seq / "sharp" / f"{frame}.png")[0, 0, 0])


def test_gopro_pairs_by_path(tmp_path):
    root = _gopro(tmp_path / "GOPRO_Large")
    splits = read_gopro(root)
    assert set(splits) == {"train", "test"}
    assert len(splits["train"]) == 4 and len(splits["test"]) == 4
    for pair in splits["train"] + splits["test"]:
        assert pair.blur.name == pair.sharp.name
        assert pair.blur.parent.parent == pair.sharp.parent.parent
        assert pair.group == pair.blur.parent.parent.name
        assert read_image(pair.blur)[0, 0, 0] == read_image(pair.sharp)[0, 0, 0]
        assert pair.kernel is None
    assert splits["train"][0].name == "GOPR0001_11_00/000001"


def test_gopro_blur_gamma(tmp_path):
    root = _gopro(tmp_path / "g")
    pairs = read_gopro(root, blur_key="blur_gamma")["train"]
    assert all(p.blur.parent.name == "blur_gamma" for p in pairs)
    assert all(read_image(p.blur)[0, 0, 0] == read_image(p.sharp)[0, 0, 0] + 1 for p in pairs)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does-not-exist.*does not exist.*data.root"):
        read_gopro(tmp_path / "does-not-exist")
    with pytest.raises(DataError, match="set data.root"):
        read_gopro(None)


def test_empty_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither 'train/' nor 'test/'"):
        read_gopro(tmp_path / "empty")
    seq = tmp_path / "g" / "train" / "SEQ"
    (seq / "blur").mkdir(parents=True)
    (seq / "sharp").mkdir()
    with pytest.raises(DataError, match="No images found"):
        read_gopro(tmp_path / "g")
    (tmp_path / "f" / "blur").mkdir(parents=True)
    (tmp_path / "f" / "sharp").mkdir()
    (tmp_path / "f" / "sharp" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="No images"):
        read_folder(tmp_path / "f")


def test_blurred_without_sharp_twin(tmp_path):
    root = _gopro(tmp_path / "g")
    for name in ("000099.png", "000100.png"):
        _img(root / "train" / "GOPR0001_11_00" / "blur" / name, 1)
    with pytest.raises(
        DataError, match=r"2 blurred image\(s\).*no sharp twin.*blur/000099\.png, blur/000100\.png"
    ):
        read_gopro(root)


def test_sharp_without_blurred_twin(tmp_path):
    _img(tmp_path / "f" / "blur" / "a.png", 1)
    _img(tmp_path / "f" / "sharp" / "a.png", 1)
    _img(tmp_path / "f" / "sharp" / "b.png", 1)
    with pytest.raises(DataError, match=r"1 sharp image\(s\).*no blurred twin.*: sharp/b\.png"):
        read_folder(tmp_path / "f")


def test_folder_layout_groups_and_suffixes(tmp_path):
    root = tmp_path / "pairs"
    _img(root / "blur" / "seqA" / "0001.png", 10)
    _img(root / "sharp" / "seqA" / "0001.bmp", 10)  # matched by relative path, any suffix
    _img(root / "blur" / "seqB" / "0001.png", 20)
    _img(root / "sharp" / "seqB" / "0001.png", 20)
    _img(root / "blur" / "loose.png", 30)
    _img(root / "sharp" / "loose.png", 30)
    pairs = read_folder(root)["train"]
    assert sorted(p.group for p in pairs) == ["loose", "seqA", "seqB"]
    for p in pairs:
        assert read_image(p.blur)[0, 0, 0] == read_image(p.sharp)[0, 0, 0]
    split_root = tmp_path / "split"
    for split in ("train", "test"):
        _img(split_root / split / "blur" / "x.png", 1)
        _img(split_root / split / "sharp" / "x.png", 1)
    assert set(read_folder(split_root)) == {"train", "test"}


def test_realblur_lists(tmp_path):
    base = "RealBlur-J_ECC_IMCORR_centroid_itensity_ref"
    lines = {"train": [], "test": []}
    for split, scene in (("train", "scene001"), ("train", "scene002"), ("test", "scene100")):
        for i in (1, 2):
            gt = f"{base}/{scene}/gt/gt_{i}.png"
            bl = f"{base}/{scene}/blur/blur_{i}.png"
            _img(tmp_path / gt, i)
            _img(tmp_path / bl, i)
            lines[split].append(f"{gt} {bl}")
    for split, rows in lines.items():
        (tmp_path / f"RealBlur_J_{split}_list.txt").write_text("\n".join(rows) + "\n")
    splits = read_realblur(tmp_path, variant="j")
    assert len(splits["train"]) == 4 and len(splits["test"]) == 2
    assert {p.group for p in splits["train"]} == {"scene001", "scene002"}
    p = splits["test"][0]
    assert p.blur.name == "blur_1.png" and p.sharp.name == "gt_1.png"
    (tmp_path / f"{base}/scene100/gt/gt_2.png").unlink()
    with pytest.raises(DataError, match="do not exist.*gt_2.png"):
        read_realblur(tmp_path, "J")
    with pytest.raises(DataError, match="No RealBlur_R"):
        read_realblur(tmp_path, "R")


def test_hide_layout(tmp_path):
    for name in ("1fromGOPR0950.png", "2fromGOPR0950.png", "1fromGOPR1016.png"):
        _img(tmp_path / "train" / name, 1)
        _img(tmp_path / "GT" / name, 1)
    _img(tmp_path / "test" / "test-close-ups" / "5fromGOPR2000.png", 2)
    _img(tmp_path / "test" / "test-long-shot" / "7fromGOPR2001.png", 3)
    for name in ("5fromGOPR2000.png", "7fromGOPR2001.png"):
        _img(tmp_path / "GT" / name, 2)
    splits = read_hide(tmp_path)
    assert sorted(p.group for p in splits["train"]) == ["GOPR0950", "GOPR0950", "GOPR1016"]
    assert len(splits["test"]) == 2
    assert all(p.sharp.parent.name == "GT" and p.sharp.name == p.blur.name for p in splits["test"])
    _img(tmp_path / "test" / "test-long-shot" / "9fromGOPR3.png", 3)
    with pytest.raises(DataError, match="no sharp twin.*9fromGOPR3"):
        read_hide(tmp_path)


def _pairs(groups: dict[str, int]) -> list[Pair]:
    return [
        Pair(Path(f"/x/{g}/blur/{i:06d}.png"), Path(f"/x/{g}/sharp/{i:06d}.png"), g)
        for g, n in groups.items()
        for i in range(n)
    ]


def test_split_by_group_never_cuts_a_group():
    pairs = _pairs({f"seq{i}": 5 for i in range(10)})  # same frame names in every sequence
    train, val = split_by_group(pairs, 0.2, seed=0)
    assert len(train) + len(val) == len(pairs)
    assert {p.group for p in train}.isdisjoint({p.group for p in val})
    assert len({p.group for p in val}) == 2 and len(val) == 10
    # the reference code hashed basenames: frame 000000 would land on one side only
    assert {p.blur.name for p in val} & {p.blur.name for p in train}
    again = split_by_group(pairs, 0.2, seed=0)[1]
    other = split_by_group(pairs, 0.2, seed=1)[1]
    assert again == val
    assert {p.group for p in other} != {p.group for p in val}
    assert split_by_group(pairs, 0.0)[1] == []


def test_split_by_group_needs_two_groups():
    with pytest.raises(DataError, match="one group"):
        split_by_group(_pairs({"only": 4}), 0.5)


def test_subsample_even():
    pairs = _pairs({"a": 5, "b": 5})
    sub = subsample(pairs, 3)
    assert len(sub) == 3 and sub[0] == pairs[0] and sub[-1] == pairs[-1]
    assert subsample(pairs, None) == pairs and subsample(pairs, 100) == pairs
