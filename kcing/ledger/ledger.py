"""The ledger: which upstream objects were seen, and which Logstash acknowledged in full."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set

from peewee import EXCLUDED, DatabaseError, SqliteDatabase, fn

from kcing.errors import ConfigError
from kcing.ledger import models
from kcing.ledger.models import DELIVERED, DOWNLOADED, FAILED, REJECTED, UpstreamFile
from kcing.records import UpstreamObject

# SQLite caps the number of bound parameters per statement; stay well below the oldest limit.
LOOKUP_CHUNK = 500
WRITE_CHUNK = 100


@dataclass(frozen=True)
class Outcome:
    """What happened to one object in this run; written to the ledger in batches."""

    obj: UpstreamObject
    state: str
    sha256: Optional[str] = None
    error: Optional[str] = None
    document_count: Optional[int] = None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _naive_utc(when: Optional[datetime]) -> Optional[datetime]:
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(timezone.utc).replace(tzinfo=None)


class Ledger:
    """A SQLite ledger (WAL mode). Writes go in one transaction per call."""

    def __init__(self, database: SqliteDatabase, clock=_utcnow):
        self.db = database
        self.clock = clock

    @classmethod
    def open(cls, path: str, clock=_utcnow) -> "Ledger":
        """Open (creating if needed) the ledger at `path`; a file that is not one is a ConfigError."""
        if path != ":memory:":
            parent = Path(path).expanduser().resolve().parent
            if not parent.is_dir():
                raise ConfigError("KCING_DB directory %s does not exist" % parent)
        database = SqliteDatabase(path, pragmas={
            "journal_mode": "wal",
            # WAL + NORMAL: a committed transaction survives a killed process; only a power loss
            # can roll back the last few, which the next run simply re-sends (ids are stable).
            "synchronous": "normal",
            "busy_timeout": 10000,
            "foreign_keys": 1,
        })
        models.database.initialize(database)
        try:
            database.connect(reuse_if_open=True)
            with database.atomic():
                database.create_tables(models.TABLES, safe=True)
                if database.execute_sql("PRAGMA user_version").fetchone()[0] == 0:
                    database.execute_sql("PRAGMA user_version = %d" % models.SCHEMA_VERSION)
        except (DatabaseError, sqlite3.DatabaseError) as error:
            database.close()
            raise ConfigError("KCING_DB %s is not a usable kcing ledger: %s" % (path, error)) from None
        return cls(database, clock)

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    # Questions -----------------------------------------------------------------------------

    def delivered_ids(self, source: str, kind: str, upstream_ids: Iterable[str]) -> Set[str]:
        """Return those of `upstream_ids` already delivered for (source, kind)."""
        ids = list(upstream_ids)
        found: Set[str] = set()
        # Plain SQL on the (source, kind, upstream_id) index: this runs for every listed object,
        # and building the same query through the ORM costs more than executing it.
        for start in range(0, len(ids), LOOKUP_CHUNK):
            chunk = ids[start:start + LOOKUP_CHUNK]
            cursor = self.db.execute_sql(
                "SELECT upstream_id FROM upstream_file WHERE source = ? AND kind = ? AND state = ? "
                "AND upstream_id IN (%s)" % ",".join("?" * len(chunk)), [source, kind, DELIVERED, *chunk])
            found.update(row[0] for row in cursor.fetchall())
        return found

    def counts(self) -> Dict[tuple, int]:
        """Return {(source, kind, state): number of objects}."""
        query = (UpstreamFile.select(UpstreamFile.source, UpstreamFile.kind, UpstreamFile.state,
                                     fn.COUNT(UpstreamFile.id))
                 .group_by(UpstreamFile.source, UpstreamFile.kind, UpstreamFile.state))
        return {(source, kind, state): count for source, kind, state, count in query.tuples()}

    def row(self, source: str, kind: str, upstream_id: str) -> Optional[UpstreamFile]:
        return UpstreamFile.get_or_none((UpstreamFile.source == source) & (UpstreamFile.kind == kind)
                                        & (UpstreamFile.upstream_id == upstream_id))

    # Facts ---------------------------------------------------------------------------------

    def record(self, outcomes: Sequence[Outcome]) -> None:
        """Write `outcomes` in one transaction. A `delivered` outcome is the acknowledgement."""
        if not outcomes:
            return
        now = self.clock()
        with self.db.atomic():
            for state in (DOWNLOADED, FAILED, REJECTED, DELIVERED):
                rows = [self._row(outcome, now) for outcome in outcomes if outcome.state == state]
                for start in range(0, len(rows), WRITE_CHUNK):
                    self._upsert(state, rows[start:start + WRITE_CHUNK])

    def _row(self, outcome: Outcome, now: datetime) -> dict:
        obj = outcome.obj
        delivered = outcome.state == DELIVERED
        return {
            "source": obj.source, "kind": obj.kind, "upstream_id": obj.upstream_id, "url": obj.url,
            "sha256": outcome.sha256, "state": outcome.state,
            "attempts": 0 if delivered else 1,
            "last_error": outcome.error, "object_date": _naive_utc(obj.created),
            "first_seen": now, "delivered_at": now if delivered else None,
            "document_count": outcome.document_count,
        }

    @staticmethod
    def _upsert(state: str, rows: List[dict]) -> None:
        update = {
            UpstreamFile.state: EXCLUDED.state,
            UpstreamFile.url: EXCLUDED.url,
            UpstreamFile.attempts: UpstreamFile.attempts + EXCLUDED.attempts,
            UpstreamFile.object_date: fn.COALESCE(EXCLUDED.object_date, UpstreamFile.object_date),
            UpstreamFile.sha256: fn.COALESCE(EXCLUDED.sha256, UpstreamFile.sha256),
            UpstreamFile.document_count: fn.COALESCE(EXCLUDED.document_count, UpstreamFile.document_count),
        }
        if state == DELIVERED:
            update[UpstreamFile.delivered_at] = EXCLUDED.delivered_at
            update[UpstreamFile.last_error] = None
        else:
            update[UpstreamFile.last_error] = EXCLUDED.last_error
        (UpstreamFile.insert_many(rows)
         .on_conflict(conflict_target=[UpstreamFile.source, UpstreamFile.kind, UpstreamFile.upstream_id],
                      update=update)
         .execute())

    # Runs ----------------------------------------------------------------------------------

    def start_run(self, command: str) -> int:
        return models.Run.create(command=command, started=self.clock()).id

    def finish_run(self, run_id: int, outcome: str, counts: dict) -> None:
        (models.Run.update(ended=self.clock(), outcome=outcome, counts=json.dumps(counts, sort_keys=True))
         .where(models.Run.id == run_id).execute())

    def integrity_ok(self) -> bool:
        return self.db.execute_sql("PRAGMA integrity_check").fetchone()[0] == "ok"

    # Watermarks (incremental sources) ------------------------------------------------------

    def watermark(self, source: str) -> Optional[datetime]:
        """The `updated` time up to which `source` delivered all it listed (UTC), or None."""
        row = models.Watermark.get_or_none(models.Watermark.source == source)
        return row.position.replace(tzinfo=timezone.utc) if row is not None else None

    def advance_watermark(self, source: str, when: datetime) -> datetime:
        """Move `source`'s watermark forward to `when` (never back); return where it now is."""
        position = _naive_utc(when)
        with self.db.atomic():
            row = models.Watermark.get_or_none(models.Watermark.source == source)
            if row is None:
                models.Watermark.create(source=source, position=position, moved_at=self.clock())
            elif position > row.position:
                (models.Watermark.update(position=position, moved_at=self.clock())
                 .where(models.Watermark.source == source).execute())
        return self.watermark(source)

    def watermarks(self) -> Dict[str, datetime]:
        """{source: watermark (UTC)} for every source that has one."""
        return {row.source: row.position.replace(tzinfo=timezone.utc) for row in models.Watermark.select()}

    # Retention -----------------------------------------------------------------------------

    def seen_before(self, cutoff: datetime) -> int:
        """How many objects were first seen before `cutoff` (what `prune_older_than` would forget)."""
        return UpstreamFile.select().where(UpstreamFile.first_seen < _naive_utc(cutoff)).count()

    def prune_older_than(self, cutoff: datetime) -> int:
        """Forget the objects first seen before `cutoff` (naive means UTC); return how many.

        Only `upstream_file` rows go: runs and watermarks stay. A forgotten object that upstream
        still lists is fetched and sent again, which is why the cutoff must lie before the crawl window.
        """
        with self.db.atomic():
            return UpstreamFile.delete().where(UpstreamFile.first_seen < _naive_utc(cutoff)).execute()
