"""Contact sheet of sharp / blurred / kernel triples, ``python -m deblur.data.preview data=...``:
``preview.png`` in the run folder (or ``out=...``), its path printed. Procedural training pairs
(``data.embedded.train_source``: the split shown then) are those of epoch 0."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from deblur.config import CONF_DIR
from deblur.data.io import read_image, read_kernel, write_image
from deblur.data.pairs import Pair

_LABEL_H = 22


def _fit(image: np.ndarray, tile: int) -> np.ndarray:
    """Resize to ``tile`` pixels high (aspect kept)."""
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if h > tile else cv2.INTER_NEAREST
    return cv2.resize(image, (max(1, round(w * tile / h)), tile), interpolation=interp)


def _text(image: np.ndarray, text: str, at: tuple[int, int], scale: float, colour: int) -> None:
    font, line = cv2.FONT_HERSHEY_SIMPLEX, cv2.LINE_AA
    cv2.putText(image, text, at, font, scale, (colour,) * 3, 1, line)


def _kernel_tile(kernel: np.ndarray | None, tile: int) -> np.ndarray:
    if kernel is None:
        out = np.full((tile, tile, 3), 40, np.uint8)
        _text(out, "kernel unknown", (8, tile // 2), 0.5, 200)
        return out
    k8 = np.round(kernel / max(float(kernel.max()), 1e-12) * 255).astype(np.uint8)
    big = cv2.resize(k8, (tile, tile), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(cv2.applyColorMap(big, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((_LABEL_H, image.shape[1], 3), 255, np.uint8)
    _text(bar, text[:60], (4, 16), 0.45, 0)
    return np.concatenate([bar, image], axis=0)


class Sample(NamedTuple):
    """A pair already in memory (e.g. a procedural one): uint8 RGB images and the kernel."""

    name: str
    sharp: np.ndarray
    blur: np.ndarray
    kernel: np.ndarray | None = None


def contact_sheet(pairs: Sequence[Pair | Sample], tile: int = 256) -> np.ndarray:
    """One row per pair: sharp | blurred | kernel (colour-mapped, scaled to its maximum)."""
    if not pairs:
        raise ValueError("contact_sheet needs at least one pair.")
    rows = []
    for item in pairs:
        if not isinstance(item, Sample):
            kernel = read_kernel(item.kernel) if item.kernel is not None else None
            item = Sample(item.name, read_image(item.sharp), read_image(item.blur), kernel)
        name, sharp, blur, kernel = item
        ksize = f" {kernel.shape[0]}x{kernel.shape[1]}" if kernel is not None else ""
        cells = [
            _label(_fit(sharp, tile), f"sharp  {name}"),
            _label(_fit(blur, tile), "blurred"),
            _label(_kernel_tile(kernel, tile), f"kernel{ksize}"),
        ]
        gap = np.full((tile + _LABEL_H, 4, 3), 255, np.uint8)
        rows.append(np.concatenate([c for cell in cells for c in (cell, gap)][:-1], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


def preview_samples(dm, split: str, n: int) -> list[Pair | Sample]:
    """``n`` items evenly spaced over ``split``: file pairs, then (train) the procedural pairs."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split}: choose train, val or test.")
    items: list[Pair | int] = list(getattr(dm, f"{split}_pairs"))
    generator = dm.procedural if split == "train" else None
    items += list(range(dm.procedural_per_epoch)) if generator is not None else []
    if not items:
        raise ValueError(f"The {split} split of data={dm.name} is empty: nothing to preview.")
    n = max(1, min(int(n), len(items)))
    out: list[Pair | Sample] = []
    for item in (items[i] for i in np.linspace(0, len(items) - 1, n).round().astype(int)):
        if isinstance(item, int):  # a procedural pair of epoch 0
            blur, sharp, kernel = generator.pair(0, item)
            item = Sample(generator.name(0, item), sharp, blur, kernel)
        out.append(item)
    return out


@hydra.main(config_path=str(CONF_DIR), config_name="preview", version_base="1.3")
def main(cfg: DictConfig) -> str:
    """Compose ``conf/preview.yaml``, pick ``n`` pairs of ``split`` and write the sheet."""
    dm = instantiate(cfg.data, task="paired")
    # null: the procedural training data when there is some (what a person wants to see then)
    split = cfg.split or ("train" if dm.train_source != "photos" else "val")
    out = Path(cfg.out or Path(HydraConfig.get().runtime.output_dir) / "preview.png")
    write_image(out, contact_sheet(preview_samples(dm, split, cfg.n), cfg.tile))
    print(out.resolve())
    return str(out)


if __name__ == "__main__":
    main()
