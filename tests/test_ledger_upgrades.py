"""Ledgers an earlier kcing wrote, or a user edited, upgraded to schema 4 (kcing/ledger/migration.py:
rename_destinations) as they opened before: never refused, never an internal error."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.feedrun import SAMPLES, clean_environ, kcing
from tests.test_ledger_edited import assert_no_internal_error, edit
from tests.test_reconcile import make_schema_1


def as_the_first_kcing_wrote_it(db: Path) -> None:
    """A ledger as kcing wrote it before the KernelCI API source (90540aa..3d2323f): schema 1
    (user_version 1), the tables upstream_file and run alone: the watermark table came with the
    API source, and create_tables adds it when a later kcing opens the file."""
    make_schema_1(db)
    with sqlite3.connect(str(db)) as conn:
        conn.execute("DROP TABLE watermark")
    conn.close()


@pytest.mark.parametrize("args", [["status"], ["feed_es", "--source", "samples", "--output", "out"]])
def test_a_ledger_from_before_the_watermark_table_is_still_upgraded(tmp_path, args):
    """README, Upgrading kcing: the ledger "is upgraded by the first command that writes it";
    migration.py itself skips the watermark step for a ledger without that table. The schema 4
    step then reads `SELECT DISTINCT destination FROM watermark` unconditionally: every command
    ends with exit 2, `not a usable kcing ledger: no such table: watermark` (404b4df opened it)."""
    db = tmp_path / "kcing.db"
    as_the_first_kcing_wrote_it(db)
    env = clean_environ(KCING_DB=str(db), KCI_SAMPLES_DIR=str(SAMPLES), KCING_WORKERS="0")
    done = kcing(args, env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no such table" not in done.stderr


@pytest.mark.parametrize("statement", [
    # A BLOB where text belongs (README: "text that is not UTF-8 or a BLOB in a text column shows
    # its bytes as \xff"), in a row's destination and in a watermark's (b"ndjson /out\xff").
    "UPDATE upstream_file SET destination = X'6e646a736f6e202f6f7574ff' WHERE id = 1",
    "INSERT INTO watermark (source, position, moved_at, destination) "
    "VALUES ('api', '2024-10-16 08:00:00', '2024-10-16 08:00:00', X'6e646a736f6e202f6f7574ff')",
])
def test_a_schema_3_ledger_edited_by_hand_is_upgraded_without_an_internal_error(tmp_path, statement):
    """README, Status: "A ledger edited by hand (with sqlite3) is read as it is, never with an
    internal error". The schema 4 rename gives every destination read from the file to
    sinks.named_as_today, which calls str.startswith on it: a BLOB (bytes) in the
    destination column (rows' or watermarks') of a schema 3 ledger ends status, dry runs and every feed with
    `internal error (TypeError)`, exit 70, until the row is fixed by hand."""
    db = tmp_path / "kcing.db"
    env = clean_environ(KCING_DB=str(db), KCI_SAMPLES_DIR=str(SAMPLES), KCING_WORKERS="0")
    feed = ["feed_es", "--source", "samples", "--output", str(tmp_path / "out")]
    assert kcing(feed, env, tmp_path).returncode == 0
    edit(db, statement, "PRAGMA user_version = 3")  # as a kcing of schema 3 left it, then edited
    shown = kcing(["status"], env, tmp_path)
    assert_no_internal_error(shown)
    assert shown.returncode == 0, shown.stderr
    again = kcing(feed, env, tmp_path)
    assert_no_internal_error(again)
    assert again.returncode == 0, again.stderr
