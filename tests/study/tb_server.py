"""Test helper: start the REAL TensorBoard server on a logdir and check through its HTTP data API
that the scalars, images and hparams of every run folder are served (used by test_dashboard.py and
test_sweep.py; not part of the product)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deblur.study.dashboard import run_folders, tensorboard_argv

REQUIREMENTS = ("scalars", "images", "hparams")


class ServedError(AssertionError):
    """TensorBoard could not start, or does not serve everything a run folder holds."""


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """Stop the TensorBoard we started (its process group: TensorBoard and its data server)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _http(url: str, body: dict | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _json(url: str, body: dict | None = None) -> Any:
    status, payload = _http(url, body)
    if status != 200:
        raise ServedError(f"TensorBoard answered {status} to {url}: {payload[:300]!r}")
    return json.loads(payload)


def _start_server(
    logdir: Path, load_fast: str, timeout: float
) -> tuple[subprocess.Popen, str, Path]:
    """Start ``python -m tensorboard.main`` on a free 127.0.0.1 port; wait until it answers."""
    log = Path(tempfile.mkstemp(prefix="deblur-tensorboard-", suffix=".log")[1])
    deadline = time.monotonic() + timeout
    for _attempt in range(3):
        port = _free_port()
        argv = tensorboard_argv(logdir, port, "127.0.0.1") + [f"--load_fast={load_fast}"]
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tensorboard.main", *argv],
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if _http(url + "/data/runs", timeout=2.0)[0] == 200:
                    return proc, url, log
            except OSError:
                pass
            time.sleep(0.25)
        _stop(proc)
        if time.monotonic() >= deadline:
            break
    raise ServedError(
        f"deblur.dashboard: TensorBoard did not start on {logdir} within {timeout:.0f}s. "
        f"Its log:\n{log.read_text(errors='replace')[-2000:]}"
    )


def _hparams_sessions(url: str) -> dict[str, dict[str, Any]]:
    """TensorBoard run name -> {"hparams": {...}, "metrics": {tag: value}} from the HPARAMS API."""
    base = url + "/data/plugin/hparams"
    exp = _json(base + "/experiment", {"experimentName": ""})
    infos = (("hparam", "hparamInfos"), ("metric", "metricInfos"))
    cols = [{kind: i["name"], "includeInResult": True} for kind, k in infos for i in exp.get(k, [])]
    request = {
        "experimentName": "",
        "allowedStatuses": [f"STATUS_{s}" for s in ("UNKNOWN", "SUCCESS", "FAILURE", "RUNNING")],
        "colParams": cols,
        "startIndex": 0,
        "sliceSize": 100000,
    }
    groups = _json(base + "/session_groups", request).get("sessionGroups", [])
    sessions = {}
    for group in groups:
        for session in group.get("sessions", []):
            metrics = {v["name"]["tag"]: v.get("value") for v in session.get("metricValues", [])}
            sessions[session["name"]] = {"hparams": group.get("hparams", {}), "metrics": metrics}
    return sessions


def _check_once(url: str, logdir: Path, require: Sequence[str]) -> dict[str, Any]:
    quote = urllib.parse.quote
    expected = run_folders(logdir)
    served = _json(url + "/data/runs")
    scalar_tags = _json(url + "/data/plugin/scalars/tags")
    image_tags = _json(url + "/data/plugin/images/tags")
    sessions = _hparams_sessions(url) if "hparams" in require else {}
    layout = _json(url + "/data/plugin/custom_scalars/layout")
    report: dict[str, Any] = {
        "url": url,
        "logdir": str(logdir),
        "tb_runs": served,
        "layout": [c.get("title") for c in layout.get("category", [])],
        "runs": {},
        "problems": [],
    }
    problems = report["problems"]
    for folder, tb_runs in expected.items():
        entry: dict[str, Any] = {"tb_runs": tb_runs, "scalars": {}, "images": {}, "hparams": {}}
        entry["hparam_metrics"] = {}
        for run in tb_runs:
            if run not in served:
                problems.append(f"{folder}: TensorBoard does not list its run {run!r}")
                continue
            q = f"run={quote(run, safe='')}"
            for tag in scalar_tags.get(run, {}):
                points = _json(f"{url}/data/plugin/scalars/scalars?{q}&tag={quote(tag, safe='')}")
                entry["scalars"][tag] = len(points)
            for tag in image_tags.get(run, {}):
                meta = _json(f"{url}/data/plugin/images/images?{q}&tag={quote(tag, safe='')}")
                ok = bool(meta)
                if ok:
                    status, png = _http(
                        f"{url}/data/plugin/images/individualImage?{meta[-1]['query']}"
                    )
                    ok = status == 200 and png[:4] == b"\x89PNG"
                entry["images"][tag] = len(meta) if ok else 0
            if run in sessions:
                entry["hparams"].update(sessions[run]["hparams"])
                entry["hparam_metrics"].update(sessions[run]["metrics"])
        if "scalars" in require and not any(entry["scalars"].values()):
            problems.append(f"{folder}: no scalar served")
        if "images" in require and not any(entry["images"].values()):
            problems.append(f"{folder}: no image served")
        if "hparams" in require and not (entry["hparams"] and entry["hparam_metrics"]):
            problems.append(f"{folder}: no HPARAMS session with hparams and metrics")
        report["runs"][folder] = entry
    if not expected:
        problems.append(f"no TensorBoard event files under {logdir}")
    return report


def check_served(
    logdir: str | Path,
    require: Sequence[str] = REQUIREMENTS,
    timeout: float = 60.0,
    wait: float = 20.0,
    strict: bool = True,
    load_fast: str = "auto",
) -> dict[str, Any]:
    """Start the real TensorBoard on ``logdir`` (``timeout``: its start), wait up to ``wait`` s
    until every run is served; the report of :func:`_check_once` (``strict``: its problems raise
    :class:`ServedError`). The server is always stopped before returning."""
    unknown = set(require) - set(REQUIREMENTS)
    if unknown:
        raise ValueError(f"check_served: unknown requirement {sorted(unknown)}; use {REQUIREMENTS}")
    logdir = Path(logdir)
    proc, url, log = _start_server(logdir, load_fast, timeout)
    deadline = time.monotonic() + wait
    try:
        while True:  # TensorBoard loads event files in the background: poll until complete
            report = _check_once(url, logdir, require)
            if not report["problems"] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        _stop(proc)
        log.unlink(missing_ok=True)
    if strict and report["problems"]:
        raise ServedError(
            f"TensorBoard on {logdir} does not serve everything: " + "; ".join(report["problems"])
        )
    return report
