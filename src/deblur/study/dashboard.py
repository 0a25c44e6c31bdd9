"""TensorBoard over run and sweep folders: their event files, the latest sweep, one logdir of
readable names over several folders, the server (tested over HTTP: tests/study/tb_server.py)."""

from __future__ import annotations

import atexit
import fnmatch
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from deblur.errors import UserError
from deblur.runs import METRICS_FILE, find_runs, walk_runs_tree

EVENTS_GLOB = "events.out.tfevents.*"


class DashboardError(UserError, RuntimeError):
    """No runs to show (a missing folder, no runs under the runs root)."""


def event_files(root: Path) -> list[Path]:
    """TensorBoard event files below ``root`` (symlinks followed once, attempts left out)."""
    return [d / n for d, names in walk_runs_tree(root) for n in fnmatch.filter(names, EVENTS_GLOB)]


def _newest_mtime(folder: Path) -> float | None:
    files = [d / METRICS_FILE for d, _ in find_runs([folder])] + event_files(folder)
    return max((p.stat().st_mtime for p in files), default=None)


def latest_sweep(roots: Iterable[str | Path] | None = None) -> Path:
    """The sweep folder (a child of ``$DEBLUR_RUNS`` or ``runs``) whose runs were written last."""
    roots = [Path(r) for r in (roots or [os.environ.get("DEBLUR_RUNS", "runs")])]
    dated = [(_newest_mtime(c), c) for r in roots if r.is_dir() for c in r.iterdir() if c.is_dir()]
    dated = [(mtime, child) for mtime, child in dated if mtime is not None]
    if not dated:
        raise DashboardError(
            f"deblur.dashboard: no runs under {', '.join(map(str, roots))} (no metrics.json or "
            "TensorBoard events). Train first, e.g. `python -m deblur.train -m experiment=table4_1`, "
            "pass the run or sweep folders explicitly, or point DEBLUR_RUNS at the folder your runs "
            "are in."
        )
    return max(dated)[1]


def run_folders(logdir: str | Path) -> dict[str, list[str]]:
    """Run folders below ``logdir`` (relative, '.' for itself) -> their event-file folders, each
    under its nearest enclosing run (:func:`deblur.runs.find_runs`), else its own entry."""
    logdir = Path(logdir)
    runs = {d.relative_to(logdir) for d, _ in find_runs([logdir])}
    out: dict[str, list[str]] = {}
    for rel in sorted({p.parent.relative_to(logdir) for p in event_files(logdir)}):
        owner = next((a for a in [rel, *rel.parents] if a in runs), rel)
        out.setdefault(owner.as_posix(), []).append(rel.as_posix())
    return out


def runs_without_events(logdir: Path) -> list[str]:
    """Runs below ``logdir`` that wrote no TensorBoard events (trained with e.g. logger=csv)."""
    return sorted(str(d.relative_to(logdir)) for d, _ in find_runs([logdir]) if not event_files(d))


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
    if missing := [p for p in paths if not p.is_dir()]:
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
    port_flags = ["--port", str(port)] if port is not None else []
    return ["--logdir", str(logdir), "--host", host, *port_flags]


def serve(logdir: Path, port: int | None = None, host: str = "localhost") -> str:
    """Start TensorBoard in this process (a background thread) and return its URL."""
    from tensorboard import program  # the tensorboard logger's dependency, loaded when served

    board = program.TensorBoard()
    board.configure(argv=[None, *tensorboard_argv(logdir, port, host)])
    return board.launch()
