"""The files a tool reads and where its outputs go (``deblur.predict``, ``deblur.blur_score``).

- :func:`collect_inputs` turns ``input=`` (a file, a folder, a glob, a video) into a file list;
  :class:`Tally` sorts it by kind and counts the files that could not be used, with the reason.
- :func:`distinct_outputs` maps every input to its own output path: two inputs that would land
  on one name (``a.png`` and ``a.jpg``, ``clip.mp4`` and ``clip.avi``) keep their source suffix
  in the name (``a_png.png``, ``a_jpg.png``); what still collides, or would overwrite an input,
  is refused before any work, naming both files.
- :func:`ensure_writable_dir` / :func:`ensure_writable_file` create the output place and write a
  probe file, so a read-only or mistyped output fails at once, not after the model ran.
"""

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
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg")
"""File suffixes (lower case) read as videos with ``cv2.VideoCapture``."""


class InputError(UserError, FileNotFoundError):
    """``input=`` names nothing usable (missing path, empty folder, a pattern with no match)."""


class OutputError(UserError, ValueError):
    """The output place cannot be written, or two inputs (or an input and an output) collide."""


def collect_inputs(spec: str | Path, recursive: bool = False) -> tuple[Path, list[Path]]:
    """(base folder, files) for an image/video file, a folder, or a glob pattern."""
    spec = str(spec)
    path = Path(spec).expanduser()
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
    """``files`` minus the output file, and minus what lies in an output folder nested below the
    input folder ``base`` (``input=photos/ output=photos/sharp``): a re-run never reads its own
    results. An output folder that *is* the input folder excludes nothing (collisions are caught
    by :func:`distinct_outputs`)."""
    out = output.expanduser().resolve()
    nested = base is not None and base.expanduser().resolve() in out.parents
    return [f for f in files if f.resolve() != out and not (nested and out in f.resolve().parents)]


@dataclass
class Tally:
    """What a tool made of its inputs: each file it could not use, with the reason."""

    tool: str
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def report(self, done: str, verb: str) -> str:
        """``done`` and the count of files not ``verb`` on one line, then one line per file."""
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
            kind = next((k for k, suffixes in kinds.items() if f.suffix.lower() in suffixes), None)
            if kind is not None:
                out[kind].append(f)
            else:
                known = "; ".join(f"{k}s: {' '.join(s)}" for k, s in kinds.items())
                self.refuse(f, f"not an {' or '.join(kinds)} (suffix '{f.suffix}'; {known})")
        return out

    def attempt(self, path: Path, work: Callable[[Path], T]) -> T | None:
        """``work(path)``, or None with ``path`` refused when it raises a ValueError (a
        DataError among them: an unreadable, corrupt or truncated file)."""
        try:
            return work(path)
        except ValueError as err:
            self.refuse(path, str(err), "failed")
            return None


def _key(path: Path) -> str:
    # case-folded: A.png and a.png are one file on macOS, Windows and exFAT disks
    return os.path.normcase(str(path.expanduser().resolve())).casefold()


def distinct_outputs(
    sources: Sequence[Path], target: Callable[[Path, str], Path], what: str = "output"
) -> list[Path]:
    """One distinct output per source: ``target(src, tag)`` with tag ``""``, or the source's
    suffix (``"jpg"``) for the sources whose plain outputs would share one path.

    Raises :class:`OutputError` naming both files when outputs still collide, or when an output
    is an input (or an output folder holds one).
    """
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
                f"different {what} folders."
            )
        owner[_key(dst)] = src
        if (hit := inputs.get(_key(dst))) is not None:
            raise OutputError(
                f"The {what} for {src} would be {dst}, which would overwrite the input {hit}. "
                f"Pick an {what} folder outside the inputs (e.g. {what}=deblurred/)."
            )
    return outputs


def _os_detail(err: OSError) -> str:
    return f"{type(err).__name__}: {err.strerror or err}"


def ensure_writable_dir(folder: str | Path, name: str = "output", _what: str = "") -> Path:
    """Create ``folder`` (with parents) and check a file can be written in it; else OutputError."""
    folder = Path(folder).expanduser()
    what = _what or f"{name}={folder}"
    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"{what}: its folder {folder} is a file. Give a path inside a folder."
            if _what
            else f"{what} is a file, not a folder. Give a folder path (created if missing)."
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(
            f"{what} cannot be created ({_os_detail(err)}; is a part of the path a file, or "
            "read-only?). Give a place you can write to."
        ) from err
    try:
        fd, probe = tempfile.mkstemp(prefix=".deblur-write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputError(
            f"{what} is not writable ({_os_detail(err)}). Give a place you can write to (e.g. "
            "under $HOME), or fix the folder's permissions."
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
