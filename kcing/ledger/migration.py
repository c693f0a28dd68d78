"""Older ledgers brought up to the current schema, in place, when a run opens them."""
from __future__ import annotations

import json
from typing import Callable

from peewee import SqliteDatabase

from kcing.ledger.models import DELIVERED


def migrate(database: SqliteDatabase, earlier_destination: Callable[[str], str],
            earlier_watermark_destination: str, version: int = 0,
            named_as_today: Callable[[str], str] = lambda name: name) -> None:
    """Bring an older ledger (of schema `version`) up to models.SCHEMA_VERSION (new tables and
    indexes come from create_tables, which runs after this)."""
    columns = {row[1] for row in database.execute_sql("PRAGMA table_info(upstream_file)").fetchall()}
    if not columns:
        return  # a new ledger
    if "kept_ids" not in columns:
        # Schema 1 -> 2. Objects delivered before keep NULL: reconcile reports them as not checkable.
        database.execute_sql("ALTER TABLE upstream_file ADD COLUMN kept_ids INTEGER")
    if "destination" not in columns:
        # Schema 2 -> 3. Before, every run was taken as one destination; the rows say what reached
        # Logstash (a run with --output was recorded the same way, and cannot be told apart).
        database.execute_sql("ALTER TABLE upstream_file ADD COLUMN destination VARCHAR(255) NOT NULL DEFAULT ''")
        kinds = [row[0] for row in database.execute_sql("SELECT DISTINCT kind FROM upstream_file").fetchall()]
        for kind in kinds:
            database.execute_sql("UPDATE upstream_file SET destination = ? WHERE kind = ?",
                                 [earlier_destination(kind), kind])
        database.execute_sql('DROP INDEX IF EXISTS "upstream_file_source_kind_upstream_id"')
    watermark_columns = {row[1] for row in database.execute_sql("PRAGMA table_info(watermark)").fetchall()}
    if watermark_columns and "destination" not in watermark_columns:
        database.execute_sql("ALTER TABLE watermark ADD COLUMN destination VARCHAR(255) NOT NULL DEFAULT ''")
        database.execute_sql("UPDATE watermark SET destination = ?", [earlier_watermark_destination])
        database.execute_sql('DROP INDEX IF EXISTS "watermark_source"')
    if version < 4:
        # Schema 3 -> 4: the destinations as this kcing names them (named_as_today).
        rename_destinations(database, named_as_today)


def rename_destinations(database: SqliteDatabase, named_as_today: Callable[[str], str]) -> None:
    """Give every destination recorded the name this kcing gives it. Rows of one object under
    two names of one place are one: the delivered one is kept (the newer name's when both are);
    of two watermarks of a source, the earlier, which lists again what the later would skip."""
    for old, new in _renamed(database, "upstream_file", named_as_today):
        same_object = ("other.source = upstream_file.source AND other.kind = upstream_file.kind "
                       "AND other.upstream_id = upstream_file.upstream_id AND other.destination = ?")
        database.execute_sql("DELETE FROM upstream_file WHERE destination = ? AND EXISTS (SELECT 1 FROM upstream_file "
                             "other WHERE %s AND (other.state = ? OR upstream_file.state != ?))" % same_object,
                             [old, new, DELIVERED, DELIVERED])
        database.execute_sql("DELETE FROM upstream_file WHERE destination = ? AND EXISTS (SELECT 1 FROM upstream_file "
                             "other WHERE %s)" % same_object, [new, old])
        database.execute_sql("UPDATE upstream_file SET destination = ? WHERE destination = ?", [new, old])
    for old, new in _renamed(database, "watermark", named_as_today):
        database.execute_sql("UPDATE watermark SET position = min(position, (SELECT other.position FROM watermark "
                             "other WHERE other.source = watermark.source AND other.destination = ?)) "
                             "WHERE destination = ? AND source IN (SELECT source FROM watermark WHERE destination = ?)",
                             [old, new, old])
        database.execute_sql("DELETE FROM watermark WHERE destination = ? AND source IN (SELECT source FROM watermark "
                             "WHERE destination = ?)", [old, new])
        database.execute_sql("UPDATE watermark SET destination = ? WHERE destination = ?", [new, old])
    for run_id, text in database.execute_sql("SELECT id, counts FROM run WHERE counts LIKE '%\"destination\"%'"
                                             ).fetchall():
        try:
            counts = json.loads(text)
        except ValueError:
            continue  # read as no counts, as status reads it
        if isinstance(counts, dict) and isinstance(counts.get("destination"), str):
            new = named_as_today(counts["destination"])
            if new != counts["destination"]:
                counts["destination"] = new
                database.execute_sql("UPDATE run SET counts = ? WHERE id = ?", [json.dumps(counts, sort_keys=True),
                                                                                run_id])


def _renamed(database: SqliteDatabase, table: str, named_as_today: Callable[[str], str]):
    """(old, new) of each destination of `table` that this kcing names otherwise; none for a
    table the ledger lacks (watermark, before the end of schema 1), nor for a value that is not
    text (a BLOB edited in: left as it is)."""
    if not database.execute_sql("PRAGMA table_info(%s)" % table).fetchall():
        return
    for (old,) in database.execute_sql("SELECT DISTINCT destination FROM %s" % table).fetchall():
        new = named_as_today(old) if isinstance(old, str) else old
        if new != old:
            yield old, new
