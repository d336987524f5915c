"""One writer per output folder: a lock held for a run's life.

Two runs writing checkpoints into one folder interleave their files: a checkpoint can hold one run's
model and the other's pruning state, and both runs still end well. So every front end takes this lock
before it writes anything and releases it when the run ends. The lock is a file created exclusively
(`O_CREAT | O_EXCL`), naming its holder (process id, host, start time, command). A lock whose holder is
gone (a process killed with SIGKILL cannot release it) is recognised as stale on the same host and taken
over; a live holder's lock refuses the second run, naming the folder and the holder.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".emp_hf.lock"


class RunLockError(RuntimeError):
    """Another live run holds the output folder."""


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` as the kernel records it (Linux), so that a reused pid is not taken for
    the lock's holder; None where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: it cannot be checked from here, so it is taken to be alive
    pid = int(holder.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = holder.get("process_start")
    return started is None or _process_start(pid) in (None, started)


class RunLock:
    """`with RunLock(folder):` or `acquire()` / `release()`; re-entrant within one process."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._held = False

    def acquire(self) -> RunLock:
        if self._held:
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)[:300]}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == me["host"]:
                    self._held = True  # this process holds it already (a second trainer in one script)
                    atexit.register(self.release)
                    return self
                if holder is not None and _alive(holder):
                    raise RunLockError(
                        f"Output folder {str(self.folder)!r} is in use by another run: process {holder.get('pid')} on "
                        f"{holder.get('host')} since {holder.get('since')} ({holder.get('command') or '?'}). Two runs "
                        "in one folder would mix their checkpoints. Wait for it to finish, stop it, or give this run "
                        "another output folder."
                    ) from None
                self._take_over_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self._held = True
            atexit.register(self.release)
            return self
        raise RunLockError(f"Could not take the lock {self.path}: it keeps being re-created by another process.")

    def _holder(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None  # half-written by a process killed while creating it, or removed meanwhile: stale

    def _take_over_stale(self) -> None:
        stale = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.replace(self.path, stale)  # atomic: only one contender moves it
            stale.unlink(missing_ok=True)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if not self._held:
            return
        holder = self._holder()
        if holder is not None and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self._held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def pid_is_alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (for cleaning up temporary files only a dead process left)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
