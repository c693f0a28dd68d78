"""Where the ledger is: its path checked before anything is opened, locked or made beside it."""
from __future__ import annotations

import errno
import os
from pathlib import Path

from kcing.errors import ConfigError
from kcing.files import SQLITE_HEADER, sqlite_header_of


def ledger_exists(path: str) -> bool:
    """Whether there is a file (or a directory, which opening refuses) at the ledger path `path`;
    ConfigError when that cannot be known: a directory on the way this user may not search
    (pathlib's exists() raises PermissionError there)."""
    try:
        os.stat(os.path.expanduser(path))
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as error:
        if error.errno == errno.ELOOP:  # as the run lock says it (kcing.runlock.lock_path)
            raise ConfigError("%s is a loop of symbolic links: point it at a file" % os.path.expanduser(path)) from None
        raise ConfigError("KCING_DB %s cannot be looked up: %s" % (path, error.strerror or error)) from None
    return True


def check_ledger_path(path: Path) -> None:
    """A ledger path must name a file, existing or not, in a directory that exists. Checked too
    before the run lock is taken, whose file is made beside it: `KCING_DB=/dev/null` left a
    /dev/null.lock in /dev."""
    ledger_exists(str(path))  # a directory on the way that may not be searched: said of KCING_DB
    if path.is_dir():
        raise ConfigError("KCING_DB %s is a directory: name a ledger file, e.g. %s" % (path, path / "kcing.db"))
    if path.exists() and not path.is_file():
        raise ConfigError("KCING_DB %s is not a regular file: name a ledger file" % path)
    parent = path.resolve().parent
    if not parent.is_dir():
        raise ConfigError("KCING_DB directory %s does not exist" % parent)
    if not_a_database(path):
        # Said before the run lock is taken: `--db kcing.log` left a kcing.log.lock beside the log.
        raise ConfigError("KCING_DB %s is not a usable kcing ledger: file is not a database" % path)


def not_a_database(path: Path) -> bool:
    """Whether the file at `path` holds bytes that begin no SQLite database (an empty file is a
    new one); False when there is no file or it cannot be read here (opening it says why)."""
    start = sqlite_header_of(path)
    return bool(start) and start != SQLITE_HEADER


def refuse_other_names(path: Path) -> None:
    """Refuse to write a ledger file that has other names (hard links). SQLite keeps a -wal and
    -shm file per name and the run lock is `<name>.lock`: a run through another name would write
    the same file at the same time, each unaware of the other, and rows written through one name
    can be lost. A symbolic link is no such name: both lead to one name."""
    try:
        names = os.stat(str(path)).st_nlink
    except OSError:
        return  # gone meanwhile: opening it says so
    if names > 1:
        raise ConfigError("KCING_DB %s is one file under %d names (hard links): a run through another of its names "
                          "would take its own run lock and -wal file and write the ledger at the same time, losing "
                          "rows; keep one name (a symbolic link may point to it) and remove the others"
                          % (path, names))
