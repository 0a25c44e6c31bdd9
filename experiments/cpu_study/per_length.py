"""PSNR gain over the blurred input per blur length, from `deblur.evaluate` runs on data=embedded.

    python experiments/cpu_study/per_length.py <evaluate run dir> [more ...]

Each evaluate run folder holds metrics.json with per-image PSNR; the embedded manifest gives each
validation pair's camera-path length. Prints one Markdown table: methods x length bins.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from deblur.data.embedded import default_root

BINS = [(7, 14), (14, 21), (21, 31)]


def lengths() -> dict[str, float]:
    manifest = json.loads((default_root().parent / "embedded_v2" / "manifest.json").read_text())
    return {f"{p['photo']}/{p['index']:03d}": p["length"] for p in manifest["pairs"]}


def main(paths: list[str]) -> int:
    length = lengths()
    rows = []
    for path in paths:
        rec = json.loads((Path(path) / "metrics.json").read_text())
        for img in rec["per_image"]:
            key = img["name"]
            rows.append(
                {
                    "method": rec.get("method", Path(path).name),
                    "name": key,
                    "length": length.get(key),
                    "psnr": img["psnr"],
                }
            )
    frame = pd.DataFrame(rows)
    missing = frame[frame["length"].isna()]["name"].unique()
    if len(missing):
        print(f"no blur length for {list(missing)[:3]} ...", file=sys.stderr)
        return 2
    frame["bin"] = pd.cut(
        frame["length"],
        [b[0] for b in BINS] + [BINS[-1][1]],
        right=False,
        labels=[f"{a}-{b - 1} px" for a, b in BINS],
    )
    table = frame.pivot_table(
        index="method", columns="bin", values="psnr", aggfunc="mean", observed=False
    )
    table["all"] = frame.groupby("method")["psnr"].mean()
    counts = frame[frame["method"] == frame["method"].iloc[0]].groupby("bin", observed=False).size()
    print(table.round(2).to_markdown())
    print("\nimages per bin: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
