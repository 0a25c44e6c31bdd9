"""The embedded default dataset: deterministic, photo-disjoint, consistent with its kernels."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from embedded_yaml import BUILD

from deblur.data import embedded
from deblur.data.blur import apply_kernel
from deblur.data.embedded import VAL_PHOTOS, available_photos, build_embedded
from deblur.data.io import DataError, read_image, read_kernel
from deblur.data.pairs import read_embedded

TINY = {**BUILD, "long_side": 64, "blurs_per_photo": 2, "kernel_size": 9, "noise_sigma": 0.0}
PHOTOS = ["astronaut", "chelsea", "coffee", "rocket"]


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_bundled_photos_are_found():
    photos = available_photos()
    assert {"astronaut", "coffee", "chelsea"} <= set(photos)
    assert all(p.is_file() for p in photos.values())
    with pytest.raises(DataError, match="Unknown embedded photo"):
        available_photos(["not_a_photo"])


def test_build_is_deterministic(tmp_path):
    a = build_embedded(tmp_path / "a", photos=PHOTOS, **TINY)
    b = build_embedded(tmp_path / "b", photos=PHOTOS, **TINY)
    fa, fb = _files(a), _files(b)
    assert len(fa) == 1 + len(PHOTOS) * 2 * 3
    assert fa == fb
    c = build_embedded(tmp_path / "c", photos=PHOTOS, **dict(TINY, seed=1))
    assert _files(c) != fa


def test_split_by_photo_and_kernels_match(tmp_path):
    root = build_embedded(tmp_path / "e", photos=PHOTOS, **TINY)
    splits = read_embedded(root)
    train_groups = {p.group for p in splits["train"]}
    val_groups = {p.group for p in splits["val"]}
    assert train_groups.isdisjoint(val_groups)
    assert val_groups == set(VAL_PHOTOS) & set(PHOTOS)
    assert len(splits["train"]) + len(splits["val"]) == len(PHOTOS) * 2
    for pair in splits["train"][:2] + splits["val"][:1]:
        sharp, blur = read_image(pair.sharp), read_image(pair.blur)
        assert max(sharp.shape[:2]) == 64
        kernel = read_kernel(pair.kernel)
        assert kernel.shape == (9, 9) and abs(float(kernel.sum()) - 1) < 1e-6
        np.testing.assert_array_equal(blur, apply_kernel(sharp, kernel))  # noise_sigma=0
        assert not np.array_equal(blur, sharp)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["params"]["long_side"] == 64
    assert manifest["photos"]["coffee"]["source"] == "skimage/data/coffee.png"


def test_reuse_and_rebuild(tmp_path):
    root = build_embedded(tmp_path / "e", photos=PHOTOS[:2], **TINY)
    stamp = (root / "manifest.json").stat().st_mtime_ns
    time.sleep(0.01)
    build_embedded(root, photos=PHOTOS[:2], **TINY)
    assert (root / "manifest.json").stat().st_mtime_ns == stamp
    build_embedded(root, photos=PHOTOS[:2], **dict(TINY, blurs_per_photo=1))
    assert len(list(root.rglob("blur/*.png"))) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".e.tmp")]


def test_foreign_folder_is_never_overwritten(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("precious")
    with pytest.raises(DataError, match="not an embedded dataset"):
        build_embedded(mine, photos=PHOTOS[:2], **TINY)
    assert (mine / "thesis.txt").read_text() == "precious"


def test_parallel_builds_do_not_race(tmp_path):
    root = tmp_path / "shared"
    errors: list[BaseException] = []

    def work():
        try:
            build_embedded(root, photos=PHOTOS[:2], **TINY)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(read_embedded(root)["train"]) + len(read_embedded(root)["val"]) == 4


@pytest.mark.slow
def test_default_build_under_30s(tmp_path):
    start = time.perf_counter()
    root = build_embedded(tmp_path / "full", photos=None, **BUILD)
    assert time.perf_counter() - start < 30
    assert len(list(root.rglob("blur/*.png"))) >= 8 * 4


def test_scikit_learn_photos_train_and_validation_stays_chelsea_rocket(tmp_path):
    photos = available_photos()
    assert {"china", "flower"} <= set(photos)  # scikit-learn is a dependency
    assert photos["china"].parts[-3:] == ("datasets", "images", "china.jpg")
    root = build_embedded(tmp_path / "e", photos=["chelsea", "rocket", "china", "flower"], **TINY)
    splits = read_embedded(root)
    assert {p.group for p in splits["train"]} == {"china", "flower"}
    assert {p.group for p in splits["val"]} == set(VAL_PHOTOS) == {"chelsea", "rocket"}


def test_photo_set_is_part_of_the_cache_identity(tmp_path, monkeypatch):
    """A build made without a package's photos is never reused once the package is there."""
    monkeypatch.setenv("DEBLUR_CACHE", str(tmp_path / "cache"))
    everything = build_embedded(photos=None, **TINY)
    manifest = json.loads((everything / "manifest.json").read_text())
    assert manifest["params"]["photos"] == sorted(available_photos())
    real_file = embedded._package_file
    monkeypatch.setattr(  # scikit-learn not installed
        embedded, "_package_file", lambda at: None if at.startswith("sklearn/") else real_file(at)
    )
    without = build_embedded(photos=None, **TINY)
    assert without != everything
    assert {p.group for p in read_embedded(without)["train"]}.isdisjoint({"china", "flower"})
    assert embedded.default_root().name == f"embedded_v{embedded.FORMAT_VERSION}"
