"""The embedded default dataset: the colour photos inside scikit-image, matplotlib and
scikit-learn (no network), blurred ``blurs_per_photo`` times each into
``<root>/<split>/<photo>/{blur,sharp,kernel}/NNN.{png,npy}`` + ``manifest.json``."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deblur.data.blur import check_odd, random_motion_blur
from deblur.data.io import DataError, read_image, write_image
from deblur.data.pairs import Pair, read_embedded

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
"""Version of the on-disk build (2: scikit-learn's photos, the photo list in the identity)."""

EMBEDDED_PHOTOS: dict[str, str] = {
    "astronaut": "skimage/data/astronaut.png",
    "chelsea": "skimage/data/chelsea.png",
    "coffee": "skimage/data/coffee.png",
    "rocket": "skimage/data/rocket.jpg",
    "motorcycle_left": "skimage/data/motorcycle_left.png",
    "motorcycle_right": "skimage/data/motorcycle_right.png",
    "hubble_deep_field": "skimage/data/hubble_deep_field.jpg",
    "ihc": "skimage/data/ihc.png",
    "retina": "skimage/data/retina.jpg",
    "grace_hopper": "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
    "china": "sklearn/datasets/images/china.jpg",
    "flower": "sklearn/datasets/images/flower.jpg",
}
"""Photo name -> ``<package>/<path inside the package>`` of the colour photographs we use."""

VAL_PHOTOS: tuple[str, ...] = ("chelsea", "rocket")
"""Photos held out for validation (the stereo motorcycle views both stay in train)."""


def default_root() -> Path:
    """``${DEBLUR_CACHE:-~/.cache/deblur}/embedded_v2``."""
    cache = os.environ.get("DEBLUR_CACHE") or "~/.cache/deblur"
    return Path(cache).expanduser() / f"embedded_v{FORMAT_VERSION}"


def _package_file(where: str) -> Path | None:
    """``<package>/<path inside it>`` on disk, without importing it (None: not installed)."""
    package, rel = where.split("/", 1)
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / rel


def available_photos(names: Sequence[str] | None = None) -> dict[str, Path]:
    """Photo name -> file for the bundled photos present on disk (optionally only ``names``)."""
    wanted = set(EMBEDDED_PHOTOS if names is None else names)
    if wanted - EMBEDDED_PHOTOS.keys():
        raise DataError(
            f"Unknown embedded photo(s) {sorted(wanted - EMBEDDED_PHOTOS.keys())}; choose from "
            f"{sorted(EMBEDDED_PHOTOS)}."
        )
    files = {name: _package_file(EMBEDDED_PHOTOS[name]) for name in EMBEDDED_PHOTOS}
    return {name: f for name, f in files.items() if name in wanted and f and f.is_file()}


_BUILD_KEYS = "long_side blurs_per_photo kernel_size min_length max_length noise_sigma seed".split()
_FLOATS = {"min_length", "max_length", "noise_sigma"}  # the other build keys are ints


def _params(values: Sequence[Any], photos: Sequence[str]) -> dict[str, Any]:
    """The build's identity (``params`` of its manifest): the build keys' ``values`` and the
    photos found."""
    build = dict(zip(_BUILD_KEYS, values))
    check_odd(build["kernel_size"], "data.embedded.kernel_size")
    if build["max_length"] is None:
        build["max_length"] = int(build["kernel_size"]) - 1
    typed = {k: (float if k in _FLOATS else int)(build[k]) for k in _BUILD_KEYS}
    return {"format": FORMAT_VERSION, **typed, "photos": sorted(photos)}


def _resize_long_side(image: np.ndarray, long_side: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = long_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _build_into(folder: Path, params: dict[str, Any]) -> dict[str, Any]:
    photos = available_photos(params["photos"])
    if len(photos) < 2:
        raise DataError(
            "The embedded dataset needs at least 2 bundled photos but found "
            f"{sorted(photos)} (scikit-image's skimage/data and matplotlib's sample_data). "
            "Reinstall scikit-image and matplotlib, or use data=folder with your own pairs."
        )
    val = [n for n in photos if n in VAL_PHOTOS] or [sorted(photos)[-1]]
    if len(val) == len(photos):
        val = val[-1:]
    manifest: dict[str, Any] = {"builder": __name__, "params": params, "photos": {}, "pairs": []}
    for name in sorted(photos):
        split = "val" if name in val else "train"
        sharp = _resize_long_side(read_image(photos[name]), params["long_side"])
        out = folder / split / name
        (out / "kernel").mkdir(parents=True)  # write_image makes blur/ and sharp/
        first_sharp = write_image(out / "sharp" / "000.png", sharp)
        rng = np.random.default_rng([params["seed"], zlib.crc32(name.encode())])
        for i in range(params["blurs_per_photo"]):
            length = float(rng.uniform(params["min_length"], params["max_length"]))
            size, sigma, stem = params["kernel_size"], params["noise_sigma"], f"{i:03d}"
            blurred, kernel = random_motion_blur(sharp, rng, size, length, sigma)
            write_image(out / "blur" / f"{stem}.png", blurred)
            np.save(out / "kernel" / f"{stem}.npy", kernel)
            if i > 0:  # the one sharp image again: a hard link where the filesystem has them
                try:
                    os.link(first_sharp, out / "sharp" / f"{stem}.png")
                except OSError:
                    shutil.copyfile(first_sharp, out / "sharp" / f"{stem}.png")
            manifest["pairs"].append(
                {"split": split, "photo": name, "index": i, "length": round(length, 4)}
            )
        (h, w), source = sharp.shape[:2], EMBEDDED_PHOTOS[name]
        manifest["photos"][name] = {"split": split, "source": source, "height": h, "width": w}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _manifest(root: Path) -> dict[str, Any] | None:
    try:
        return json.loads((root / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def _cache_root(params: dict[str, Any]) -> Path:
    """The cache folder of a build: the default one for the default parameters, else one per
    parameter set (builds of other sizes never replace each other)."""
    if params == _params((512, 4, 31, 7.0, None, 1.0, 0), list(EMBEDDED_PHOTOS)):
        return default_root()
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return default_root().with_name(f"{default_root().name}-{digest}")


def build_embedded(
    root: str | os.PathLike[str] | None = None,
    *,
    long_side: int,
    blurs_per_photo: int,
    kernel_size: int,
    min_length: float,
    max_length: float | None,
    noise_sigma: float,
    seed: int,
    photos: Sequence[str] | None,
    force: bool = False,
) -> Path:
    """Build the embedded dataset at ``root`` unless an identical build is there: in a temporary
    folder renamed into place under a file lock (no race, no half build); never a foreign folder."""
    found = sorted(available_photos(photos))
    values = (long_side, blurs_per_photo, kernel_size, min_length, max_length, noise_sigma, seed)
    params = _params(values, found)
    root = Path(root).expanduser() if root is not None else _cache_root(params)

    def ready() -> bool:
        return not force and (_manifest(root) or {}).get("params") == params

    if ready():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / f".{root.name}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # released when the file is closed
        if ready():
            return root
        if root.exists() and any(root.iterdir()):
            old = _manifest(root)
            if old is None or old.get("builder") != "deblur.data.embedded":
                raise DataError(
                    f"data.root '{root}' exists and is not an embedded dataset built by deblur "
                    "(no manifest.json). Point data.root at an empty or new folder, or leave it "
                    "unset to use the cache folder."
                )
            log.warning("Rebuilding the embedded dataset at %s (parameters changed).", root)
        start = time.perf_counter()
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            manifest = _build_into(tmp, params)
            if root.exists():
                trash = root.parent / f".{root.name}.old-{uuid.uuid4().hex[:8]}"
                os.replace(root, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        pairs, photos, took = len(manifest["pairs"]), len(manifest["photos"]), time.perf_counter()
        log.info(
            f"Built the embedded dataset ({pairs} pairs from {photos} photos) at {root} in "
            f"{took - start:.1f} s."
        )
    return root


def read_or_build(root: str | os.PathLike[str] | None, **build: Any) -> dict[str, list[Pair]]:
    """``data=embedded``'s layout: build the dataset at ``root`` (None: the cache folder) on first
    use (``build``: :func:`build_embedded`'s keywords, ``data.embedded.*``), then read its pairs."""
    return read_embedded(build_embedded(root, **build))
