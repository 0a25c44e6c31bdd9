"""One TensorBoard over a whole sweep, every run named by its choices (its folder name).

``python -m deblur.dashboard [folders...] [--port 6006] [--latest]`` (``make dashboard``) serves
the given run or sweep folders, by default the latest sweep under ``${DEBLUR_RUNS:-runs}``.
:func:`check_served` starts the real TensorBoard server and checks through its HTTP data API that
the scalars, images and hparams of every run are served (used by the tests).
"""

from __future__ import annotations

import argparse
import atexit
import fnmatch
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

EVENTS_GLOB = "events.out.tfevents.*"
REQUIREMENTS = ("scalars", "images", "hparams")


class DashboardError(RuntimeError):
    """No runs to show, or TensorBoard could not start or serve them."""


# ---------------------------------------------------------------- finding runs


def runs_root() -> Path:
    """Where the runs live: ``$DEBLUR_RUNS`` or ``runs`` (as conf/common/run_dirs.yaml)."""
    return Path(os.environ.get("DEBLUR_RUNS", "runs"))


def _files(root: Path, pattern: str) -> list[Path]:
    """Files below ``root`` matching ``pattern``, following symlinked folders (as TensorBoard does)."""
    return [
        Path(d) / name
        for d, _dirs, names in os.walk(root, followlinks=True)
        for name in fnmatch.filter(names, pattern)
    ]


def _newest_mtime(folder: Path) -> float | None:
    files = _files(folder, "metrics.json") + _files(folder, EVENTS_GLOB)
    return max((p.stat().st_mtime for p in files), default=None)


def latest_sweep(roots: Iterable[str | Path] | None = None) -> Path:
    """The sweep folder (a child of a runs root) whose runs were written last."""
    roots = [Path(r) for r in (roots or [runs_root()])]
    candidates = []
    for root in roots:
        if root.is_dir():
            for child in root.iterdir():
                mtime = _newest_mtime(child) if child.is_dir() else None
                if mtime is not None:
                    candidates.append((mtime, child))
    if not candidates:
        where = ", ".join(str(r) for r in roots)
        raise DashboardError(
            f"deblur.dashboard: no runs under {where} (no metrics.json or TensorBoard events). "
            "Train first, e.g. `python -m deblur.train -m experiment=table4_1`, pass the run or "
            "sweep folders explicitly, or point DEBLUR_RUNS at the folder your runs are in."
        )
    return max(candidates)[1]


def run_folders(logdir: str | Path) -> dict[str, list[str]]:
    """Run folders below ``logdir`` (relative, '.' for logdir itself) -> their TensorBoard runs.

    A TensorBoard run is a folder holding event files; it belongs to the nearest enclosing folder
    with a metrics.json (the Hydra run folder). Archived earlier attempts are left out.
    """
    logdir = Path(logdir)
    out: dict[str, list[str]] = {}
    event_dirs = sorted({p.parent for p in _files(logdir, EVENTS_GLOB)})
    for d in event_dirs:
        rel = d.relative_to(logdir)
        if "attempts" in rel.parts:
            continue
        owner = next((a for a in [d, *d.parents] if (a / "metrics.json").is_file()), d)
        if logdir not in [owner, *owner.parents]:
            owner = d
        out.setdefault(owner.relative_to(logdir).as_posix(), []).append(rel.as_posix())
    return out


def _view_dir(folders: Sequence[Path]) -> Path:
    """A temporary folder of symlinks named after ``folders``: one logdir, readable run names."""
    view = Path(tempfile.mkdtemp(prefix="deblur-dashboard-"))
    atexit.register(shutil.rmtree, view, True)
    for folder in folders:
        name, parent = folder.resolve().name, folder.resolve().parent
        while (view / name).exists():  # same folder name in two sweeps: prefix the sweep
            name, parent = f"{parent.name}_{name}", parent.parent
        (view / name).symlink_to(folder.resolve(), target_is_directory=True)
    return view


def resolve_logdir(folders: Sequence[str | Path] = (), latest: bool = False) -> Path:
    """The one folder TensorBoard reads: a sweep folder, or a view over several folders."""
    paths = [Path(f) for f in folders]
    missing = [p for p in paths if not p.is_dir()]
    if missing:
        raise DashboardError(
            f"deblur.dashboard: {missing[0]} is not a folder. Pass run or sweep folders "
            "(e.g. runs/table4_1) or nothing for the latest sweep under ${DEBLUR_RUNS:-runs}."
        )
    if latest or not paths:
        return latest_sweep(paths or None)
    return paths[0] if len(paths) == 1 else _view_dir(paths)


def tensorboard_argv(
    logdir: str | Path, port: int | None = None, host: str = "localhost"
) -> list[str]:
    """TensorBoard CLI flags for ``logdir`` (port None: TensorBoard picks 6006 or the next free)."""
    argv = ["--logdir", str(logdir), "--host", host]
    return argv + (["--port", str(port)] if port is not None else [])


# ---------------------------------------------------------------- serving


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
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
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
        raise DashboardError(f"TensorBoard answered {status} to {url}: {payload[:300]!r}")
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
    raise DashboardError(
        f"deblur.dashboard: TensorBoard did not start on {logdir} within {timeout:.0f}s. "
        f"Its log:\n{log.read_text(errors='replace')[-2000:]}"
    )


def _hparams_sessions(url: str) -> dict[str, dict[str, Any]]:
    """TensorBoard run name -> {"hparams": {...}, "metrics": {tag: value}} from the HPARAMS API."""
    base = url + "/data/plugin/hparams"
    experiment = _json(base + "/experiment", {"experimentName": ""})
    cols = [
        {"hparam": h["name"], "includeInResult": True} for h in experiment.get("hparamInfos", [])
    ]
    cols += [
        {"metric": m["name"], "includeInResult": True} for m in experiment.get("metricInfos", [])
    ]
    request = {
        "experimentName": "",
        "allowedStatuses": [
            "STATUS_UNKNOWN",
            "STATUS_SUCCESS",
            "STATUS_FAILURE",
            "STATUS_RUNNING",
        ],
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
    """Start the real TensorBoard on ``logdir`` (127.0.0.1, free port), check every run is served.

    ``timeout`` bounds the server start, ``wait`` how long to wait for data still loading.

    Returns ``{"url", "logdir", "tb_runs", "layout", "runs": {run folder: {"tb_runs", "scalars":
    {tag: points}, "images": {tag: count}, "hparams": {...}, "hparam_metrics": {...}}},
    "problems": [...]}``; with ``strict`` a remaining problem raises :class:`DashboardError`.
    The server is always stopped before returning.
    """
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
        raise DashboardError(
            f"TensorBoard on {logdir} does not serve everything: " + "; ".join(report["problems"])
        )
    return report


def serve(logdir: Path, port: int | None = None, host: str = "localhost") -> str:
    """Start TensorBoard in this process (a background thread) and return its URL."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, *tensorboard_argv(logdir, port, host)])
    return board.launch()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: TensorBoard over run/sweep folders, by default the latest sweep."""
    parser = argparse.ArgumentParser(
        prog="python -m deblur.dashboard",
        description="TensorBoard over run or sweep folders (default: the latest sweep under "
        "${DEBLUR_RUNS:-runs}); runs are named by their folder, i.e. their choices.",
    )
    parser.add_argument("folders", nargs="*", help="run or sweep folders")
    parser.add_argument("--port", type=int, help="default: 6006 or the next free port")
    parser.add_argument("--host", default="localhost", help="0.0.0.0 to serve other machines")
    parser.add_argument(
        "--latest", action="store_true", help="only the latest sweep inside the given folders"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the runs and the command, start nothing"
    )
    args = parser.parse_args(argv)
    try:
        logdir = resolve_logdir(args.folders, args.latest)
    except DashboardError as err:
        print(err, file=sys.stderr)
        return 2
    runs = run_folders(logdir)
    print(f"TensorBoard over {logdir}: {len(runs)} run(s)")
    for name in runs:
        print(f"  {name}")
    if args.dry_run:
        print("tensorboard " + " ".join(tensorboard_argv(logdir, args.port, args.host)))
        return 0
    url = serve(logdir, args.port, args.host)
    print(f"TensorBoard at {url}  (Ctrl-C to stop)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # so atexit removes a view folder
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
