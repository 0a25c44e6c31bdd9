"""The tables of the power study (issue 19; experiments/cpu_study/power.sh runs it).

    python experiments/cpu_study/power.py runs/power > experiments/cpu_study/power_tables.md
    python experiments/cpu_study/power.py runs/power --weights 0.3   # per-loss weights (power.sh)

Every number is a run's final validation (the last checkpoint's weights, never the best of
several validations). A cell is the per-seed *paired* difference from the control of the same
seed (same initial G weights, the same training batches and blurs): mean +- sample sd over the
seeds, and the sign count (how many seeds moved up). Columns: PSNR and SSIM; the gradient-energy
and high-band (0.25-0.5 cycles/px) power ratios of G's outputs over the sharp images' (1 = as
sharp as the target); the held-out judge classifier's P(blurred) of G's outputs (a classifier of
another seed, never a discriminator); D's ranking accuracy on the validation pairs
(D(sharp) > D(G(blur)), 0.5 = the game is lost by D); the adversarial share of G's gradient.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from deblur.runs import read_metrics

COLUMNS = {  # final-validation key -> (label, digits)
    "val/psnr": ("PSNR dB", 3),
    "val/ssim": ("SSIM", 4),
    "val/grad_energy": ("grad-energy ratio", 3),
    "val/high_band": ("high-band ratio", 3),
    "val/judge_blur": ("judge P(blurred)", 3),
    "val/d_rank_acc": ("D rank acc", 2),
    "val/adv_grad_share": ("adv share", 3),
}
PAIRED = ("val/psnr", "val/ssim", "val/grad_energy", "val/high_band", "val/judge_blur")


def read_runs(root: Path) -> list[dict]:
    """Every finished run under ``root``: its sweep, settings and final validation."""
    runs = []
    for path in sorted(root.rglob("metrics.json")):
        if "attempts" in path.parts:
            continue
        m = read_metrics(path.parent)  # the flat records of earlier versions too
        if m is None or m.task != "gan" or m.status != "finished":
            continue
        c, critic = m.identity["config"], m.result.critic
        runs.append(
            {
                "sweep": path.parent.parent.name,
                "loss": m.choices["loss"],
                "disc": m.choices["disc"],
                "w": float(c.get("model.adv_weight", 0.0)),
                "seed": int(m.seed),
                "pretrained": bool(critic and critic.pretrained),
                "frozen": bool(critic and critic.frozen),
                "iterations": m.result.iterations,
                "final": m.result.final or {},
                "dir": str(path.parent),
            }
        )
    return runs


def _fmt(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:+.{digits}f} (n=1)"
    sd = statistics.stdev(values)
    up = sum(v > 0 for v in values)
    return f"{mean:+.{digits}f} ± {sd:.{digits}f} ({up}/{len(values)} up)"


def _plain(values: list[float], digits: int) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    sd = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{sd}"


def cell_rows(cells: dict[str, list[dict]], control: list[dict]) -> list[str]:
    """Markdown rows: absolute values (mean +- sd over seeds), then paired differences."""
    by_seed = {r["seed"]: r for r in control}
    out = []
    header = ["cell", "n", *(COLUMNS[k][0] for k in COLUMNS)]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    for name, runs in cells.items():
        vals = [
            _plain([r["final"][k] for r in runs if k in r["final"]], d)
            for k, (_, d) in COLUMNS.items()
        ]
        out.append(f"| {name} | {len(runs)} | " + " | ".join(vals) + " |")
    out.append("")
    header = ["paired difference from the control", "n", *(COLUMNS[k][0] for k in PAIRED)]
    out.append("| " + " | ".join(header) + " |")
    out.append("|" + "---|" * len(header))
    for name, runs in cells.items():
        diffs = []
        n = 0
        for k in PAIRED:
            d = [
                r["final"][k] - by_seed[r["seed"]]["final"][k]
                for r in runs
                if r["seed"] in by_seed and k in r["final"] and k in by_seed[r["seed"]]["final"]
            ]
            n = max(n, len(d))
            diffs.append(_fmt(d, COLUMNS[k][1]))
        out.append(f"| {name} | {n} | " + " | ".join(diffs) + " |")
    return out


def per_image_spread(runs: list[dict]) -> str:
    sds = [r["final"]["val/psnr_sd"] for r in runs if "val/psnr_sd" in r["final"]]
    if not sds:
        return ""
    return (
        f"Per-image spread of the validation set: the sd of PSNR over its images is "
        f"{statistics.fmean(sds):.2f} dB (mean over {len(sds)} runs); the paired differences "
        "above remove it, since every run sees the same images."
    )


def weights(runs: list[dict], w_ref: float) -> dict[str, float]:
    """Per loss, the adversarial weight that gives the share lsgan/patch has at ``w_ref``.

    The target share is the control's mean final ``val/adv_grad_share`` at ``w_ref``; each
    loss's share at w = 0.1 comes from the short ``power_shares`` runs; the share is linear
    in w at a fixed trajectory, so w_loss = 0.1 * target / share_loss(0.1).
    """
    ref = [r for r in runs if r["sweep"] == "power_control" and r["loss"] == "lsgan"]
    ref = [r["final"]["val/adv_grad_share"] for r in ref if math.isclose(r["w"], w_ref)]
    if not ref:
        raise SystemExit(f"power.py: no finished control run at model.adv_weight={w_ref}.")
    target = statistics.fmean(ref)
    out = {}
    for r in runs:
        if r["sweep"] == "power_shares":
            share = r["final"]["val/adv_grad_share"]
            out[r["loss"]] = round(r["w"] * target / max(share, 1e-12), 4)
    if not out:
        raise SystemExit("power.py: no finished power_shares runs.")
    return out


def tables(runs: list[dict]) -> list[str]:
    lines: list[str] = []

    def section(title: str, sweep: str, key, control_pred) -> None:
        mine = [r for r in runs if r["sweep"] == sweep]
        if not mine:
            return
        control = [r for r in mine if control_pred(r)]
        cells: dict[str, list[dict]] = defaultdict(list)
        for r in sorted(mine, key=lambda r: (key(r), r["seed"])):
            cells[key(r)].append(r)
        lines.extend([f"## {title}", ""])
        lines.extend(cell_rows(dict(cells), control))
        spread = per_image_spread(mine)
        lines.extend(["", spread, ""] if spread else [""])

    section(
        "Positive control: lsgan / patch at four adversarial weights (control: w = 0)",
        "power_control",
        lambda r: "loss=none" if r["loss"] == "none" else f"lsgan w={r['w']:g}",
        lambda r: r["loss"] == "lsgan" and r["w"] == 0,
    )
    section(
        "Table 4.1 (patch D from scratch), each loss at the same gradient share (control: none)",
        "power_table4_1",
        lambda r: r["loss"] if r["loss"] == "none" else f"{r['loss']} w={r['w']:g}",
        lambda r: r["loss"] == "none",
    )
    section(
        "Tables 4.3 / 4.4: single D (lsgan), fresh vs pretrained vs pretrained + frozen "
        "(control: fresh)",
        "power_table4_3",
        lambda r: (
            "fresh"
            if not r["pretrained"]
            else ("pretrained, frozen" if r["frozen"] else "pretrained")
        ),
        lambda r: not r["pretrained"],
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path)
    ap.add_argument("--weights", type=float, default=None, help="print 'loss weight' lines")
    args = ap.parse_args(argv)
    runs = read_runs(args.runs)
    if args.weights is not None:
        for loss, w in sorted(weights(runs, args.weights).items()):
            print(loss, w)
        return 0
    print("\n".join(tables(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
