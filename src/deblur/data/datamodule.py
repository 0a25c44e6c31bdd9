"""One LightningDataModule for every dataset layout and both tasks (GAN pairs, blur classifier).

Built from the ``data`` config group: ``hydra.utils.instantiate(cfg.data, task="paired")``.
Training batches are augmented crops; validation and test batches are full-resolution,
un-augmented pairs (batch 1 by default), with the true ``"kernel"`` when the data knows it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from deblur.data.blur import CameraShake
from deblur.data.datasets import ClassificationDataset, ConcatSamples, ImageCache, PairedDataset
from deblur.data.deadleaves import (
    DeadLeaves,
    ProceduralDataset,
    ProceduralPairs,
    palette_from_images,
)
from deblur.data.gpu_augment import AUGMENT_ON, TensorAugment
from deblur.data.io import (
    DataError,
    ImageReadError,
    image_size,
    instantiate_node,
    read_image,
    read_kernel,
)
from deblur.data.loading import AUTO, cache_decision, loader_workers
from deblur.data.pairs import Pair, split_by_group, subsample
from deblur.data.reblur import ReblurredPhotos
from deblur.data.sampling import EpochSeededSampler
from deblur.data.transforms import build_train_transform

log = logging.getLogger(__name__)

__all__ = ["DeblurDataModule", "worker_init_fn"]

TASKS = ("paired", "classify")

TRAIN_SOURCES = ("photos", "procedural", "both")
"""``data.embedded.train_source``: the embedded photos, dead-leaves pairs, or both mixed."""

TRAIN_BLURS = ("fixed", "fresh")
"""``data.embedded.train_blur``: the stored blurred photos, or the sharp photos blurred anew
per (seed, epoch, index) (:class:`deblur.data.reblur.ReblurredPhotos`)."""

_MIX_KEYS = ("train_source", "train_blur", "procedural_per_epoch", "procedural")
"""Keys of ``data.embedded`` that choose the training mix (not build parameters of the photos)."""

_FILE_PAIRS_ONLY = {
    "train_source": "photos",
    "train_blur": "fixed",
    "procedural_per_epoch": 0,
    "procedural": None,
}
"""The training mix of data options other than embedded: their own pairs, as stored (these are
not defaults of data=embedded, whose YAML sets each key)."""


def worker_init_fn(worker_id: int) -> None:
    """Per DataLoader worker: no OpenCV threads, and numpy / random / augmentation seeded apart."""
    cv2.setNumThreads(0)
    info = torch.utils.data.get_worker_info()
    seed = (info.seed if info is not None else torch.initial_seed()) % 2**32
    np.random.seed(seed)
    random.seed(seed)
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(seed)


_KERNEL_KEYS = ("kernel_size", "min_length", "max_length", "noise_sigma")
"""Keys of ``data.embedded`` the procedural pairs blur with (the photos' kernel and noise)."""


def _plain(value: Any) -> Any:
    if isinstance(value, DictConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _build_layout(layout: Mapping[str, Any]) -> Callable[..., Any]:
    """``data.layout`` (a ``_target_`` / ``_partial_`` node) -> ``reader(root) -> splits``."""
    if not isinstance(layout, Mapping | DictConfig) or "_target_" not in layout:
        raise DataError(
            f"data.layout must be a reader node such as {{_target_: deblur.data.pairs.read_gopro, "
            f"_partial_: true}} (see conf/data/*.yaml), got {layout!r}."
        )
    fix = "data.layout names a reader of deblur.data.pairs (see conf/data/*.yaml)."
    reader = instantiate_node(layout, "data.layout", fix)
    if not callable(reader):
        raise DataError(
            f"data.layout: {layout['_target_']} gave a {type(reader).__name__}, not a reader; "
            "a function target needs _partial_: true."
        )
    return reader


def _layout_name(reader: Callable[..., Any]) -> str:
    func = getattr(reader, "func", reader)
    return str(getattr(func, "__name__", type(func).__name__))


class DeblurDataModule(pl.LightningDataModule):
    """Pairs from a layout (``embedded``, ``gopro``, ``realblur``, ``hide``, ``folder``).

    ``task="paired"`` yields ``{"blur", "sharp", "name"}`` (+ ``"kernel"`` in val/test when
    known); ``task="classify"`` yields ``{"image", "label"}`` with sharp 0 and blurred 1.
    The validation split (what picks ``best.ckpt``) is ``val_sequences`` (training groups named
    by the user), else the dataset's own ``val`` split, else ``val_fraction`` of its training
    groups (sequences / photos), never of its frames, and never the ``test`` split (GoPro,
    RealBlur: that is what ``deblur.evaluate`` reports, so choosing on it would leak).
    """

    def __init__(
        self,
        *,
        task: str,
        name: str,
        layout: Mapping[str, Any],
        root: str | Path | None,
        blur_key: str,
        crop_size: int | None,
        pre_crop_scale: float | None,
        batch_size: int,
        val_batch_size: int,
        num_workers: int | str,
        pin_memory: bool | None,
        persistent_workers: bool,
        multiprocessing_context: str | None,
        cache: bool | str,
        augment: Mapping[str, Any] | Sequence[Any] | None,
        augment_on: str,
        val_fraction: float,
        val_sequences: Sequence[str] | None = None,
        max_train_pairs: int | None,
        max_val_pairs: int | None,
        max_test_pairs: int | None,
        min_val_side: int | None,
        seed: int,
        variant: str | None = None,
        embedded: Mapping[str, Any] | None = None,
        check_train_files: bool = True,
        val_pairs_during_training: int | None = None,
        on_gpu: bool = False,
    ) -> None:
        """Every argument is a ``data.*`` key of ``conf/data/<name>.yaml`` (their defaults live
        there), plus ``task``. ``layout`` is the reader's Hydra node (built here, so a wrong
        target is a :class:`DataError`); ``blur_key`` and ``variant`` (data=realblur only) reach
        the reader through its interpolations. ``embedded`` (data=embedded only) holds the
        build parameters and the training mix (``train_source``, ``procedural*``). ``on_gpu``
        (the trainer's device, not a YAML key) decides ``num_workers`` / ``cache`` = auto
        (:mod:`deblur.data.loading`)."""
        super().__init__()
        if task not in TASKS:
            raise DataError(f"DeblurDataModule task must be one of {TASKS}, got '{task}'.")
        self.task, self.name, self.on_gpu = task, name, bool(on_gpu)
        self.read_pairs = _build_layout(layout)
        self.layout = _layout_name(self.read_pairs)
        self.root = None if root in (None, "") else Path(str(root)).expanduser()
        self.blur_key, self.variant = blur_key, variant
        self.crop_size = crop_size
        self.pre_crop_scale = None if pre_crop_scale is None else float(pre_crop_scale)
        self._set_loading(
            batch_size, val_batch_size, num_workers, pin_memory, persistent_workers, cache
        )
        self.multiprocessing_context = multiprocessing_context
        self._set_augment(augment, augment_on, crop_size, int(seed))
        self.val_fraction = float(val_fraction)
        seqs = [val_sequences] if isinstance(val_sequences, str) else val_sequences or []
        self.val_sequences = [str(v) for v in seqs] or None
        self.limits = {"train": max_train_pairs, "val": max_val_pairs, "test": max_test_pairs}
        self.val_pairs_during_training = val_pairs_during_training
        self.min_val_side = None if min_val_side is None else int(min_val_side)
        self.check_train_files = bool(check_train_files)
        self.seed = int(seed)
        self._set_mix(dict(_plain(embedded) or {}), name)
        self._procedural: ProceduralPairs | None = None
        self._splits: dict[str, list[Pair]] | None = None
        self._datasets: dict[str, Dataset] = {}
        self._image_cache: ImageCache | None = None

    # ----------------------------------------------------------------- pairs
    def _set_loading(
        self,
        batch_size: int,
        val_batch_size: int,
        num_workers: int | str,
        pin_memory: bool | None,
        persistent_workers: bool,
        cache: bool | str,
    ) -> None:
        """The DataLoader settings (pin_memory null = on when CUDA is available; cache=auto is
        decided in :meth:`setup`, once the image sizes are known)."""
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size)
        self.num_workers = loader_workers(num_workers, self.on_gpu)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.cache = cache

    def _set_augment(self, augment: Any, augment_on: str, crop_size: int | None, seed: int) -> None:
        """The augmentation nodes and where they run (CPU workers, or the GPU after transfer)."""
        self.augment = _plain(augment)
        if augment_on not in AUGMENT_ON:
            raise DataError(f"data.augment_on must be one of {AUGMENT_ON}, got '{augment_on}'.")
        self.augment_on = augment_on
        # augment_on=gpu: workers only cut the square patch; on_after_batch_transfer warps it
        self._tensor_augment = (
            TensorAugment(self.augment, crop_size, seed=seed) if augment_on == "gpu" else None
        )

    def _set_mix(self, embedded: dict[str, Any], name: str) -> None:
        """``data.embedded``: its build parameters and the training mix, checked."""
        mix = {k: embedded.pop(k) for k in _MIX_KEYS if k in embedded}
        self.embedded = embedded  # build parameters of the photo pairs (deblur.data.embedded)
        is_embedded = set(_KERNEL_KEYS) <= embedded.keys()
        if is_embedded:  # data=embedded: its YAML sets every mix key
            missing = [k for k in _MIX_KEYS if k not in mix]
            if missing:
                raise DataError(
                    f"data.embedded lacks {', '.join(missing)}: every key of the training mix is "
                    "set in conf/data/embedded.yaml; restore it there or give "
                    f"+data.embedded.{missing[0]}=... on the command line."
                )
        else:  # the other data options train on their own file pairs: no mix to choose
            mix = {**_FILE_PAIRS_ONLY, **mix}
        self.train_source = str(mix["train_source"])
        if self.train_source not in TRAIN_SOURCES:
            raise DataError(
                f"data.embedded.train_source must be one of {', '.join(TRAIN_SOURCES)}, got "
                f"'{self.train_source}'."
            )
        if self.train_source != "photos" and not is_embedded:
            raise DataError(
                f"data.embedded.train_source={self.train_source} mixes procedural pairs into "
                f"data=embedded only (they take its kernel and noise keys), but this is "
                f"data={name} (layout '{self.layout}'). Use data=embedded, or leave "
                "train_source at photos."
            )
        self.train_blur = str(mix["train_blur"])
        if self.train_blur not in TRAIN_BLURS:
            raise DataError(
                f"data.embedded.train_blur must be one of {', '.join(TRAIN_BLURS)}, got "
                f"'{self.train_blur}'."
            )
        if self.train_blur == "fresh" and not is_embedded:
            raise DataError(
                "data.embedded.train_blur=fresh re-blurs the sharp photos with data=embedded's "
                f"kernel and noise keys, but this is data={name} (layout '{self.layout}'), whose "
                "blurred images are real. Use data=embedded, or leave train_blur at fixed."
            )
        if self.train_blur == "fresh" and not self.crop_size:
            raise DataError(
                "data.embedded.train_blur=fresh blurs training crops anew, but data.crop_size is "
                "null (whole images). Set data.crop_size (e.g. 256), or use train_blur=fixed."
            )
        self._set_procedural(mix)

    def _set_procedural(self, mix: dict[str, Any]) -> None:
        """The dead-leaves pairs of ``train_source=procedural|both``, checked."""
        self.procedural_per_epoch = int(mix["procedural_per_epoch"] or 0)
        if self.train_source != "photos" and self.procedural_per_epoch < 1:
            raise DataError(
                f"data.embedded.train_source={self.train_source} needs "
                f"data.embedded.procedural_per_epoch >= 1 (pairs per epoch), got "
                f"{self.procedural_per_epoch}."
            )
        procedural = dict(mix["procedural"] or {})
        self.procedural_colors = str(procedural.pop("colors", None)) if procedural else None
        if procedural and self.procedural_colors not in ("photos", "lab"):
            raise DataError(
                "data.embedded.procedural.colors must be 'photos' (colours of the training "
                f"photos) or 'lab' (a CIELAB palette), got '{self.procedural_colors}'."
            )
        self.dead_leaves = DeadLeaves.from_config(procedural) if procedural else None
        if self.train_source != "photos" and self.dead_leaves is None:
            raise DataError(
                f"data.embedded.train_source={self.train_source} draws dead-leaves images, but "
                "data.embedded.procedural is empty; restore it from conf/data/embedded.yaml."
            )

    def _resolve(self) -> dict[str, list[Pair]]:
        if self._splits is not None:
            return self._splits
        root = self.root
        found = self.read_pairs(root)
        train = found.get("train", [])
        if self.val_sequences:
            groups = {p.group for p in train}
            unknown = sorted(set(self.val_sequences) - groups)
            if unknown:
                raise DataError(
                    f"data.val_sequences names {', '.join(unknown)}, which the training split of "
                    f"{self.name} does not have (its {len(groups)} sequences: "
                    f"{', '.join(sorted(groups)[:8])}{' ...' if len(groups) > 8 else ''}). "
                    "Fix: name training sequences, or data.val_sequences=null."
                )
            held = set(self.val_sequences)
            if held >= groups:
                raise DataError(
                    f"data.val_sequences holds out every training sequence of {self.name}: "
                    "nothing is left to train on. Name fewer sequences."
                )
            val = [p for p in train if p.group in held]
            train = [p for p in train if p.group not in held]
        elif "val" in found:
            val = found["val"]
        else:  # held-out training sequences: the test split never picks a checkpoint
            train, val = split_by_group(train, self.val_fraction, self.seed)
        test = found.get("test", val)
        self._photo_train = list(train)  # the colour palette of procedural images comes from these
        self._splits = {
            "train": []
            if self.train_source == "procedural"
            else subsample(train, self.limits["train"]),
            "val": subsample(val, self.limits["val"]),
            "test": subsample(test, self.limits["test"]),
        }
        extra = (
            f" + {self.procedural_per_epoch} procedural (dead-leaves) train pairs per epoch"
            if self.train_source != "photos"
            else ""
        )
        log.info(
            "data=%s (%s at %s): %d train / %d val / %d test pairs%s.",
            self.name,
            self.layout,
            root or "the default folder",
            *(len(v) for v in self._splits.values()),
            extra,
        )
        return self._splits

    @property
    def train_pairs(self) -> list[Pair]:
        """Training pairs from files (resolved on first access; none for ``train_source=procedural``)."""
        return self._resolve()["train"]

    def _procedural_size(self) -> int:
        """Side of the procedural training images: what a photo item of the train split measures."""
        if not self.crop_size:
            raise DataError(
                f"data.embedded.train_source={self.train_source} generates training images at the "
                "crop size, but data.crop_size is null (whole images). Set data.crop_size (e.g. "
                "256), or use data.embedded.train_source=photos."
            )
        if self._tensor_augment is not None:  # the GPU warps and crops a pre-crop patch
            return self._pre_crop() or int(self.crop_size)
        return int(self.crop_size)

    @property
    def procedural(self) -> ProceduralPairs | None:
        """The dead-leaves pair generator of the training split (None for ``train_source=photos``).

        Its images use the embedded dataset's kernel and noise parameters and, with
        ``procedural.colors=photos``, colours drawn from the training photos (never from
        validation); ``procedural.pair(epoch, index)`` gives ``(blurred, sharp, kernel)``.
        """
        if self.train_source == "photos":
            return None
        if self._procedural is None:
            self._resolve()
            palette = None
            if self.procedural_colors == "photos":
                sharp = sorted({p.sharp for p in self._photo_train})
                if not sharp:
                    raise DataError(
                        "data.embedded.procedural.colors=photos needs training photos, but the "
                        "embedded training split is empty; use procedural.colors=lab."
                    )
                rng = np.random.default_rng([self.seed, 0xC010])
                palette = palette_from_images([read_image(p) for p in sharp], rng)
            self._procedural = ProceduralPairs(
                size=self._procedural_size(),
                blur=self._camera_shake(),
                seed=self.seed,
                params=self.dead_leaves,
                palette=palette,
            )
        return self._procedural

    @property
    def val_pairs(self) -> list[Pair]:
        """Validation pairs: full-resolution, never sharing a group with the training pairs."""
        return self._resolve()["val"]

    @property
    def test_pairs(self) -> list[Pair]:
        """Test pairs: the dataset's test split, else the validation pairs."""
        return self._resolve()["test"]

    # -------------------------------------------------------------- datasets
    def prepare_data(self) -> None:
        """Read the pairs once per node before ``setup`` (data=embedded: build it on first use)."""
        self._resolve()

    def _pre_crop(self) -> int | None:
        if not self.pre_crop_scale or not self.crop_size:
            return None
        if self.pre_crop_scale < 1.0:
            raise DataError(f"data.pre_crop_scale must be >= 1 or null, got {self.pre_crop_scale}.")
        return int(round(self.crop_size * self.pre_crop_scale))

    def _make(self, split: str) -> Dataset:
        if split == "val_subset":  # data.val_pairs_during_training: evenly spaced, fixed
            pairs = subsample(self._resolve()["val"], self.val_pairs_during_training)
        else:
            pairs = self._resolve()[split]
        train = split == "train"
        # augment_on=gpu: training items stay uint8 (a quarter of the bytes through the workers
        # and pinned memory); TensorAugment scales them to [-1, 1] on the device
        raw = train and self._tensor_augment is not None
        transform = (
            build_train_transform(
                self.augment,
                self.crop_size,
                paired=self.task == "paired",
                seed=self.seed,
                pre_crop=self._pre_crop(),
            )
            if train and self._tensor_augment is None
            else None
        )
        if train and self._tensor_augment is not None:
            pre = self._pre_crop()
            if pre is None:
                raise DataError(
                    "data.augment_on=gpu needs data.pre_crop_scale (e.g. 1.6) and data.crop_size: "
                    "the workers cut a square patch that the GPU then warps and crops. Set them, "
                    "or use data.augment_on=cpu for whole-frame augmentation."
                )
            # the CPU path's first two steps (PadIfNeeded + RandomCrop of the patch) only
            transform = build_train_transform(
                None, pre, paired=self.task == "paired", seed=self.seed
            )
        ds: Dataset
        if train and self.train_blur == "fresh":
            ds = ProceduralDataset(self._reblurred(pairs), len(pairs), self.task, uint8=raw)
        elif self.task == "classify":
            ds = ClassificationDataset(pairs, transform, cache=self._image_cache, uint8=raw)
        else:
            with_kernel = not train and bool(pairs) and all(p.kernel is not None for p in pairs)
            ds = PairedDataset(
                pairs, transform, cache=self._image_cache, with_kernel=with_kernel, uint8=raw
            )
        if train and self.procedural is not None:
            # dead-leaves pairs are drawn at the size of a photo item (the crop, or the GPU's
            # pre-crop patch) and skip the CPU augmentations: the model is stationary and
            # isotropic, so flips, rotations and warps would only cost time
            procedural = ProceduralDataset(
                self.procedural, self.procedural_per_epoch, self.task, uint8=raw
            )
            ds = (
                procedural if self.train_source == "procedural" else ConcatSamples([ds, procedural])
            )
        return ds

    def _reblurred(self, pairs: Sequence[Pair]) -> ReblurredPhotos:
        """``train_blur=fresh``: the sharp photos of ``pairs``, augmented and blurred per sample.

        The augmentations run on the sharp image only, at the item size plus the kernel's margin
        (the GPU path: the margin around its pre-crop patch), and the blur comes after them.
        """
        blur = self._camera_shake()
        size = self._procedural_size()
        big = size + 2 * blur.margin
        if self._tensor_augment is not None:
            transform = build_train_transform(None, big, paired=False, seed=self.seed)
        else:
            pre = self._pre_crop()
            transform = build_train_transform(
                self.augment,
                big,
                paired=False,
                seed=self.seed,
                pre_crop=None if pre is None else int(round(big * float(self.pre_crop_scale))),
            )
        cache = self._image_cache
        return ReblurredPhotos(
            sharp=[p.sharp for p in pairs],
            read=cache.read if cache is not None else read_image,
            transform=transform,
            size=size,
            blur=blur,
            seed=self.seed,
            names=[p.name for p in pairs],
        )

    def _camera_shake(self) -> CameraShake:
        """The blur of generated training pairs: the embedded build's kernel and noise keys."""
        e = self.embedded
        return CameraShake(
            kernel_size=int(e["kernel_size"]),
            min_length=float(e["min_length"]),
            max_length=None if e["max_length"] is None else float(e["max_length"]),
            noise_sigma=float(e["noise_sigma"]),
        )

    # ------------------------------------------------------------ fail early
    def check_sizes(self, min_side: int | None = None, split: str = "val") -> None:
        """Before training: every image of ``split`` is readable and at least ``min_side`` px.

        Reads each file of the split (blurred, sharp and kernel files) and its header, without
        decoding the pixels: a missing, empty, truncated or undecodable file, a pair whose two
        images differ in size and an image whose smaller side is below ``min_side`` (default
        ``data.min_val_side``; a generator's ``min_size``) are all named in one
        :class:`~deblur.data.io.DataError`, instead of failing after a training epoch.
        """
        from concurrent.futures import ThreadPoolExecutor

        pairs = self._resolve()[split]
        min_side = self.min_val_side if min_side is None else int(min_side)

        def inspect(pair: Pair) -> tuple[str | None, tuple[int, int] | None]:
            try:
                size = image_size(pair.blur, check=True)
                sharp = image_size(pair.sharp, check=True)
                if pair.kernel is not None:
                    read_kernel(pair.kernel)
            except (ImageReadError, DataError) as exc:
                return str(exc), None
            if sharp != size:
                return (
                    f"pair '{pair.name}': blurred '{pair.blur}' is {size[1]}x{size[0]} but sharp "
                    f"'{pair.sharp}' is {sharp[1]}x{sharp[0]}",
                    None,
                )
            return None, size

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(pairs)))) as pool:
            results = list(pool.map(inspect, pairs)) if pairs else []
        broken = [msg for msg, _ in results if msg]
        small = [
            (pair, size)
            for pair, (_, size) in zip(pairs, results)
            if size is not None and min_side and min(size) < min_side
        ]
        if not broken and not small:
            return
        parts = []
        if broken:
            shown = " | ".join(broken[:3]) + (
                f" | and {len(broken) - 3} more" if len(broken) > 3 else ""
            )
            parts.append(f"{len(broken)} pair(s) cannot be read: {shown}")
        if small:
            shown = ", ".join(f"'{p.blur}' ({s[1]}x{s[0]})" for p, s in small[:5])
            more = f" and {len(small) - 5} more" if len(small) > 5 else ""
            parts.append(
                f"{len(small)} image(s) have a side below {min_side} px, the smallest the "
                f"generator takes (data.min_val_side): {shown}{more}"
            )
        fix = (
            "Fix or remove these files, or (on a huge set checked once) skip this check with "
            "data.check_train_files=false."
            if split == "train"
            else "Fix or remove these files (validation images are used at full resolution), "
            "or, for a generator that takes smaller images, lower data.min_val_side."
        )
        raise DataError(
            f"The {split} split of data={self.name} ({len(pairs)} pairs) is not usable, found "
            f"before training: {'; '.join(parts)}. {fix}"
        )

    def _warn_small_training_images(self) -> None:
        """One warning with the count of training images smaller than the crop (reflect-padded)."""
        from concurrent.futures import ThreadPoolExecutor

        pairs = self._resolve()["train"]
        if not self.crop_size or not pairs:
            return
        crop = int(self.crop_size)

        def side(pair: Pair) -> tuple[int, int] | None:
            try:
                return image_size(pair.blur)
            except (ImageReadError, DataError):
                return None  # named when the pair is loaded

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(pairs)))) as pool:
            sizes = list(pool.map(side, pairs))
        small = [(p, s) for p, s in zip(pairs, sizes) if s is not None and min(s) < crop]
        if small:
            p, s = small[0]
            log.warning(
                "%d of %d training images are smaller than data.crop_size=%d on a side (e.g. "
                "'%s', %dx%d): their crops are reflect-padded, i.e. partly mirrored copies. Use "
                "a smaller data.crop_size or larger images.",
                len(small),
                len(pairs),
                crop,
                p.blur,
                s[1],
                s[0],
            )

    def setup(self, stage: str | None = None) -> None:
        """Resolve the pairs and build the datasets the stage needs (idempotent)."""
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
        }.get(stage or "", ("train", "val", "test"))
        missing = [s for s in wanted if s not in self._datasets]
        if not missing:
            return
        splits = self._resolve()
        for split in missing:  # fail early: not after the first training epoch
            if split == "train":
                if self.check_train_files:  # data.check_train_files=false skips it on huge sets
                    self.check_sizes(min_side=0, split="train")
                self._warn_small_training_images()
            else:
                if split == "val" and not splits["val"]:
                    raise DataError(
                        f"data={self.name} has no validation pairs (layout '{self.layout}', root "
                        f"{self.root or 'the default folder'}, data.val_fraction="
                        f"{self.val_fraction}), so no checkpoint could be picked and the run "
                        "could not finish. Fix: data.val_fraction=0.1 (hold out training "
                        "sequences), data.val_sequences=[<names>], or a val/ folder in the "
                        "dataset."
                    )
                self.check_sizes(split=split)
        paths = [p for s in missing for q in splits[s] for p in (q.blur, q.sharp)]
        if self.cache == AUTO:  # decided once, at the first setup (fit: train + val)
            self.cache = cache_decision(AUTO, self.on_gpu, paths)
        if self.cache:
            new = ImageCache.preload(
                p for p in paths if self._image_cache is None or p not in self._image_cache
            )
            if self._image_cache is None:
                self._image_cache = new
            else:
                self._image_cache.images.update(new.images)
        for split in missing:
            self._datasets[split] = self._make(split)

    def dataset(self, split: str) -> Dataset:
        """The torch Dataset of ``split`` (``train``, ``val`` or ``test``)."""
        if split == "val_subset" and split not in self._datasets:
            self.setup("validate")
            self._datasets[split] = self._make(split)
        if split not in self._datasets:
            self.setup({"train": "fit", "val": "validate", "test": "test"}[split])
        return self._datasets[split]

    # ----------------------------------------------------------- dataloaders
    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        if len(ds) == 0 and split == "train":
            raise DataError(
                f"data={self.name} has no training pairs (layout '{self.layout}', root "
                f"'{self.root}'). Check data.root and the layout, or data.max_train_pairs."
            )
        workers = self.num_workers
        kwargs: dict[str, Any] = {
            "batch_size": batch_size,
            # (index, augmentation seed) pairs fixed by (seed, epoch): reproducible and resumable
            "sampler": EpochSeededSampler(len(ds), seed=self.seed, shuffle=shuffle),
            "num_workers": workers,
            "pin_memory": self.pin_memory,
            "worker_init_fn": worker_init_fn,
            "persistent_workers": self.persistent_workers and workers > 0,
        }
        if workers > 0 and self.multiprocessing_context:
            kwargs["multiprocessing_context"] = self.multiprocessing_context
        return DataLoader(ds, **kwargs)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """data.augment_on=gpu: the augmentations, on the device, for training batches only."""
        trainer = getattr(self, "trainer", None)
        if self._tensor_augment is not None and trainer is not None and trainer.training:
            batch = self._tensor_augment(batch, epoch=int(trainer.current_epoch))
        elif self._tensor_augment is not None:  # a uint8 training batch outside training
            batch = self._tensor_augment.to_float(batch)
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """The validation pairs; while fitting, the fixed ``data.val_pairs_during_training``
        subset when set (the full set validates the final weights after the fit, in
        :func:`deblur.systems.fit.fit_gan` / ``fit_classifier``, and in ``deblur.evaluate``)."""
        trainer = getattr(self, "trainer", None)
        during_fit = trainer is not None and trainer.state.fn == "fit"
        split = "val_subset" if self.val_pairs_during_training and during_fit else "val"
        return self._loader(split, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size, shuffle=False)
