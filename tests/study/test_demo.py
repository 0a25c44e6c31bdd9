"""`make demo` (python -m deblur.demo) end to end, at smoke scale: every stage and every table."""

from __future__ import annotations

import json

import pytest

from deblur.study.demo import CLASSIFIER_SCALE
from entry_runs import cli


@pytest.mark.e2e
@pytest.mark.slow  # the whole make demo (~2-4 min on 2 cores): make test-slow
def test_demo_runs_every_stage_and_writes_the_tables(tmp_path, cache_dir):
    runs = tmp_path / "demo"
    proc = cli("deblur.demo", "--scale", "smoke", "--runs-dir", str(runs), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = {
        p.parent.relative_to(runs).as_posix(): json.loads(p.read_text())
        for p in runs.rglob("metrics.json")
    }
    by_sweep: dict[str, int] = {}
    for name, rec in records.items():
        assert rec["status"] == "finished", (name, rec.get("error"))
        by_sweep[name.split("/")[0]] = by_sweep.get(name.split("/")[0], 0) + 1
    assert by_sweep == {"table4_2": 1, "table4_1": 13, "table4_4": 2}  # 12 cells + loss=none
    assert sum(r["choices"].get("loss") == "none" for r in records.values()) == 1
    # stage 2's pretrained runs start their critic from stage 1's classifier
    clf = next(r for n, r in records.items() if n.startswith("table4_2/"))
    epochs = int(next(o for o in CLASSIFIER_SCALE if "max_epochs" in o).split("=")[1])
    clf = clf["result"]
    assert clf["best"]["val/acc"] >= 0 and clf["history"][-1]["epoch"] == epochs - 1
    pretrained = [r for n, r in records.items() if n.startswith("table4_4/")]
    critics = [r["result"]["critic"] for r in pretrained]
    assert sorted(c["frozen"] for c in critics) == [False, True]
    assert all(c["checkpoint"].endswith("best.ckpt") for c in critics)
    assert "| gan " in proc.stdout and "finished in" in proc.stdout
    assert "Table 4.1 cells above the blurred input's PSNR:" in proc.stdout
    assert "of 13" in proc.stdout  # every cell, the none row included, is compared
    for table in ("4_1", "4_2", "4_4"):
        assert (runs / "tables" / f"table{table}.csv").is_file()
