"""One process per run folder (issue 12, item 3)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from deblur.runs import LOCK_FILE, RunLockedError, managed_run, read_metrics
from entry_runs import cli


@pytest.mark.slow  # two real launches (~1 min); the lock's rules stay in the tests below
def test_second_launch_of_a_live_run_folder_fails_naming_the_first(tmp_path, cache_dir):
    """Before the lock, the second launch moved the first's live files to attempts/1 and both
    ended 'finished'. The first run here trains until the test stops it (Ctrl-C)."""
    runs = tmp_path / "runs"
    args = ("deblur.train", "debug=smoke", "trainer.max_epochs=100000", "sweep_name=lock")
    env = dict(os.environ, DEBLUR_RUNS=str(runs), PYTHONUNBUFFERED="1")
    first = subprocess.Popen(
        [sys.executable, "-m", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    run_dir = runs / "lock" / "debug=smoke,trainer.max_epochs=100000"
    lock = run_dir / LOCK_FILE
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            m = read_metrics(run_dir)
            if m and m.status == "running" and (run_dir / "checkpoints").exists():
                break
            assert first.poll() is None, first.stdout.read().decode()[-3000:]
            time.sleep(0.2)
        held = json.loads(lock.read_text())
        assert held["pid"] == first.pid and held["host"] == socket.gethostname()
        second = cli(*args, runs=runs)
        assert first.poll() is None, "the first run ended before the second launch was checked"
    finally:
        first.send_signal(signal.SIGINT)
        try:
            out = first.communicate(timeout=90)[0].decode()
        except subprocess.TimeoutExpired:  # a Ctrl-C that lands in a teardown may be swallowed
            first.kill()
            out = first.communicate()[0].decode()
    assert second.returncode != 0
    said = second.stderr + second.stdout
    assert f"PID {first.pid}" in said and socket.gethostname() in said and held["started"] in said
    assert "Traceback" not in said
    m = read_metrics(run_dir)
    assert m.pid == first.pid and m.status in ("interrupted", "running"), out[-3000:]
    assert not (run_dir / "attempts").exists()  # the second launch moved nothing
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_log_line(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00"}
    (run_dir / LOCK_FILE).write_text(json.dumps(stale))
    cfg = OmegaConf.create({"seed": 0, "runs_dir": str(tmp_path), "resume": "auto"})
    cfg.overwrite = False
    rec = managed_run(cfg, "evaluate", lambda d, r: None, run_dir=run_dir)
    assert rec.status == "finished"
    out = capsys.readouterr().out
    assert f"stale lock {run_dir / LOCK_FILE} of PID {dead.pid}" in out
    assert (run_dir / LOCK_FILE).read_text() == ""  # released at the end


def test_lock_left_by_another_host_is_not_taken(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    other = {"pid": 1, "host": "node-17", "started": "2026-01-01T00:00:00"}
    (run_dir / LOCK_FILE).write_text(json.dumps(other))
    cfg = OmegaConf.create({"seed": 0})
    with pytest.raises(RunLockedError, match=r"PID 1 on host node-17.*delete"):
        managed_run(cfg, "evaluate", lambda d, r: None, run_dir=run_dir)
    assert not (run_dir / "metrics.json").exists()  # nothing written
