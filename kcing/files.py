"""Local files kcing writes: replaced whole through a rename, and lock files opened safely.

Files that other programs read (Logstash's pipelines.yml, Kibana exports, samples, metrics)
keep the permissions and group of the file they replace, so a Logstash running as another
user can still read them; a new file is 0644 less the umask's bits, and a new directory 0755
less them.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

from kcing.errors import ConfigError, KcingError, StorageFailed

NEW_FILE_MODE = 0o644
# Whoever may write a directory may replace the files in it: a directory kcing makes is never
# group- or world-writable either, whatever the umask (0 in many containers and services).
NEW_DIRECTORY_MODE = 0o755
# What a process without a readable /proc assumes: the usual umask of a service account.
DEFAULT_UMASK = 0o022


def as_text(name: str) -> str:
    """`name` (a path, or a message quoting one) as text SQLite can store: the bytes of a file
    name that are not UTF-8, which Python holds as lone surrogates, written as `\\xff`."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return name


def current_umask() -> int:
    """The process umask, read without changing it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return DEFAULT_UMASK


def replacement_mode(path: Path, like: Optional[Path] = None) -> tuple:
    """(mode, uid, gid) a file written at `path` should get: those of `like` (or of `path`)
    when it exists, else 0644 less the umask, owned by this process (uid and gid None)."""
    try:
        existing = os.stat(like if like is not None else path)
    except OSError:
        return NEW_FILE_MODE & ~current_umask(), None, None
    if not stat.S_ISREG(existing.st_mode):
        return NEW_FILE_MODE & ~current_umask(), None, None
    return stat.S_IMODE(existing.st_mode), existing.st_uid, existing.st_gid


# The names of what write_atomically writes before the rename: a process killed meanwhile
# (SIGKILL, a power loss) leaves one behind.
PARTIAL_PREFIX, PARTIAL_SUFFIX = ".partial-", ".tmp"


def remove_partial_files(directory: Path) -> int:
    """Remove what killed writers left in `directory` (regular files only, links left alone);
    only for a directory no other process writes to now (its owner holds a lock); how many."""
    removed = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    for name in names:
        if not (name.startswith(PARTIAL_PREFIX) and name.endswith(PARTIAL_SUFFIX)):
            continue
        path = directory / name
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
                removed += 1
        except OSError:
            pass  # gone already, or not ours to remove: left as it is
    return removed


def make_directories(path: Path) -> None:
    """`mkdir -p path`, each directory it makes 0755 less the umask, the missing parents too
    (Path.mkdir and os.makedirs make those 0777 less the umask): under a umask of 0, an `--output`
    directory any local user could write would let them swap an NDJSON file for one of their own,
    which kcing appends to and an operator replays into Elasticsearch. Raises OSError."""
    missing = []
    directory = Path(path)
    while not os.path.lexists(directory) and directory.parent != directory:
        missing.append(directory)
        directory = directory.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, NEW_DIRECTORY_MODE)  # less the umask, as any mode mkdir is given
        except FileExistsError:
            if not directory.is_dir():  # made meanwhile, but not as a directory
                raise
    if not Path(path).is_dir():
        # Said with the name of what is in the way: mkdir's "File exists", about a file kcing
        # was about to write inside it, said nothing of what to fix.
        raise NotADirectoryError(errno.ENOTDIR, "%s is not a directory" % path, str(path))


class NotRegularFile(OSError):
    """What read_regular_text raises for anything at a path but a regular file."""


@contextmanager
def opened_regular(path: Path) -> Iterator[BinaryIO]:
    """The regular file at `path`, open for reading (OSError when it cannot be). Anything else
    there is refused unread (NotRegularFile): a FIFO blocks its reader until a writer comes, for
    good when none does, and a device such as /dev/zero never ends. It is opened without
    blocking to find out (a FIFO's open would block)."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file (a FIFO or a device is never read)")
        yield file


def read_regular_text(path: Path) -> str:
    """The UTF-8 text of the regular file at `path` (opened_regular; OSError or
    UnicodeDecodeError when it cannot be read)."""
    with opened_regular(path) as file:
        return file.read().decode("utf-8")


def holds(path: Path, content: bytes) -> bool:
    """Whether the regular file at `path` holds `content`: not when it is absent, cannot be read,
    or is no regular file (opened_regular)."""
    try:
        with opened_regular(path) as file:
            return file.read() == content
    except OSError:
        return False


# The first bytes of every SQLite database file: a kcing ledger's, or another program's.
SQLITE_HEADER = b"SQLite format 3\x00"


def ledger_in_the_way(path: Path, ledger: Optional[str]) -> Optional[str]:
    """What `path`, given for a log or metrics file, would write over, or None: the ledger
    (KCING_DB, made by the run if not there yet) or another SQLite database. Options mixed up
    (`--metrics kcing.db` for `--db kcing.db`) replaced the ledger with the run's figures, and
    `-l kcing.db` appended log lines to it."""
    if ledger and os.path.abspath(os.path.expanduser(str(path))) == os.path.abspath(os.path.expanduser(ledger)):
        return "the ledger (KCING_DB)"
    # Nothing there yet, or nothing to read, is no database: opening it for writing says what it finds.
    if sqlite_header_of(path) == SQLITE_HEADER:
        return "an SQLite database (a kcing ledger?)"
    return None


def sqlite_header_of(path: Path) -> Optional[bytes]:
    """The first bytes of the regular file at `path`, as many as SQLITE_HEADER holds (fewer for a
    shorter file, none for an empty one), or None when there is no such file or it cannot be read."""
    try:
        with opened_regular(path) as file:
            return file.read(len(SQLITE_HEADER))
    except OSError:
        return None


def not_replaceable(path: Path) -> Optional[str]:
    """Why the file at `path` must not be replaced by a rename (a device, a FIFO, a socket: the
    rename would put a file in its place, and run as root, `--metrics /dev/null` replaced the
    machine's /dev/null for every program), or None when it may (a regular file, a link, which
    the rename replaces and its target keeps, or nothing yet)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None  # nothing there (or nothing this process may see): the rename says what it finds
    if stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode):
        return None  # a directory: os.replace refuses it itself (EISDIR)
    kind = ("a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    return "it is %s, which kcing would replace with a file (it writes a new file and renames it): " \
           "name a regular file" % kind


def write_atomically(path: Path, content: bytes, mode: Optional[int] = None, like: Optional[Path] = None) -> None:
    """Write to a temporary name beside `path`, then rename: readers see the old file or the new
    one, never half of one.

    The new file gets `mode` when given, else the mode, owner and group of `like` (a backup takes
    those of the file it copies) or of the file it replaces, else 0644 less the umask. Owner and
    group are kept as far as this process may set them (root may; a user may set a group it is in).
    """
    refused = not_replaceable(path)
    if refused:
        raise ConfigError("cannot write %s: %s" % (path, refused))
    try:
        make_directories(path.parent)
        kept_mode, uid, gid = replacement_mode(path, like)
    except OSError as error:
        raise file_error(path, error) from None
    owner = (uid, gid) if uid is not None and mode is None else None
    with _written_beside(path, content, mode if mode is not None else kept_mode, owner) as temporary:
        os.replace(temporary, path)


def write_new(path: Path, content: bytes) -> bool:
    """Write `content` to a new file at `path`, whole or not at all, as write_atomically does, but
    never over a file already there: False, writing nothing, when `path` is taken (by another
    process that chose the same free name meanwhile, which a rename would have replaced)."""
    try:
        make_directories(path.parent)
        kept_mode, _, _ = replacement_mode(path)
    except OSError as error:
        raise file_error(path, error) from None
    with _written_beside(path, content, kept_mode) as temporary:
        try:
            os.link(temporary, path)  # fails where a file has the name: a rename would replace it
        except FileExistsError:
            return False
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # A file system without hard links (some FUSE or SMB mounts): the name is checked, then taken.
            if os.path.lexists(path):
                return False
            os.replace(temporary, path)
    return True


@contextmanager
def _written_beside(path: Path, content: bytes, mode: int, owner: Optional[tuple] = None) -> Iterator[str]:
    """The name of a new file beside `path` holding `content`, written whole and synced, with
    `mode` (and `owner`, (uid, gid), as far as this process may set it), for the block to give
    it `path`'s name (a rename, a link); the file is removed when the block leaves it there. An
    OSError, here or in the block, is the kcing error for `path` (see `file_error`)."""
    try:
        handle, temporary = tempfile.mkstemp(dir=str(path.parent), prefix=PARTIAL_PREFIX, suffix=PARTIAL_SUFFIX)
    except OSError as error:
        raise file_error(path, error) from None
    try:
        with os.fdopen(handle, "wb") as out:
            if owner is not None:
                _keep_owner(out.fileno(), *owner)
            os.fchmod(out.fileno(), mode)
            out.write(content)
            out.flush()
            os.fsync(out.fileno())
        yield temporary
    except OSError as error:
        raise file_error(path, error) from None
    finally:
        if os.path.lexists(temporary):
            os.unlink(temporary)


def file_error(path: Path, error: OSError) -> KcingError:
    """The kcing error for a file kcing could not write: a setting to fix (permissions, a
    missing directory: exit 2), or the machine failing (a full disk, an I/O error: exit 5)."""
    reason = error.strerror or str(error)
    # A path to fix: no permission, no such directory, a file where a directory belongs (EEXIST
    # from mkdir) or the reverse, a read-only file system, a name too long or a link loop.
    if error.errno in (errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
                       errno.EROFS, errno.ENAMETOOLONG, errno.ELOOP):
        return ConfigError("cannot write %s: %s" % (path, reason))
    return StorageFailed("cannot write %s: %s; the previous file, if any, is left as it was" % (path, reason))


def _keep_owner(fd: int, uid: int, gid: int) -> None:
    for owner, group in ((uid, gid), (-1, gid)):
        try:
            os.fchown(fd, owner, group)
            return
        except PermissionError:
            continue


def open_own_file(path: Path, flags: int, what: str, open_failure: Callable[[OSError], KcingError],
                  mode: int = NEW_FILE_MODE) -> int:
    """Open (creating if needed) the file kcing writes at `path` with `flags`; return its fd.

    A symlink there is refused, never followed: kcing writes to the file, and following a link
    planted at its name would write into whatever the link points at. So is anything but a plain
    file with one name (a hard link to another file, a FIFO, a device). `what` names the file in
    the messages; `open_failure` is the error for any other reason the file cannot be opened;
    `mode` that of a new file (before the umask).
    """
    try:
        fd = os.open(str(path), flags | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ConfigError("the %s %s is a symbolic link; kcing does not follow it (it would write through "
                              "it): remove it and run again" % (what, path)) from None
        raise open_failure(error) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        kind = "not a regular file" if not stat.S_ISREG(info.st_mode) else "a hard link to another file"
        raise ConfigError("the %s %s is %s; kcing does not write to it: remove it and run again" % (what, path, kind))
    os.set_blocking(fd, True)  # O_NONBLOCK only kept a FIFO at the name from stalling the open
    return fd


def open_lock_file(path: Path) -> int:
    """Open (creating if needed) the lock file at `path` for reading and writing; return its fd
    (see `open_own_file`)."""
    return open_own_file(path, os.O_RDWR, "lock file", lambda error: _lock_file_error(path, error))


def _lock_file_error(path: Path, error: OSError) -> ConfigError:
    """Why the lock file at `path` cannot be opened: one that exists is the file refusing (its
    mode or owner, a read-only file system), not a directory where it cannot be made."""
    if not os.path.lexists(str(path)):
        return ConfigError("cannot create the lock file %s: %s" % (path, error.strerror))
    how = (" (its mode or owner: let the user running kcing write it, or remove it while no run is going)"
           if error.errno in (errno.EACCES, errno.EPERM) else "")
    return ConfigError("cannot open the lock file %s for writing: %s%s" % (path, error.strerror, how))


def is_directory(path: Path, named: str) -> bool:
    """`path.is_dir()`; ConfigError saying `named` (the option or setting that gave the path) when
    that cannot be known: pathlib raises PermissionError for a path inside a directory this user
    may not search, where it answers False only for a path that is not there."""
    return _looked_up(path.is_dir, path, named)


def path_exists(path: Path, named: str) -> bool:
    """`path.exists()`, as `is_directory` does it."""
    return _looked_up(path.exists, path, named)


def _looked_up(check: Callable[[], bool], path: Path, named: str) -> bool:
    try:
        return check()
    except OSError as error:
        raise ConfigError("%s: cannot look up %s: %s" % (named, path, error.strerror or error)) from None
