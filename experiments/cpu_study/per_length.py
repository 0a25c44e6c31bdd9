"""PSNR gain over the blurred input per blur length, from `deblur.evaluate` runs on data=embedded.

    python experiments/cpu_study/per_length.py <evaluate run dir> [more ...]

Each evaluate run folder holds metrics.json with per-image PSNR (the model's and the blurred
input's); the manifest of the embedded build the images came from (found from each image's path,
so any `data.embedded.seed=...` build works) gives each pair's camera-path length and whether its
photo is a training or a validation photo. Prints one Markdown table: a row per run folder given
(named by its last path part) and photo split (`split=all` evaluations have both), a column per length bin: mean PSNR (mean gain over the
input), and the images per cell.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from deblur.runs import read_metrics

BINS = [(7, 14), (14, 21), (21, 31)]


def manifest_of(blur_path: str) -> dict[str, dict]:
    """``photo/index`` -> manifest entry of the build holding ``blur_path``
    (``<root>/<split>/<photo>/blur/<index>.png``)."""
    root = Path(blur_path).parents[3]
    pairs = json.loads((root / "manifest.json").read_text())["pairs"]
    return {f"{p['photo']}/{p['index']:03d}": p for p in pairs}


def rows_of(path: str) -> list[dict]:
    found = list(Path(path).rglob("metrics.json"))
    if len(found) != 1:
        raise SystemExit(f"{path}: expected one metrics.json below it, found {len(found)}")
    images = read_metrics(found[0].parent).result.per_image
    manifest = manifest_of(images[0]["blur"])
    out = []
    for img in images:
        entry = manifest[img["name"]]
        out.append(
            {
                "method": Path(path).name,
                "photos": entry["split"],
                "length": entry["length"],
                "psnr": img["psnr"],
                "gain": img["psnr"] - img["input_psnr"],
            }
        )
    return out


def main(paths: list[str]) -> int:
    frame = pd.DataFrame([r for p in paths for r in rows_of(p)])
    labels = [f"{a}-{b - 1} px" for a, b in BINS]
    frame["bin"] = pd.cut(
        frame["length"], [b[0] for b in BINS] + [BINS[-1][1]], right=False, labels=labels
    )
    lines = [
        "| method | photos | " + " | ".join(labels) + " | all |",
        "|---" * (len(BINS) + 3) + "|",
    ]
    for (method, photos), group in frame.groupby(["method", "photos"], sort=False):
        cells = []
        for label in [*labels, None]:
            part = group if label is None else group[group["bin"] == label]
            if part.empty:
                cells.append("-")
                continue
            cells.append(f"{part.psnr.mean():.2f} ({part.gain.mean():+.2f}, n={len(part)})")
        lines.append(f"| {method} | {photos} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
