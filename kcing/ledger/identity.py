"""Which SQLite files are kcing ledgers: kcing opens, migrates and writes only its own.

A ledger carries kcing's application_id in its header (SQLite's field for telling one
program's files from another's), set when it is created or first opened by a kcing that knows
the field. A ledger written before then is known by its shape instead: a user_version kcing
wrote (1 to SCHEMA_VERSION) and kcing's tables with the columns every kcing ledger has had. A
file with no tables and no version is a new ledger (an empty file too). Anything else belongs
to another program: kcing refuses it before writing a byte to it.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, FrozenSet, Mapping, Optional, TypeVar
from urllib.parse import quote

from kcing.errors import ConfigError, KcingError
from kcing.ledger import models
from kcing.ledger.database import (LOCK_WAIT_SLICE, held_by_another, read_only_failure, read_only_file,
                                   retried_while_locked, storage_error, wait_abandoned)

# The tables every kcing ledger has had since the first (the others come with create_tables).
REQUIRED_TABLES = ("upstream_file", "run")
# Columns later schemas added to tables that earlier ledgers already had (kcing.ledger.migration adds them).
ADDED_LATER = {"upstream_file": {"kept_ids", "destination"}, "watermark": {"destination"}}
# Table names shown when a file is refused for holding other tables.
NAMES_SHOWN = 5
T = TypeVar("T")


@dataclass(frozen=True)
class FileShape:
    """What a SQLite file's header and schema say about it."""

    application_id: int
    user_version: int
    tables: Mapping[str, FrozenSet[str]]  # table or view -> its columns


def _never() -> bool:
    return False


def shape_of_file(path: str, wait: float, abandon_wait: Callable[[], bool] = _never) -> FileShape:
    """The shape of the SQLite file at `path`, read on a read-only connection of its own (which
    writes nothing to the file, and so cannot checkpoint another program's WAL into it).
    `wait` and `abandon_wait`: how long a lock another process holds is waited for (see
    database.retried_while_locked)."""
    return _reading(path, wait, lambda connection: read_shape(lambda sql: connection.execute(sql).fetchall()),
                    abandon_wait)


def copy_into(path: str, target: sqlite3.Connection, wait: float, abandon_wait: Callable[[], bool] = _never) -> None:
    """Copy the SQLite file at `path` into the open database `target` (SQLite's backup, read on
    a read-only connection: the file is not written)."""
    _reading(path, wait, lambda connection: connection.backup(target, progress=_locked_ends_backup), abandon_wait)


def _locked_ends_backup(status: int, remaining: int, total: int) -> None:
    # Python's backup tries a locked file again without end; the wait is `_read_at`'s to make.
    if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        raise sqlite3.OperationalError("database is locked")


def _reading(path: str, wait: float, read: Callable[[sqlite3.Connection], T], abandon_wait: Callable[[], bool]) -> T:
    """`read(connection)` on a read-only connection of its own to the file at `path`; a file
    SQLite cannot read is a ConfigError, or the storage error it is (locked past the wait, I/O)."""
    location = _file_uri(path) + "?mode=ro"
    try:
        if read_only_file(path) and not Path(str(Path(path).expanduser()) + "-wal").exists():
            # Read as it is on disk (see below): a WAL reader would leave -wal and -shm files
            # beside it with its read-only mode, which would then keep the ledger from being
            # written once it is made writable again. No writer is there without its -wal file.
            return _read_at(location + "&immutable=1", wait, read, abandon_wait)
        found_beside = _journal_files(path)
        try:
            return _read_at(location, wait, read, abandon_wait)
        except sqlite3.Error as error:
            if not read_only_failure(path, error):
                raise
        finally:
            if not found_beside:
                _remove_journal_files_left(_file_uri(path) + "?mode=rw")
        # A ledger in WAL mode is read through its -shm file, which SQLite cannot make in a
        # directory this user may not write to (kcing status run by another account). The file
        # is then read as it is on disk: no run can be writing it, as a writer's -wal and -shm
        # files would be there, and the read above would have used them.
        return _read_at(location + "&immutable=1", wait, read, abandon_wait)
    except sqlite3.Error as error:
        raise _read_failure(path, error, wait, abandon_wait) from None


def in_place_location(path: str, wait: float, abandon_wait: Callable[[], bool] = _never) -> str:
    """The URI of a read-only connection reading the ledger at `path`, which this user cannot
    write, where it is (not a copy, which takes as much memory as the ledger is large), leaving
    no file beside it, as `_reading` reads it: through the -wal and -shm files a writer left
    (they hold the transactions not yet in the file), or, with none there, the file as it is on
    disk (no run is writing it: a writer's -wal and -shm files would be there)."""
    location = _file_uri(path) + "?mode=ro"
    if not _journal_files(path):
        return location + "&immutable=1"
    try:
        _read_at(location, wait, lambda connection: connection.execute("PRAGMA user_version").fetchall(),
                 abandon_wait)
        return location
    except sqlite3.Error as error:
        if read_only_failure(path, error):
            return location + "&immutable=1"  # a -shm file SQLite cannot use: see `_reading`
        raise _read_failure(path, error, wait, abandon_wait) from None


def _file_uri(path: str) -> str:
    """The SQLite URI of the file at `path`, quoted from its bytes: a name that is not UTF-8 (a
    byte Python holds as a lone surrogate) is then the same file for SQLite, not an error."""
    return "file:" + quote(os.fsencode(Path(path).expanduser().resolve()))


def _read_failure(path: str, error: sqlite3.Error, wait: float, abandon_wait: Callable[[], bool]) -> KcingError:
    """What a failed read of the ledger at `path` is: the storage error it is (locked past the
    wait, or until a signal stopped the run, I/O), else a file SQLite cannot read as a ledger."""
    if held_by_another(error) and abandon_wait():
        return wait_abandoned(path, "nothing was recorded")
    failure = storage_error(path, error, wait, reading=True)
    if failure is not None:
        return failure
    return ConfigError("KCING_DB %s is not a usable kcing ledger: %s" % (path, error))


def _journal_files(path: str) -> bool:
    """Whether a -wal or -shm file is beside the SQLite file at `path`."""
    named = str(Path(path).expanduser())
    return any(os.path.lexists(named + suffix) for suffix in ("-wal", "-shm"))


def _remove_journal_files_left(location: str) -> None:
    """Remove the -wal and -shm files a read-only connection to a file in WAL mode made and
    left (it may not delete them; `kcing status` on a ledger it reads through a copy, an older
    one, left them for good). A connection that may write removes them as it closes, when it is
    the last one: a run opening the ledger meanwhile keeps them. Only an empty WAL (none was
    there before the read) is checkpointed so: nothing is written into the file itself."""
    try:
        connection = sqlite3.connect(location, uri=True, timeout=0)
        try:
            connection.execute("PRAGMA user_version").fetchall()
        finally:
            connection.close()
    except sqlite3.Error:
        pass  # a file this user may not write to (opened read-only above) or one locked: left as SQLite left it


def _read_at(location: str, wait: float, read: Callable[[sqlite3.Connection], T],
             abandon_wait: Callable[[], bool]) -> T:
    def attempt() -> T:
        connection = sqlite3.connect(location, uri=True, timeout=min(wait, LOCK_WAIT_SLICE))
        try:
            return read(connection)
        finally:
            connection.close()
    return retried_while_locked(attempt, wait, abandon_wait)


def read_shape(query: Callable[[str], list]) -> FileShape:
    """The shape of the open database `query` (SQL -> rows) reads; reads only."""
    names = [row[0] for row in query("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                     "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")]
    tables = {name: frozenset(row[1] for row in query("PRAGMA table_info(%s)" % _quoted(name))) for name in names}
    return FileShape(query("PRAGMA application_id")[0][0], query("PRAGMA user_version")[0][0], tables)


def refusal(shape: FileShape) -> Optional[str]:
    """Why kcing must not open a file of this shape (the rest of "KCING_DB FILE ..."), or None."""
    if shape.application_id == models.APPLICATION_ID:
        if shape.user_version > models.SCHEMA_VERSION:
            return "was written by a newer kcing (ledger schema %d; this one knows up to %d)" % (
                shape.user_version, models.SCHEMA_VERSION)
        if shape.user_version == models.SCHEMA_VERSION:
            # Marked and at this schema, the file was written whole by a kcing of this schema:
            # a table or column it lacks was removed since, not added later. Migrating it as an
            # older ledger would mark every row as sent to Logstash; a table made anew would
            # forget what the file held.
            missing = _missing_from_current(shape)
            if missing:
                return ("is damaged (%s); left as it is: restore it from a backup, or point KCING_DB (or --db) "
                        "at a new file, to which everything is sent again" % missing)
        return None
    if shape.application_id != 0:
        return _foreign("it belongs to the program with SQLite application_id %d" % shape.application_id)
    if not shape.tables:
        return None if shape.user_version == 0 else _foreign("user_version %d and no tables" % shape.user_version)
    absent = [name for name in REQUIRED_TABLES if name not in shape.tables]
    if absent:
        names = sorted(shape.tables)
        shown = ", ".join(names[:NAMES_SHOWN]) + (", ..." if len(names) > NAMES_SHOWN else "")
        return _foreign("it has no %s table; its tables: %s" % (absent[0], shown))
    for name, wanted in _earliest_columns().items():
        lacking = sorted(wanted - shape.tables[name]) if name in shape.tables else []
        if lacking:
            return _foreign("its %s table has no %s column" % (name, lacking[0]))
    if not 1 <= shape.user_version <= models.SCHEMA_VERSION:
        return _foreign("kcing's tables, but user_version %d, which no kcing wrote" % shape.user_version)
    return None


def _missing_from_current(shape: FileShape) -> Optional[str]:
    """What a ledger of this schema has that `shape` lacks ("it has no run table"), or None."""
    for model in models.TABLES:
        name = model._meta.table_name
        if name not in shape.tables:
            return "it has no %s table" % name
        lacking = sorted(frozenset(field.column_name for field in model._meta.sorted_fields) - shape.tables[name])
        if lacking:
            return "its %s table has no %s column" % (name, lacking[0])
    return None


def _foreign(why: str) -> str:
    return "is not a kcing ledger (%s); left as it is: point KCING_DB (or --db) at a kcing ledger or a new file" % why


def _earliest_columns() -> Dict[str, FrozenSet[str]]:
    """{table: the columns it has had in every kcing ledger that has it}."""
    return {model._meta.table_name: frozenset(field.column_name for field in model._meta.sorted_fields)
            - ADDED_LATER.get(model._meta.table_name, set()) for model in models.TABLES}


def _quoted(name: str) -> str:
    return '"%s"' % name.replace('"', '""')
