"""``make demo``: the whole study at demo scale on the embedded data, on a CPU, offline.

Stage 1 trains the blur classifier (Table 4.2), stage 2 the 4 x 3 loss x discriminator grid plus
the content-only row ``loss=none`` (Table 4.1), and a pretrained-frozen and a pretrained-unfrozen
GAN (Table 4.4) whose discriminator starts from that classifier. It ends with the regenerated
Table 4.1, one line saying which cells beat the blurred input, and the command that opens
TensorBoard. ``--study`` runs the CPU-scale study of experiments/cpu_study: seeds 0, 1, 2, the
classifier on three backbones, and Table 4.3 for NLayer. Re-running skips finished runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from deblur.runs import find_runs
from deblur.study.report import render_markdown, write_outputs
from deblur.study.tables import build_tables

# stage 1 at demo scale: long enough for the NLayer classifier to learn on this data, so stage 2
# loads a real classifier (see experiments/cpu_study)
CLASSIFIER_SCALE = [
    "trainer.max_epochs=32",
    "trainer.limit_train_batches=null",
    "trainer.check_val_every_n_epoch=4",
    "data.crop_size=128",
    "data.batch_size=16",
]


# the generator of every demo-scale GAN run: a small ResNet that starts as the identity and learns in
# ~50 CPU iterations (conf/gen/resnet_cpu.yaml; the thesis' FPN needs ImageNet weights)
GENERATOR = "resnet_cpu"


def _run(args: list[str], env: dict[str, str]) -> int:
    cmd = [sys.executable, "-m", *args]
    print(f"\n[demo] $ {' '.join(cmd[2:])}", flush=True)
    return subprocess.call(cmd, env=env)


def steps(scale: str, runs: Path, seeds: str, study: bool, overwrite: bool) -> list[tuple]:
    """The (title, command) list of the demo (or, with ``study``, the CPU-scale study)."""
    common = [f"debug={scale}", f"runs_dir={runs}", f"seed={seeds}"]
    if overwrite:
        common.append("overwrite=true")
    gan = [*common, f"gen={GENERATOR}"]
    # the study leaves out SE-ResNeXt50 (~6 CPU minutes per classifier run at this scale)
    backbones = "nlayer,mobilenetv3_large,efficientnet_b0" if study else "nlayer"
    out = [
        (
            f"stage 1: blur classifier (Table 4.2, {backbones})",
            ["deblur.train_classifier", "-m", "experiment=table4_2", f"backbone={backbones}"]
            + common
            + CLASSIFIER_SCALE,
        ),
        (
            "stage 2: loss x discriminator grid (Table 4.1, 12 cells)",
            ["deblur.train", "-m", "experiment=table4_1", *gan],
        ),
        (
            "stage 2: no adversarial training (Table 4.1, row loss=none)",
            ["deblur.train", "-m", "experiment=table4_1", "loss=none", "disc=single", *gan],
        ),
        (
            "stage 2: pretrained discriminator, frozen vs unfrozen (Table 4.4, NLayer)",
            ["deblur.train", "-m", "experiment=table4_4", "backbone=nlayer", *gan],
        ),
    ]
    if study:
        out.append(
            (
                "stage 2: pretrained vs fresh discriminator (Table 4.3, RaGAN, NLayer)",
                [
                    "deblur.train",
                    "-m",
                    "experiment=table4_3",
                    "loss=ragan",
                    "backbone=nlayer",
                    *gan,
                ],
            )
        )
    return out


def beats_input_line(runs: Path) -> str:
    """One line: which Table 4.1 cells (mean over seeds) are above the blurred input's PSNR."""
    cells: dict[str, list[tuple[float, float]]] = {}
    for _, rec in find_runs([runs]):
        choices = rec.choices
        if rec.task != "gan" or choices.get("experiment") != "table4_1":
            continue
        out = (rec.final or {}).get("val/psnr")
        inp = (rec.input or {}).get("val/psnr")
        if rec.status != "finished" or out is None or inp is None:
            continue
        disc = "-" if choices.get("loss") == "none" else choices.get("disc")
        cells.setdefault(f"{choices.get('loss')}/{disc}", []).append((out, inp))
    if not cells:
        return "[demo] no finished Table 4.1 run to compare with the blurred input"
    gain = {k: sum(o - i for o, i in v) / len(v) for k, v in sorted(cells.items())}
    above = [f"{k} {g:+.2f}" for k, g in gain.items() if g > 0]
    below = [f"{k} {g:+.2f}" for k, g in gain.items() if g <= 0]
    return (
        f"[demo] Table 4.1 cells above the blurred input's PSNR: {len(above)} of {len(gain)} "
        f"(dB over the input, mean over seeds: {', '.join(above) or 'none'})"
        + (f"; at or below it: {', '.join(below)}" if below else "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", default=None, help="default runs/demo (runs/cpu_study)")
    parser.add_argument("--scale", default="demo", help="debug=<scale> option (demo or smoke)")
    parser.add_argument("--seeds", default=None, help="comma-separated (demo: 0; study: 0,1,2)")
    parser.add_argument("--study", action="store_true", help="the CPU-scale study (3 seeds, 4.3)")
    parser.add_argument("--overwrite", action="store_true", help="re-run finished runs")
    args = parser.parse_args(argv)

    default_dir = "runs/cpu_study" if args.study else "runs/demo"
    runs = Path(args.runs_dir or os.environ.get("DEBLUR_DEMO_RUNS", default_dir))
    seeds = args.seeds or ("0,1,2" if args.study else "0")
    env = dict(os.environ)
    start = time.perf_counter()
    plan = steps(args.scale, runs, seeds, args.study, args.overwrite)
    failures = 0
    for i, (title, cmd) in enumerate(plan, 1):
        took = time.perf_counter() - start
        print(f"\n[demo] step {i}/{len(plan)}: {title}  ({took:.0f} s so far)", flush=True)
        failures += _run(cmd, env) != 0

    tables = build_tables([runs])
    written = write_outputs(tables, runs / "tables", [runs])
    print("\n" + render_markdown({"4.1": tables["4.1"]}, [runs]), flush=True)
    print(beats_input_line(runs), flush=True)
    print(f"[demo] tables written: {', '.join(str(p) for p in written)}")
    took = time.perf_counter() - start
    print(f"[demo] finished in {took / 60:.1f} min; all tables: python -m deblur.tables {runs}")
    print(
        f"[demo] open TensorBoard on the runs: python -m deblur.dashboard {runs}  (or: make dashboard)"
    )
    if failures:
        print(f"[demo] {failures} step(s) had failing runs: see status/error in their metrics.json")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
