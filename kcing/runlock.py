"""One run at a time: an advisory lock file beside the ledger database."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from kcing.errors import ConfigError, LockHeld


class RunLock:
    """Holds `<db>.lock` with flock for the duration of a `with` block.

    The operating system releases a flock when the process ends in any way (crash and SIGKILL
    included), so a stale lock file never blocks the next cron run.
    """

    def __init__(self, db_path: str):
        self.path = Path(str(db_path) + ".lock")
        self._handle = None

    def __enter__(self) -> "RunLock":
        try:
            handle = open(self.path, "a+")
        except OSError as error:
            raise ConfigError("cannot create the lock file %s: %s" % (self.path, error.strerror)) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise LockHeld("another kcing run (pid %s) is using %s; try again when it ends" % (holder, self.path)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
