"""A tool's inputs and outputs (predict, blur_score): ``input=`` as a file list, the files refused
and why, one distinct output per input, the output place checked writable before any work."""

from __future__ import annotations

import glob
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from deblur.errors import UserError

log = logging.getLogger(__name__)
T = TypeVar("T")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg")  # cv2.VideoCapture


class InputError(UserError, FileNotFoundError):
    """``input=`` names nothing usable (missing path, empty folder, a pattern with no match)."""


class OutputError(UserError, ValueError):
    """The output place cannot be written, or two inputs (or an input and an output) collide."""


def collect_inputs(spec: str | Path, recursive: bool = False) -> tuple[Path, list[Path]]:
    """(base folder, files) for an image/video file, a folder, or a glob pattern."""
    spec, path = str(spec), Path(spec).expanduser()
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise InputError(f"input={spec}: the pattern matches no files.")
        fixed = path.parts[: next(i for i, p in enumerate(path.parts) if glob.has_magic(p))]
        return Path(*fixed) if fixed else Path("."), files
    if path.is_dir():
        files = sorted(p for p in path.glob("**/*" if recursive else "*") if p.is_file())
        if not files:
            raise InputError(f"input={spec}: the folder is empty.")
        return path, files
    if path.is_file():
        return path.parent, [path]
    raise InputError(
        f"input={spec} does not exist: give an image, a folder, a glob pattern in quotes "
        "(input='shots/*.jpg') or a video file."
    )


def without_outputs(files: Sequence[Path], output: Path, base: Path | None = None) -> list[Path]:
    """``files`` minus the output file and what lies in an output folder below the input folder
    ``base`` (``output=photos/sharp``), so a re-run never reads its own results."""
    out = output.expanduser().resolve()
    nested = base is not None and base.expanduser().resolve() in out.parents
    return [f for f in files if f.resolve() != out and not (nested and out in f.resolve().parents)]


@dataclass
class Tally:
    """What a tool made of its inputs: each file it could not use, with the reason."""

    tool: str
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def report(self, done: str, verb: str) -> str:
        head = f"[deblur.{self.tool}] {done}; {len(self.failed)} file(s) not {verb}."
        return "\n".join([head, *(f"  not {verb}: {p}: {why}" for p, why in self.failed)])

    def refuse(self, path: Path, reason: str, verb: str = "skipped") -> None:
        self.failed.append((path, reason))
        log.warning("[deblur.%s] %s %s: %s", self.tool, verb, path, reason)

    def by_kind(
        self, files: Sequence[Path], kinds: Mapping[str, Sequence[str]]
    ) -> dict[str, list[Path]]:
        """``files`` by the kind (``"image"``) their suffix names; the others are refused."""
        out: dict[str, list[Path]] = {kind: [] for kind in kinds}
        for f in files:
            if kind := next((k for k, sfx in kinds.items() if f.suffix.lower() in sfx), None):
                out[kind].append(f)
            else:
                known = "; ".join(f"{k}s: {' '.join(s)}" for k, s in kinds.items())
                self.refuse(f, f"not an {' or '.join(kinds)} (suffix '{f.suffix}'; {known})")
        return out

    def attempt(self, path: Path, work: Callable[[Path], T]) -> T | None:
        """``work(path)``, or None with ``path`` refused on a ValueError (e.g. a DataError)."""
        try:
            return work(path)
        except ValueError as err:
            self.refuse(path, str(err), "failed")
            return None


def _key(path: Path) -> str:  # case-folded: A.png and a.png are one file on macOS, Windows, exFAT
    return os.path.normcase(str(path.expanduser().resolve())).casefold()


def distinct_outputs(sources: Sequence[Path], target: Callable[[Path, str], Path]) -> list[Path]:
    """One output per source, ``target(src, tag)``: tag ``""``, or the source's suffix where plain
    outputs would share a path; an OutputError when they still collide or overwrite an input."""
    plain = [target(src, "") for src in sources]
    clash = Counter(_key(p) for p in plain)
    outputs = [
        target(src, src.suffix.lstrip(".") or "noext") if clash[_key(p)] > 1 else p
        for src, p in zip(sources, plain)
    ]
    inputs = {_key(src): src for src in sources}
    inputs |= {_key(d): src for src in sources for d in src.expanduser().resolve().parents}
    owner = {_key(d): src for src, dst in zip(sources, outputs) for d in dst.resolve().parents}
    for src, dst in zip(sources, outputs):
        if (other := owner.get(_key(dst))) is not None:
            raise OutputError(
                f"The inputs {other} and {src} would both be written to {dst}, even with "
                "their source suffix in the name. Rename one of them or process them into "
                "different output folders."
            )
        owner[_key(dst)] = src
        if (hit := inputs.get(_key(dst))) is not None:
            raise OutputError(
                f"The output for {src} would be {dst}, which would overwrite the input {hit}. "
                "Pick an output folder outside the inputs (e.g. output=deblurred/)."
            )
    return outputs


def ensure_writable_dir(folder: str | Path, name: str = "output", _what: str = "") -> Path:
    """Create ``folder`` (with parents) and write a probe file in it; else an OutputError."""
    folder = Path(folder).expanduser()
    what = _what or f"{name}={folder}"
    if folder.exists() and not folder.is_dir():
        where = f"{what}: its folder {folder}" if _what else what
        raise OutputError(
            f"{where} is a file, not a folder. Give a path in a folder you can write."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".deblur-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        detail = f"{type(err).__name__}: {err.strerror or err}"
        raise OutputError(
            f"{what} is not writable ({detail}). Give a place you can write to (e.g. under "
            "$HOME), or fix the folder's permissions."
            if folder.is_dir()
            else f"{what} cannot be created ({detail}; is a part of the path a file, or "
            "read-only?). Give a place you can write to."
        ) from err
    return folder


def ensure_writable_file(path: str | Path, name: str = "output") -> Path:
    """Check ``path`` can be written as a file: not a folder, parent created and writable."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(
            f"{name}={path} is a folder; give a file name, e.g. {name}={path / 'scores.csv'}."
        )
    ensure_writable_dir(path.parent, name, _what=f"{name}={path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{name}={path} exists and is read-only; remove it or pick another name.")
    return path
