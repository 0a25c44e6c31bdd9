"""Contact sheet of sharp / blurred / kernel triples: ``python -m deblur.data.preview data=embedded``.

Writes ``preview.png`` into the run folder (or ``out=...``) and prints its path, so a person can
look at the blur a dataset trains on.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from deblur.config import CONF_DIR
from deblur.data.io import read_image, read_kernel, write_image
from deblur.data.pairs import Pair

__all__ = ["contact_sheet", "main"]

_LABEL_H = 22


def _fit(image: np.ndarray, tile: int) -> np.ndarray:
    """Resize to ``tile`` pixels high (aspect kept)."""
    h, w = image.shape[:2]
    width = max(1, round(w * tile / h))
    interp = cv2.INTER_AREA if h > tile else cv2.INTER_NEAREST
    return cv2.resize(image, (width, tile), interpolation=interp)


def _kernel_tile(kernel: np.ndarray | None, tile: int) -> np.ndarray:
    if kernel is None:
        out = np.full((tile, tile, 3), 40, np.uint8)
        cv2.putText(
            out,
            "kernel unknown",
            (8, tile // 2),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (200, 200, 200),
            1,
            cv2.LINE_AA,
        )
        return out
    k = kernel / max(float(kernel.max()), 1e-12)
    k8 = np.round(k * 255).astype(np.uint8)
    big = cv2.resize(k8, (tile, tile), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(cv2.applyColorMap(big, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)


def _label(image: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((_LABEL_H, image.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text[:60], (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


def contact_sheet(pairs: Sequence[Pair], tile: int = 256) -> np.ndarray:
    """One row per pair: sharp | blurred | kernel (colour-mapped, scaled to its maximum)."""
    if not pairs:
        raise ValueError("contact_sheet needs at least one pair.")
    rows = []
    for pair in pairs:
        sharp, blur = read_image(pair.sharp), read_image(pair.blur)
        kernel = read_kernel(pair.kernel) if pair.kernel is not None else None
        ksize = f" {kernel.shape[0]}x{kernel.shape[1]}" if kernel is not None else ""
        cells = [
            _label(_fit(sharp, tile), f"sharp  {pair.name}"),
            _label(_fit(blur, tile), "blurred"),
            _label(_kernel_tile(kernel, tile), f"kernel{ksize}"),
        ]
        gap = np.full((tile + _LABEL_H, 4, 3), 255, np.uint8)
        row = np.concatenate([c for cell in cells for c in (cell, gap)][:-1], axis=1)
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows, axis=0)


@hydra.main(config_path=str(CONF_DIR), config_name="preview", version_base="1.3")
def main(cfg: DictConfig) -> str:
    """Compose ``conf/preview.yaml``, pick ``n`` pairs of ``split`` and write the sheet."""
    dm = instantiate(cfg.data, task="paired")
    pairs = {"train": dm.train_pairs, "val": dm.val_pairs, "test": dm.test_pairs}[cfg.split]
    step = max(1, len(pairs) // max(1, int(cfg.n)))
    chosen = pairs[::step][: int(cfg.n)]
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    out = Path(cfg.out) if cfg.out else run_dir / "preview.png"
    write_image(out, contact_sheet(chosen, int(cfg.tile)))
    print(out.resolve())
    return str(out)


if __name__ == "__main__":
    main()
