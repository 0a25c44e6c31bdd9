"""Files every layer writes or names: content hashes and atomic writes with the user's umask
(the lowest layer beside :mod:`deblur.errors`)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from pathlib import Path

from deblur.errors import UserError


class CheckpointWriteError(UserError, OSError):
    """A checkpoint or metrics file could not be written (disk full, permissions, quota);
    ``filename`` and ``strerror`` are the path and the cause."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's content (cached per path, size and modification time)."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        with p.open("rb") as fh:
            _HASHES[key] = hashlib.file_digest(fh, "sha256").hexdigest()
    return _HASHES[key]


def _write_chunk(fd: int, chunk: memoryview, path: Path) -> int:
    """One ``os.write`` (its own function so tests can inject a full disk)."""
    return os.write(fd, chunk)


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file, ``0o666 & ~umask`` (mkstemp's 0600 would
    hide a run's files from the team); the umask read without changing it where Linux allows."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            mask = next(int(line.split()[1], 8) for line in fh if line.startswith("Umask:"))
    except (OSError, ValueError, StopIteration):
        mask = os.umask(0o022)
        os.umask(mask)
    return 0o666 & ~mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes, what: str = "file") -> None:
    """Write ``data`` through a temporary file in the same folder (fsync, rename; umask mode).
    A failure leaves the previous file untouched: :class:`CheckpointWriteError`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise _write_error(path, what, err) from err
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, file_mode())
            view = memoryview(data)
            while view:
                n = _write_chunk(fd, view[: 1 << 22], path)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # e.g. Windows; some filesystems refuse it on folders
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except OSError as err:
        raise _write_error(path, what, err) from err
    finally:
        if os.path.exists(tmp):
            with contextlib.suppress(OSError):  # the disk is in trouble; the error says so
                os.unlink(tmp)


def _write_error(path: Path, what: str, err: OSError) -> CheckpointWriteError:
    cause = os.strerror(err.errno) if err.errno else str(err)
    hint = {
        errno.ENOSPC: "free space on that disk or point runs_dir at one with room",
        errno.EDQUOT: "free space within your quota or point runs_dir at another disk",
        errno.EACCES: "make the folder writable or point runs_dir at a writable folder",
        errno.EROFS: "point runs_dir at a writable disk",
    }.get(err.errno or -1, "check the disk and the folder's permissions")
    e = CheckpointWriteError(
        f"Could not write the {what} {path}: {cause}. The file at that name was not changed "
        f"(the earlier version, if any, is intact). Fix: {hint}, then run the same command "
        "again.",
    )
    e.errno, e.strerror, e.filename = err.errno, cause, str(path)
    return e
