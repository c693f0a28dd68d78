"""The ledger: which upstream objects were seen, and which Logstash acknowledged in full."""
from __future__ import annotations

import json
import logging
import sqlite3
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from peewee import SQL, DatabaseError, SqliteDatabase, fn

from kcing import keptdays, shutdown
from kcing.errors import ConfigError, KcingError, StorageFailed, exit_status, one_line
from kcing.files import as_text
from kcing.ledger import docids, identity, models
from kcing.ledger.database import LOCK_WAIT_SLICE, LedgerDatabase, read_only_file, read_only_part, unwritable
from kcing.ledger.location import check_ledger_path, ledger_exists, refuse_other_names
from kcing.ledger.migration import migrate
from kcing.ledger.models import DELIVERED, DOWNLOADED, FAILED, REJECTED, TOO_LARGE, UpstreamFile
from kcing.ledger.runs import RESENT_BY, drp_kept_day, runs_still_read
from kcing.records import UpstreamObject
from kcing.sinks import named_as_today
from kcing.urls import redacted

log = logging.getLogger(__name__)

# SQLite caps the number of bound parameters per statement; stay well below the oldest limit.
LOOKUP_CHUNK = 500
# A listing's ids are looked up by reading the index between the least and the greatest of a
# chunk when that stretch holds at most this many rows per id asked about; past it, and for the
# rest of the run after this many such misses for one (source, kind, destination), one by one.
RANGE_ROWS_PER_ID = 3
RANGE_MISSES_BEFORE_GIVING_UP = 3
# Joins the ids a range read answers with (SQL char(31), the unit separator).
_ID_SEPARATOR = "\x1f"
WRITE_CHUNK = 100


def _sql_text(text: str) -> str:
    """A constant as an SQL string literal (the upsert's statements are built once, at import)."""
    return "'%s'" % text.replace("'", "''")


def _marked_missing(error: str) -> str:
    """SQL: the error `error` (a column) carries the mark of an object missing in Elasticsearch."""
    mark = models.MISSING_IN_ELASTICSEARCH
    return "(%s = %s OR substr(%s, 1, %d) = %s)" % (error, _sql_text(mark), error, len(mark) + 2,
                                                    _sql_text(mark + "; "))


# The upsert of one outcome row: a new object is inserted; a known one (same source, kind, id
# and destination) takes the new state, adds its attempts, and keeps what the new row lacks.
_COLUMNS = ("source", "kind", "upstream_id", "url", "sha256", "state", "attempts", "last_error", "object_date",
            "first_seen", "delivered_at", "document_count", "kept_ids", "destination")
_ALWAYS_UPDATED = ('url = excluded.url', 'attempts = upstream_file.attempts + excluded.attempts',
                   'object_date = COALESCE(excluded.object_date, upstream_file.object_date)',
                   'sha256 = COALESCE(excluded.sha256, upstream_file.sha256)',
                   'document_count = COALESCE(excluded.document_count, upstream_file.document_count)')
# An object reconcile found missing in Elasticsearch stays marked until it is delivered again:
# `reconcile --resend` and its count of what is still missing find it by the mark, and a run
# that downloads it may still end before Logstash acknowledges it (Logstash down, a signal, a
# kill). The upsert keeps the mark itself, in the same statement, rather than each caller: a
# download leaves the object failed with the mark alone; a failure, a rejection or a refusal as
# too large takes its state, with its reason after the mark.
_HELD_MISSING = "upstream_file.state <> %s AND %s" % (_sql_text(DELIVERED), _marked_missing("upstream_file.last_error"))
_UNDELIVERED_STATE = "state = CASE WHEN %s AND excluded.state = %s THEN %s ELSE excluded.state END" % (
    _HELD_MISSING, _sql_text(DOWNLOADED), _sql_text(FAILED))
# (A NULL error makes the condition NULL, which CASE takes as false: such a row is not held.)
_UNDELIVERED_ERROR = ("last_error = CASE WHEN %s AND excluded.last_error IS NULL THEN %s "
                      "WHEN %s AND NOT %s THEN %s || excluded.last_error ELSE excluded.last_error END" % (
                          _HELD_MISSING, _sql_text(models.MISSING_IN_ELASTICSEARCH), _HELD_MISSING,
                          _marked_missing("excluded.last_error"), _sql_text(models.MISSING_IN_ELASTICSEARCH + "; ")))
_UPSERT_SQL = ("INSERT INTO \"upstream_file\" (%s) VALUES (%s) ON CONFLICT (source, kind, upstream_id, destination) "
               "DO UPDATE SET %%s" % (", ".join(_COLUMNS), ", ".join("?" * len(_COLUMNS))))
_UPSERT = {  # delivered or not -> statement
    False: _UPSERT_SQL % ", ".join(_ALWAYS_UPDATED + (_UNDELIVERED_STATE, _UNDELIVERED_ERROR)),
    True: _UPSERT_SQL % ", ".join(_ALWAYS_UPDATED + ("state = excluded.state", "delivered_at = excluded.delivered_at",
                                                     "last_error = NULL", "kept_ids = excluded.kept_ids")),
}
# The older versions of a node (`<node id>.<updated>`, the version part of fixed width, so that
# text order is time order) held as missing, once a newer version is delivered: their documents
# have the newer's ids, so Elasticsearch holds them again, and a re-send of the older would put
# older content back. Their error loses the mark, and says which version took their place.
_SUPERSEDED = ("UPDATE upstream_file SET last_error = 'superseded by version ' || ? || ', delivered after Elasticsearch "
               "lost this one (the versions of a node make documents with the same ids)' WHERE source = ? AND kind = ? "
               "AND destination = ? AND upstream_id > ? AND upstream_id < ? AND state <> %s AND %s"
               % (_sql_text(DELIVERED), _marked_missing("last_error")))
# The states an object held as missing can be in (every state but delivered).
_UNDELIVERED = tuple(state for state in models.STATES if state != DELIVERED)
# How a transaction that reads before it writes begins: with the write lock, waited for as long as
# any write waits. Begun deferred, its read holds a snapshot, and SQLite then refuses its first write
# at once (SQLITE_BUSY, without calling the busy handler) when another process holds the lock or has
# committed since: no wait at all, and a message saying kcing waited KCING_DB_LOCK_WAIT.
_WRITING = "IMMEDIATE"
# Seconds a write waits for another process holding the database lock (setting KCING_DB_LOCK_WAIT).
DEFAULT_LOCK_WAIT = 30.0


@dataclass(frozen=True)
class Outcome:
    """What happened to one object in this run; written to the ledger in batches."""

    obj: UpstreamObject
    state: str
    sha256: Optional[str] = None
    error: Optional[str] = None
    document_count: Optional[int] = None
    # With `delivered`: {index: packed ids} of every document the object produced (docids.pack),
    # kept in the same transaction. None: not known (the object cannot be reconciled).
    documents: Optional[Mapping[str, bytes]] = None


@dataclass
class RunRecord:
    """The runs-table row of a run in progress; the run sets its outcome and counts."""

    id: int
    outcome: Optional[str] = None
    counts: dict = field(default_factory=dict)


class DeliveredRow(NamedTuple):
    """What reconcile needs of one delivered object's ledger row."""

    id: int
    source: str
    kind: str
    upstream_id: str
    url: str
    object_date: Optional[datetime]
    kept_ids: Optional[int]
    # The Logstash input (or NDJSON output) it was delivered to: a re-send clears its row only
    # through that same destination.
    destination: str = ""


_ROW_COLUMNS = "id, source, kind, upstream_id, url, object_date, kept_ids, destination"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _naive_utc(when: Optional[datetime]) -> Optional[datetime]:
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(timezone.utc).replace(tzinfo=None)


# How a download's failure ends when storage said the file is not there (kcing/sources/legacy.py:
# "GET <url> answered 404", or its fallback's answer). Within the crawl window the listing names
# such a file and every run asks for it again (it may be uploaded late); once its day has left
# the window it is taken as gone for good and not asked for from the ledger, where a failure
# that may pass (a timeout, a 5xx, a stop) is, until delivered.
GONE_ANSWERS = (" answered 404", " answered 410")
_GONE_CONDITION = " OR ".join("substr(last_error, -%d) = ?" % len(answer) for answer in GONE_ANSWERS)


class Ledger:
    """A SQLite ledger (WAL mode). Writes go in one transaction per call."""

    def __init__(self, database: SqliteDatabase, clock=_utcnow, path: Optional[str] = None):
        self.db = database
        self.clock = clock
        # The ledger file, also when what is open is a copy of it in memory (see `open`).
        self.path = path if path is not None else database.database
        # (source, kind, destination) -> chunks whose ids were too scattered to read as one stretch
        self._scattered: Dict[Tuple[str, str, str], int] = {}

    @classmethod
    def open(cls, path: str, clock=_utcnow, wait: float = DEFAULT_LOCK_WAIT,
             earlier_destination: Callable[[str], str] = lambda kind: "logstash",
             earlier_watermark_destination: str = "logstash", unchanged: bool = False,
             abandon_wait: Callable[[], bool] = lambda: False) -> "Ledger":
        """Open (creating if needed) the ledger at `path`; a file that is not one is a ConfigError.

        A SQLite file of another program is refused before anything is written to it (see
        ledger/identity.py). A write waits up to `wait` seconds for another process holding the
        database lock, then raises LedgerBusy; a full disk or an I/O error raises StorageFailed
        (ledger/database.py). A ledger from before schema 3 knew one destination, Logstash: its
        rows are migrated as sent to `earlier_destination(kind)` and its watermarks to
        `earlier_watermark_destination` (the CLI passes the Logstash inputs configured now).

        With `unchanged` (a dry run, status), a ledger that opening would migrate or mark, or that
        this user cannot write to, is read into memory and the copy is migrated: the file stays
        as it was.

        `abandon_wait`: true once a write is to wait no longer for another process's lock (a run
        stopped by a signal, past the grace it gives the batch in flight).
        """
        copy_from = None
        read_at = None  # the URI of a ledger read where it is on a read-only connection
        if path != ":memory:":
            check_ledger_path(Path(path).expanduser())
            if not unchanged:
                # Before any read: opening a WAL file leaves -wal and -shm files beside the name.
                refuse_other_names(Path(path).expanduser())
            if ledger_exists(path):
                if not os.access(str(Path(path).expanduser()), os.R_OK):
                    # SQLite says no more than "unable to open", which read as the file being read-only.
                    raise ConfigError("KCING_DB %s cannot be read by this user (its mode or owner): let this user "
                                      "read it (and write it, to feed), or run kcing as its owner" % path)
                # Read only, on a connection of its own: a file that is not a ledger is refused
                # before kcing writes a byte to it (even the WAL mode or a checkpoint of its WAL).
                shape = identity.shape_of_file(path, wait, abandon_wait)
                refused = identity.refusal(shape)
                if refused:
                    raise ConfigError("KCING_DB %s %s" % (path, refused))
                # What a read must not change is read from a copy: a ledger opening would migrate
                # or mark. One this user cannot write to (SQLite opens a file for writing) is read
                # where it is, on a read-only connection: a copy took as much memory as the
                # ledger is large (1 GB for a million rows).
                if unchanged and (shape.user_version, shape.application_id) != (models.SCHEMA_VERSION,
                                                                               models.APPLICATION_ID):
                    copy_from, path = path, ":memory:"
                elif unchanged and unwritable(path):
                    read_at = identity.in_place_location(path, wait, abandon_wait)
                elif not unchanged and read_only_file(path):
                    # Refused before SQLite opens it: it would leave read-only -wal and -shm files.
                    raise StorageFailed("cannot write the ledger %s: %s; nothing was changed"
                                        % (path, read_only_part(path)))
        # A read (status, a dry run) of a ledger at this schema, which this user may write to, reads
        # the file itself and writes nothing to it: no journal mode set, no table or index made
        # (one added by a later kcing, which the next run that writes makes). A write there would
        # also wait for, or be refused by, a run writing the ledger at that moment.
        in_place = unchanged and copy_from is None and path != ":memory:"
        pragmas = {
            "journal_mode": "wal",
            # WAL + NORMAL: a committed transaction survives a killed process; only a power loss
            # can roll back the last few, which the next run simply re-sends (ids are stable).
            "synchronous": "normal",
            # Each wait inside SQLite a slice of it: LedgerDatabase waits out the rest in slices.
            "busy_timeout": int(min(wait, LOCK_WAIT_SLICE) * 1000),
            "foreign_keys": 1,
        }
        if in_place:
            del pragmas["journal_mode"]
        if read_at is not None:
            database = LedgerDatabase(read_at, wait, abandon_wait, reading=unchanged, pragmas=pragmas, uri=True)
            database.named = path
        else:
            database = LedgerDatabase(path, wait, abandon_wait, reading=unchanged, pragmas=pragmas)
        models.database.initialize(database)
        try:
            database.connect(reuse_if_open=True)
            if copy_from is not None:
                identity.copy_into(copy_from, database.connection(), wait, abandon_wait)
                path = database.named = copy_from  # for the messages below, and those of the copy
            # A run that writes takes the write lock as the transaction begins: one begun for
            # reading, which then marks or migrates, is refused at once by SQLite (without the
            # wait) when another process holds the lock. A read (status) takes no lock.
            with database.atomic(None if unchanged else _WRITING):
                version = database.execute_sql("PRAGMA user_version").fetchone()[0]
                if version > models.SCHEMA_VERSION:  # a ledger made newer since it was checked above
                    raise ConfigError("KCING_DB %s was written by a newer kcing (ledger schema %d; this one knows "
                                      "up to %d)" % (path, version, models.SCHEMA_VERSION))
                if not in_place:
                    migrate(database, earlier_destination, earlier_watermark_destination, version, named_as_today)
                    database.create_tables(models.TABLES, safe=True)
                    if version != models.SCHEMA_VERSION:
                        database.execute_sql("PRAGMA user_version = %d" % models.SCHEMA_VERSION)
                    if database.execute_sql("PRAGMA application_id").fetchone()[0] != models.APPLICATION_ID:
                        database.execute_sql("PRAGMA application_id = %d" % models.APPLICATION_ID)
        except (DatabaseError, sqlite3.DatabaseError) as error:
            _close_quietly(database)
            raise ConfigError("KCING_DB %s is not a usable kcing ledger: %s" % (path, error)) from None
        except KcingError:
            _close_quietly(database)
            raise
        return cls(database, clock, path)

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    # Questions -----------------------------------------------------------------------------

    def delivered_ids(self, source: str, kind: str, upstream_ids: Iterable[str], destination: str = "") -> Set[str]:
        """Return those of `upstream_ids` already delivered for (source, kind) to `destination`."""
        return self._ids_in_states(source, kind, upstream_ids, (DELIVERED,), destination)

    def delivered_hashes(self, source: str, kind: str, upstream_ids: Iterable[str],
                         destination: str = "") -> Dict[str, Optional[str]]:
        """{upstream id: sha256 of the content delivered (None where unrecorded)} for those of
        `upstream_ids` delivered for (source, kind) to `destination`."""
        return dict(self._recorded_column("sha256", DELIVERED, source, kind, upstream_ids, destination))

    def delivered_dates(self, source: str, kind: str, upstream_ids: Iterable[str],
                        destination: str = "") -> Dict[str, Optional[datetime]]:
        """{upstream id: the date (naive UTC) it was delivered with, None where it had none} for
        those of `upstream_ids` delivered for (source, kind) to `destination`."""
        return {upstream_id: _column_time(when) for upstream_id, when
                in self._recorded_column("object_date", DELIVERED, source, kind, upstream_ids, destination)}

    def rejections(self, source: str, kind: str, upstream_ids: Iterable[str],
                   destination: str = "") -> Dict[str, Tuple[Optional[str], Optional[str]]]:
        """{upstream id: (sha256 of the content rejected, the reason)} for those of `upstream_ids`
        rejected for (source, kind) at `destination`."""
        return {upstream_id: (sha256, reason) for upstream_id, sha256, reason
                in self._recorded_column("sha256, last_error", REJECTED, source, kind, upstream_ids, destination)}

    def _recorded_column(self, column: str, state: str, source: str, kind: str, upstream_ids: Iterable[str],
                         destination: str) -> Iterator[tuple]:
        """(upstream id, `column`) of those of `upstream_ids` in `state` for (source, kind) at
        `destination`, asked for LOOKUP_CHUNK ids at a time."""
        ids = sorted(set(upstream_ids))
        for start in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[start:start + LOOKUP_CHUNK]
            cursor = self.db.execute_sql(
                "SELECT upstream_id, %s FROM upstream_file WHERE source = ? AND kind = ? AND destination = ? "
                "AND state = ? AND upstream_id IN (%s)" % (column, ",".join("?" * len(chunk))),
                [source, kind, destination, state, *chunk])
            yield from cursor.fetchall()

    def newest_delivered_version(self, sources: Sequence[str], kind: str, node_id: str,
                                 destination: str = "") -> Optional[str]:
        """The newest version (`<node id>.<updated>`) of the KernelCI API node `node_id` delivered
        for `kind` by any of `sources` to `destination`, None when none is."""
        cursor = self.db.execute_sql(
            "SELECT MAX(upstream_id) FROM upstream_file WHERE source IN (%s) AND kind = ? AND destination = ? "
            "AND state = ? AND upstream_id > ? AND upstream_id < ?" % ",".join("?" * len(sources)),
            # Between `<node id>.` and `<node id>/` ('/' follows '.'): exactly the node's versions.
            [*sources, kind, destination, DELIVERED, node_id + ".", node_id + "/"])
        (newest,) = cursor.fetchone()
        return newest

    def settled_ids(self, source: str, kind: str, upstream_ids: Iterable[str], destination: str = "") -> Set[str]:
        """Return those of `upstream_ids` delivered or rejected: nothing more will come of them
        until upstream changes them (a changed KernelCI API node is a new upstream id)."""
        return self._ids_in_states(source, kind, upstream_ids, (DELIVERED, REJECTED), destination)

    def _ids_in_states(self, source: str, kind: str, upstream_ids: Iterable[str], states: tuple,
                       destination: str) -> Set[str]:
        ids = sorted(set(upstream_ids))
        found: Set[str] = set()
        scattered = self._scattered.get((source, kind, destination), 0) >= RANGE_MISSES_BEFORE_GIVING_UP
        for start in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[start:start + LOOKUP_CHUNK]
            in_range = None if scattered else self._ids_in_range(source, kind, chunk, states, destination)
            if in_range is None:
                in_range = self._ids_one_by_one(source, kind, chunk, states, destination)
                if not scattered:
                    key = (source, kind, destination)
                    self._scattered[key] = self._scattered.get(key, 0) + 1
            found |= in_range
        return found

    def _ids_in_range(self, source: str, kind: str, chunk: List[str], states: tuple,
                      destination: str) -> Optional[Set[str]]:
        """Those of `chunk` (sorted) in `states`, read from one stretch of the unique index, or None
        when that stretch holds many more rows than `chunk` has ids (then each is looked up).

        Upstream ids are MongoDB ObjectIds, which begin with their creation time, and a listing
        comes in time order: the ids of one page are neighbours in the index, and reading their
        stretch costs a third of looking each id up."""
        most = RANGE_ROWS_PER_ID * len(chunk)
        # One row back, the ids in `states` joined: Python's sqlite3 lets other threads run at
        # every row it steps through, and with the listing's threads busy, taking the
        # interpreter back for each of a few hundred rows cost more than reading them.
        in_states = "state IN (%s)" % ",".join("?" * len(states))
        rows, matched, joined = self.db.execute_sql(
            "SELECT count(*), count(CASE WHEN %s THEN 1 END), group_concat(CASE WHEN %s THEN upstream_id END, "
            "char(31)) FROM (SELECT upstream_id, state FROM upstream_file WHERE source = ? AND kind = ? "
            "AND upstream_id BETWEEN ? AND ? AND destination = ? LIMIT ?)" % (in_states, in_states),
            [*states, *states, source, kind, chunk[0], chunk[-1], destination, most + 1]).fetchone()
        if rows > most:
            return None
        found = joined.split(_ID_SEPARATOR) if joined else []
        if len(found) != matched:  # an id holding the separator: these ids are looked up one by one
            return None
        return set(found).intersection(chunk)

    def _ids_one_by_one(self, source: str, kind: str, chunk: List[str], states: tuple,
                        destination: str) -> Set[str]:
        # Plain SQL on the (source, kind, upstream_id) index: this runs for every listed object,
        # and building the same query through the ORM costs more than executing it.
        cursor = self.db.execute_sql(
            "SELECT upstream_id FROM upstream_file WHERE source = ? AND kind = ? AND destination = ? "
            "AND state IN (%s) AND upstream_id IN (%s)" % (",".join("?" * len(states)), ",".join("?" * len(chunk))),
            [source, kind, destination, *states, *chunk])
        return {row[0] for row in cursor.fetchall()}

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """The reads of the block see the ledger as it was at one moment (the first of them): a
        run that records objects and its end meanwhile is seen whole or not at all. A read
        transaction, which in WAL mode holds up no writer."""
        with self.db.atomic():
            yield

    def counts(self) -> Dict[tuple, int]:
        """Return {(source, kind, destination, state): number of objects}."""
        query = (UpstreamFile.select(UpstreamFile.source, UpstreamFile.kind, UpstreamFile.destination,
                                     UpstreamFile.state, fn.COUNT(UpstreamFile.id))
                 .group_by(UpstreamFile.source, UpstreamFile.kind, UpstreamFile.destination, UpstreamFile.state))
        return {(source, kind, destination, state): count
                for source, kind, destination, state, count in query.tuples()}

    def row(self, source: str, kind: str, upstream_id: str, destination: str = "") -> Optional[UpstreamFile]:
        return UpstreamFile.get_or_none((UpstreamFile.source == source) & (UpstreamFile.kind == kind)
                                        & (UpstreamFile.upstream_id == upstream_id)
                                        & (UpstreamFile.destination == destination))

    # Kept document ids (reconcile) ---------------------------------------------------------

    def delivered_since(self, since: datetime, chunk: int = LOOKUP_CHUNK,
                        destination_prefix: str = "") -> Iterator[List[DeliveredRow]]:
        """The objects delivered at or after `since` to a destination starting with
        `destination_prefix`, `chunk` rows at a time, in row order.

        Each chunk is read when the previous one has been used, and the next starts after the
        last row id seen, so rows changed in between (marked missing) neither repeat nor shift.
        """
        last = 0
        while True:
            rows = [_delivered_row(row) for row in self.db.execute_sql(
                "SELECT %s FROM upstream_file WHERE state = ? AND delivered_at >= ? AND substr(destination, 1, ?) = ? "
                "AND id > ? ORDER BY id LIMIT ?" % _ROW_COLUMNS,
                [DELIVERED, _as_text(since), len(destination_prefix), destination_prefix, last, chunk]).fetchall()]
            if not rows:
                return
            yield rows
            last = rows[-1].id

    def count_delivered_since(self, since: datetime, destination_prefix: str = "") -> int:
        """How many rows `delivered_since` gives (for a progress ETA)."""
        return self.db.execute_sql(
            "SELECT COUNT(*) FROM upstream_file WHERE state = ? AND delivered_at >= ? AND substr(destination, 1, ?) = ?",
            [DELIVERED, _as_text(since), len(destination_prefix), destination_prefix]).fetchone()[0]

    def delivered_rows_with_ids(self, file_ids: Sequence[int], chunk: int = LOOKUP_CHUNK) -> Iterator[List[DeliveredRow]]:
        """The rows of `file_ids` (row ids, as `record` returns them) still delivered, in chunks."""
        for start in range(0, len(file_ids), chunk):
            part = list(file_ids[start:start + chunk])
            found = [_delivered_row(row) for row in self.db.execute_sql(
                "SELECT %s FROM upstream_file WHERE state = ? AND id IN (%s) ORDER BY id"
                % (_ROW_COLUMNS, ",".join("?" * len(part))), [DELIVERED, *part]).fetchall()]
            if found:
                yield found

    def kept_documents(self, file_ids: Sequence[int]) -> Dict[int, List[Tuple[str, bytes]]]:
        """{row id: [(index, packed ids), ...]} of the given delivered objects."""
        kept: Dict[int, List[Tuple[str, bytes]]] = {}
        for start in range(0, len(file_ids), LOOKUP_CHUNK):
            part = list(file_ids[start:start + LOOKUP_CHUNK])
            cursor = self.db.execute_sql(
                "SELECT upstream_file_id, index_name, ids FROM delivered_documents WHERE upstream_file_id IN (%s) "
                "ORDER BY upstream_file_id, index_name" % ",".join("?" * len(part)), part)
            for file_id, index, blob in cursor.fetchall():
                # Only a BLOB holds ids: what a row edited by hand holds instead (NULL, text, a number,
                # which bytes() would take for a size to allocate) is none, and the object's kept
                # ids then fall short of its count, which reconcile reports as damage.
                if isinstance(blob, bytes):
                    kept.setdefault(file_id, []).append((models.column_text(index), blob))
        return kept

    def mark_missing(self, file_ids: Sequence[int], reason: str = models.MISSING_IN_ELASTICSEARCH) -> int:
        """Send delivered objects back to undelivered (failed, with `reason`) and forget their
        kept ids, in one transaction; the next feed that lists them sends them again."""
        changed = 0
        with self.db.atomic():
            for start in range(0, len(file_ids), LOOKUP_CHUNK):
                part = list(file_ids[start:start + LOOKUP_CHUNK])
                marks = ",".join("?" * len(part))
                changed += self.db.execute_sql(
                    "UPDATE upstream_file SET state = ?, last_error = ?, delivered_at = NULL, kept_ids = NULL "
                    "WHERE state = ? AND id IN (%s)" % marks, [FAILED, reason, DELIVERED, *part]).rowcount
                self.db.execute_sql("DELETE FROM delivered_documents WHERE upstream_file_id IN (%s)" % marks, part)
        return changed

    def missing_objects(self, source: str, chunk: int = LOOKUP_CHUNK,
                        reason: str = models.MISSING_IN_ELASTICSEARCH,
                        destination_prefix: str = "",
                        destination_of: Optional[Callable[[str], Optional[str]]] = None,
                        kept_from: Optional[datetime] = None) -> Iterator[UpstreamObject]:
        """The objects of `source` that reconcile sent back to undelivered and no run has
        delivered again since, rebuilt from their rows (URL and date, and the `sha256` of the
        content delivered among their facts), read `chunk` rows at a time. With `destination_of`
        (kind -> destination, or None for any), only those whose row is of the destination it
        names for their kind: a delivery elsewhere records a row of its own and leaves theirs held.
        With `kept_from`, only those `_kept_since` takes."""
        kept_sql, kept_params = _kept_since_sql(kept_from)
        last = 0
        while True:
            rows = [(_delivered_row(row[:-1]), row[-1]) for row in self.db.execute_sql(
                "SELECT %s, sha256 FROM upstream_file WHERE +source = ? AND state IN (%s) "
                "AND (last_error = ? OR "
                "substr(last_error, 1, ?) = ?) AND substr(destination, 1, ?) = ?%s AND id > ? ORDER BY id LIMIT ?"
                % (_ROW_COLUMNS, ",".join("?" * len(_UNDELIVERED)), kept_sql),
                [source, *_UNDELIVERED, reason, len(reason) + 2, reason + "; ", len(destination_prefix),
                 destination_prefix, *kept_params, last, chunk]).fetchall()]
            if not rows:
                return
            last = rows[-1][0].id
            for row, sha256 in rows:
                wanted = destination_of(row.kind) if destination_of is not None else None
                if wanted is not None and row.destination != wanted:
                    continue
                when = row.object_date
                yield UpstreamObject(row.source, row.kind, row.upstream_id, row.url,
                                     when.replace(tzinfo=timezone.utc) if when is not None else None,
                                     {"sha256": sha256} if isinstance(sha256, str) and sha256 else {})

    def undelivered_before(self, source: str, kind: str, destination: str, before: datetime,
                           since: Optional[datetime] = None, chunk: int = LOOKUP_CHUNK) -> Iterator[UpstreamObject]:
        """The objects of `source` and `kind` dated before `before` (and from `since` on, given
        one) whose last try to deliver them to `destination` did not (failed, too large for
        Logstash, or cut off by a stop), rebuilt from their rows (URL and date), `chunk` rows at a
        time. Left out: those rejected, which fetching again would refuse again, those whose
        last try was told the file is not there (`GONE_ANSWERS`), and those reconcile holds as
        missing in Elasticsearch, which `reconcile --resend` sends.

        A row without a date (its listing item had no readable `created_on`: one a `--how-many`
        run listed, which a window of days never lists) is among them while first seen from
        `since` on: no day says where it stands, and drp forgets it by that time too."""
        reason = models.MISSING_IN_ELASTICSEARCH
        kept_from = _as_text(since) if since is not None else ""
        for state in (FAILED, TOO_LARGE, DOWNLOADED):
            last = 0
            while True:
                # Found through the index of states, one state at a time in row order: the few rows
                # not delivered, however many are. (`+` keeps SQLite from the index of source and
                # kind, which would walk every row of the kind, delivered or not, for each chunk.)
                rows = [_delivered_row(row) for row in self.db.execute_sql(
                    "SELECT %s FROM upstream_file WHERE state = ? AND id > ? AND +source = ? AND +kind = ? "
                    "AND +destination = ? AND (object_date < ? AND object_date >= ? "
                    "OR object_date IS NULL AND first_seen >= ?) "
                    "AND NOT (last_error IS NOT NULL AND (last_error = ? OR substr(last_error, 1, ?) = ? OR %s)) "
                    "ORDER BY id LIMIT ?" % (_ROW_COLUMNS, _GONE_CONDITION),
                    [state, last, source, kind, destination, _as_text(before), kept_from, kept_from, reason,
                     len(reason) + 2, reason + "; ", *GONE_ANSWERS, chunk]).fetchall()]
                if not rows:
                    break
                last = rows[-1].id
                for row in rows:
                    yield UpstreamObject(row.source, row.kind, row.upstream_id, row.url,
                                         row.object_date.replace(tzinfo=timezone.utc)
                                         if row.object_date is not None else None)

    def missing_counts(self, reason: str = models.MISSING_IN_ELASTICSEARCH,
                       kept_from: Optional[datetime] = None) -> Dict[tuple, int]:
        """{(source, kind, destination): objects held as missing in Elasticsearch} (see
        `sources_with_missing`), whatever state their last re-send left them in."""
        held = (UpstreamFile.last_error == reason) | (fn.SUBSTR(UpstreamFile.last_error, 1, len(reason) + 2)
                                                      == reason + "; ")
        query = (UpstreamFile.select(UpstreamFile.source, UpstreamFile.kind, UpstreamFile.destination,
                                     fn.COUNT(UpstreamFile.id))
                 .where(UpstreamFile.state.in_(_UNDELIVERED) & held & _kept_since(kept_from))
                 .group_by(UpstreamFile.source, UpstreamFile.kind, UpstreamFile.destination))
        return {(source, kind, destination): count for source, kind, destination, count in query.tuples()}

    def sources_with_missing(self, reason: str = models.MISSING_IN_ELASTICSEARCH,
                             destination_prefix: str = "", kept_from: Optional[datetime] = None) -> Dict[str, int]:
        """{source: objects reconcile sent back to undelivered and not delivered again since}.

        An object whose re-send failed, was refused or was not acknowledged stays one of them:
        its error is `reason` or `reason; ...` until it is delivered. With `kept_from`, only
        those `_kept_since` takes."""
        held = (UpstreamFile.last_error == reason) | (fn.SUBSTR(UpstreamFile.last_error, 1, len(reason) + 2)
                                                      == reason + "; ")
        query = (UpstreamFile.select(UpstreamFile.source, fn.COUNT(UpstreamFile.id))
                 .where(UpstreamFile.state.in_(_UNDELIVERED) & held
                        & UpstreamFile.destination.startswith(destination_prefix) & _kept_since(kept_from))
                 .group_by(UpstreamFile.source))
        return {source: count for source, count in query.tuples()}

    def earliest_missing_date(self, source: str, reason: str = models.MISSING_IN_ELASTICSEARCH,
                              destination_prefix: str = "", kept_from: Optional[datetime] = None) -> Optional[datetime]:
        """The earliest object date (aware UTC) of the objects of `source` held as missing in
        Elasticsearch (see `sources_with_missing`), or None when none of them has a readable one.
        A KernelCI API node's date is its `created`, never after any of its versions' `updated`:
        a `feed_es --source api --since` that date lists them all again."""
        kept_sql, kept_params = _kept_since_sql(kept_from)
        row = self.db.execute_sql(
            "SELECT MIN(object_date) FROM upstream_file WHERE source = ? AND state IN (%s) "
            "AND (last_error = ? OR substr(last_error, 1, ?) = ?) AND substr(destination, 1, ?) = ?%s"
            % (",".join("?" * len(_UNDELIVERED)), kept_sql),
            [source, *_UNDELIVERED, reason, len(reason) + 2, reason + "; ", len(destination_prefix),
             destination_prefix, *kept_params]).fetchone()
        when = _column_time(row[0]) if row else None
        return when.replace(tzinfo=timezone.utc) if when is not None else None

    # Facts ---------------------------------------------------------------------------------

    def record(self, outcomes: Sequence[Outcome], destination: Callable[[str], str] = lambda kind: "") -> List[int]:
        """Write `outcomes` in one transaction. A `delivered` outcome is the acknowledgement.
        `destination(kind)` names where this run sends objects of that kind. Returns the row ids
        of the objects marked delivered (`feed_es --verify` keeps those, 8 bytes an object)."""
        if not outcomes:
            return []
        now = self.clock()
        with self.db.atomic():
            for state in (DOWNLOADED, FAILED, REJECTED, TOO_LARGE, DELIVERED):
                rows = [self._row(outcome, now, destination(outcome.obj.kind)) for outcome in outcomes
                        if outcome.state == state]
                if rows:
                    self._upsert(state, rows)
            delivered = [outcome for outcome in outcomes if outcome.state == DELIVERED]
            rows = self._keep_ids(delivered, destination)
            self._clear_superseded(delivered, destination)
        return rows

    def _row(self, outcome: Outcome, now: datetime, destination: str) -> dict:
        obj = outcome.obj
        delivered = outcome.state == DELIVERED
        kept = docids.total(outcome.documents) if delivered and outcome.documents is not None else None
        return {
            # A local file's name is its url: one that is not UTF-8 is stored as its text shows it.
            "source": obj.source, "kind": obj.kind, "upstream_id": obj.upstream_id, "url": as_text(obj.url),
            "sha256": outcome.sha256, "state": outcome.state,
            "attempts": 0 if delivered else 1,
            # Signed URLs in an error (an artifact that failed) lose their signature here at the latest.
            "last_error": as_text(redacted(outcome.error)) if outcome.error else outcome.error,
            "object_date": _naive_utc(obj.created),
            "first_seen": now, "delivered_at": now if delivered else None,
            "document_count": outcome.document_count, "kept_ids": kept, "destination": destination,
        }

    def _keep_ids(self, delivered: Sequence[Outcome], destination: Callable[[str], str]) -> List[int]:
        """Replace the kept ids of the objects just marked delivered (inside record's transaction);
        return their row ids."""
        rows: List[int] = []
        groups: Dict[Tuple[str, str], Dict[str, Outcome]] = {}
        for outcome in delivered:
            obj = outcome.obj
            groups.setdefault((obj.source, obj.kind), {})[obj.upstream_id] = outcome
        for (source, kind), by_id in groups.items():
            upstream_ids = list(by_id)
            for start in range(0, len(upstream_ids), LOOKUP_CHUNK):
                part = upstream_ids[start:start + LOOKUP_CHUNK]
                file_ids = self.db.execute_sql(
                    "SELECT id, upstream_id FROM upstream_file WHERE source = ? AND kind = ? AND destination = ? "
                    "AND upstream_id IN (%s)" % ",".join("?" * len(part)),
                    [source, kind, destination(kind), *part]).fetchall()
                if not file_ids:
                    continue
                rows.extend(file_id for file_id, _ in file_ids)
                # A re-delivered object may have produced other documents than the last time.
                self.db.execute_sql("DELETE FROM delivered_documents WHERE upstream_file_id IN (%s)"
                                    % ",".join("?" * len(file_ids)), [file_id for file_id, _ in file_ids])
                kept = [(file_id, index, blob) for file_id, upstream_id in file_ids
                        for index, blob in (by_id[upstream_id].documents or {}).items()]
                for first in range(0, len(kept), WRITE_CHUNK):
                    self.db.execute_sql(
                        "INSERT INTO delivered_documents (upstream_file_id, index_name, ids) VALUES %s"
                        % ",".join(["(?, ?, ?)"] * len(kept[first:first + WRITE_CHUNK])),
                        [value for row in kept[first:first + WRITE_CHUNK] for value in row])
        return rows

    def _clear_superseded(self, delivered: Sequence[Outcome], destination: Callable[[str], str]) -> None:
        """Older versions of the nodes just delivered no longer held as missing (see _SUPERSEDED)."""
        rows = []
        for outcome in delivered:
            obj = outcome.obj
            node = obj.facts.get("node_id")
            if isinstance(node, str) and node and obj.upstream_id.startswith(node + "."):
                # Between `<node id>.` and this version: exactly the older versions of this node.
                rows.append([obj.upstream_id, obj.source, obj.kind, destination(obj.kind), node + ".", obj.upstream_id])
        if rows:
            self.db.execute_many(_SUPERSEDED, rows)

    def _upsert(self, state: str, rows: List[dict]) -> None:
        # One prepared statement for all rows: building an INSERT of many rows through the query
        # builder costs more than the write itself, once per acknowledged batch.
        self.db.execute_many(_UPSERT[state == DELIVERED], [[row[column] for column in _COLUMNS] for row in rows])

    # Runs ----------------------------------------------------------------------------------

    @contextmanager
    def recorded_run(self, command: str, counts: Optional[dict] = None) -> Iterator["RunRecord"]:
        """A row in the runs table for the `with` block, closed however the block ends (except a
        SIGKILL): with the outcome and counts the block set, or "error N" with N the exit status
        the error gives (130 for an interrupt). A row that cannot be closed (the ledger itself
        failed) is logged; the error that ended the run goes on."""
        run = RunRecord(self.start_run(command, counts), counts=dict(counts or {}))
        shutdown.run_row_opened()
        try:
            yield run
            # Inside the try: a signal interrupting the block up to here closes the row `error 130`.
            shutdown.run_row_closing()
        except BaseException as error:
            shutdown.run_row_closing()
            try:
                self.finish_run(run.id, "error %d" % exit_status(error), run.counts)
                shutdown.run_row_closed()
            except KcingError as failure:
                shutdown.run_row_opened()
                log.error("cannot record how %s run %d ended: %s", command, run.id, failure)
            raise
        try:
            self.finish_run(run.id, run.outcome or "ok", run.counts)
        except BaseException:
            shutdown.run_row_opened()  # not closed: a signal stops the run again
            raise
        # From here a signal no longer changes how the run ends: the row says it.
        shutdown.run_row_closed()

    def start_run(self, command: str, counts: Optional[dict] = None) -> int:
        """A new row of the runs table, its counts holding `counts` and this process's pid until the
        run ends: `kcing status` tells by the pid whether the run holding the lock is this one."""
        started = dict(counts or {}, pid=os.getpid())
        return models.Run.create(command=command, started=self.clock(), counts=json.dumps(started, sort_keys=True)).id

    def update_run_counts(self, run_id: int, counts: dict) -> None:
        """Write `counts` into the row of a run still going (its pid kept, as `start_run` wrote
        it): what must be known even if the run is killed before it ends."""
        (models.Run.update(counts=json.dumps(dict(counts, pid=os.getpid()), sort_keys=True))
         .where(models.Run.id == run_id).execute())

    def finish_run(self, run_id: int, outcome: str, counts: dict) -> None:
        (models.Run.update(ended=self.clock(), outcome=outcome, counts=json.dumps(counts, sort_keys=True))
         .where(models.Run.id == run_id).execute())

    def change_outcome(self, run_id: int, outcome: str) -> None:
        """Give a closed run another outcome (its end and counts stay as they were)."""
        models.Run.update(outcome=outcome).where(models.Run.id == run_id).execute()

    def integrity_ok(self) -> bool:
        return self.db.execute_sql("PRAGMA integrity_check").fetchone()[0] == "ok"

    # Watermarks (incremental sources) ------------------------------------------------------

    def watermark(self, source: str, destination: str = "") -> Optional[datetime]:
        """The `updated` time up to which `source` delivered all it listed to `destination`
        (UTC), or None."""
        row = models.Watermark.get_or_none((models.Watermark.source == source)
                                           & (models.Watermark.destination == destination))
        return self._position(row).replace(tzinfo=timezone.utc) if row is not None else None

    def advance_watermark(self, source: str, when: datetime, destination: str = "") -> datetime:
        """Move `source`'s watermark forward to `when` (never back); return where it now is."""
        position = _naive_utc(when)
        where = (models.Watermark.source == source) & (models.Watermark.destination == destination)
        with self.db.atomic(_WRITING):  # it reads, then writes: see _WRITING
            row = models.Watermark.get_or_none(where)
            if row is None:
                models.Watermark.create(source=source, destination=destination, position=position,
                                        moved_at=self.clock())
            elif position > self._position(row):
                models.Watermark.update(position=position, moved_at=self.clock()).where(where).execute()
        return self.watermark(source, destination)

    def watermarks(self) -> Dict[Tuple[str, str], datetime]:
        """{(source, destination): watermark (UTC)} for every source that has one."""
        return {(row.source, row.destination): self._position(row).replace(tzinfo=timezone.utc)
                for row in models.Watermark.select()}

    def _position(self, row: models.Watermark) -> datetime:
        """A watermark row's time; ConfigError when the row holds something else (edited by hand):
        a run would otherwise list from nowhere known."""
        if not isinstance(row.position, datetime):
            raise ConfigError("KCING_DB %s holds a watermark for %s to %s that is not a time (%s): fix or delete "
                              "that row of its watermark table (without it, the next run starts as a first run)"
                              % (self.path, row.source, row.destination or "its destination",
                                 one_line(repr(row.position), 60)))
        return row.position

    # Retention -----------------------------------------------------------------------------

    def seen_before(self, cutoff: datetime) -> int:
        """How many objects were first seen before `cutoff` (what `prune_older_than` would forget)."""
        return UpstreamFile.select().where(UpstreamFile.first_seen < _naive_utc(cutoff)).count()

    def seen_before_by_destination(self, cutoff: datetime) -> Dict[str, int]:
        """{destination: rows first seen before `cutoff`}."""
        query = (UpstreamFile.select(UpstreamFile.destination, fn.COUNT(UpstreamFile.id))
                 .where(UpstreamFile.first_seen < _naive_utc(cutoff)).group_by(UpstreamFile.destination))
        return dict(query.tuples())

    def prune_older_than(self, cutoff: datetime) -> int:
        """Forget the objects first seen before `cutoff` (naive means UTC); return how many.

        Only `upstream_file` rows go, with their kept document ids: runs and watermarks stay.
        A forgotten object that upstream still lists is fetched and sent again, which is why the
        cutoff must lie before the crawl window.
        """
        cutoff = _naive_utc(cutoff)
        with self.db.atomic():
            # The foreign key cascades too; deleting the ids first does not depend on the pragma.
            self.db.execute_sql("DELETE FROM delivered_documents WHERE upstream_file_id IN "
                                "(SELECT id FROM upstream_file WHERE first_seen < ?)", [_as_text(cutoff)])
            return UpstreamFile.delete().where(UpstreamFile.first_seen < cutoff).execute()

    def last_success(self, command: str, source: str, destination: Optional[str] = None) -> Optional[datetime]:
        """When the newest run of `command` for `source` (and, given one, to `destination`: a run
        into --output files says nothing of the feed to Logstash) ended with outcome ok (aware
        UTC), or None. A run recorded before destinations were (schema 2) counts for any.

        Every successful run is read, newest first, until one matches: however many runs of the
        other feeds sharing the ledger succeeded since, a feed failing for weeks keeps its last
        success (and the alert on its age), never None as a feed that never succeeded. A run of
        `reconcile --resend` (`resent_by` in its counts) lists nothing upstream: it is none."""
        # Only the rows whose counts name the source, as json.dumps wrote them, are decoded.
        named = fn.instr(models.Run.counts, '"source": %s' % json.dumps(source)) > 0
        query = (models.Run.select(models.Run.ended, models.Run.counts)
                 .where((models.Run.command == command) & (models.Run.outcome == "ok") & named)
                 .order_by(models.Run.id.desc()))
        for ended, text in query.tuples().iterator():
            try:
                counts = json.loads(text or "{}")
            except ValueError:
                continue
            if not isinstance(counts, dict) or not isinstance(ended, datetime):
                continue  # a row edited by hand says nothing sure
            if destination is not None and counts.get("destination", destination) != destination:
                continue
            if counts.get("source") == source and RESENT_BY not in counts:
                return ended.replace(tzinfo=timezone.utc)
        return None

    def storages_recorded(self, source: str) -> Set[str]:
        """The storage base URLs the feed runs of `source` recorded (`storage` in their counts):
        where the URLs of its rows were built, which a run given another storage needs to ask
        for their files there. A row edited by hand into something else says nothing."""
        named = fn.instr(models.Run.counts, '"storage": ') > 0
        query = models.Run.select(models.Run.counts).where((models.Run.command == "feed_es") & named)
        found: Set[str] = set()
        for (text,) in query.tuples().iterator():
            try:
                counts = json.loads(text or "{}")
            except ValueError:
                continue
            if isinstance(counts, dict) and counts.get("source") == source and isinstance(counts.get("storage"), str):
                found.add(counts["storage"])
        return found

    def deleted_before(self) -> Optional[date]:
        """The latest first day kept of the drp runs recorded (indices dated before it were
        deleted, whatever DRP_DAYS now says), or None when no drp run was recorded.

        A day after yesterday by the ledger's clock says nothing: drp keeps one day at least, so
        only a run whose clock was ahead of this one (set back since) wrote it. Taken, it would
        hold every feed and reconcile until that day came: the API listed from it, finding
        nothing, and reconcile took every index before it for one drp deleted, checking none."""
        last_possible = keptdays.cutoff_day(self.clock().date(), keptdays.FEWEST_DAYS_KEPT)
        query = models.Run.select(models.Run.started, models.Run.counts).where(models.Run.command == "drp")
        kept = [day for day in (drp_kept_day(started, text) for started, text in query.tuples().iterator())
                if day is not None and day <= last_possible]
        return max(kept, default=None)

    def runs_started_before(self, cutoff: datetime, running: Optional[int] = None) -> List[int]:
        """The ids of the runs started before `cutoff` (naive means UTC) that nothing reads any
        more (see `runs_still_read`): what `forget_runs` is given by drp. `running`, the row of
        the drp run asking, is left out of the newest runs kept, so that its dry run, which has
        no row, forgets the same."""
        cutoff = _naive_utc(cutoff)
        query = (models.Run.select(models.Run.id, models.Run.command, models.Run.started, models.Run.ended,
                                   models.Run.outcome, models.Run.counts)
                 .order_by(models.Run.id.desc()).tuples().iterator())
        # Read row by row, keeping the ids alone: a ledger from before drp forgot runs holds one
        # per feed since it began, with its counts (300,000 runs were 300 MB held at once).
        started_before: List[int] = []

        def newest_first() -> Iterator[tuple]:
            for row in query:
                if row[0] == running:
                    continue
                if isinstance(row[2], datetime) and row[2] < cutoff:
                    started_before.append(row[0])
                yield row

        read = runs_still_read(newest_first())
        return [run_id for run_id in started_before if run_id not in read]

    def forget_runs(self, run_ids: Sequence[int]) -> int:
        """Delete the runs-table rows `run_ids`, in one transaction; return how many went."""
        forgotten = 0
        with self.db.atomic():
            for start in range(0, len(run_ids), LOOKUP_CHUNK):
                chunk = run_ids[start:start + LOOKUP_CHUNK]
                forgotten += models.Run.delete().where(models.Run.id.in_(chunk)).execute()
        return forgotten

    def last_run(self, command: str) -> Optional[models.Run]:
        """The newest run of `command`, or None."""
        return models.Run.select().where(models.Run.command == command).order_by(models.Run.id.desc()).first()


def _close_quietly(database: SqliteDatabase) -> None:
    """Close after a failed open; the error being raised says what went wrong."""
    try:
        database.close()
    except (KcingError, DatabaseError, sqlite3.Error):  # a second failure of the same file adds nothing
        pass


def _kept_since(kept_from: Optional[datetime]):
    """The rows of objects dated from `kept_from` (midnight UTC of the first day drp keeps) on,
    one without a date while first seen from then on, as a peewee condition (every row given
    None). Those dated before are in indices drp deletes or deleted: a re-send would make them
    again, and drp forgets their rows the day they were first seen leaves the retention."""
    if kept_from is None:
        return SQL("1")
    since = _naive_utc(kept_from)
    return (UpstreamFile.object_date >= since) | (UpstreamFile.object_date.is_null() & (UpstreamFile.first_seen >= since))


def _kept_since_sql(kept_from: Optional[datetime]) -> Tuple[str, List[str]]:
    """`_kept_since` for plain SQL: the text to add to a WHERE, and its parameters."""
    if kept_from is None:
        return "", []
    since = _as_text(kept_from)
    return " AND (object_date >= ? OR object_date IS NULL AND first_seen >= ?)", [since, since]


def _as_text(when: datetime) -> str:
    """A time as peewee stores DateTimeField values (naive UTC, ISO with a space), for plain SQL."""
    return str(_naive_utc(when))


def _delivered_row(values: Sequence) -> DeliveredRow:
    """A DeliveredRow from plain SQL's values, which are what the row holds: kcing's own writes,
    or anything an edit by hand left (see `models.column_text` and `_column_time`)."""
    file_id, source, kind, upstream_id, url, object_date, kept_ids, destination = values
    text = models.column_text
    return DeliveredRow(file_id, text(source), text(kind), text(upstream_id), text(url),
                        _column_time(object_date), _kept_count(kept_ids), text(destination))


def _kept_count(value) -> Optional[int]:
    """How many ids the row says are kept: None (none kept: not checkable), or a count. What is
    no count (a row edited by hand: text, a fraction, a negative number) is -1, which no kept
    ids match, so reconcile reports the object as damaged and a resend rewrites its row."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    return -1


def _column_time(value) -> Optional[datetime]:
    """A datetime column's value from plain SQL, which SQLite returns as the text peewee wrote;
    anything else (a row edited by hand) is no known time: None, as an object with no date."""
    if isinstance(value, str):
        try:
            return _naive_utc(datetime.fromisoformat(value))
        except ValueError:
            return None
    return value if isinstance(value, datetime) else None
