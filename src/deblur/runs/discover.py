"""Finding runs: the one walk over run folders, and ``disc.checkpoint=auto``."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from deblur.checkpoints import MissingCheckpointError
from deblur.runs.record import METRICS_FILE, RunRecord, read_metrics


def walk_runs_tree(root: str | Path) -> Iterator[tuple[Path, list[str]]]:
    """(folder, file names) below ``root`` in path order: links followed (as TensorBoard does),
    each real folder once, ``attempts/`` left out."""
    seen: set[str] = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        dirs.sort()
        if real in seen:  # a link loop, or a second link to the same folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if d != "attempts"]
        yield Path(folder), names


def find_runs(paths: Iterable[str | Path]) -> list[tuple[Path, RunRecord]]:
    """Every (run folder, record) below the given folders, in path order: the one run discovery
    of every reader. Unreadable records are skipped with a warning."""
    found: list[tuple[Path, RunRecord]] = []
    for root in map(Path, paths):
        if not root.is_dir():
            continue
        folders = sorted(d for d, names in walk_runs_tree(root) if METRICS_FILE in names)
        found += [(d, r) for d in folders if (r := read_metrics(d)) is not None]
    return found


def resolve_classifier_checkpoint(
    spec: str, backbone: str, runs_dir: str | Path, seed: int | None
) -> Path:
    """``disc.checkpoint=auto[:<sweep>]``: best.ckpt of a finished classifier run of this
    backbone in ``<runs_dir>/table4_2`` (or ``<sweep>``), the same seed's if there is one."""
    sweep = spec.split(":", 1)[1] if ":" in spec else "table4_2"
    folder = Path(sweep) if Path(sweep).is_absolute() else Path(runs_dir) / sweep
    runs, wanted = find_runs([folder]), ("classifier", "finished", backbone)
    matches = [(d, m) for d, m in runs if (m.task, m.status, m.choices.get("backbone")) == wanted]
    if not matches:
        raise MissingCheckpointError(
            f"disc.checkpoint={spec}: no finished blur-classifier run with backbone={backbone} "
            f"under {folder}. Train the classifiers first, e.g. "
            "`python -m deblur.train_classifier -m experiment=table4_2` (or `python -m "
            f"deblur.train_classifier backbone={backbone} hydra.run.dir={folder}/backbone="
            f"{backbone}`), or give a checkpoint file: disc.checkpoint=/path/to/best.ckpt."
        )
    same_seed = [(d, m) for d, m in matches if m.seed == seed]
    run_dir, _ = sorted(same_seed or matches, key=lambda dm: str(dm[0]))[0]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        raise MissingCheckpointError(
            f"disc.checkpoint={spec}: the classifier run {run_dir} is finished but has no "
            f"{ckpt.name}; re-run it with overwrite=true."
        )
    return ckpt
