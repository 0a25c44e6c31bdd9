"""The demo's study (``python -m deblur.demo``): the runs of :func:`steps` as subprocesses, then
Table 4.1 and which of its cells beat the blurred input. Re-running skips finished runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from deblur.study.report import render_markdown, write_outputs
from deblur.study.tables import INPUT, build_tables, read_runs

# stage 1 at demo scale: long enough for the NLayer classifier to learn on this data, so stage 2
# loads a real classifier (see experiments/cpu_study)
CLASSIFIER_SCALE = (
    "trainer.max_epochs=32 trainer.limit_train_batches=null trainer.check_val_every_n_epoch=4 "
    "data.crop_size=128 data.batch_size=16"
).split()
# every demo-scale GAN's generator: a small ResNet that starts as the identity and learns in ~50
# CPU iterations (conf/gen/resnet_cpu.yaml; the thesis' FPN needs ImageNet weights)
GENERATOR = "resnet_cpu"


def steps(scale: str, runs: Path, seeds: str, study: bool, overwrite: bool) -> list[tuple]:
    """The (title, command) list of the demo (or, with ``study``, the CPU-scale study)."""
    common = [f"debug={scale}", f"runs_dir={runs}", f"seed={seeds}"]
    common += ["overwrite=true"] if overwrite else []
    gan = ["deblur.train", "-m", *common, f"gen={GENERATOR}"]
    # the study leaves out SE-ResNeXt50 (~6 CPU minutes per classifier run at this scale)
    backbones = "nlayer,mobilenetv3_large,efficientnet_b0" if study else "nlayer"
    classifier = ["deblur.train_classifier", "-m", "experiment=table4_2", f"backbone={backbones}"]
    classifier += common + CLASSIFIER_SCALE
    out = [
        (f"stage 1: blur classifier (Table 4.2, {backbones})", classifier),
        ("stage 2: loss x discriminator grid (Table 4.1, 12 cells)", ["experiment=table4_1"]),
        (
            "stage 2: no adversarial training (Table 4.1, row loss=none)",
            ["experiment=table4_1", "loss=none", "disc=single"],
        ),
        (
            "stage 2: pretrained discriminator, frozen vs unfrozen (Table 4.4, NLayer)",
            ["experiment=table4_4", "backbone=nlayer"],
        ),
    ]
    if study:
        title = "stage 2: pretrained vs fresh discriminator (Table 4.3, RaGAN, NLayer)"
        out.append((title, ["experiment=table4_3", "loss=ragan", "backbone=nlayer"]))
    return out[:1] + [(title, [*gan[:2], *args, *gan[2:]]) for title, args in out[1:]]


def beats_input_line(runs: Path) -> str:
    """One line: which Table 4.1 cells (mean over seeds) are above the blurred input's PSNR."""
    frame, _ = read_runs([runs])
    done = frame.query("task == 'gan' and status == 'finished' and experiment == 'table4_1'")
    done = done.dropna(subset=["val/psnr", f"{INPUT} val/psnr"])
    cell = done["loss"] + "/" + done["disc"].where(done["loss"] != "none", "-")
    gain = (done["val/psnr"] - done[f"{INPUT} val/psnr"]).groupby(cell).mean()
    if gain.empty:
        return "[demo] no finished Table 4.1 run to compare with the blurred input"
    above = [f"{k} {g:+.2f}" for k, g in gain.items() if g > 0]
    below = [f"{k} {g:+.2f}" for k, g in gain.items() if g <= 0]
    return (
        f"[demo] Table 4.1 cells above the blurred input's PSNR: {len(above)} of {len(gain)} "
        f"(dB over the input, mean over seeds: {', '.join(above) or 'none'})"
        + (f"; at or below it: {', '.join(below)}" if below else "")
    )


def run_demo(scale: str, runs: Path, seeds: str, study: bool, overwrite: bool) -> int:
    """Run every step, write the tables into ``runs/tables``; the number of failing steps."""
    start = time.perf_counter()
    plan, failures = steps(scale, runs, seeds, study, overwrite), 0
    for i, (title, cmd) in enumerate(plan, 1):
        took = time.perf_counter() - start
        print(f"\n[demo] step {i}/{len(plan)}: {title}  ({took:.0f} s so far)", flush=True)
        print(f"\n[demo] $ {' '.join(cmd)}", flush=True)
        failures += subprocess.call([sys.executable, "-m", *cmd]) != 0

    tables = build_tables([runs])
    written = write_outputs(tables, runs / "tables", [runs])
    print("\n" + render_markdown({"4.1": tables["4.1"]}, [runs]), flush=True)
    print(beats_input_line(runs), flush=True)
    print(f"[demo] tables written: {', '.join(str(p) for p in written)}")
    took = time.perf_counter() - start
    print(f"[demo] finished in {took / 60:.1f} min; all tables: python -m deblur.tables {runs}")
    print(f"[demo] TensorBoard on the runs: python -m deblur.dashboard {runs} (or make dashboard)")
    if failures:
        print(f"[demo] {failures} step(s) had failing runs: see status/error in their metrics.json")
    return failures
