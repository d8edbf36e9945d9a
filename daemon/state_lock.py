"""One daemon per state folder: an exclusive ``flock`` on ``daemon.lock`` inside it.

Two daemons on one journal would both answer every intent, and both send its
order. The kernel drops an ``flock`` when the holding process dies, however it
dies, so a ``kill -9`` or a power loss never leaves a stale lock behind; the PID
written into the file is there only to name the holder in the error. The lock
belongs to the open file, not to the process, so a second daemon inside the same
process (tests) is refused too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

from actors.core.errors import JournalError, StateFolderInUseError

LOCK_FILE_NAME: Final = "daemon.lock"


class StateFolderLock:
    """An exclusive lock on a daemon's state folder, held from :meth:`acquire` to :meth:`release`.

    Args:
        folder: the state folder (the journal's folder); created, mode 0700, if missing.
    """

    def __init__(self, folder: Path) -> None:
        """Prepare the lock; nothing is opened until :meth:`acquire`."""
        self.folder = folder
        self.path = folder / LOCK_FILE_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once, or refuse: it never waits for the holder.

        Raises:
            StateFolderInUseError: another daemon holds the folder (its PID is in the error).
            JournalError: the folder or the lock file cannot be created.
        """
        if self._fd is not None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(f"cannot create the lock file {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StateFolderInUseError(str(self.folder), holder) from None
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"cannot lock {self.path}: {exc.strerror}") from exc
        # Write before truncating: a reader never sees an empty file, only this PID first.
        record = f"{os.getpid()}\n".encode()
        os.pwrite(fd, record, 0)
        os.ftruncate(fd, len(record))
        self._fd = fd

    def release(self) -> None:
        """Let the next daemon in; safe to call more than once.

        The file stays: removing it would race a daemon that has just opened it.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __del__(self) -> None:
        """A lock whose owner was never fully built (a failed start) dies with it."""
        with contextlib.suppress(OSError):
            self.release()


def _read_pid(fd: int) -> int | None:
    try:
        first = os.pread(fd, 32, 0).split(b"\n", 1)[0]
        return int(first) if first.strip() else None
    except (OSError, ValueError):
        return None
