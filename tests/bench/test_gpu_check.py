"""benchmarks/gpu_check.py: the prepared GPU check (issue 20, item 1).

The default suite runs ``benchmarks/gpu_check.sh --device cpu --tiny`` itself (every phase, each
in its own process, as on the device; about two minutes on two busy cores) and checks its
report; the rest are quick checks of the budgets, the phase order, the verdicts and the driver.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """``benchmarks/gpu_check.sh --device cpu --tiny``, once for the module: (out folder, rc,
    output)."""
    out = tmp_path_factory.mktemp("gpu_check_out")
    env = {k: v for k, v in os.environ.items() if k not in ("GPU_CHECK_T0", "OUT")}
    env["PYTHON"] = sys.executable
    commit = out.parent / "commit.txt"
    commit.write_text("abc1234-test\n")
    cmd = [str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--tiny"]
    cmd += ["--out", str(out), "--commit-file", str(commit)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    return out, proc.returncode, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- budgets, order
def test_full_budgets_add_up_to_at_most_380_s_and_fit_the_deadline(gc):
    assert set(gc.BUDGET_FULL) == set(gc.PHASES) == set(gc.BUDGET_TINY)
    total = sum(gc.BUDGET_FULL.values())
    assert total <= gc.BUDGET_LIMIT_S == 380
    # the deadline leaves each phase its whole budget (plus the install and the summary) ...
    assert gc.DEADLINE_FULL >= total + gc.RESERVE_S
    # ... and stays inside one device command (10 min), with the kill grace of one phase
    assert gc.DEADLINE_FULL + gc.KILL_GRACE_S < 600
    assert gc.parse_args([]).deadline == gc.DEADLINE_FULL


def test_key_rows_come_first_and_the_rows_cut_first_come_last(gc):
    order = list(gc.PHASES)
    assert order[:3] == ["env", "key", "e2e"]
    assert order[-1] == "throughput"  # the rest of the matrix: cut first when time runs out
    for later in ("data", "throughput", "inference", "tests"):
        assert order.index("key") < order.index("e2e") < order.index(later)
    assert order.index("correctness") < order.index("data")
    assert "compile" in order and gc.BUDGET_FULL["compile"] > 0  # its own budget
    assert gc.parse_args([]).phases == order


def test_a_bad_budget_override_is_one_clear_error(gc):
    args = gc.parse_args(["--budget", "compil=10"])
    with pytest.raises(SystemExit, match="phase=seconds"):
        gc.phase_budgets(args)
    assert gc.phase_budgets(gc.parse_args(["--budget", "compile=120"]))["compile"] == 120


def test_every_loader_row_has_whole_batches_for_every_worker(gc):
    args = gc.parse_args([])
    on_disk = gc.dataset_pairs(args)
    assert on_disk >= args.e2e_iters * args.e2e_batch  # the e2e run: one epoch of 100 batches
    for workers in [*args.data_workers, gc.feeding_workers()]:
        need = max(1, workers) * args.loader_batch * 4
        assert gc.loader_pairs(workers, args.loader_batch, on_disk) == need <= on_disk


# ----------------------------------------------------------------------------- verdicts
def _run(precision, batch, curves, status="finished"):
    return {
        "precision": precision,
        "batch": batch,
        "status": status,
        "finite": True,
        "curves": curves,
    }


def test_correctness_verdict_passes_within_and_fails_outside_the_thresholds(gc):
    ref = {k: [1.0, 0.9, 0.8, 0.7] * 5 for k in gc.TERMS}
    close = {k: [v * 1.03 for v in vals] for k, vals in ref.items()}
    assert gc.verdict(_run("32-true", 16, ref), _run("bf16-mixed", 16, close))["verdict"] == "pass"

    drift = {**close, "train/d": [1.0] * 16 + [0.9] * 4}  # last quarter 0.9 vs 0.7: off by 29 %
    v = gc.verdict(_run("32-true", 16, ref), _run("bf16-mixed", 16, drift))
    assert v["verdict"] == "fail" and any("train/d last quarter" in w for w in v["why"])

    step0 = {**close, "train/g_pixel": [1.2] + ref["train/g_pixel"][1:]}  # 20 % at step 0
    v = gc.verdict(_run("32-true", 1, ref), _run("bf16-mixed", 1, step0))
    assert v["verdict"] == "fail" and any("step 0" in w for w in v["why"])

    crashed = _run("bf16-mixed", 1, {}, status="failed")
    assert gc.verdict(_run("32-true", 1, ref), crashed)["verdict"] == "fail"


def test_data_wait_share_from_the_profiler_events(gc):
    # 8 iterations of 0.1 s: a 0.02 s fetch, a 0.01 s move, a 0.07 s step
    events = {"fetch": [], "move": [], "step": []}
    for i in range(8):
        t = i * 0.1
        events["fetch"].append((t, t + 0.02))
        events["move"].append((t + 0.02, t + 0.03))
        events["step"].append((t + 0.03, t + 0.1))
    w = gc.data_wait(events, batch=16, skip=2)
    assert w["skipped"] == 2 and w["iterations_profiled"] == 8
    assert w["wait_share"] == pytest.approx(0.2) and w["move_share"] == pytest.approx(0.1)
    assert w["images_per_s_after_skip"] == pytest.approx(16 / 0.1)
    assert "error" in gc.data_wait({"fetch": [], "step": []}, 16, 2)


# ----------------------------------------------------------------------------- driver
def test_a_phase_over_its_budget_is_killed_and_recorded(gc, tmp_path):
    args = gc.parse_args(["--device", "cpu", "--tiny", "--out", str(tmp_path)])
    gc.write_json(tmp_path / "args.json", {k: str(v) if isinstance(v, Path) else v
                                           for k, v in vars(args).items()})  # fmt: skip
    lines: list[str] = []
    entry = gc.run_phase("env", tmp_path, 0.5, lines.append)
    assert entry["status"] == "timeout" and entry["seconds"] < 15  # torch alone takes > 0.5 s
    assert "killed at its budget" in entry["error"] and "[env] timeout" in lines[0]


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


def test_the_commit_comes_from_the_file_passed_in(gc, tmp_path):
    (tmp_path / "c").write_text("1a2b3c4-dirty\n")
    assert gc.read_commit(tmp_path / "c") == "1a2b3c4-dirty"
    assert gc.read_commit(tmp_path / "missing").startswith("n/a (no commit file")


# ----------------------------------------------------------------------------- the tiny run
@pytest.mark.e2e
@pytest.mark.slow  # the whole script on the CPU (~2 min on 2 cores): make test-e2e
def test_tiny_cpu_run_of_gpu_check_sh_passes_every_phase(tiny_run):
    out, rc, output = tiny_run
    assert rc == 0, output[-4000:]
    report = json.loads((out / "gpu_check.json").read_text())
    phases = report["phases"]
    assert list(phases) == list(report["args"]["phases"])
    for name, phase in phases.items():
        assert phase["status"] == "ok", (name, phase.get("error"), phase.get("log_tail"))
    assert report["total_s"] < report["args"]["deadline"]
    # what the device tool brings back: at most 8 files, plain names, none deeper
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.parent == out for p in files)
    assert {"gpu_check.json", "gpu_check.md", "log.txt", "RESULTS.md"} <= {p.name for p in files}


@pytest.mark.e2e
@pytest.mark.slow  # the whole script on the CPU (~2 min on 2 cores): make test-e2e
def test_tiny_run_reports_key_rows_e2e_compile_and_the_verdicts(tiny_run):
    out, _, output = tiny_run
    res = {
        k: v["result"]
        for k, v in json.loads((out / "gpu_check.json").read_text())["phases"].items()
    }
    assert res["env"]["git"] == "abc1234-test" and res["env"]["matmul_flops"] > 1e8
    key = res["key"]
    assert [(r["batch"], r["precision"]) for r in key["rows"]] == [
        (2, "bf16-mixed"),
        (1, "bf16-mixed"),
    ]
    assert key["loader"]["cache"] is True and key["loader"]["augment_on"] == "gpu"
    assert key["loader"]["pairs_per_s"] > 0
    e2e = res["e2e"]
    assert e2e["status"] == "finished" and e2e["iterations"] == 4 and e2e["images_per_s"] > 0
    assert "-m deblur.train" in e2e["command"] and "data.augment_on=gpu" in e2e["command"]
    assert 0 <= e2e["data_wait"]["wait_share"] < 1
    assert [v["batch"] for v in res["correctness"]["verdicts"]] == [1, 2]
    assert {v["verdict"] for v in res["correctness"]["verdicts"]} <= {"pass", "fail"}
    for run in res["correctness"]["runs"]:
        assert run["status"] == "finished" and run["finite"] and run["steps_recorded"] == 4
    compiled = res["compile"]["rows"]
    assert [r["overrides"] for r in compiled] == [
        ["model.compile=true"],
        ["model.compile=true", "loss=wgangp"],
        ["model.compile=true", "model.compile_mode=reduce-overhead"],
    ]
    assert [r["batch"] for r in compiled] == [2, 2, 1]
    assert all(r["status"] == "trained" for r in compiled)
    assert res["tests"]["counts"].get("skipped", 0) >= 1  # the GPU tests skip on a CPU
    assert {r["precision"] for r in res["inference"]["rows"]} == {
        "fp32",
        "bf16",
        "bf16 channels_last",
    }
    data = res["data"]["rows"]
    assert len(data) == 4 and all("error" not in r and r["pairs_per_s"] > 0 for r in data)
    assert res["throughput"]["rows"]

    md = (out / "gpu_check.md").read_text()
    for heading in ("## Phases", "## Targets", "## Key rows", "## End to end", "## Correctness",
                    "## torch.compile", "## GPU tests", "## Generator inference", "## Data loader",
                    "## Training throughput"):  # fmt: skip
        assert heading in md, heading
    assert md.index("## Key rows") < md.index("## End to end") < md.index("## Data loader")
    assert "**batch 1: pass**" in md or "**batch 1: fail**" in md
    assert ">= 600 img/s" in md and ">= 120 img/s" in md and "<= 3 ms" in md and "<= 6 h" in md
    assert "tiny mode" in md and "## Training throughput" in (out / "RESULTS.md").read_text()
    assert "bf16 vs fp32 (TF32 off), batch 2" in output  # the short table, printed last
