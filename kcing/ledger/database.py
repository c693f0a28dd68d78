"""The ledger's SQLite connection, with the storage failures a run can meet turned into kcing errors.

A ledger locked by another process for longer than kcing waits, a full disk, an I/O error or a
read-only file are facts about the machine, not bugs: each becomes one `KcingError` with a clear
message and its exit status, wherever in a run it happens. SQLite rolls back the transaction
that failed, so the ledger keeps only whole transactions and stays consistent.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Optional, Tuple

from peewee import DatabaseError, SqliteDatabase

from kcing.errors import ConfigError, KcingError, LedgerBusy, StorageFailed
from kcing.ledger.models import ledger_text

# SQLite's primary result codes (the low byte of an extended code), and the messages SQLite
# gives them: an error raised by a commit does not always carry its code.
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_BUSY_WORDS = ("database is locked", "database table is locked")
_FULL = ("database or disk is full", "no space left")
_READONLY = ("readonly database", "read-only")
_IO = ("disk i/o error", "unable to open database file")
_CANNOT_WRITE = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}


def storage_error(path: str, error: BaseException, wait: float) -> Optional[KcingError]:
    """The kcing error for a SQLite failure of the ledger at `path`, or None for any other
    error (a damaged file, a bug), which the caller leaves as it is."""
    primary, text = _sqlite_failure(error)
    lowered = text.lower()
    if primary in _BUSY or any(words in lowered for words in _BUSY_WORDS):
        return LedgerBusy("the ledger %s is locked by another process (waited %gs, KCING_DB_LOCK_WAIT); nothing "
                          "more was recorded: try again when that process is done" % (path, wait))
    if primary == sqlite3.SQLITE_FULL or any(words in lowered for words in _FULL):
        why = "the disk is full"
    elif read_only_failure(path, error):
        why = read_only_part(path) or "it is read-only (the file, its directory or its file system)"
    elif primary in _CANNOT_WRITE or any(words in lowered for words in _IO):
        why = "%s (a full disk or a failing device)" % text
    else:
        return None
    return StorageFailed("cannot write the ledger %s: %s; the ledger keeps every whole transaction, and what "
                         "was not recorded is sent again by the next run" % (path, why))


def read_only_failure(path: str, error: BaseException) -> bool:
    """Whether SQLite's `error` says that the ledger at `path` cannot be written."""
    primary, text = _sqlite_failure(error)
    lowered = text.lower()
    # SQLite cannot open a WAL ledger whose directory or file system refuses its -shm file,
    # and says only "unable to open database file".
    return (primary == sqlite3.SQLITE_READONLY or any(words in lowered for words in _READONLY)
            or (primary == sqlite3.SQLITE_CANTOPEN or "unable to open" in lowered) and unwritable(path))


def _sqlite_failure(error: BaseException) -> Tuple[Optional[int], str]:
    """SQLite's primary result code of `error` (None when it carries none: an error raised by a
    commit may not) and its message; peewee's errors wrap sqlite3's."""
    original = error.args[0] if isinstance(error, DatabaseError) and error.args else error
    code = getattr(original, "sqlite_errorcode", None)
    return (code & 0xFF if isinstance(code, int) else None), str(original)


def unwritable(path: str) -> bool:
    """Whether the ledger at `path`, the directory it is in, or its -wal or -shm file cannot be
    written to."""
    return read_only_part(path) is not None


def read_only_part(path: str) -> Optional[str]:
    """What keeps the ledger at `path` from being written, said for its message, or None."""
    where = Path(path).expanduser()
    try:
        if os.statvfs(str(where.parent)).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        return None
    if not os.access(str(where.parent), os.W_OK):
        return "its directory %s cannot be written to" % where.parent
    if read_only_file(path):
        return "the file is read-only"
    for suffix, advice in (("-shm", "make it writable, or remove it while nothing uses the ledger"),
                           ("-wal", "make it writable; keep it, as it may hold the last transactions")):
        # SQLite makes these with the ledger's own mode: a reader of a read-only ledger leaves
        # them read-only, and they keep a ledger made writable again from being written.
        beside = Path(str(where) + suffix)
        if beside.exists() and not os.access(str(beside), os.W_OK):
            return "its %s file %s is read-only (%s)" % (suffix, beside, advice)
    return None


def read_only_file(path: str) -> bool:
    """Whether the ledger file at `path` exists and this process may not write to it."""
    where = Path(path).expanduser()
    return where.exists() and not os.access(str(where), os.W_OK)


def damage_error(path: str, error: BaseException) -> Optional[KcingError]:
    """The kcing error for SQLite finding the ledger at `path` damaged (a page overwritten, a
    copy cut short where its first pages are whole), or None for any other error.

    Only a statement that reads the damaged page finds it, often well into a run: it is the
    file's fault, not kcing's, and said as the damage kcing refuses a ledger for when opening."""
    primary, text = _sqlite_failure(error)
    if primary != sqlite3.SQLITE_CORRUPT and "malformed" not in text.lower():
        return None
    return ConfigError("KCING_DB %s is damaged (%s); left as it is: restore it from a backup, or point KCING_DB "
                       "(or --db) at a new file, to which everything is sent again" % (path, text))


class LedgerDatabase(SqliteDatabase):
    """SqliteDatabase whose every statement, commit and rollback raises kcing errors for
    storage failures (see `storage_error`) and for a damaged file (`damage_error`)."""

    def __init__(self, path: str, wait: float, **kwargs):
        # The connection's own busy timeout too: the pragmas it is opened with run before the
        # busy_timeout pragma does, and setting WAL mode waits for readers of a ledger that is
        # not in it (SQLite's default there is 5 s, whatever KCING_DB_LOCK_WAIT says).
        super().__init__(path, timeout=wait, **kwargs)
        self.wait = wait
        # The ledger file the messages name: a ledger read into memory (ledger.Ledger.open) is
        # still the file the user named.
        self.named = path

    def _translated(self, error: BaseException) -> BaseException:
        mapped = storage_error(str(self.named), error, self.wait) or damage_error(str(self.named), error)
        if isinstance(mapped, LedgerBusy):
            self._wait_no_more()
        return mapped if mapped is not None else error

    def _wait_no_more(self) -> None:
        """After a write waited the whole KCING_DB_LOCK_WAIT in vain, the writes the run still
        makes as it stops (the posts answered meanwhile, its outcomes, its row) each try once:
        one more wait apiece would make the run stop after several times the wait it reports."""
        if self.is_closed():  # (failed to open: the next open sets the wait again, and fails again)
            return
        try:
            self._state.conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error:
            pass

    def _connect(self):
        connection = super()._connect()
        # A text value whose bytes are not UTF-8 (a ledger edited by hand) is read as it is, where
        # sqlite3's own decoding fails the statement reading it ("Could not decode to UTF-8").
        connection.text_factory = ledger_text
        return connection

    def connect(self, reuse_if_open=False):
        try:
            return super().connect(reuse_if_open)
        except (DatabaseError, sqlite3.DatabaseError) as error:
            raise self._translated(error) from None

    def execute_sql(self, sql, params=None, commit=None):
        try:
            return super().execute_sql(sql, params)
        except (DatabaseError, sqlite3.DatabaseError) as error:
            raise self._translated(error) from None

    def execute_many(self, sql, rows):
        """One statement for each of `rows` (sequences of parameters), translated as above."""
        try:
            return self.cursor().executemany(sql, rows)
        except (DatabaseError, sqlite3.DatabaseError) as error:
            raise self._translated(error) from None

    def commit(self):
        try:
            return super().commit()
        except (DatabaseError, sqlite3.DatabaseError) as error:
            raise self._translated(error) from None

    def rollback(self):
        try:
            return super().rollback()
        except (DatabaseError, sqlite3.DatabaseError) as error:
            raise self._translated(error) from None
