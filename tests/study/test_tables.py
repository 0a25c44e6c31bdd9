"""deblur.tables on synthetic metrics.json sets: cells, seeds, missing/failed, files, grouping."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd
import pytest

from deblur.config import compose
from deblur.runs import base_record
from deblur.study.report import render_markdown
from deblur.study.tables import build_tables
from deblur.tables import main

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
    input_psnr: float = 24.5,
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
    record = {"status": status, "task": task, "choices": chosen, "seed": seed}
    record["overrides"] = [f"{k}={v}" for k, v in choices.items()] + [f"seed={seed}"]
    result = record["result"] = {}
    critic = {"pretrained": pretrained, "frozen": frozen}
    if any(v is not None for v in critic.values()):
        result["critic"] = {k: v for k, v in critic.items() if v is not None}
    if status == "finished":
        result["final"] = {k: v for k, v in final.items() if v is not None}
        result["best"] = best or result["final"]
        if task == "gan":
            result["input"] = {"val/psnr": input_psnr, "val/ssim": 0.7}
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
                tags = dict(loss=loss, disc=disc, experiment="table4_1", seed=seed)
                psnr = 28 + 0.1 * i + 0.01 * j + 0.1 * seed
                ssim = 0.80 + 0.01 * i + 0.001 * j + 0.01 * seed
                write_run(
                    sweep / f"disc={disc},loss={loss},seed={seed}", psnr=psnr, ssim=ssim, **tags
                )
    return sweep


def cell(table, metric: str = "val/psnr", block: int = 0, **keys: str):
    """The one row of ``table.cells`` of a cell and metric (keys: loss=, disc=, backbone=, ...)."""
    c = table.cells
    mask = (c["metric"] == metric) & (c["block"] == block)
    for key, value in keys.items():
        mask &= c[key] == value
    found = c[mask]
    assert len(found) == 1, found
    return found.iloc[0]


def md_rows(markdown: str) -> dict[str, list[str]]:
    """Markdown table rows by their first cell, each as its stripped cells."""
    rows = [line.strip().strip("|").split("|") for line in markdown.splitlines()]
    return {r[0].strip(): [c.strip() for c in r[1:]] for r in rows if len(r) > 1}


def test_complete_grid_gives_mean_std_n3_beside_the_thesis(tmp_path):
    sweep = grid_sweep(tmp_path)
    t41 = build_tables([sweep])["4.1"]
    assert len(t41.runs) == 36 and len(t41.blocks) == 1
    grid = t41.cells[t41.cells["row"] != "input"]
    assert list(grid["loss"].unique()) == list(LOSSES)
    assert list(grid["disc"].unique()) == list(DISCS)
    for i, loss in enumerate(LOSSES):
        for j, disc in enumerate(DISCS):
            psnr = cell(t41, loss=loss, disc=disc)
            assert psnr["n"] == 3 and psnr["state"] == "ok"
            assert psnr["mean"] == pytest.approx(28.1 + 0.1 * i + 0.01 * j)
            assert psnr["std"] == pytest.approx(0.1)
            assert cell(t41, "val/ssim", loss=loss, disc=disc)["std"] == pytest.approx(0.01)
    assert cell(t41, loss="gan", disc="single")["thesis"] == 28.65
    assert cell(t41, "val/ssim", loss="gan", disc="single")["thesis"] == 0.8375
    assert cell(t41, loss="ragan", disc="double")["thesis"] == 28.91
    md = render_markdown({"4.1": t41})
    rows = md_rows(md)
    assert rows["gan"][:2] == [
        "28.10 ± 0.10 (n=3) · thesis 28.65",
        "0.8100 ± 0.0100 (n=3) · thesis 0.8375",
    ]
    assert rows["ragan"][4] == "28.42 ± 0.10 (n=3) · thesis 28.91"
    assert rows["loss"][:2] == ["disc=single PSNR", "disc=single SSIM"]
    # the blurred input's own metrics, so a reader sees what the GAN adds
    assert rows["blurred input (no deblurring)"] == ["24.50", "0.7000"] * 3
    assert "Data: embedded (all runs)." in md
    assert "Setup: gen=fpn_mobilenetv2, backbone=nlayer" in md


def test_one_seed_shows_its_value_and_n_without_a_spread(tmp_path):
    write_run(tmp_path / "a", psnr=28.0, loss="gan", disc="single")
    write_run(tmp_path / "b", psnr=28.0, input_psnr=25.0, loss="gan", disc="patch")
    t41 = build_tables([tmp_path], tables=["4.1"])["4.1"]
    assert cell(t41, loss="gan", disc="single")["text"] == "28.00 (n=1)"
    # runs that saw different inputs: the input row shows the spread
    rows = md_rows(render_markdown({"4.1": t41}))
    assert rows["blurred input (no deblurring)"][:4] == ["24.50", "0.7000", "25.00", "0.7000"]


def test_missing_failed_and_running_cells_never_show_zero(tmp_path):
    sweep = grid_sweep(tmp_path, seeds=(0,), skip={("gan", "patch"), ("wgangp", "single")})
    broken = dict(status="failed", psnr=None, loss="wgangp", disc="single")
    write_run(sweep / "disc=single,loss=wgangp", **broken)
    write_run(sweep / "disc=double,loss=ragan,r", status="running", loss="ragan", disc="double")
    tables = build_tables([sweep], tables=["4.1"])
    t41 = tables["4.1"]
    missing = cell(t41, loss="gan", disc="patch")
    assert missing["text"] == "missing" and missing["state"] == "missing"
    failed = cell(t41, loss="wgangp", disc="single")
    assert failed["text"] == "failed (1)" and pd.isna(failed["mean"]) and failed["n"] == 0
    # a finished seed beside a running one: the value, and the running run stated
    assert cell(t41, loss="ragan", disc="double")["text"] == "28.32 (n=1; 1 running)"
    rows = md_rows(render_markdown(tables))
    assert rows["gan"][2:4] == ["missing · thesis 28.49", "missing · thesis 0.8264"]
    assert rows["wgangp"][:2] == ["failed (1) · thesis 27.60", "failed (1) · thesis 0.8180"]
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out), "--tables", "4.1"]) == 0
    rows = list(csv.DictReader((out / "table4_1.csv").read_text().splitlines()))
    bad = {(r["loss"], r["disc"]): r for r in rows if r["metric"] == "val/psnr"}
    assert bad[("gan", "patch")]["status"] == "missing" and bad[("gan", "patch")]["mean"] == ""
    assert bad[("wgangp", "single")]["status"] == "failed"
    assert bad[("wgangp", "single")]["mean"] == "" and bad[("wgangp", "single")]["n_failed"] == "1"
    assert bad[("ragan", "double")]["n_running"] == "1"
    tex = (out / "table4_1.tex").read_text()
    assert r"\emph{missing} [28.49]" in tex and r"\emph{failed (1)} [27.60]" in tex


def test_cli_writes_markdown_csv_latex_png(tmp_path, capsys):
    sweep = grid_sweep(tmp_path)
    assert main([str(sweep)]) == 0  # default output: <first folder>/tables
    out = sweep / "tables"
    stdout = capsys.readouterr().out
    assert "## Table 4.1" in stdout and stdout == (out / "tables.md").read_text()
    assert "No runs for Table 4.2" in stdout
    rows = list(csv.DictReader((out / "table4_1.csv").read_text().splitlines()))
    cells = [r for r in rows if r["loss"] != "input"]
    assert len(cells) == 4 * 3 * 2 and {r["n"] for r in cells} == {"3"}
    key = ("gan", "single", "val/psnr")
    gan_single = next(r for r in cells if (r["loss"], r["disc"], r["metric"]) == key)
    assert float(gan_single["mean"]) == pytest.approx(28.1)
    assert float(gan_single["thesis"]) == 28.65
    assert float(gan_single["diff_vs_thesis"]) == pytest.approx(28.1 - 28.65)
    assert gan_single["seeds"] == "0;1;2"
    inputs = [r for r in rows if r["loss"] == "input"]
    assert len(inputs) == 3 * 2 and {r["mean"] for r in inputs} == {"24.5", "0.7"}
    tex = (out / "table4_1.tex").read_text()
    assert r"\begin{tabular}{lcccccc}" in tex and r"$28.10 \pm 0.10$ (3) [28.65]" in tex
    assert r"\toprule" in tex and "fpn\\_mobilenetv2" in tex
    assert r"blurred input (no deblurring) & $24.50$ & $0.7000$" in tex
    png = (out / "table4_1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert not (out / "table4_2.csv").exists()  # no classifier runs: no empty files


def test_loss_none_is_its_own_row_of_table_4_1(tmp_path):
    sweep = grid_sweep(tmp_path, seeds=(0,))
    for seed in (0, 1):  # content loss only; its disc= choice is recorded but builds nothing
        none = dict(seed=seed, psnr=27.0 + seed, loss="none", disc="double", experiment="table4_1")
        write_run(sweep / f"loss=none,seed={seed}", **none)
    t41 = build_tables([sweep], tables=["4.1"])["4.1"]
    none = cell(t41, loss="none", disc="double")
    assert none["n"] == 2 and none["mean"] == pytest.approx(27.5) and pd.isna(none["thesis"])
    assert cell(t41, loss="gan", disc="double")["n"] == 1  # not pooled with the GAN rows
    md = render_markdown({"4.1": t41})
    rows = md_rows(md)
    assert rows["none (no discriminator)"][:2] == ["—", "—"]
    assert rows["none (no discriminator)"][4] == "27.50 ± 0.71 (n=2) · thesis —"
    assert list(rows).index("none (no discriminator)") == list(rows).index("ragan") + 1
    assert "loss=none: content loss only" in md


def test_table_4_2_groups_classifier_runs_by_backbone(tmp_path):
    sweep = tmp_path / "table4_2"
    for seed, (loss, acc) in enumerate([(0.30, 70.0), (0.20, 74.0)]):
        clf = dict(task="classifier", seed=seed, psnr=loss, ssim=acc, backbone="nlayer")
        write_run(sweep / f"backbone=nlayer,seed={seed}", **clf)
    seresnext = dict(task="classifier", psnr=0.02, ssim=82.0, backbone="seresnext50")
    write_run(sweep / "backbone=seresnext50", **seresnext)
    grid_sweep(tmp_path, seeds=(0,))  # GAN runs must not leak into Table 4.2
    t42 = build_tables([tmp_path])["4.2"]
    assert len(t42.runs) == 3
    acc = cell(t42, "val/acc", backbone="nlayer")
    assert acc["mean"] == pytest.approx(72.0) and acc["n"] == 2 and acc["thesis"] == 73.19
    loss = cell(t42, "val/loss", backbone="nlayer")
    assert loss["std"] == pytest.approx(0.0707107, rel=1e-5) and loss["thesis"] == 0.284
    assert cell(t42, "val/acc", backbone="seresnext50")["n"] == 1
    assert cell(t42, "val/acc", backbone="efficientnet_b0")["state"] == "missing"
    rows = md_rows(render_markdown({"4.2": t42}))
    assert rows["backbone"] == ["val loss", "accuracy %"]
    assert rows["nlayer"] == [
        "0.250 ± 0.071 (n=2) · thesis 0.284",
        "72.00 ± 2.83 (n=2) · thesis 73.19",
    ]
    assert "blurred input (no deblurring)" not in rows  # classifiers do not deblur


def test_tables_4_3_and_4_4_group_by_backbone_loss_pretrained_frozen(tmp_path):
    s43, s44 = tmp_path / "table4_3", tmp_path / "table4_4"
    e43, e44 = ({"experiment": f"table4_{n}", "disc": "single"} for n in (3, 4))
    for seed in (0, 1):
        for pre in (False, True):
            fresh_or_not = dict(seed=seed, pretrained=pre, psnr=28.0 + pre + seed, loss="ragan")
            write_run(s43 / f"nlayer,ragan,pre={pre},seed={seed}", **fresh_or_not, **e43)
        frozen = dict(seed=seed, pretrained=True, frozen=True, psnr=26.0 + seed, loss="ragan")
        write_run(s44 / f"nlayer,frozen,seed={seed}", **frozen, **e44)
    mnv3 = dict(pretrained=True, psnr=27.0, loss="wgangp", backbone="mobilenetv3_large")
    write_run(s43 / "mnv3,wgangp", **mnv3, **e43)
    tables = build_tables([s43, s44])
    t43, t44 = tables["4.3"], tables["4.4"]
    assert t43.blocks == [{"gen": "fpn_mobilenetv2", "disc": "single"}]
    nl_ragan = {"backbone": "nlayer", "loss": "ragan"}
    assert cell(t43, pretrained="no", **nl_ragan)["mean"] == pytest.approx(28.5)
    assert cell(t43, pretrained="yes", **nl_ragan)["mean"] == pytest.approx(29.5)
    assert cell(t43, pretrained="yes", **nl_ragan)["thesis"] == 28.33
    assert cell(t43, pretrained="yes", backbone="nlayer", loss="wgangp")["state"] == "missing"
    # a combination the thesis did not run comes after the thesis rows, with no thesis number
    rows = list(md_rows(render_markdown({"4.3": t43})))
    assert rows[-2:] == ["mobilenetv3_large / wgangp", "blurred input (no deblurring)"]
    other = cell(t43, pretrained="yes", backbone="mobilenetv3_large", loss="wgangp")
    assert pd.isna(other["thesis"])
    assert (t43.runs["frozen"] == "no").all()  # frozen runs are Table 4.4 only
    assert cell(t44, frozen="yes", **nl_ragan)["mean"] == pytest.approx(26.5)
    assert cell(t44, frozen="yes", **nl_ragan)["thesis"] == 26.1
    assert cell(t44, "val/ssim", frozen="yes", **nl_ragan)["thesis"] == 0.7765
    assert cell(t44, frozen="no", **nl_ragan)["n"] == 2  # Table 4.3's runs
    assert (t44.runs["pretrained"] == "yes").all()
    assert cell(t44, frozen="yes", backbone="mobilenetv3_large", loss="ragan")["state"] == "missing"
    assert cell(t44, frozen="yes", backbone="input", loss="input")["text"] == "24.50"
    assert tables["4.1"].runs.empty  # runs tagged table4_3/4_4 stay out of Table 4.1


def test_untagged_runs_count_wherever_they_fit_tagged_ones_only_in_their_table(tmp_path):
    write_run(tmp_path / "a", loss="ragan", disc="single", experiment="table4_1")
    write_run(tmp_path / "b", loss="ragan", disc="single", psnr=30.0)
    tables = build_tables([tmp_path], tables=["4.1", "4.3"])
    assert cell(tables["4.1"], loss="ragan", disc="single")["n"] == 2
    assert [Path(p).name for p in tables["4.3"].runs["path"]] == ["b"]


def test_best_metrics_mixture_variants_attempts_and_unreadable_files(tmp_path):
    write_run(tmp_path / "r0", psnr=28.0, best={"val/psnr": 29.0, "val/ssim": 0.9, "epoch": 3})
    write_run(tmp_path / "r1", seed=1, psnr=28.2, data="gopro")
    write_run(tmp_path / "r2", gen="fpn_inception", debug="smoke")
    write_run(tmp_path / "r0" / "attempts" / "1", status="failed", psnr=None)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{not json")
    final = build_tables([tmp_path], tables=["4.1"])["4.1"]
    best = build_tables([tmp_path], which="best", tables=["4.1"])["4.1"]
    assert cell(best, loss="ragan", disc="double")["mean"] == pytest.approx((29.0 + 28.2) / 2)
    # one block per generator, the one with most runs first
    assert [b["gen"] for b in final.blocks] == ["fpn_mobilenetv2", "fpn_inception"]
    assert cell(final, block=1, loss="ragan", disc="double")["n"] == 1
    mixed = cell(final, loss="ragan", disc="double")
    assert mixed["n_failed"] == 0  # the archived attempt is not a run
    assert mixed["text"].endswith(" †")
    notes = " ".join(final.notes)
    assert "MIXTURE of embedded (2 runs), gopro (1 runs)" in notes
    assert "skipped" in notes and "broken" in notes
    assert "1 run(s) are debug=smoke runs" in notes


def test_failed_run_is_placed_from_the_flags_its_record_holds_from_the_start(tmp_path):
    """A GAN run's record carries its critic's pretrained / frozen from its first write
    (runs.base_record), so a run that fails early is placed by its record alone (no .hydra/)."""
    cfg = compose("train", ["debug=smoke", "disc=single", "disc.frozen=true", "disc.checkpoint=x"])
    start = base_record(cfg, "gan", tmp_path)
    assert (start.result.critic.pretrained, start.result.critic.frozen) == (True, True)
    fresh = base_record(compose("train", ["debug=smoke"]), "gan", tmp_path)
    assert (fresh.result.critic.pretrained, fresh.result.critic.frozen) == (False, False)
    early = dict(status="failed", pretrained=True, frozen=True, loss="ragan", disc="single")
    write_run(tmp_path / "x", **early)
    tables = build_tables([tmp_path / "x"])
    failed = cell(tables["4.4"], frozen="yes", backbone="nlayer", loss="ragan")
    assert failed["text"] == "failed (1)"
    assert tables["4.1"].runs.empty


def test_cli_errors_name_the_path(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert main([str(tmp_path), "--tables", "4.9"]) == 2
    assert "unknown table '4.9'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 1  # nothing found: said, and a non-zero exit
    assert "no GAN or classifier metrics.json" in capsys.readouterr().err
