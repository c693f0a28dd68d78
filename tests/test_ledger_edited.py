"""A ledger edited by hand (sqlite3's shell, a script): whatever a row holds, the commands that read
it run on, or end with a one-line error, never with an internal error (exit 70)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.fakes.elastic_forward import ForwardingStore
from tests.fakes.logstash_emulator import LogstashCluster
from tests.feedrun import SAMPLES, clean_environ, kcing
from tests.test_status import es  # noqa: F401 (a fixture: an Elasticsearch emulator with kcing's templates)

KEEP_EVERYTHING = "36500"  # the samples date from 2019-2020


def edit(db: Path, *statements: str, constraints: bool = True) -> None:
    """Run `statements` on the ledger as a user's shell would; without `constraints`, first
    rewrite its tables without their NOT NULL constraints (which a hand-made table may lack)."""
    with sqlite3.connect(str(db)) as connection:
        if not constraints:
            connection.execute("PRAGMA writable_schema = ON")
            connection.execute("UPDATE sqlite_master SET sql = replace(sql, ' NOT NULL', '') WHERE type = 'table'")
            connection.execute("PRAGMA writable_schema = OFF")
    with sqlite3.connect(str(db)) as connection:
        for statement in statements:
            connection.execute(statement)
    connection.close()


def assert_no_internal_error(done) -> None:
    assert done.returncode != 70 and "Traceback" not in done.stderr + done.stdout, done.stderr[-2000:]


@pytest.fixture
def logstash(es):
    cluster = LogstashCluster(store=ForwardingStore(es.url))
    cluster.start()
    yield cluster
    cluster.stop()


def test_status_and_a_feed_read_text_columns_holding_bytes_numbers_or_null(tmp_path):
    db = tmp_path / "kcing.db"
    env = clean_environ(KCING_DB=str(db), KCI_SAMPLES_DIR=str(SAMPLES), KCING_WORKERS="0")
    feed = ["feed_es", "--source", "samples", "--output", str(tmp_path / "out")]
    assert kcing(feed, env, tmp_path).returncode == 0
    edit(db, "UPDATE upstream_file SET kind = X'6c61ff' WHERE id = 1",  # a BLOB: b"la\xff"
         "UPDATE upstream_file SET state = CAST(X'6661696cff' AS TEXT), last_error = CAST(X'ff' AS TEXT) WHERE id = 2",
         "UPDATE upstream_file SET source = 7 WHERE id = 3",
         "UPDATE upstream_file SET sha256 = CAST(X'ff' AS TEXT)",
         "INSERT INTO watermark (source, position, moved_at, destination) "
         "VALUES (X'6170ff', '2024-10-16 08:00:00', '2024-10-16 08:00:00', CAST(X'ff' AS TEXT))",
         "UPDATE run SET command = X'ff', outcome = CAST(X'ff' AS TEXT)", constraints=False)
    edit(db, "UPDATE upstream_file SET kind = NULL, source = NULL WHERE id = 4", "UPDATE upstream_file SET state = NULL "
         "WHERE id = 5", "UPDATE run SET command = NULL WHERE id = 1")
    shown = kcing(["status"], env, tmp_path)
    assert_no_internal_error(shown)
    assert shown.returncode == 0
    assert "la\\xff" in shown.stdout and "ap\\xff" in shown.stdout
    as_json = kcing(["status", "--json"], env, tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert "la\\xff" in data["objects"]["samples"]
    assert data["watermarks"]["ap\\xff"]
    again = kcing(feed, env, tmp_path)
    assert_no_internal_error(again)
    assert again.returncode == 0
    assert kcing(feed + ["--dry-run"], env, tmp_path).returncode == 0


def test_reconcile_reads_rows_and_kept_ids_edited_into_what_kcing_never_writes(tmp_path, es, logstash):
    db = tmp_path / "kcing.db"
    env = clean_environ(KCING_DB=str(db), KCI_SAMPLES_DIR=str(SAMPLES), KCING_WORKERS="0", ES_HOST=es.url,
                        DRP_DAYS=KEEP_EVERYTHING, ES_BUILD=logstash.urls["build"], ES_LAVA=logstash.urls["lava"],
                        ES_BOOT=logstash.urls["boot"], ES_RETRY_BACKOFF="0.05", ES_TIMEOUT="10")
    fed = kcing(["feed_es", "--source", "samples"], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    assert kcing(["reconcile"], env, tmp_path).returncode == 0
    edit(db, "UPDATE upstream_file SET upstream_id = CAST(X'ff' AS TEXT) || id, url = X'ff' || url WHERE id = 1",
         "UPDATE upstream_file SET object_date = '{bad' WHERE id = 2",
         "UPDATE upstream_file SET object_date = 3.5 WHERE id = 3",
         "UPDATE upstream_file SET kept_ids = 'x' WHERE id = 4",
         "UPDATE delivered_documents SET ids = 'x' WHERE upstream_file_id = 5",
         "UPDATE delivered_documents SET ids = 9223372036854775807 WHERE upstream_file_id = 6",
         "UPDATE upstream_file SET kind = 'bogus', state = 'failed', last_error = 'missing in Elasticsearch', "
         "delivered_at = NULL WHERE id = 7",
         # Sent again by --resend: a hash (a BLOB) and a date (a number) of other types are none known.
         "UPDATE upstream_file SET sha256 = X'31323334', state = 'failed', "
         "last_error = 'missing in Elasticsearch', delivered_at = NULL WHERE id = 8",
         "UPDATE upstream_file SET object_date = 3.5, state = 'failed', "
         "last_error = 'missing in Elasticsearch', delivered_at = NULL WHERE id = 9")
    checked = kcing(["reconcile"], env, tmp_path)
    assert_no_internal_error(checked)
    assert checked.returncode == 1  # the objects whose kept ids are damaged count as missing
    assert "the ledger's kept ids do not match their count (not a count)" in checked.stderr
    resent = kcing(["reconcile", "--resend"], env, tmp_path)
    assert_no_internal_error(resent)
    assert "the ledger gives it the kind 'bogus', which kcing does not know" in resent.stderr
    assert "re-send refused" not in resent.stdout + resent.stderr
    assert sqlite3.connect(str(db)).execute("SELECT state FROM upstream_file WHERE id = 8").fetchone() == ("delivered",)
    assert kcing(["reconcile", "--dry-run"], env, tmp_path).returncode in (0, 1)


def test_a_watermark_edited_to_year_1_lists_from_year_1():
    from datetime import datetime, timedelta, timezone

    from kcing.watermark import crawl_start

    now = datetime(2024, 10, 16, tzinfo=timezone.utc)
    first = datetime(1, 1, 1, 0, 5, tzinfo=timezone.utc)  # `position = '0001-01-01 00:05:00'`
    assert crawl_start(first, None, timedelta(minutes=10), 2, now) == datetime.min.replace(tzinfo=timezone.utc)
    assert crawl_start(first, None, timedelta(minutes=5), 2, now) == datetime.min.replace(tzinfo=timezone.utc)
    assert crawl_start(now, None, timedelta(minutes=10), 2, now) == now - timedelta(minutes=10)


def test_status_shows_run_counts_edited_into_other_types_as_they_are(tmp_path):
    db = tmp_path / "kcing.db"
    env = clean_environ(KCING_DB=str(db), KCI_SAMPLES_DIR=str(SAMPLES), KCING_WORKERS="0")
    assert kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path).returncode == 0
    edit(db, """UPDATE run SET counts = '{"source": 5, "destination": ["x"], "delivered": "many"}'""")
    shown = kcing(["status"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "delivered many" in shown.stdout and "(5 to ['x'])" in shown.stdout
