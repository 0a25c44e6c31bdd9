"""The blur classifier as a blur detector: a 0..1 score per image (1 = blurred) to CSV.

``python -m deblur.blur_score ckpt=<classifier .ckpt> input=<file|folder|glob> output=scores.csv``
The score is ``sigmoid`` of the classifier logit, averaged (as logits) over tiles of the
training crop size, so large photos are judged at the scale the classifier learned. Files that
are not images or cannot be read are reported by name and counted; exit code 1 when no image
could be scored.
"""

from __future__ import annotations

import csv
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from deblur.cli import entry_point
from deblur.data.io import IMAGE_EXTENSIONS, DataError, read_image, to_tensor
from deblur.inference import pad_to_multiple, resolve_device, tile_starts
from deblur.inputs import (
    VIDEO_EXTENSIONS,
    OutputError,
    collect_inputs,
    ensure_writable_file,
    without_outputs,
)
from deblur.models.load import load_classifier

log = logging.getLogger(__name__)

SORTS = ("desc", "asc", "none")


@dataclass
class ScoreSummary:
    """Scores of the readable images and the files that could not be scored (with reasons)."""

    scores: list[tuple[Path, float]] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def report(self) -> str:
        lines = [
            f"[deblur.blur_score] scored {len(self.scores)} image(s); "
            f"{len(self.failed)} file(s) not scored."
        ]
        lines += [f"  not scored: {p}: {why}" for p, why in self.failed]
        return "\n".join(lines)


def _min_side(net: nn.Module) -> int:
    trunk = getattr(net, "trunk", None)
    return int(getattr(trunk, "min_size", 0) or 32)


@torch.inference_mode()
def blur_score(
    net: nn.Module, rgb_uint8: np.ndarray, tile: int | None = None, device: str = "auto"
) -> float:
    """Blur score of one uint8 RGB image: sigmoid of the mean logit over ``tile``-sized tiles."""
    dev = resolve_device(device)
    net = net.to(dev).eval()
    x = to_tensor(rgb_uint8).unsqueeze(0).to(dev)
    h, w = x.shape[-2:]
    if tile:
        crops = [
            x[:, :, y : y + tile, x0 : x0 + tile]
            for y in tile_starts(h, tile, 0)
            for x0 in tile_starts(w, tile, 0)
        ]
    else:
        crops = [x]
    logits = []
    for crop in crops:
        crop, _ = pad_to_multiple(crop, 1, _min_side(net))  # tiny images: mirror up to min size
        logits.append(net(crop).float().reshape(-1))
    return float(torch.sigmoid(torch.cat(logits).mean()))


def run_blur_score(cfg: DictConfig, net: nn.Module | None = None) -> ScoreSummary:
    """Score everything ``cfg.input`` names; writes the CSV ``cfg.output``; returns a summary."""
    from tqdm import tqdm

    sort = str(cfg.sort)
    if sort not in SORTS:
        raise ValueError(f"sort={sort}: choose one of {', '.join(SORTS)}.")
    out = Path(cfg.output).expanduser()
    _, files = collect_inputs(cfg.input, bool(cfg.recursive))
    files = without_outputs(files, out)  # a CSV of an earlier run inside the input folder
    if out.suffix.lower() in (*IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS):
        raise OutputError(
            f"output={out} is the name of an image or video; the scores are a CSV file. Give e.g. "
            f"output={out.with_suffix('.csv')}."
        )
    ensure_writable_file(out)  # before the model runs: a typo costs seconds, not the whole scan
    if net is None:
        net = load_classifier(cfg.ckpt)
    tile_opt = cfg.tile
    tile = getattr(net, "crop_size", None) if str(tile_opt) == "auto" else tile_opt
    tile = int(tile) if tile else None
    device = str(cfg.device)
    summary = ScoreSummary()
    progress = bool(cfg.progress)
    for path in tqdm(files, desc="blur score", unit="img", disable=not progress):
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            reason = f"not an image (suffix '{path.suffix}'; images: {' '.join(IMAGE_EXTENSIONS)})"
            summary.failed.append((path, reason))
            log.warning("[deblur.blur_score] skipped %s: %s", path, reason)
            continue
        try:
            score = blur_score(net, read_image(path), tile, device)
        except (DataError, ValueError) as err:
            summary.failed.append((path, str(err)))
            log.warning("[deblur.blur_score] failed %s: %s", path, err)
            continue
        summary.scores.append((path, score))
    rows = list(summary.scores)
    if sort != "none":
        rows.sort(key=lambda r: r[1], reverse=sort == "desc")
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "score"])
        writer.writerows((str(p), f"{s:.6f}") for p, s in rows)
    print(summary.report(), flush=True)
    print(f"[deblur.blur_score] scores written to {out}", flush=True)
    return summary


@entry_point("blur_score")
def main(cfg: DictConfig) -> None:
    summary = run_blur_score(cfg)
    if not summary.scores:
        print("[deblur.blur_score] no image could be scored.", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
