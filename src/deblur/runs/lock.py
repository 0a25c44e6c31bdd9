"""One process per run folder: a lock file that knows its holder."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

from deblur.errors import UserError
from deblur.runs.record import now_iso

log = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"


class RunLockedError(UserError, RuntimeError):
    """Another live process holds the run folder."""


def _pid_alive(pid: int) -> bool:
    try:
        with contextlib.suppress(PermissionError):  # alive, another user's
            os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


_HELD: dict[str, list[Any]] = {}  # resolved lock path -> [fd, depth]


class RunLock:
    """``<run_dir>/.run.lock``: its holder's PID, host and start, under an ``flock`` (gone when the
    process dies); a dead PID's lock on this host is taken over. Re-entrant (multirun jobs)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE

    def _info(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def _refuse(self, info: dict[str, Any]) -> RunLockedError:
        return RunLockedError(
            f"Another process is using the run folder {self.path.parent}: it is locked by PID "
            f"{info.get('pid', '?')} on host {info.get('host', '?')} since "
            f"{info.get('started', '?')} ({info.get('command', 'command unknown')}). Two "
            "processes in one folder would overwrite each other's checkpoints and metrics.json. "
            "Wait for that run to end, or launch this one into another folder (sweep_name=... or "
            f"runs_dir=...). If that process no longer exists (its machine crashed), delete "
            f"{self.path} and launch again."
        )

    def __enter__(self) -> RunLock:
        key = self._key = str(self.path.resolve())
        if key in _HELD:
            _HELD[key][1] += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            flock_ok = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise self._refuse(self._info()) from None
                flock_ok = False  # a filesystem without flock: the PID check alone decides
                log.warning("No flock on %s (%s): relying on the PID in the lock.", self.path, err)
            info = self._info()
            host = socket.gethostname()
            if info.get("pid"):
                alive = info.get("host") == host and _pid_alive(int(info["pid"]))
                if info.get("host") != host or (alive and not flock_ok):
                    # another host's process cannot be checked from here; a live PID without
                    # flock support may be a live run
                    raise self._refuse(info)
                msg = (
                    f"Taking over the stale lock {self.path} of PID {info['pid']} on {host} "
                    f"(started {info.get('started', '?')}): that process no longer holds it."
                )
                log.warning(msg)
                print(f"[deblur] {msg}", flush=True)
            command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
            record = {"pid": os.getpid(), "host": host, "started": now_iso(), "command": command}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        _HELD[key] = [fd, 1]
        return self

    def __exit__(self, *exc: Any) -> None:
        _HELD[self._key][1] -= 1  # the key __enter__ took (the cwd or a link may have changed)
        if _HELD[self._key][1] > 0:
            return
        fd = _HELD.pop(self._key)[0]
        try:
            os.ftruncate(fd, 0)  # empty = free; the file stays (removing it would race)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as err:  # pragma: no cover - the lock dies with the descriptor anyway
            log.warning("Releasing %s: %s", self.path, err)
        finally:
            os.close(fd)
