"""The study as Hydra multiruns, through the real command line (subprocesses)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from entry_runs import cli

LOSSES = ("gan", "lsgan", "wgangp", "ragan")
DISCS = ("single", "patch", "double")


def _cli(module: str, *args: str, runs: Path, check: bool = True) -> subprocess.CompletedProcess:
    return cli(module, *args, runs=runs, check=check, timeout=900)


def _metrics(folder: Path) -> dict[str, dict]:
    return {
        str(p.parent.relative_to(folder)): json.loads(p.read_text())
        for p in folder.rglob("metrics.json")
        if "attempts" not in p.parts
    }


@pytest.fixture(scope="module")
def grid(tmp_path_factory, cache_dir):
    runs = tmp_path_factory.mktemp("runs")
    args = f"-m loss={','.join(LOSSES)} disc={','.join(DISCS)} debug=smoke sweep_name=grid"
    _cli("deblur.train", *args.split(), runs=runs)
    return runs / "grid"


@pytest.mark.e2e
@pytest.mark.slow  # minutes on 2 cores: make test-slow (the default suite stays <= 10 min)
def test_twelve_cell_sweep_writes_twelve_finished_runs(grid):
    found = _metrics(grid)
    assert len(found) == 12
    for name, m in found.items():
        assert m["status"] == "finished", (name, m.get("error"))
        assert f"loss={m['choices']['loss']}" in name and f"disc={m['choices']['disc']}" in name


@pytest.mark.e2e
@pytest.mark.slow  # minutes on 2 cores: make test-slow (the default suite stays <= 10 min)
def test_table_4_1_is_complete(grid, tmp_path):
    proc = _cli("deblur.tables", str(grid), "--out", str(tmp_path), runs=grid.parent)
    text = (tmp_path / "tables.md").read_text()
    section = text.split("Table 4.1", 1)[1].split("Table 4.2")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    for loss in LOSSES:
        row = next(r for r in rows if r.split("|")[1].strip() == loss)
        assert "missing" not in row and "failed" not in row, row
        assert row.count("(n=1)") + row.count("n=1") >= 3, row
    assert "Table 4.1" in proc.stdout
    assert (tmp_path / "table4_1.csv").is_file()


@pytest.mark.e2e
@pytest.mark.slow  # builds the 12-cell grid (~2 min); relaunch skipping stays in the default
# suite through test_failed_run_does_not_stop_others_and_relaunch_reruns_only_it
def test_relaunch_skips_finished_runs(grid):
    before = {k: v["ended"] for k, v in _metrics(grid).items()}
    again = "-m loss=gan,ragan disc=single debug=smoke sweep_name=grid".split()
    proc = _cli("deblur.train", *again, runs=grid.parent)
    assert proc.stdout.count("skip (finished)") == 2
    after = {k: v["ended"] for k, v in _metrics(grid).items()}
    assert before == after


@pytest.mark.e2e
@pytest.mark.slow  # a real multirun with a failing job (~45 s on 2 cores)
def test_failed_run_does_not_stop_others_and_relaunch_reruns_only_it(tmp_path, cache_dir):
    runs = tmp_path / "runs"
    # stage 1 for one backbone only: the mobilenet GAN cell has no classifier to start from
    stage1 = "deblur.train_classifier -m debug=smoke sweep_name=table4_2 backbone={}"
    _cli(*stage1.format("nlayer").split(), runs=runs)
    sweep = [
        "deblur.train",
        "-m",
        "backbone=nlayer,mobilenetv3_large",
        "disc=single",
        "disc.checkpoint=auto",
        "loss=gan",  # exact without calibration: a smoke classifier is random
        "debug=smoke",
        "sweep_name=pre",
    ]
    proc = _cli(*sweep, runs=runs, check=False)
    assert proc.returncode != 0
    found = _metrics(runs / "pre")
    status = {m["choices"]["backbone"]: m["status"] for m in found.values()}
    assert status == {"nlayer": "finished", "mobilenetv3_large": "failed"}
    failed = next(m for m in found.values() if m["status"] == "failed")
    assert "train_classifier" in failed["error"]["message"]
    ended = {m["choices"]["backbone"]: m["ended"] for m in found.values()}

    _cli(*stage1.format("mobilenetv3_large").split(), runs=runs)
    proc = _cli(*sweep, runs=runs)
    assert proc.stdout.count("skip (finished)") == 1
    found = _metrics(runs / "pre")
    by_bb = {m["choices"]["backbone"]: m for m in found.values()}
    assert by_bb["nlayer"]["ended"] == ended["nlayer"]  # untouched
    assert by_bb["mobilenetv3_large"]["status"] == "finished"
    assert by_bb["mobilenetv3_large"]["previous_status"] == "failed"
    # the failed attempt's files were kept, not overwritten
    assert list((runs / "pre").rglob("attempts/1/metrics.json"))


@pytest.mark.e2e
@pytest.mark.slow  # minutes on 2 cores: make test-slow (the default suite stays <= 10 min)
def test_tensorboard_serves_every_run_of_the_sweep(grid):
    from tb_server import check_served

    report = check_served(grid)
    assert len(report["runs"]) == 12
    for name, served in report["runs"].items():
        assert "train/g_total" in " ".join(served["scalars"]), name
        assert "val/psnr" in " ".join(served["scalars"]), name
        assert served["images"], name
        assert served["hparam_metrics"].get("hp/psnr", 0) > 0, name


@pytest.mark.e2e
@pytest.mark.slow  # minutes on 2 cores: make test-slow (the default suite stays <= 10 min)
def test_submitit_local_launcher_runs_jobs_concurrently(tmp_path, cache_dir):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    runs = tmp_path / "runs"
    local = "-m hydra/launcher=submitit_local loss=gan,lsgan disc=single debug=smoke".split()
    _cli("deblur.train", *local, "sweep_name=local", runs=runs)
    found = _metrics(runs / "local")
    assert len(found) == 2
    assert all(m["status"] == "finished" for m in found.values())
    pids = {m["pid"] for m in found.values()}
    assert len(pids) == 2  # each job ran in its own process
    assert list((runs / "local" / ".submitit").glob("*"))
