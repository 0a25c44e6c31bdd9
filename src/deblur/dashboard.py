"""One TensorBoard over a whole sweep, every run named by its choices (its folder name).

``python -m deblur.dashboard [folders...] [--port 6006] [--latest]`` (``make dashboard``) serves
the given run or sweep folders, by default the latest sweep under ``${DEBLUR_RUNS:-runs}``.
(The tests start the real TensorBoard server on such a folder and check its HTTP data API:
tests/study/tb_server.py.)
"""

from __future__ import annotations

import argparse
import atexit
import fnmatch
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from deblur.errors import UserError
from deblur.runs import METRICS_FILE, find_runs, walk_runs_tree

EVENTS_GLOB = "events.out.tfevents.*"


class DashboardError(UserError, RuntimeError):
    """No runs to show (a missing folder, no runs under the runs root)."""


# ---------------------------------------------------------------- finding runs


def runs_root() -> Path:
    """Where the runs live: ``$DEBLUR_RUNS`` or ``runs`` (as conf/common/run_dirs.yaml)."""
    return Path(os.environ.get("DEBLUR_RUNS", "runs"))


def _event_files(root: Path) -> list[Path]:
    """TensorBoard event files below ``root`` (symlinks followed once, attempts left out)."""
    return [d / n for d, names in walk_runs_tree(root) for n in fnmatch.filter(names, EVENTS_GLOB)]


def _newest_mtime(folder: Path) -> float | None:
    files = [d / METRICS_FILE for d, _ in find_runs([folder])] + _event_files(folder)
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

    A TensorBoard run is a folder holding event files; it belongs to the nearest enclosing run
    folder (:func:`deblur.runs.find_runs`: the Hydra run folder with its metrics.json), or is its
    own entry when no run encloses it. Archived earlier attempts are left out.
    """
    logdir = Path(logdir)
    runs = {d.relative_to(logdir) for d, _ in find_runs([logdir])}
    out: dict[str, list[str]] = {}
    for rel in sorted({p.parent.relative_to(logdir) for p in _event_files(logdir)}):
        owner = next((a for a in [rel, *rel.parents] if a in runs), rel)
        out.setdefault(owner.as_posix(), []).append(rel.as_posix())
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
    no_events = sorted(
        str(d.relative_to(logdir)) for d, _ in find_runs([logdir]) if not _event_files(d)
    )
    if no_events:  # trained with e.g. logger=csv: their metrics.json is there, no TB events
        print(
            f"  ({len(no_events)} run(s) without TensorBoard events, not shown: trained without "
            "the tensorboard logger; add it next time with logger=[tensorboard,csv])"
        )
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
