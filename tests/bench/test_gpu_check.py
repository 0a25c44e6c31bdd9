"""benchmarks/gpu_check.py: the prepared GPU check, in its CPU tiny mode (issue 14, item 1)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def test_tiny_mode_runs_every_phase_and_writes_json_and_summary(gc, tmp_path, monkeypatch):
    monkeypatch.delenv("GPU_CHECK_T0", raising=False)
    out = tmp_path / "out"
    phases = ["env", "curves", "throughput", "inference", "data"]  # tests: see below
    assert (
        gc.main(["--device", "cpu", "--tiny", "--inline", "--out", str(out), "--phases", *phases])
        == 0
    )

    report = json.loads((out / "gpu_check.json").read_text())
    assert list(report["phases"]) == phases
    for name, phase in report["phases"].items():
        assert phase["status"] == "ok", (name, phase.get("error"), phase.get("log_tail"))
    res = {k: v["result"] for k, v in report["phases"].items()}
    assert res["env"]["device_type"] == "cpu" and res["env"]["matmul_flops"] > 1e8
    runs = res["curves"]["runs"]
    assert [(r["loss"], r["precision"]) for r in runs] == [
        ("ragan_ls", "32-true"),
        ("wgangp", "32-true"),
    ]
    for r in runs:
        assert r["status"] == "finished" and r["finite"] is True
        assert r["steps_recorded"] == r["iterations"] == 2
        assert len(r["curves"]["train/g_pixel"]) == 2 and math.isfinite(r["val_psnr"])
    rows = res["throughput"]["rows"]
    assert rows and rows[0]["step"] == "GAN train step" and rows[0]["images_per_s"] > 0
    inf = {r["precision"]: r for r in res["inference"]["rows"]}
    assert set(inf) == {"fp32", "bf16", "bf16 channels_last"}
    assert inf["fp32"]["max_abs_diff_vs_fp32"] == 0 and inf["fp32"]["median_ms"] > 0
    assert 20 < inf["bf16"]["psnr_vs_fp32_db"] < 100 and inf["bf16"]["finite"]
    data = res["data"]["rows"]
    assert {(r["augment_on"], r["cache"]) for r in data} == {
        ("cpu", False),
        ("cpu", True),
        ("gpu", False),
        ("gpu", True),
    }
    for r in data:
        assert "error" not in r and r["pairs_per_s"] > 0
        assert (r["device_augment_ms_per_batch"] is not None) == (r["augment_on"] == "gpu")

    md = (out / "gpu_check.md").read_text()
    for heading in ("## Phases", "## Targets", "## Loss curves", "## Training throughput"):
        assert heading in md
    assert "## Generator inference" in md and "## Data loader" in md and "tiny mode" in md
    assert "## Training throughput" in (out / "RESULTS.md").read_text()
    # what the device tool brings back: at most 8 files, plain names
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.parent == out for p in files)


def test_a_phase_over_its_budget_is_killed_and_recorded(gc, tmp_path):
    args = gc.parse_args(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    lines: list[str] = []
    entry = gc.run_phase("env", gc.worker_argv(args), tmp_path, 0.5, lines.append)
    assert entry["status"] == "timeout" and entry["seconds"] < 15  # torch alone takes > 0.5 s
    assert "[env] timeout" in lines[0]


def test_a_failing_phase_is_recorded_and_the_next_one_runs(gc, tmp_path, monkeypatch):
    def broken(args, work):
        raise RuntimeError("no such GPU")

    monkeypatch.setitem(gc.WORKERS, "env", broken)
    monkeypatch.setitem(gc.WORKERS, "inference", lambda args, work: {"rows": []})
    out = tmp_path / "out"
    argv = ["--device", "cpu", "--tiny", "--inline", "--out", str(out)]
    gc.main([*argv, "--phases", "env", "inference"])
    phases = json.loads((out / "gpu_check.json").read_text())["phases"]
    assert phases["env"]["status"] == "failed" and "no such GPU" in phases["env"]["error"]
    assert phases["inference"]["status"] == "ok"
    assert "RuntimeError: no such GPU" in (out / "gpu_check.md").read_text()


def test_deadline_skips_the_remaining_phases(gc, tmp_path, monkeypatch):
    monkeypatch.setitem(gc.WORKERS, "env", lambda args, work: {})
    out = tmp_path / "out"
    gc.main(["--device", "cpu", "--tiny", "--inline", "--out", str(out), "--deadline", "1"])
    phases = json.loads((out / "gpu_check.json").read_text())["phases"]
    assert {p["status"] for p in phases.values()} == {"skipped"}


def test_pytest_summary_counts(gc):
    text = "....\n===== 5 passed, 1 skipped, 2 deselected in 12.3s =====\n"
    assert gc.pytest_counts(text) == {"passed": 5, "skipped": 1, "deselected": 2}
    assert gc.pytest_counts("1 failed, 3 passed in 1.0s") == {"failed": 1, "passed": 3}
    assert gc.pytest_counts("no summary") == {}
