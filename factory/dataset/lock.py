"""One writer per run folder: an exclusive `flock` on RUN/.mmsynth/lock, held for the whole run.

Two `mmsynth run` processes on the same `--out` would otherwise both run to the end, sending every
request twice and overwriting each other's shards. The kernel releases a flock when its holder dies
(kill -9 included), so a lock left by a dead process is never stale: the next run simply takes it.
The PID written into the file is only for the message; the lock itself is the flock, not the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "lock"


class RunLocked(Exception):
    """Another live process holds the folder's lock."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        who = f"process {pid}" if pid is not None else "another process"
        super().__init__(
            f"{folder} is being written by another mmsynth run ({who}, see {folder / '.mmsynth' / LOCK_NAME}). "
            f"Wait for it to finish or stop it (Ctrl-C), then rerun to resume; or choose another --out."
        )
        self.pid = pid


@dataclass
class RunLock:
    path: Path
    fd: int | None

    @classmethod
    def acquire(cls, state_dir: Path) -> RunLock:
        """Take the lock without waiting; raise RunLocked naming the holder's PID when it is taken."""
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise RunLocked(state_dir.parent, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        """Unlock; the file stays (removing it would let two processes lock two different files)."""
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing the only descriptor releases the flock
        self.fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
