"""Dataset layouts -> ``{split: [Pair, ...]}`` (splits among ``train``, ``val``, ``test``); a reader
takes the root plus its options (``data.layout`` names it as a Hydra ``_partial_`` node). Pairs
are matched by path, never by the sort order of two globs, and carry a ``group`` (sequence, scene,
source photo) that validation never cuts."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from deblur.data.io import IMAGE_EXTENSIONS, DataError


@dataclass(frozen=True)
class Pair:
    """One blurred/sharp pair; ``group`` is the sequence or source photo used for splitting."""

    blur: Path
    sharp: Path
    group: str
    kernel: Path | None = None
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", f"{self.group}/{self.blur.stem}")


def listing(names: Iterable[str], limit: int = 5, sep: str = ", ") -> str:
    """The first ``limit`` of the sorted ``names`` for an error message, "and N more"."""
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return sep.join(names[:limit]) + more


def _check_root(root: str | os.PathLike[str] | None, layout: str, expected: str) -> Path:
    path = None if root in (None, "") else Path(root).expanduser()
    if path is None or not path.is_dir():
        where = f"root '{path}' does not exist or is not a folder" if path else "needs its folder"
        fix = f"set data.root=/path/to/dataset (expected: {expected})"
        raise DataError(f"The '{layout}' dataset {where}: {fix}.")
    return path


def _images_in(
    folder: Path, recursive: bool = False, suffixes: Sequence[str] = IMAGE_EXTENSIONS
) -> dict[str, Path]:
    """Files (images) below ``folder`` keyed by relative path without suffix (posix)."""
    out: dict[str, Path] = {}
    for f in folder.rglob("*") if recursive else folder.iterdir():
        if f.is_file() and f.suffix.lower() in suffixes:
            key = f.relative_to(folder).with_suffix("").as_posix()
            if key in out:
                raise DataError(f"'{folder}' has '{out[key].name}' and '{f.name}': keep one.")
            out[key] = f
    return out


def _match(
    blur: dict[str, Path],
    sharp: dict[str, Path],
    dirs: tuple[Path, Path],
    expected: str,
    both: bool = True,
) -> list[str]:
    """Keys present on both sides; blurred (``both``: and sharp) images without a twin raise."""
    sides = [("blurred", blur, sharp, dirs, "sharp"), ("sharp", sharp, blur, dirs[::-1], "blurred")]
    for kind, files, others, (here, there), twin in sides[: 2 if both else 1]:
        if alone := files.keys() - others.keys():
            shown = listing(files[k].relative_to(dirs[0].parent).as_posix() for k in alone)
            raise DataError(
                f"{len(alone)} {kind} image(s) in '{here}' have no {twin} twin in '{there}': "
                f"{shown}. Pairs match by relative path ({expected}); add the missing {twin} "
                "images or remove these."
            )
    return sorted(blur.keys() & sharp.keys())


def _subfolders(base: Path, names: Sequence[str], expected: str) -> list[Path]:
    """``base/<name>`` for each of ``names``; a missing one is a DataError."""
    dirs = [base / n for n in names]
    if missing := [d.name for d in dirs if not d.is_dir()]:
        raise DataError(f"Folder '{base}' has no '{missing[0]}/' sub-folder ({expected}).")
    return dirs


def _read_sequences(
    split_dir: Path, blur_key: str, expected: str, kernel_key: str | None = None
) -> list[Pair]:
    """``<split_dir>/<sequence>/{blur_key,sharp}/*`` -> pairs grouped by sequence."""
    sequences = sorted(d for d in split_dir.iterdir() if d.is_dir())
    if not sequences:
        raise DataError(f"Folder '{split_dir}' has no sequence sub-folders ({expected}).")
    pairs: list[Pair] = []
    for seq in sequences:
        blur_dir, sharp_dir = _subfolders(seq, (blur_key, "sharp"), expected)
        blur, sharp = _images_in(blur_dir), _images_in(sharp_dir)
        kernels: dict[str, Path] = {}
        if kernel_key is not None and (seq / kernel_key).is_dir():
            kernels = {f.stem: f for f in (seq / kernel_key).iterdir() if f.is_file()}
        for key in _match(blur, sharp, (blur_dir, sharp_dir), expected):
            pairs.append(Pair(blur[key], sharp[key], seq.name, kernels.get(key)))
    if not pairs:
        raise DataError(f"No images found under '{split_dir}' ({expected}).")
    return pairs


def _splits(
    base: Path, names: Sequence[str], read: Callable[[Path], list[Pair]], expected: str
) -> dict[str, list[Pair]]:
    """``read(<base>/<split>)`` for each split folder of ``names`` that exists (at least one)."""
    splits = {split: read(base / split) for split in names if (base / split).is_dir()}
    if not splits:
        folders = " nor ".join(f"'{split}/'" for split in names)
        raise DataError(f"Dataset root '{base}' has neither {folders} ({expected}).")
    return splits


GOPRO_LAYOUT = "<root>/{train,test}/<sequence>/{blur,blur_gamma,sharp}/*.png"


def read_gopro(root: str | os.PathLike[str], blur_key: str = "blur") -> dict[str, list[Pair]]:
    """GoPro_Large: ``train`` and ``test`` splits; ``blur_key`` is ``blur`` or ``blur_gamma``."""
    base = _check_root(root, "gopro", GOPRO_LAYOUT)
    read = partial(_read_sequences, blur_key=blur_key, expected=GOPRO_LAYOUT)
    return _splits(base, ("train", "test"), read, GOPRO_LAYOUT)


EMBEDDED_LAYOUT = "<root>/{train,val}/<photo>/{blur,sharp,kernel}/NNN.png|npy"


def read_embedded(root: str | os.PathLike[str]) -> dict[str, list[Pair]]:
    """The embedded dataset built by :mod:`deblur.data.embedded` (true kernels included)."""
    base = _check_root(root, "embedded", EMBEDDED_LAYOUT)
    _subfolders(base, ("train",), EMBEDDED_LAYOUT)
    read = partial(_read_sequences, blur_key="blur", expected=EMBEDDED_LAYOUT, kernel_key="kernel")
    return _splits(base, ("train", "val"), read, EMBEDDED_LAYOUT)


REALBLUR_LAYOUT = (
    "<root>/RealBlur_{J,R}_{train,test}_list.txt with lines '<gt_path> <blur_path>' relative to "
    "<root>, e.g. RealBlur-J_ECC_IMCORR_centroid_itensity_ref/scene001/{gt,blur}/*.png"
)


def _realblur_list(base: Path, list_file: Path) -> list[Pair]:
    """The pairs of one ``RealBlur_*_list.txt``; the group is the scene folder."""
    pairs: list[Pair] = []
    for n, line in enumerate(list_file.read_text().splitlines(), 1):
        if not (parts := line.split()):
            continue
        if len(parts) < 2:
            raise DataError(f"Line {n} of '{list_file}' is not '<gt_path> <blur_path>': {line!r}")
        gt, blur = Path(parts[0]), Path(parts[1])
        scene = gt.parent.parent.name or gt.parent.name
        pairs.append(Pair(base / blur, base / gt, scene))
    if missing := [str(f) for p in pairs for f in (p.sharp, p.blur) if not f.is_file()]:
        raise DataError(
            f"'{list_file}' names {len(missing)} file(s) that do not exist: {listing(missing, 3)}. "
            f"Extract RealBlur so the list paths are relative to data.root ({REALBLUR_LAYOUT})."
        )
    if not pairs:
        raise DataError(f"Pair list '{list_file}' is empty ({REALBLUR_LAYOUT}).")
    return pairs


def read_realblur(root: str | os.PathLike[str], variant: str = "J") -> dict[str, list[Pair]]:
    """RealBlur-J or -R from its pair lists; the group is the scene folder."""
    base = _check_root(root, "realblur", REALBLUR_LAYOUT)
    variant = str(variant).upper()
    if variant not in ("J", "R"):
        raise DataError(f"data.variant (RealBlur) must be 'J' or 'R', got '{variant}'.")
    lists = {s: base / f"RealBlur_{variant}_{s}_list.txt" for s in ("train", "test")}
    splits = {s: _realblur_list(base, f) for s, f in lists.items() if f.is_file()}
    if not splits:
        raise DataError(f"No RealBlur_{variant}_*_list.txt in '{base}' ({REALBLUR_LAYOUT}).")
    return splits


HIDE_LAYOUT = (
    "<root>/train/*.png, <root>/test/{test-close-ups,test-long-shot}/*.png (blurred), "
    "<root>/GT/<same name> (sharp)"
)
_HIDE_SOURCE = re.compile(r"^\d+from(.+)$")  # '12fromGOPR0950': frames of one source video


def read_hide(root: str | os.PathLike[str]) -> dict[str, list[Pair]]:
    """HIDE: blurred ``train/`` and ``test/<subset>/`` images, sharp twins in ``GT/``."""
    base = _check_root(root, "hide", HIDE_LAYOUT)
    (gt_dir,) = _subfolders(base, ("GT",), HIDE_LAYOUT)
    sharp = _images_in(gt_dir)

    def read(split_dir: Path) -> list[Pair]:
        blur = _images_in(split_dir, recursive=True)
        by_name = {Path(k).name: v for k, v in blur.items()}
        if len(by_name) != len(blur):
            raise DataError(f"'{split_dir}' holds two blurred images with the same file name.")
        pairs = []
        for k in _match(by_name, sharp, (split_dir, gt_dir), HIDE_LAYOUT, both=False):
            group = m.group(1) if (m := _HIDE_SOURCE.match(k)) else k
            pairs.append(Pair(by_name[k], sharp[k], group, None, f"{split_dir.name}/{k}"))
        if not pairs:
            raise DataError(f"No images found under '{split_dir}' ({HIDE_LAYOUT}).")
        return pairs

    splits = _splits(base, ("train", "test"), read, HIDE_LAYOUT)
    used = {p.sharp for ps in splits.values() for p in ps}
    if len(used) < len(sharp) and "train" in splits and "test" in splits:
        orphans = [k for k, v in sharp.items() if v not in used]
        raise DataError(
            f"{len(orphans)} sharp image(s) in '{gt_dir}' have no blurred twin: "
            f"{listing(orphans)} ({HIDE_LAYOUT})."
        )
    return splits


FOLDER_LAYOUT = (
    "<root>/blur/** + <root>/sharp/** (same relative paths), optionally <root>/kernel/<same "
    "relative path>.npy (the true blur kernels), optionally per split <root>/{train,val,test}/..."
)


def _folder_kernels(base: Path, blur: dict[str, Path], blur_dir: Path) -> dict[str, Path]:
    """``<base>/kernel/<key>.npy`` for every blurred image, or {} without a ``kernel/`` folder:
    all or none (a baseline given some kernels would evaluate another subset than a model)."""
    kernel_dir = base / "kernel"
    if not kernel_dir.is_dir():
        return {}
    kernels = _images_in(kernel_dir, recursive=True, suffixes=(".npy",))
    missing, orphans = blur.keys() - kernels.keys(), kernels.keys() - blur.keys()
    if missing:
        raise DataError(
            f"{len(missing)} of {len(blur)} blurred image(s) in '{blur_dir}' have no kernel "
            f"file in '{kernel_dir}': {listing(k + '.npy' for k in missing)}. Add the missing "
            f"kernels (<same relative name>.npy) or remove '{kernel_dir}' to use the folder "
            f"without kernels ({FOLDER_LAYOUT})."
        )
    if orphans:
        raise DataError(
            f"{len(orphans)} kernel file(s) in '{kernel_dir}' have no blurred image in "
            f"'{blur_dir}': {listing(k + '.npy' for k in orphans)}. Kernels are matched to "
            f"images by relative path; rename or remove them ({FOLDER_LAYOUT})."
        )
    return kernels


def _read_folder_split(base: Path, blur_key: str, sharp_key: str) -> list[Pair]:
    blur_dir, sharp_dir = _subfolders(base, (blur_key, sharp_key), FOLDER_LAYOUT)
    blur, sharp = _images_in(blur_dir, recursive=True), _images_in(sharp_dir, recursive=True)
    if not blur and not sharp:
        raise DataError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in '{blur_dir}' or "
            f"'{sharp_dir}' ({FOLDER_LAYOUT})."
        )
    keys = _match(blur, sharp, (blur_dir, sharp_dir), FOLDER_LAYOUT)
    kernels = _folder_kernels(base, blur, blur_dir)
    return [Pair(blur[k], sharp[k], k.split("/")[0], kernels.get(k), k) for k in keys]


def read_folder(
    root: str | os.PathLike[str], blur_key: str = "blur", sharp_key: str = "sharp"
) -> dict[str, list[Pair]]:
    """Generic paired folder; the group is the first sub-folder (or the file stem). A
    ``kernel/`` folder beside ``blur/`` gives every pair its true kernel (the baselines)."""
    base = _check_root(root, "folder", FOLDER_LAYOUT)
    read = partial(_read_folder_split, blur_key=blur_key, sharp_key=sharp_key)
    if (base / blur_key).is_dir() or (base / sharp_key).is_dir():
        return {"train": read(base)}
    return _splits(
        base, ("train", "val", "test"), read, f"'{blur_key}/' + '{sharp_key}/', {FOLDER_LAYOUT}"
    )


def split_by_group(
    pairs: Sequence[Pair], val_fraction: float, seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """Split pairs into (train, val) by whole groups: no sequence or photo lands in both."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be in [0, 1), got {val_fraction}.")
    if val_fraction == 0.0:
        return list(pairs), []
    groups = sorted({p.group for p in pairs})
    if len(groups) < 2:
        raise DataError(
            f"Cannot hold out {val_fraction:.0%} for validation: all {len(pairs)} pairs belong "
            f"to one group ('{groups[0] if groups else ''}') and splits never cut a sequence. "
            "Give the dataset a val/ folder, or more sequences (sub-folders) to hold out."
        )
    n_val = min(len(groups) - 1, max(1, round(val_fraction * len(groups))))
    order = np.random.default_rng(seed).permutation(len(groups))
    val_groups = {groups[i] for i in order[:n_val]}
    train = [p for p in pairs if p.group not in val_groups]
    return train, [p for p in pairs if p.group in val_groups]


def subsample(pairs: Sequence[Pair], limit: int | None) -> list[Pair]:
    """At most ``limit`` pairs, evenly spaced over the (group-sorted) list; None keeps all."""
    pairs = list(pairs)
    if limit is None or limit >= len(pairs):
        return pairs
    idx = np.unique(np.linspace(0, len(pairs) - 1, int(limit)).round().astype(int))
    return [pairs[i] for i in idx]
