"""deblur.tables on synthetic metrics.json sets: cells, seeds, missing/failed, files, grouping."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from deblur.tables import Stat, build_tables, main, render_markdown

LOSSES = ("gan", "lsgan", "wgangp", "ragan")
DISCS = ("single", "patch", "double")


def write_run(
    folder: Path,
    *,
    task: str = "gan",
    status: str = "finished",
    seed: int = 0,
    psnr: float | None = 28.0,
    ssim: float | None = 0.8,
    best: dict | None = None,
    pretrained: bool | None = False,
    frozen: bool | None = False,
    experiment: str | None = None,
    **choices: str,
) -> Path:
    """One run folder with a metrics.json as deblur.runs writes it (schema of docs/DESIGN.md)."""
    folder.mkdir(parents=True, exist_ok=True)
    chosen = {"backbone": "nlayer", "gen": "fpn_mobilenetv2", "data": "embedded"}
    if task == "gan":
        chosen |= {"loss": "ragan", "disc": "double"}
    chosen |= choices
    if experiment:
        chosen["experiment"] = experiment
    if task == "classifier":
        final = {"val/loss": psnr, "val/acc": ssim}
        chosen.pop("gen")
    else:
        final = {"val/psnr": psnr, "val/ssim": ssim}
    record = {
        "status": status,
        "task": task,
        "choices": chosen,
        "seed": seed,
        "overrides": [f"{k}={v}" for k, v in choices.items()] + [f"seed={seed}"],
    }
    if pretrained is not None:
        record["disc_pretrained"] = pretrained
    if frozen is not None:
        record["disc_frozen"] = frozen
    if status == "finished":
        record["final"] = {k: v for k, v in final.items() if v is not None}
        record["best"] = best or record["final"]
        if task == "gan":
            record["input"] = {"val/psnr": 24.5, "val/ssim": 0.7}
    elif status == "failed":
        record["error"] = {"type": "RuntimeError", "message": "boom", "traceback": "..."}
    (folder / "metrics.json").write_text(json.dumps(record))
    return folder


def grid_sweep(root: Path, seeds=(0, 1, 2), skip=()) -> Path:
    """The 4 x 3 grid; PSNR = 28 + 0.1*i_loss + 0.01*i_disc + 0.1*seed (mean +0.1, std 0.1)."""
    sweep = root / "table4_1"
    for i, loss in enumerate(LOSSES):
        for j, disc in enumerate(DISCS):
            if (loss, disc) in skip:
                continue
            for seed in seeds:
                write_run(
                    sweep / f"disc={disc},loss={loss},seed={seed}",
                    seed=seed,
                    psnr=28 + 0.1 * i + 0.01 * j + 0.1 * seed,
                    ssim=0.80 + 0.01 * i + 0.001 * j + 0.01 * seed,
                    loss=loss,
                    disc=disc,
                    experiment="table4_1",
                )
    return sweep


def test_complete_grid_gives_mean_std_n3_beside_the_thesis(tmp_path):
    sweep = grid_sweep(tmp_path)
    t41 = build_tables([sweep])["4.1"]
    assert len(t41.runs) == 36 and len(t41.blocks) == 1
    block = t41.blocks[0]
    assert block.rows == [(loss,) for loss in LOSSES] and block.cols == list(DISCS)
    for i, loss in enumerate(LOSSES):
        for j, disc in enumerate(DISCS):
            cell = t41.cell(loss, disc)
            psnr = cell.stats["val/psnr"]
            assert psnr.n == 3
            assert psnr.mean == pytest.approx(28.1 + 0.1 * i + 0.01 * j)
            assert psnr.std == pytest.approx(0.1)
            assert cell.stats["val/ssim"].std == pytest.approx(0.01)
            assert cell.state("val/psnr") == "ok"
    assert t41.cell("gan", "single").thesis == {"val/psnr": 28.65, "val/ssim": 0.8375}
    assert t41.cell("ragan", "double").thesis["val/psnr"] == 28.91
    md = render_markdown({"4.1": t41})
    assert (
        "| gan | 28.10 ± 0.10 (n=3) · thesis 28.65 | 0.8100 ± 0.0100 (n=3) · thesis 0.8375 |" in md
    )
    assert "28.42 ± 0.10 (n=3) · thesis 28.91" in md  # ragan / double
    # the blurred input's own metrics, so a reader sees what the GAN adds
    assert "| input (blurred, no deblurring) | 24.50 ± 0.00 (n=12) |" in md
    assert "Data: embedded (all runs)." in md
    assert "Setup: gen=fpn_mobilenetv2, backbone=nlayer" in md


def test_single_seed_shows_dash_for_std():
    assert Stat.of([28.0]).text(2) == "28.00 ± — (n=1)"
    assert Stat.of([]) is None


def test_missing_failed_and_running_cells_never_show_zero(tmp_path):
    sweep = grid_sweep(tmp_path, seeds=(0,), skip={("gan", "patch"), ("wgangp", "single")})
    write_run(
        sweep / "disc=single,loss=wgangp", status="failed", psnr=None, loss="wgangp", disc="single"
    )
    write_run(sweep / "disc=double,loss=ragan,r", status="running", loss="ragan", disc="double")
    tables = build_tables([sweep], tables=["4.1"])
    t41 = tables["4.1"]
    assert t41.cell("gan", "patch").value_text(t41.spec.metrics[0]) == "missing"
    assert t41.cell("gan", "patch").state("val/psnr") == "missing"
    failed = t41.cell("wgangp", "single")
    assert failed.value_text(t41.spec.metrics[0]) == "failed (1)"
    assert failed.stats["val/psnr"] is None
    # a finished seed beside a running one: the value, and the running run stated
    assert (
        t41.cell("ragan", "double").value_text(t41.spec.metrics[0]) == "28.32 ± — (n=1; 1 running)"
    )
    md = render_markdown(tables)
    assert "| missing · thesis 28.49 | missing · thesis 0.8264 |" in md
    assert "| wgangp | failed (1) · thesis 27.60 | failed (1) · thesis 0.8180 |" in md
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--tables", "4.1"]) == 0
    rows = list(csv.DictReader((out / "table4_1.csv").open()))
    bad = {(r["loss"], r["disc"]): r for r in rows if r["metric"] == "val/psnr"}
    assert bad[("gan", "patch")]["status"] == "missing" and bad[("gan", "patch")]["mean"] == ""
    assert bad[("wgangp", "single")]["status"] == "failed"
    assert bad[("wgangp", "single")]["mean"] == "" and bad[("wgangp", "single")]["n_failed"] == "1"
    tex = (out / "table4_1.tex").read_text()
    assert r"\emph{missing} [28.49]" in tex and r"\emph{failed (1)} [27.60]" in tex


def test_cli_writes_markdown_csv_latex_png(tmp_path, capsys):
    sweep = grid_sweep(tmp_path)
    assert main([str(sweep)]) == 0  # default output: <first folder>/tables
    out = sweep / "tables"
    stdout = capsys.readouterr().out
    assert "## Table 4.1" in stdout and stdout == (out / "tables.md").read_text()
    assert "No runs for Table 4.2" in stdout
    rows = list(csv.DictReader((out / "table4_1.csv").open()))
    cells = [r for r in rows if r["loss"] != "input"]
    assert len(cells) == 4 * 3 * 2 and {r["n"] for r in cells} == {"3"}
    gan_single = next(
        r for r in cells if (r["loss"], r["disc"], r["metric"]) == ("gan", "single", "val/psnr")
    )
    assert float(gan_single["mean"]) == pytest.approx(28.1)
    assert float(gan_single["thesis"]) == 28.65
    assert float(gan_single["diff_vs_thesis"]) == pytest.approx(28.1 - 28.65)
    assert gan_single["seeds"] == "0;1;2"
    assert len([r for r in rows if r["loss"] == "input"]) == 3 * 2
    tex = (out / "table4_1.tex").read_text()
    assert r"\begin{tabular}{lcccccc}" in tex and r"$28.10 \pm 0.10$ (3) [28.65]" in tex
    assert "fpn\\_mobilenetv2" in tex
    png = (out / "table4_1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not (out / "table4_2.csv").exists()  # no classifier runs: no empty files


def test_table_4_2_groups_classifier_runs_by_backbone(tmp_path):
    sweep = tmp_path / "table4_2"
    for seed, (loss, acc) in enumerate([(0.30, 70.0), (0.20, 74.0)]):
        write_run(
            sweep / f"backbone=nlayer,seed={seed}",
            task="classifier",
            seed=seed,
            psnr=loss,
            ssim=acc,
            backbone="nlayer",
        )
    write_run(
        sweep / "backbone=seresnext50",
        task="classifier",
        psnr=0.02,
        ssim=82.0,
        backbone="seresnext50",
    )
    grid_sweep(tmp_path, seeds=(0,))  # GAN runs must not leak into Table 4.2
    t42 = build_tables([tmp_path])["4.2"]
    assert len(t42.runs) == 3
    nlayer = t42.cell("nlayer")
    assert nlayer.stats["val/acc"].mean == pytest.approx(72.0)
    assert nlayer.stats["val/acc"].n == 2
    assert nlayer.stats["val/loss"].std == pytest.approx(0.0707107, rel=1e-5)
    assert nlayer.thesis == {"val/loss": 0.284, "val/acc": 73.19}
    assert t42.cell("seresnext50").stats["val/acc"].n == 1
    assert t42.cell("efficientnet_b0").state("val/acc") == "missing"
    md = render_markdown({"4.2": t42})
    assert (
        "| nlayer | 0.250 ± 0.071 (n=2) · thesis 0.284 | 72.00 ± 2.83 (n=2) · thesis 73.19 |" in md
    )


def test_tables_4_3_and_4_4_group_by_backbone_loss_pretrained_frozen(tmp_path):
    s43, s44 = tmp_path / "table4_3", tmp_path / "table4_4"
    for seed in (0, 1):
        for pre in (False, True):
            write_run(
                s43 / f"nlayer,ragan,pre={pre},seed={seed}",
                seed=seed,
                pretrained=pre,
                psnr=28.0 + pre + seed,
                loss="ragan",
                disc="single",
                experiment="table4_3",
            )
        write_run(
            s44 / f"nlayer,frozen,seed={seed}",
            seed=seed,
            pretrained=True,
            frozen=True,
            psnr=26.0 + seed,
            loss="ragan",
            disc="single",
            experiment="table4_4",
        )
    write_run(
        s43 / "mnv3,wgangp",
        pretrained=True,
        psnr=27.0,
        loss="wgangp",
        backbone="mobilenetv3_large",
        disc="single",
        experiment="table4_3",
    )
    tables = build_tables([s43, s44])
    t43, t44 = tables["4.3"], tables["4.4"]
    assert t43.blocks[0].variant == {"gen": "fpn_mobilenetv2", "disc": "single"}
    assert t43.cell(("nlayer", "ragan"), "no").stats["val/psnr"].mean == pytest.approx(28.5)
    assert t43.cell(("nlayer", "ragan"), "yes").stats["val/psnr"].mean == pytest.approx(29.5)
    assert t43.cell(("nlayer", "ragan"), "yes").thesis["val/psnr"] == 28.33
    assert t43.cell(("nlayer", "wgangp"), "yes").state("val/psnr") == "missing"
    # a combination the thesis did not run comes after the thesis rows, with no thesis number
    assert t43.blocks[0].rows[-1] == ("mobilenetv3_large", "wgangp")
    assert t43.cell(("mobilenetv3_large", "wgangp"), "yes").thesis["val/psnr"] is None
    assert all(not r.disc_frozen for r in t43.runs)  # frozen runs are Table 4.4 only
    assert t44.cell(("nlayer", "ragan"), "yes").stats["val/psnr"].mean == pytest.approx(26.5)
    assert t44.cell(("nlayer", "ragan"), "yes").thesis == {"val/psnr": 26.1, "val/ssim": 0.7765}
    assert t44.cell(("nlayer", "ragan"), "no").stats["val/psnr"].n == 2  # Table 4.3's runs
    assert all(r.disc_pretrained for r in t44.runs)
    assert t44.cell(("mobilenetv3_large", "ragan"), "yes").state("val/psnr") == "missing"
    assert tables["4.1"].runs == []  # runs tagged table4_3/4_4 stay out of Table 4.1


def test_untagged_runs_count_wherever_they_fit_tagged_ones_only_in_their_table(tmp_path):
    write_run(tmp_path / "a", loss="ragan", disc="single", experiment="table4_1")
    write_run(tmp_path / "b", loss="ragan", disc="single", psnr=30.0)
    tables = build_tables([tmp_path], tables=["4.1", "4.3"])
    assert tables["4.1"].cell("ragan", "single").stats["val/psnr"].n == 2
    assert [r.path.parent.name for r in tables["4.3"].runs] == ["b"]


def test_best_metrics_mixture_variants_attempts_and_unreadable_files(tmp_path):
    write_run(tmp_path / "r0", psnr=28.0, best={"val/psnr": 29.0, "val/ssim": 0.9, "epoch": 3})
    write_run(tmp_path / "r1", seed=1, psnr=28.2, data="gopro")
    write_run(tmp_path / "r2", gen="fpn_inception", debug="smoke")
    write_run(tmp_path / "r0" / "attempts" / "1", status="failed", psnr=None)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    final = build_tables([tmp_path], tables=["4.1"])["4.1"]
    best = build_tables([tmp_path], which="best", tables=["4.1"])["4.1"]
    assert best.cell("ragan", "double").stats["val/psnr"].mean == pytest.approx((29.0 + 28.2) / 2)
    # one block per generator, the one with most runs first
    assert [b.variant["gen"] for b in final.blocks] == ["fpn_mobilenetv2", "fpn_inception"]
    assert final.cell("ragan", "double", variant=1).stats["val/psnr"].n == 1
    cell = final.cell("ragan", "double")
    assert cell.status["failed"] == 0  # the archived attempt is not a run
    assert cell.value_text(final.spec.metrics[0]).endswith(" †")
    notes = " ".join(final.notes)
    assert "MIXTURE of embedded (2 runs), gopro (1 runs)" in notes
    assert "skipped unreadable" in notes and "broken" in notes
    assert "1 run(s) are debug=smoke runs" in notes


def test_failed_run_without_disc_flags_is_placed_from_its_hydra_config(tmp_path):
    run = write_run(
        tmp_path / "x", status="failed", pretrained=None, frozen=None, loss="ragan", disc="single"
    )
    (run / ".hydra").mkdir()
    (run / ".hydra" / "config.yaml").write_text("disc:\n  checkpoint: auto\n  frozen: true\n")
    tables = build_tables([tmp_path])
    assert (
        tables["4.4"].cell(("nlayer", "ragan"), "yes").value_text(tables["4.4"].spec.metrics[0])
        == "failed (1)"
    )
    assert tables["4.1"].runs == []


def test_cli_errors_name_the_path(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert main([str(tmp_path), "--tables", "4.9"]) == 2
    assert "unknown table '4.9'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1  # nothing found: said, and a non-zero exit
    assert "no GAN or classifier metrics.json" in capsys.readouterr().err
