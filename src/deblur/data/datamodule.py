"""One LightningDataModule for every dataset layout and both tasks (GAN pairs, blur classifier),
``hydra.utils.instantiate(cfg.data, task=...)``; its batches are in docs/DESIGN.md, Data."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from deblur.data.blur import CameraShake
from deblur.data.datasets import (
    ClassificationDataset,
    ConcatSamples,
    ImageCache,
    PairedDataset,
    ProceduralDataset,
)
from deblur.data.deadleaves import DeadLeaves, ProceduralPairs, ReblurredPhotos, palette_from_images
from deblur.data.gpu_augment import AUGMENT_ON, TensorAugment
from deblur.data.io import DataError, image_size, instantiate_node, read_image, read_kernel
from deblur.data.pairs import Pair, listing, split_by_group, subsample
from deblur.data.sampling import EpochSeededSampler
from deblur.data.transforms import AugmentList, build_train_transform

log = logging.getLogger(__name__)

TASKS = ("paired", "classify")
SPLITS = ("train", "val", "test")
AUTO = "auto"
_STAGES = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
_KERNEL_KEYS = ("kernel_size", "min_length", "max_length", "noise_sigma")  # CameraShake's

# data.num_workers / cache = auto: a GPU trainer needs a loader that keeps up (~600 pairs/s at
# batch 16); on the CPU, workers would take the training threads' cores (two, and no cache).


def processes_per_node() -> int:
    """Training processes sharing this node's cores and RAM (DDP: one per GPU)."""
    counts = [os.environ.get(k, "") for k in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE")]
    return next((int(v) for v in counts if v.isdigit() and int(v) > 0), 1)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def loader_workers(setting: int | str, on_gpu: bool) -> int:
    """An int as given; ``auto``: (cores - 2) / processes on a GPU (>= 1; 2 for the training
    process and its pin-memory thread), else min(2, cores)."""
    if setting != AUTO:
        return int(setting)
    cores = _cores()
    workers = max(1, (cores - 2) // processes_per_node()) if on_gpu else min(2, cores)
    device = "GPU" if on_gpu else "CPU"
    log.info(f"data.num_workers=auto: {workers} worker(s) ({cores} cores, {device} trainer).")
    return workers


def available_ram() -> int:
    """Bytes of RAM the kernel can give without swapping (MemAvailable), 0 if unknown."""
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        return next(int(x.split()[1]) * 1024 for x in lines if x.startswith("MemAvailable:"))
    return 0


def decoded_bytes(paths: Iterable[Path]) -> int:
    """Bytes of the decoded uint8 RGB images at ``paths`` (from the file headers)."""
    total = 0
    for path in set(paths):
        with contextlib.suppress(DataError):  # named when the pair is loaded
            h, w = image_size(path)
            total += h * w * 3
    return total


def cache_decision(setting: bool | str, on_gpu: bool, paths: Iterable[Path]) -> bool:
    """A bool as given; ``auto``: on a GPU trainer, when the decoded images fit in half of the
    free RAM (shared by the node's processes), said in the log."""
    if setting != AUTO:
        return bool(setting)
    if not on_gpu:
        return False
    need, budget = decoded_bytes(paths), available_ram() // (2 * processes_per_node())
    cache = 0 < need <= budget
    where = "cached in RAM" if cache else "read from disk each epoch (data.cache=true forces it)"
    log.info(
        f"data.cache=auto: the decoded images take {need / 2**30:.2f} GiB, half the free RAM per "
        f"process is {budget / 2**30:.2f} GiB: {where}."
    )
    return cache


def _choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise DataError(f"{key} must be one of {', '.join(choices)}, got '{value}'.")


@dataclass
class TrainingMix:
    """The checked ``data.embedded`` mix: ``train_source`` photos | procedural (dead leaves) | both,
    ``train_blur`` fixed | fresh (blurred per seed, epoch, index); defaults: other data's."""

    train_source: str = "photos"
    train_blur: str = "fixed"
    procedural_per_epoch: int = 0
    procedural: dict[str, Any] | None = None
    data: str = "embedded"  # data=<name> (layout '<reader>'), for the messages
    embedded: bool = True  # data.embedded has the kernel and noise keys generated pairs need
    crop_size: int | None = None
    colors: str | None = field(init=False, default=None)
    dead_leaves: DeadLeaves | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        _choice("data.embedded.train_source", self.train_source, ("photos", "procedural", "both"))
        _choice("data.embedded.train_blur", self.train_blur, ("fixed", "fresh"))
        for key, plain in (("train_source", "photos"), ("train_blur", "fixed")):
            if (value := getattr(self, key)) == plain:
                continue
            if not self.embedded:
                raise DataError(
                    f"data.embedded.{key}={value} makes pairs with the kernel and noise keys of "
                    f"data=embedded (data=embedded only), but {self.data}'s blurred images are "
                    f"real. Use data=embedded, or leave {key} at {plain}."
                )
            if not self.crop_size:
                raise DataError(
                    f"data.embedded.{key}={value} makes training images at the crop size, but "
                    f"data.crop_size is null. Set data.crop_size (e.g. 256), or {key}={plain}."
                )
        self.procedural_per_epoch = int(self.procedural_per_epoch or 0)
        if (src := self.train_source) != "photos" and self.procedural_per_epoch < 1:
            raise DataError(
                f"data.embedded.train_source={src} needs data.embedded.procedural_per_epoch >= 1 "
                f"(pairs per epoch), got {self.procedural_per_epoch}."
            )
        if (procedural := dict(self.procedural or {})) or src != "photos":  # empty: names the keys
            self.colors = str(procedural.pop("colors", None))
            self.dead_leaves = DeadLeaves.from_config(procedural)
            _choice("data.embedded.procedural.colors", self.colors, ("photos", "lab"))


_MIX_KEYS = tuple(f.name for f in fields(TrainingMix)[:4])


def _training_mix(embedded: dict[str, Any], data: str, crop_size: int | None) -> TrainingMix:
    """The mix keys of ``data.embedded`` (removed from it: the rest are build parameters)."""
    mix = {k: embedded.pop(k) for k in _MIX_KEYS if k in embedded}
    is_embedded = set(_KERNEL_KEYS) <= embedded.keys()
    if is_embedded and (missing := [k for k in _MIX_KEYS if k not in mix]):
        raise DataError(
            f"data.embedded lacks {', '.join(missing)}, set in conf/data/embedded.yaml: restore "
            f"it there or give +data.embedded.{missing[0]}=... on the command line."
        )
    return TrainingMix(**mix, data=data, embedded=is_embedded, crop_size=crop_size)


def worker_init_fn(worker_id: int) -> None:
    """Per DataLoader worker: no OpenCV threads (torch seeds numpy and random apart, the sampler
    each sample's augmentation)."""
    cv2.setNumThreads(0)


def _build_layout(layout: Mapping[str, Any]) -> tuple[Callable[..., Any], str]:
    """``data.layout`` (a ``_target_`` / ``_partial_`` node) -> (``reader(root) -> splits``,
    the reader's name)."""
    example = "{_target_: deblur.data.pairs.read_gopro, _partial_: true} (conf/data/*.yaml)"
    fix = "data.layout names a reader of deblur.data.pairs; a function needs _partial_: true."
    reader = instantiate_node(layout, "data.layout", example, fix, (Callable, "a reader"))
    func = getattr(reader, "func", reader)
    return reader, str(getattr(func, "__name__", type(func).__name__))


def _inspect(pair: Pair, check: bool) -> tuple[str | None, tuple[int, int] | None]:
    """``(problem, size)`` of a pair from its headers; ``check`` reads every file whole."""
    try:
        size = image_size(pair.blur, check=check)
        sharp = image_size(pair.sharp, check=True) if check else size
        if check and pair.kernel is not None:
            read_kernel(pair.kernel)
    except DataError as exc:  # ImageReadError included
        return (str(exc) if check else None), None
    if sharp == size:
        return None, size
    b, s = f"'{pair.blur}' is {size[1]}x{size[0]}", f"'{pair.sharp}' is {sharp[1]}x{sharp[0]}"
    return f"pair '{pair.name}': blurred {b} but sharp {s}", None


def _inspect_all(pairs: Sequence[Pair], check: bool) -> list[tuple[str | None, Any]]:
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(pairs)))) as pool:
        return list(pool.map(partial(_inspect, check=check), pairs))


@dataclass(eq=False, repr=False, kw_only=True)
class DeblurDataModule(pl.LightningDataModule):
    """Pairs from a layout, batched for ``task`` paired or classify (docs/DESIGN.md, Data); fields:
    ``data.*`` keys, but ``task`` and ``on_gpu`` (the trainer's device, for the ``auto`` values)."""

    task: str
    name: str
    layout: Mapping[str, Any]
    root: str | Path | None
    blur_key: str
    crop_size: int | None
    pre_crop_scale: float | None
    batch_size: int
    val_batch_size: int
    num_workers: int | str
    pin_memory: bool | None
    persistent_workers: bool
    multiprocessing_context: str | None
    cache: bool | str
    augment: AugmentList
    augment_on: str
    val_fraction: float
    val_sequences: Sequence[str] | None = None
    max_train_pairs: int | None
    max_val_pairs: int | None
    max_test_pairs: int | None
    min_val_side: int | None
    seed: int
    variant: str | None = None
    embedded: Mapping[str, Any] | None = None
    check_train_files: bool = True
    val_pairs_during_training: int | None = None
    on_gpu: bool = False
    _procedural: ProceduralPairs | None = field(init=False, default=None)
    _splits: dict[str, list[Pair]] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        super().__init__()
        _choice("DeblurDataModule task", self.task, TASKS)
        _choice("data.augment_on", self.augment_on, AUGMENT_ON)
        self.read_pairs, self.layout = _build_layout(self.layout)
        self.root = None if self.root in (None, "") else Path(str(self.root)).expanduser()
        self.num_workers = loader_workers(self.num_workers, self.on_gpu)
        if self.pin_memory is None:
            self.pin_memory = torch.cuda.is_available()
        self._tensor_augment = None  # augment_on=gpu: the workers cut the patch, the GPU warps it
        if self.augment_on == "gpu":
            self._tensor_augment = TensorAugment(self.augment, self.crop_size, self.seed)
        seqs = self.val_sequences
        self.val_sequences = [str(v) for v in ([seqs] if isinstance(seqs, str) else seqs or [])]
        self.embedded = dict(self.embedded or {})  # minus the mix: the build parameters
        data = f"data={self.name} (layout '{self.layout}')"
        self.mix = _training_mix(self.embedded, data, self.crop_size)
        self.train_source, self.train_blur = self.mix.train_source, self.mix.train_blur
        self.procedural_per_epoch = self.mix.procedural_per_epoch
        self._datasets: dict[str, Dataset] = {}
        self._image_cache = ImageCache()  # filled by setup when data.cache is on

    def _resolve(self) -> dict[str, list[Pair]]:
        if self._splits is not None:
            return self._splits
        found = self.read_pairs(self.root)
        train = found.get("train", [])
        # validation (what picks best.ckpt): training groups named by the user, else the dataset's
        # val split, else held-out training groups; never the test split (evaluate's: a leak)
        if self.val_sequences:
            groups, held = {p.group for p in train}, set(self.val_sequences)
            if unknown := sorted(held - groups):
                raise DataError(
                    f"data.val_sequences names {', '.join(unknown)}, not training sequences of "
                    f"{self.name} ({len(groups)}: {listing(groups, 8)}). Name some of those, or "
                    "data.val_sequences=null."
                )
            if held >= groups:
                raise DataError(
                    f"data.val_sequences holds out every training sequence of {self.name}, "
                    "leaving none to train on: name fewer."
                )
            val = [p for p in train if p.group in held]
            train = [p for p in train if p.group not in held]
        elif "val" in found:
            val = found["val"]
        else:
            train, val = split_by_group(train, self.val_fraction, self.seed)
        self._photo_train = list(train)  # the colour palette of procedural images comes from these
        files = ([] if self.train_source == "procedural" else train, val, found.get("test", val))
        limits = (self.max_train_pairs, self.max_val_pairs, self.max_test_pairs)
        self._splits = {k: subsample(v, n) for k, v, n in zip(SPLITS, files, limits)}
        n = [len(v) for v in self._splits.values()]
        leaves = f" + {self.procedural_per_epoch} procedural (dead-leaves) train pairs per epoch"
        log.info(
            f"data={self.name} ({self.layout} at {self.root or 'the default folder'}): {n[0]} train"
            f" / {n[1]} val / {n[2]} test pairs{leaves if self.train_source != 'photos' else ''}."
        )
        return self._splits

    @property
    def train_pairs(self) -> list[Pair]:
        """Training pairs from files (none for ``train_source=procedural``)."""
        return self._resolve()["train"]

    @property
    def val_pairs(self) -> list[Pair]:
        """Validation pairs: full-resolution, never sharing a group with the training pairs."""
        return self._resolve()["val"]

    @property
    def test_pairs(self) -> list[Pair]:
        """Test pairs: the dataset's test split, else the validation pairs."""
        return self._resolve()["test"]

    @property
    def procedural(self) -> ProceduralPairs | None:
        """The dead-leaves pairs of the training split (None for ``train_source=photos``); with
        ``procedural.colors=photos`` their colours come from the training photos."""
        if self.train_source == "photos":
            return None
        if self._procedural is None:
            self._resolve()
            palette = None
            if self.mix.colors == "photos":
                sharp = sorted({p.sharp for p in self._photo_train})
                rng = np.random.default_rng([self.seed, 0xC010])
                palette = palette_from_images([read_image(p) for p in sharp], rng)
            self._procedural = ProceduralPairs(
                self._item_size(), self._camera_shake(), self.seed, self.mix.dead_leaves, palette
            )
        return self._procedural

    def _camera_shake(self) -> CameraShake:
        return CameraShake(**{k: self.embedded[k] for k in _KERNEL_KEYS})

    def prepare_data(self) -> None:
        """Read the pairs once per node before ``setup`` (data=embedded: build it on first use)."""
        self._resolve()

    def _pre_crop(self, size: int | None) -> int | None:
        """The side of the patch augmented before the centre ``size`` crop (None: the image)."""
        if not self.pre_crop_scale or not size:
            return None
        if self.pre_crop_scale < 1.0:
            raise DataError(f"data.pre_crop_scale must be >= 1 or null, got {self.pre_crop_scale}.")
        return int(round(size * self.pre_crop_scale))

    def _item_size(self) -> int | None:
        """Side of a training item: the crop, or (augment_on=gpu) the patch the GPU warps."""
        if self._tensor_augment is None:
            return self.crop_size
        if (pre := self._pre_crop(self.crop_size)) is None:
            raise DataError(
                "data.augment_on=gpu needs data.pre_crop_scale (e.g. 1.6) and data.crop_size: "
                "the workers cut a square patch that the GPU then warps and crops. Set them, "
                "or use data.augment_on=cpu for whole-frame augmentation."
            )
        return pre

    def _train_transform(self, size: int | None, paired: bool) -> Any:
        """Pad + random crop to ``size`` (augment_on=gpu: the patch, the rest is on the GPU), or
        the ``data.augment`` list on a pre-crop patch, then the centre ``size``."""
        if self._tensor_augment is not None:
            return build_train_transform(None, size, paired=paired, seed=self.seed)
        return build_train_transform(self.augment, size, paired, self.seed, self._pre_crop(size))

    def _make(self, split: str) -> Dataset:
        if split == "val_subset":  # data.val_pairs_during_training: evenly spaced, fixed
            pairs = subsample(self._resolve()["val"], self.val_pairs_during_training)
        else:
            pairs = self._resolve()[split]
        cache, classify = self._image_cache, self.task == "classify"
        if split != "train":
            if classify:
                return ClassificationDataset(pairs, cache=cache)
            with_kernel = bool(pairs) and all(p.kernel is not None for p in pairs)
            return PairedDataset(pairs, cache=cache, with_kernel=with_kernel)
        # augment_on=gpu: items stay uint8 (a quarter of the bytes through the workers and
        # pinned memory); TensorAugment scales them to [-1, 1] on the device
        raw, size = self._tensor_augment is not None, self._item_size()
        ds: Dataset
        if self.train_blur == "fresh":
            ds = ProceduralDataset(self._reblurred(pairs, size), len(pairs), self.task, raw)
        else:
            transform = self._train_transform(size, paired=not classify)
            kind = ClassificationDataset if classify else PairedDataset
            ds = kind(pairs, transform, cache=cache, uint8=raw)
        if self.procedural is not None:
            # dead-leaves pairs come at the item size and skip the CPU augmentations: the model
            # is stationary and isotropic, so flips, rotations and warps would only cost time
            leaves = ProceduralDataset(self.procedural, self.procedural_per_epoch, self.task, raw)
            ds = leaves if self.train_source == "procedural" else ConcatSamples([ds, leaves])
        return ds

    def _reblurred(self, pairs: Sequence[Pair], size: int) -> ReblurredPhotos:
        """``train_blur=fresh``: the augmentations on the sharp photo alone (at the item size plus
        the kernel's margin), then the blur."""
        blur, read = self._camera_shake(), self._image_cache.read
        transform = self._train_transform(size + 2 * blur.margin, paired=False)
        sharp, names = [p.sharp for p in pairs], [p.name for p in pairs]
        return ReblurredPhotos(sharp, read, transform, size, blur, self.seed, names)

    def check_sizes(self, min_side: int | None = None, split: str = "val") -> None:
        """Before training: every file of ``split`` is readable, both images of a pair have one
        size, at least ``min_side`` (``data.min_val_side``) a side; one DataError names them all."""
        pairs = self._resolve()[split]
        min_side = self.min_val_side if min_side is None else int(min_side)
        results, parts = _inspect_all(pairs, check=True), []
        if broken := [msg for msg, _ in results if msg]:
            parts.append(f"{len(broken)} pair(s) cannot be read: {listing(broken, 3, ' | ')}")
        small = [(p, s) for p, (_, s) in zip(pairs, results) if s and min(s) < (min_side or 0)]
        if small:
            parts.append(
                f"{len(small)} image(s) have a side below {min_side} px, the smallest the "
                f"generator takes (data.min_val_side): "
                + listing(f"'{p.blur}' ({s[1]}x{s[0]})" for p, s in small)
            )
        if not parts:
            return
        fix = "on a huge set, skip this check with data.check_train_files=false"
        if split != "train":  # validation images are used at full resolution
            fix = "for a generator that takes smaller images, lower data.min_val_side"
        raise DataError(
            f"The {split} split of data={self.name} ({len(pairs)} pairs) is not usable, found "
            f"before training: {'; '.join(parts)}. Fix or remove these files, or, {fix}."
        )

    def _warn_small_training_images(self) -> None:
        """One warning with the count of training images smaller than the crop (reflect-padded)."""
        pairs, crop = self._resolve()["train"], self.crop_size
        sizes = zip(pairs, _inspect_all(pairs, check=False) if crop else [])
        if small := [(p, s) for p, (_, s) in sizes if s is not None and min(s) < crop]:
            (p, s), n = small[0], len(small)
            log.warning(
                f"{n} of {len(pairs)} training images are smaller than data.crop_size={crop} on a "
                f"side (e.g. '{p.blur}', {s[1]}x{s[0]}): their crops are reflect-padded, i.e. "
                "partly mirrored copies. Use a smaller data.crop_size or larger images."
            )

    def setup(self, stage: str | None = None) -> None:
        """Resolve the pairs and build the datasets the stage needs (idempotent)."""
        wanted = _STAGES.get(stage or "", SPLITS)
        missing = [s for s in wanted if s not in self._datasets]
        if not missing:
            return
        splits = self._resolve()
        for split in missing:  # fail early: not after the first training epoch
            if split == "train":
                if self.check_train_files:  # data.check_train_files=false skips it on huge sets
                    self.check_sizes(min_side=0, split="train")
                self._warn_small_training_images()
                continue
            if split == "val" and not splits["val"]:
                raise DataError(
                    f"data={self.name} has no validation pairs (layout '{self.layout}', root "
                    f"{self.root or 'the default folder'}, data.val_fraction={self.val_fraction}),"
                    " so no checkpoint could be picked. Fix: data.val_fraction=0.1 (hold out "
                    "training sequences), data.val_sequences=[<names>], or a val/ folder."
                )
            self.check_sizes(split=split)
        paths = [p for s in missing for q in splits[s] for p in (q.blur, q.sharp)]
        self.cache = cache_decision(self.cache, self.on_gpu, paths)  # auto: at the first setup
        if self.cache:
            self._image_cache.preload(paths)
        for split in missing:
            self._datasets[split] = self._make(split)

    def dataset(self, split: str) -> Dataset:
        """The torch Dataset of ``split`` (``train``, ``val``, ``test`` or ``val_subset``)."""
        if split not in self._datasets:
            self.setup({"train": "fit", "test": "test"}.get(split, "validate"))
        if split == "val_subset" and split not in self._datasets:
            self._datasets[split] = self._make(split)
        return self._datasets[split]

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        if len(ds) == 0 and split == "train":
            raise DataError(
                f"data={self.name} has no training pairs (layout '{self.layout}', root "
                f"'{self.root}'). Check data.root and the layout, or data.max_train_pairs."
            )
        return DataLoader(
            ds,
            batch_size=batch_size,
            # (index, augmentation seed) pairs fixed by (seed, epoch): reproducible and resumable
            sampler=EpochSeededSampler(len(ds), seed=self.seed, shuffle=shuffle),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            worker_init_fn=worker_init_fn,
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            multiprocessing_context=self.multiprocessing_context if self.num_workers > 0 else None,
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """data.augment_on=gpu: the augmentations, on the device, for training batches only."""
        augment, trainer = self._tensor_augment, self.trainer
        if augment is None:
            return batch
        if trainer is not None and trainer.training:
            return augment(batch, epoch=int(trainer.current_epoch))
        return augment.to_float(batch)  # a uint8 training batch outside training

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """While fitting, the ``data.val_pairs_during_training`` subset when set."""
        during_fit = self.trainer is not None and self.trainer.state.fn == "fit"
        split = "val_subset" if self.val_pairs_during_training and during_fit else "val"
        return self._loader(split, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.val_batch_size, shuffle=False)
