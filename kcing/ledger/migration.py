"""Older ledgers brought up to the current schema, in place, when a run opens them."""
from __future__ import annotations

from typing import Callable

from peewee import SqliteDatabase


def migrate(database: SqliteDatabase, earlier_destination: Callable[[str], str],
            earlier_watermark_destination: str) -> None:
    """Bring an older ledger's tables up to models.SCHEMA_VERSION (new tables and indexes come from
    create_tables, which runs after this)."""
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
