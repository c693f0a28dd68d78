"""The ledger's SQLite connection, with the storage failures a run can meet turned into kcing errors.

A ledger locked by another process for longer than kcing waits, a full disk, an I/O error or a
read-only file are facts about the machine, not bugs: each becomes one `KcingError` with a clear
message and its exit status, wherever in a run it happens. SQLite rolls back the transaction
that failed, so the ledger keeps only whole transactions and stays consistent.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Callable, Optional, Tuple, TypeVar

from peewee import DatabaseError, SqliteDatabase

from kcing.errors import ConfigError, KcingError, LedgerBusy, StorageFailed
from kcing.ledger.models import ledger_text

T = TypeVar("T")

# SQLite's primary result codes (the low byte of an extended code), and the messages SQLite
# gives them: an error raised by a commit does not always carry its code.
_BUSY = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}
_BUSY_WORDS = ("database is locked", "database table is locked")
_FULL = ("database or disk is full", "no space left")
_READONLY = ("readonly database", "read-only")
_IO = ("disk i/o error", "unable to open database file")
_CANNOT_WRITE = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN}
# SQLite's refusal of a write whose transaction read an older snapshot: at once, and for good.
_BUSY_SNAPSHOT = 517
# Space left under which an I/O error of the ledger is taken for a full disk: SQLite failing to
# grow a WAL ledger's -shm file (32 KiB at a time) on a disk with a few KiB left says "disk I/O
# error" (SQLITE_IOERR_SHMSIZE, or no code at all from a commit), where a write to the ledger or
# its -wal says SQLITE_FULL.
NEARLY_FULL_BYTES = 1 << 20
# The longest one wait inside SQLite for another process's lock lasts: KCING_DB_LOCK_WAIT is
# waited out in such slices, Python running between them. The main thread runs a signal's
# handler only between Python instructions, and one wait of KCING_DB_LOCK_WAIT held a SIGTERM
# unanswered that long (30 s by default, up to a day), past the 10 s a stopping service waits.
LOCK_WAIT_SLICE = 0.2


def storage_error(path: str, error: BaseException, wait: float, reading: bool = False) -> Optional[KcingError]:
    """The kcing error for a SQLite failure of the ledger at `path`, or None for any other
    error (a damaged file, a bug), which the caller leaves as it is. `reading`: the ledger was
    only read (status, a dry run, the check of what a file is), which records nothing anyway."""
    primary, text = _sqlite_failure(error)
    lowered = text.lower()
    if primary in _BUSY or any(words in lowered for words in _BUSY_WORDS):
        if reading:
            return LedgerBusy("cannot read the ledger %s: it is locked by another process (waited %gs, "
                              "KCING_DB_LOCK_WAIT); try again when that process is done" % (path, wait))
        return LedgerBusy("the ledger %s is locked by another process (waited %gs, KCING_DB_LOCK_WAIT); nothing "
                          "more was recorded: try again when that process is done" % (path, wait))
    if primary == sqlite3.SQLITE_FULL or any(words in lowered for words in _FULL):
        why = "the disk is full"
    elif read_only_failure(path, error):
        why = read_only_part(path) or "it is read-only (the file, its directory or its file system)"
    elif io_error_without_room(path, error):
        why = "the disk is full"
    elif primary in _CANNOT_WRITE or any(words in lowered for words in _IO):
        why = "%s (a full disk or a failing device)" % text
    else:
        return None
    # Said by every command that writes the ledger: a feed's next run sends again what it could
    # not record as delivered, a drp's forgets what it could not, a reconcile's checks again.
    return StorageFailed("cannot write the ledger %s: %s; the ledger keeps every whole transaction, and the "
                         "next run does again what this one could not record" % (path, why))


def io_error_without_room(path: str, error: BaseException) -> bool:
    """Whether `error` is an I/O error of the ledger at `path` on a file system with (next to) no
    space left: a full disk, not a failing device."""
    primary, text = _sqlite_failure(error)
    if primary != sqlite3.SQLITE_IOERR and not (primary is None and "disk i/o error" in text.lower()):
        return False
    try:
        stats = os.statvfs(str(Path(path).expanduser().parent))
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES


def held_by_another(error: BaseException) -> bool:
    """Whether SQLite's `error` says that another process holds the lock, which waiting may free
    (not a write refused for its transaction's older snapshot, which no wait helps)."""
    original = error.args[0] if isinstance(error, DatabaseError) and error.args else error
    code = getattr(original, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == sqlite3.SQLITE_BUSY and code != _BUSY_SNAPSHOT
    return "database is locked" in str(original).lower()


def wait_abandoned(path: str, done: str) -> LedgerBusy:
    """A wait for the ledger's lock that a run stopped by a signal gave up; `done`: what it left."""
    return LedgerBusy("the ledger %s is locked by another process, and a run stopped by a signal waits for it no "
                      "longer than for the batch in flight; %s: try again when that process is done" % (path, done))


def retried_while_locked(attempt: Callable[[], T], wait: float, abandon_wait: Callable[[], bool]) -> T:
    """attempt(), whose waits inside SQLite are at most LOCK_WAIT_SLICE each, tried again while
    another process holds the ledger's lock: `wait` seconds (KCING_DB_LOCK_WAIT) in all, or until
    `abandon_wait` says to stop (a run stopped by a signal, past the grace it gives the batch in
    flight); then the error it met. Python takes a signal only between two such waits."""
    started = time.monotonic()
    while True:
        tried = time.monotonic()
        try:
            return attempt()
        except (DatabaseError, sqlite3.DatabaseError) as error:
            if not held_by_another(error) or abandon_wait() or time.monotonic() - started >= wait:
                raise
        if time.monotonic() - tried < LOCK_WAIT_SLICE / 2:
            time.sleep(LOCK_WAIT_SLICE / 2)  # refused without a wait (a lock being recovered)


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

    def __init__(self, path: str, wait: float, abandon_wait: Callable[[], bool] = lambda: False,
                 reading: bool = False, **kwargs):
        # The connection's own busy timeout too: the pragmas it is opened with run before the
        # busy_timeout pragma does, and setting WAL mode waits for readers of a ledger that is
        # not in it (SQLite's default there is 5 s); `connect` waits out the rest in slices.
        super().__init__(path, timeout=min(wait, LOCK_WAIT_SLICE), **kwargs)
        self.wait = wait
        self.reading = reading  # opened to read (status, a dry run): its messages say so
        # True once a wait for another process's lock is to end before KCING_DB_LOCK_WAIT: a run
        # stopped by a signal waits no longer than it waits for the batch in flight.
        self.abandon_wait = abandon_wait
        self._waits_over = False
        self._abandoned = False  # a wait ended so: what the run's later writes say too
        # The ledger file the messages name: a ledger read into memory (ledger.Ledger.open) is
        # still the file the user named.
        self.named = path

    def _translated(self, error: BaseException, abandoned: bool = False) -> BaseException:
        mapped = (storage_error(str(self.named), error, self.wait, self.reading)
                  or damage_error(str(self.named), error))
        if isinstance(mapped, LedgerBusy):
            self._wait_no_more()
            self._abandoned = self._abandoned or abandoned
            if self._abandoned and not self.reading:
                mapped = wait_abandoned(self.named, "nothing was recorded" if self.is_closed()  # (still opening)
                                        else "nothing more was recorded")
        return mapped if mapped is not None else error

    def _waiting_for_locks(self, statement: Callable):
        """statement(), tried again while another process holds the ledger's lock (see
        `retried_while_locked`); then the error it met, as a kcing error."""
        abandoned = []

        def abandon() -> bool:
            if not self._waits_over and self.abandon_wait():
                abandoned.append(True)
            return bool(abandoned)
        try:
            return retried_while_locked(statement, 0 if self._waits_over else self.wait, abandon)
        except (DatabaseError, sqlite3.DatabaseError) as error:
            raise self._translated(error, bool(abandoned)) from None

    def _wait_no_more(self) -> None:
        """After a write waited the whole KCING_DB_LOCK_WAIT in vain, the writes the run still
        makes as it stops (the posts answered meanwhile, its outcomes, its row) each try once:
        one more wait apiece would make the run stop after several times the wait it reports."""
        if self.is_closed():  # (failed to open: the next open sets the wait again, and fails again)
            return
        self._waits_over = True
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
        # Setting WAL mode, as the connection is made, waits for the readers of a ledger in
        # another journal mode: in slices, as every other wait.
        return self._waiting_for_locks(lambda: super(LedgerDatabase, self).connect(reuse_if_open))

    def execute_sql(self, sql, params=None, commit=None):
        return self._waiting_for_locks(lambda: super(LedgerDatabase, self).execute_sql(sql, params))

    def execute_many(self, sql, rows):
        """One statement for each of `rows` (a list of sequences of parameters), translated and
        waiting as above: the lock is taken by the first row's write, or by none."""
        return self._waiting_for_locks(lambda: self.cursor().executemany(sql, rows))

    def commit(self):
        return self._waiting_for_locks(lambda: super(LedgerDatabase, self).commit())

    def rollback(self):
        try:
            return super().rollback()
        except (DatabaseError, sqlite3.DatabaseError) as error:
            raise self._translated(error) from None

    def transaction(self, *args, **kwargs):
        return _BegunWholeOrNotAtAll(self, super().transaction(*args, **kwargs))

    def end_what_was_begun(self, depth: int) -> None:
        """Undo a transaction's start cut short: peewee's stack back to `depth`, and, when that
        is none, SQLite's transaction rolled back (a transaction begun beside the stack would
        hold every later write, the run row's closing included, until the connection closed and
        rolled them back with it)."""
        while self.transaction_depth() > depth:
            self.pop_transaction()
        connection = None if self.is_closed() else self._state.conn
        if depth == 0 and connection is not None and connection.in_transaction:
            try:
                connection.rollback()
            except sqlite3.Error:  # nothing written: closing the connection rolls it back
                pass


class _BegunWholeOrNotAtAll:
    """A transaction (peewee's) whose start, interrupted once BEGIN ran (a signal's
    KeyboardInterrupt: Python runs the handler as SQLite returns), leaves nothing begun: the
    `with` block it was starting never runs, so nothing else would end it."""

    def __init__(self, database: LedgerDatabase, transaction):
        self.database, self.transaction = database, transaction

    def __enter__(self):
        depth = self.database.transaction_depth()
        try:
            return self.transaction.__enter__()
        except BaseException:
            self.database.end_what_was_begun(depth)
            raise

    def __exit__(self, *exc):
        return self.transaction.__exit__(*exc)
