"""The blur classifier as a blur detector (``deblur.blur_score``): per image, the sigmoid of the
classifier's logit averaged over tiles of its training crop size (the scale it learned)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from tqdm import tqdm

from deblur import inputs
from deblur.data.io import IMAGE_EXTENSIONS, read_image, to_tensor
from deblur.eval.inference import pad_to_multiple, resolve_device, tile_starts
from deblur.models.load import load_classifier

SORTS = ("desc", "asc", "none")


@dataclass
class ScoreSummary(inputs.Tally):
    """The scores and the files that could not be scored (with reasons)."""

    tool: str = "blur_score"
    scores: list[tuple[Path, float]] = field(default_factory=list)

    def report(self) -> str:
        return super().report(f"scored {len(self.scores)} image(s)", "scored")


@torch.inference_mode()
def blur_score(
    net: nn.Module, rgb_uint8: np.ndarray, tile: int | None = None, device: str = "auto"
) -> float:
    """Blur score of one uint8 RGB image: sigmoid of the mean logit over ``tile``-sized tiles."""
    dev = resolve_device(device)
    net = net.to(dev).eval()
    x = to_tensor(rgb_uint8).unsqueeze(0).to(dev)
    h, w = x.shape[-2:]
    th, tw = tile or h, tile or w
    side = int(getattr(getattr(net, "trunk", None), "min_size", 0) or 32)
    logits = [  # tiny images: mirror-padded up to the trunk's smallest input
        net(pad_to_multiple(x[:, :, y : y + th, x0 : x0 + tw], 1, side)[0])
        for y in tile_starts(h, th, 0)
        for x0 in tile_starts(w, tw, 0)
    ]
    return float(torch.sigmoid(torch.cat([z.float().reshape(-1) for z in logits]).mean()))


def run_blur_score(cfg: DictConfig, net: nn.Module | None = None) -> ScoreSummary:
    """Score everything ``cfg.input`` names; writes the CSV ``cfg.output``; returns a summary."""
    if cfg.sort not in SORTS:
        raise ValueError(f"sort={cfg.sort}: choose one of {', '.join(SORTS)}.")
    out = Path(cfg.output).expanduser()
    _, files = inputs.collect_inputs(cfg.input, bool(cfg.recursive))
    files = inputs.without_outputs(files, out)  # a CSV of an earlier run inside the input folder
    if out.suffix.lower() in (*IMAGE_EXTENSIONS, *inputs.VIDEO_EXTENSIONS):
        raise inputs.OutputError(
            f"output={out} is the name of an image or video; the scores are a CSV file. Give e.g. "
            f"output={out.with_suffix('.csv')}."
        )
    inputs.ensure_writable_file(out)  # before the model runs: a typo costs seconds, not the scan
    if net is None:
        net = load_classifier(cfg.ckpt)
    tile = getattr(net, "crop_size", None) if cfg.tile == "auto" else cfg.tile
    summary = ScoreSummary()
    images = summary.by_kind(files, {"image": IMAGE_EXTENSIONS})["image"]
    for path in tqdm(images, desc="blur score", unit="img", disable=not cfg.progress):
        score = summary.attempt(
            path, lambda p: blur_score(net, read_image(p), tile and int(tile), str(cfg.device))
        )
        if score is not None:
            summary.scores.append((path, score))
    rows = list(summary.scores)
    if cfg.sort != "none":
        rows.sort(key=lambda r: r[1], reverse=cfg.sort == "desc")
    with out.open("w", newline="") as fh:
        csv.writer(fh).writerows([("path", "score"), *((str(p), f"{s:.6f}") for p, s in rows)])
    print(summary.report(), flush=True)
    print(f"[deblur.blur_score] scores written to {out}", flush=True)
    return summary
