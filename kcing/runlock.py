"""One run at a time: an advisory lock file beside the ledger database."""
from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
from pathlib import Path
from typing import Optional, Tuple

from kcing.errors import ConfigError, LockHeld, StorageFailed
from kcing.files import open_lock_file


def lock_path(db_path: str) -> Path:
    """The lock file of the ledger (or samples manifest) at `db_path`: `<file>.lock` beside the
    file the name leads to, so that a ledger reached through a symlink, or by a relative name,
    is locked where the same ledger reached by any other name is (SQLite keeps the ledger's -wal
    and -shm files beside that file too). The lock file itself is never followed."""
    named = Path(str(db_path)).expanduser()
    try:
        os.stat(str(named))
    except OSError as error:
        if error.errno == errno.ELOOP:  # Python 3.13's resolve() would stop inside the loop
            raise ConfigError("%s is a loop of symbolic links: point it at a file" % named) from None
    try:
        return Path(str(named.resolve()) + ".lock")
    except (OSError, RuntimeError) as error:  # RuntimeError: a loop, before Python 3.13
        raise ConfigError("cannot tell which file %s names: %s" % (named, error)) from None


class RunLock:
    """Holds `<db>.lock` with flock for the duration of a `with` block (see `lock_path`).

    The operating system releases a flock when the process ends in any way (crash and SIGKILL
    included), so a stale lock file never blocks the next cron run. The file only ever holds the
    pid of the run that has it; a symlink or anything but a plain file at its name is refused.
    """

    def __init__(self, db_path: str):
        self.path = lock_path(db_path)
        self._fd = None

    def __enter__(self) -> "RunLock":
        fd = open_lock_file(self.path)
        try:
            _lock_now_or_soon(fd)
        except BlockingIOError:
            holder = _recorded_pid(fd) or "unknown"
            os.close(fd)
            raise LockHeld("another kcing run (pid %s) is using %s; try again when it ends" % (holder, self.path)) from None
        except OSError as error:
            # The file system refuses file locks altogether (NFS without its lock service says
            # ENOLCK, some FUSE and SMB mounts EOPNOTSUPP): running without the lock would let two
            # runs write one ledger at once, so the run stops, saying where the fault lies.
            os.close(fd)
            raise ConfigError("cannot lock %s: %s; its file system takes no file locks (a network file system "
                              "without its lock service?): keep %s on a local file system"
                              % (self.path, error.strerror or error, self.path.parent)) from None
        # Only now, holding the lock on a plain file of our own, is rewriting it safe.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        except OSError as error:
            os.close(fd)
            raise StorageFailed("cannot write the lock file %s: %s" % (self.path, error.strerror)) from None
        self._fd = fd
        return self

    def __exit__(self, *exc_info) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# How long taking the run lock tries again before it takes the lock as held by another run: a
# `kcing status` may hold it shared for an instant to see whether a run holds it (`lock_holder`).
PROBE_GRACE = 0.2


def _lock_now_or_soon(fd: int, grace: float = PROBE_GRACE) -> None:
    """flock `fd` exclusively; BlockingIOError when another holds it still after `grace` seconds."""
    deadline = time.monotonic() + grace
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(0.01)


def _recorded_pid(fd: int) -> str:
    """The pid the run holding the lock wrote into it ("" when none yet): its own pid, the one
    its runs-table row holds, whatever pid namespace (container) the reader is in."""
    return os.pread(fd, 32, 0).decode("ascii", "replace").strip()


def lock_holder(db_path: str) -> Optional[Tuple[str, ...]]:
    """The pids the kcing run holding `<db>.lock` now is known by, or None when no run holds it:
    the pid it wrote into the file (its own, os.getpid() there, as its runs-table row holds it,
    whatever pid namespace the reader is in), and the pid the kernel lists for it.

    Only looks: creates nothing, writes nothing, follows no symlink. The kernel's list of locks
    shows a run in another pid namespace (a container) under another pid, or not at all: what it
    lists is taken as held; where it lists nothing, a shared flock held for an instant tells (a
    run starting at that moment tries again, see PROBE_GRACE)."""
    path = lock_path(db_path)
    try:
        info = os.lstat(str(path))
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    listed = _kernel_lock_holder(info)
    if listed:
        return tuple(pid for pid in (_pid_in(path), listed) if pid)
    probed = _probe_holder(path)
    return (probed,) if probed is not None else None


def _pid_in(path: Path) -> str:
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return _recorded_pid(fd)
    finally:
        os.close(fd)


def _kernel_lock_holder(info: os.stat_result) -> Optional[str]:
    """From /proc/locks: the pid holding a flock on the file, "" for none, None if unreadable."""
    wanted = "%02x:%02x:%d" % (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as locks:
            for line in locks:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and "->" not in fields:
                    return fields[4]
    except OSError:
        return None
    return ""


def _probe_holder(path: Path) -> Optional[str]:
    try:
        fd = os.open(str(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _recorded_pid(fd) or "unknown"
        except OSError:
            return None  # a file system without file locks: no run can hold one there
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
