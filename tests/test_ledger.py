"""The ledger records outcomes in transactions and answers "was this delivered?"."""
import os
import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import List

import pytest

from kcing.errors import ConfigError
from kcing.ledger import docids
from kcing.ledger.identity import FileShape, refusal
from kcing.ledger.ledger import Ledger, Outcome
from kcing.ledger.models import (APPLICATION_ID, DELIVERED, DOWNLOADED, FAILED, REJECTED, SCHEMA_VERSION, TABLES,
                                 TOO_LARGE)
from kcing.records import UpstreamObject
from kcing.sinks import LOGSTASH
from tests.feedrun import SAMPLES, clean_environ, feed_environ, kcing


def obj(upstream_id, kind="build", source="legacy"):
    return UpstreamObject(source, kind, upstream_id, "https://storage.example/%s/build.json" % upstream_id,
                          datetime(2020, 11, 19, 7, 0, tzinfo=timezone.utc))


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger.open(str(tmp_path / "kcing.db"))
    yield opened
    opened.close()


def test_only_delivered_objects_are_skipped(ledger):
    ledger.record([Outcome(obj("a"), DOWNLOADED, sha256="1", document_count=1),
                   Outcome(obj("b"), DOWNLOADED, sha256="2", document_count=1),
                   Outcome(obj("c"), FAILED, error="404")])
    ledger.record([Outcome(obj("a"), DELIVERED, sha256="1")])
    assert ledger.delivered_ids("legacy", "build", ["a", "b", "c", "d"]) == {"a"}
    assert ledger.delivered_ids("legacy", "lava", ["a"]) == set()
    assert ledger.delivered_ids("samples", "build", ["a"]) == set()


def test_an_object_delivered_without_documents_is_read_back_with_a_count_of_zero(ledger):
    """A checkout node makes no document: its row keeps 0 ids, which reconcile finds whole; read
    as "no count", it was reported damaged and sent again by every reconcile."""
    checkout = obj("c1", kind="checkout", source="api")
    recorded = ledger.record([Outcome(checkout, DELIVERED, sha256="1", document_count=0, documents={})])
    (rows,) = list(ledger.delivered_rows_with_ids(recorded))
    assert [row.kept_ids for row in rows] == [0]
    assert ledger.kept_documents([rows[0].id]) == {}


def test_an_object_delivered_without_its_ids_known_is_read_back_as_not_checkable(ledger):
    """A row from before kcing kept ids (or a delivery whose ids were not known) says nothing
    reconcile can check: read as a damaged count, every such object would be resent."""
    recorded = ledger.record([Outcome(obj("old"), DELIVERED, sha256="1", document_count=3)])
    (rows,) = list(ledger.delivered_rows_with_ids(recorded))
    assert [row.kept_ids for row in rows] == [None]


def test_a_success_recorded_before_destinations_counts_for_any_destination(ledger):
    """A run recorded by a kcing from before destinations (schema 2) names none: its success is
    the last one of a feed to any destination, not none at all (the metric's alert firing at
    once after an upgrade)."""
    run = ledger.start_run("feed_es", {"source": "legacy"})
    ledger.finish_run(run, "ok", {"source": "legacy"})
    assert ledger.last_success("feed_es", "legacy", destination="logstash http://ls:8337") is not None
    assert ledger.last_success("feed_es", "api", destination="logstash http://ls:8337") is None


def test_too_large_objects_stay_undelivered_and_unsettled_unlike_rejected_ones(ledger):
    # Rejected: the object itself is unusable; too large: Logstash's limit, raised later.
    ledger.record([Outcome(obj("a"), REJECTED, error="not JSON"),
                   Outcome(obj("b"), TOO_LARGE, error="a document of 50000 bytes is larger than Logstash accepts"),
                   Outcome(obj("c"), DELIVERED, sha256="3")])
    assert ledger.row("legacy", "build", "b").state == TOO_LARGE  # recorded, not dropped
    assert ledger.delivered_ids("legacy", "build", ["a", "b", "c"]) == {"c"}
    assert ledger.settled_ids("legacy", "build", ["a", "b", "c"]) == {"a", "c"}


def test_row_keeps_hash_attempts_error_and_times(ledger):
    ledger.record([Outcome(obj("a"), FAILED, error="GET failed 3 times")])
    ledger.record([Outcome(obj("a"), DOWNLOADED, sha256="abc", document_count=7)])
    ledger.record([Outcome(obj("a"), DELIVERED, sha256="abc")])
    row = ledger.row("legacy", "build", "a")
    assert row.state == DELIVERED and row.sha256 == "abc" and row.document_count == 7
    assert row.attempts == 2 and row.last_error is None
    assert row.delivered_at is not None and row.first_seen <= row.delivered_at
    assert row.object_date == datetime(2020, 11, 19, 7, 0)


def test_rejection_keeps_its_reason(ledger):
    ledger.record([Outcome(obj("x", "lava"), REJECTED, sha256="f00", error="not valid JSON")])
    row = ledger.row("legacy", "lava", "x")
    assert row.state == REJECTED and row.last_error == "not valid JSON"


def test_many_ids_are_looked_up_in_chunks(ledger):
    ids = ["%024x" % n for n in range(2500)]
    ledger.record([Outcome(obj(i), DELIVERED) for i in ids])
    assert ledger.delivered_ids("legacy", "build", ids + ["nope"]) == set(ids)
    assert ledger.counts() == {("legacy", "build", "", DELIVERED): 2500}


def _ids_like_upstream(count):
    """ObjectIds as MongoDB makes them: creation seconds first, so they sort by time."""
    return ["%08x%016x" % (0x5F000000 + n, n * 7919) for n in range(count)]


@pytest.mark.parametrize("spacing", [2, 50], ids=["neighbours", "scattered"])
def test_a_listing_lookup_answers_alike_whether_the_ids_asked_about_are_neighbours_or_scattered(tmp_path, spacing):
    # Between and among the ids asked about lie rows of other states, destinations and kinds,
    # and ids asked about that the ledger never saw.
    ledger = Ledger.open(str(tmp_path / "kcing.db"))
    ids = _ids_like_upstream(6000)
    states = [DELIVERED, REJECTED, FAILED, TOO_LARGE, DELIVERED]
    ledger.record([Outcome(obj(i), states[n % 5]) for n, i in enumerate(ids) if n % 7],
                  destination=lambda kind: "logstash http://ls:8080")
    ledger.record([Outcome(obj(i), DELIVERED) for i in ids[::3]], destination=lambda kind: "ndjson /out")
    ledger.record([Outcome(obj(i, kind="lava"), DELIVERED) for i in ids[::2]],
                  destination=lambda kind: "logstash http://ls:8080")
    asked = ids[100::spacing] + ids[1:60] + ["%024x" % 0, "f" * 24]
    delivered = {i for n, i in enumerate(ids) if n % 7 and states[n % 5] == DELIVERED}
    settled = {i for n, i in enumerate(ids) if n % 7 and states[n % 5] in (DELIVERED, REJECTED)}
    for _ in range(5):  # scattered: until the ledger stops reading stretches, and after
        assert ledger.delivered_ids("legacy", "build", asked, "logstash http://ls:8080") == delivered & set(asked)
        assert ledger.settled_ids("legacy", "build", asked, "logstash http://ls:8080") == settled & set(asked)
        assert ledger.delivered_ids("legacy", "build", asked, "ndjson /out") == set(ids[::3]) & set(asked)
        assert ledger.delivered_ids("legacy", "lava", reversed(asked), "logstash http://ls:8080") \
            == set(ids[::2]) & set(asked)
    ledger.close()


def test_ids_holding_the_character_a_range_read_joins_with_are_read_exactly(ledger):
    # A range read joins the ids it finds with char(31): a delivered id holding it must neither
    # be missed nor make its pieces look delivered.
    asked = ["5f0000000000000000000001", "5f0000000000000000000002", "5f0000000000000000000009"]
    odd = ["5f0000000000000000000001\x1f5f0000000000000000000002", "5f0000000000000000000005\x1f"]
    ledger.record([Outcome(obj(i), DELIVERED) for i in odd + asked[2:]])
    assert ledger.delivered_ids("legacy", "build", asked) == {asked[2]}
    assert ledger.delivered_ids("legacy", "build", asked + odd) == {asked[2], *odd}


def test_earlier_failures_are_read_at_a_cost_of_the_failures_not_of_every_row_of_their_kind(ledger):
    """A legacy run asks for the objects it no longer lists that were not delivered: a few rows
    among hundreds of thousands delivered. Read through the index of source and kind, each chunk
    walked every row of the kind (3.8 s for 20,000 failures among a million rows); through the
    index of states, only the rows not delivered."""
    delivered = [Outcome(obj("d%06d" % number), DELIVERED) for number in range(20000)]
    failed = [Outcome(obj("f%04d" % number), FAILED, error="404") for number in range(200)]
    ledger.record(delivered[:10000] + failed[:100] + delivered[10000:] + failed[100:])
    steps = []
    connection = ledger.db.connection()
    connection.set_progress_handler(lambda: steps.append(1), 100)
    try:
        found = list(ledger.undelivered_before("legacy", "build", "", datetime(2021, 1, 1, tzinfo=timezone.utc),
                                               chunk=20))
    finally:
        connection.set_progress_handler(None, 100)
    assert sorted(found_obj.upstream_id for found_obj in found) == sorted("f%04d" % number for number in range(200))
    # About 100 steps a row not delivered; walking the 20,000 others once per chunk takes thousands a chunk.
    assert len(steps) * 100 < 200 * 200, len(steps)


def test_every_object_not_delivered_is_an_earlier_failure_but_those_no_fetch_will_change(ledger):
    """The README: an object failed, too large for Logstash or in hand when a run stopped is sent
    again by every next run, out of its window too, where only the ledger names it; one rejected,
    one whose file is gone and one delivered are not."""
    ledger.record([Outcome(obj("failed"), FAILED, error="GET ... answered 503"),
                   Outcome(obj("too large"), TOO_LARGE, error="Logstash answered 413 for one document"),
                   Outcome(obj("in hand"), DOWNLOADED),
                   Outcome(obj("rejected"), REJECTED, error="not JSON"),
                   Outcome(obj("gone"), FAILED, error="GET ... answered 404"),
                   Outcome(obj("delivered"), DELIVERED)])
    found = ledger.undelivered_before("legacy", "build", "", datetime(2021, 1, 1, tzinfo=timezone.utc))
    assert sorted(found_obj.upstream_id for found_obj in found) == ["failed", "in hand", "too large"]


def test_a_failed_transaction_leaves_earlier_rows_intact(ledger):
    ledger.record([Outcome(obj("a"), DELIVERED)])
    with pytest.raises(Exception):
        ledger.record([Outcome(obj("b"), DELIVERED), Outcome(obj(None), DELIVERED)])  # NULL id breaks it
    assert ledger.delivered_ids("legacy", "build", ["a", "b"]) == {"a"}
    assert ledger.integrity_ok()


def test_wal_mode_and_unique_index(tmp_path, ledger):
    ledger.record([Outcome(obj("a"), DELIVERED)])
    with sqlite3.connect(str(tmp_path / "kcing.db")) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        unique = [row[1] for row in raw.execute("PRAGMA index_list('upstream_file')") if row[2]]
        assert unique == ["upstream_file_source_kind_upstream_id_destination"]
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_ledger_from_before_the_state_index_gets_it_and_answers_alike(tmp_path):
    """Which ids are delivered is read from one index, state included, with no visit to the rows;
    a ledger written before that index existed gets it when opened, its answers unchanged."""
    path = str(tmp_path / "kcing.db")
    earlier = Ledger.open(path)
    earlier.record([Outcome(obj("a"), DELIVERED), Outcome(obj("b"), FAILED), Outcome(obj("c"), REJECTED)])
    earlier.close()
    with sqlite3.connect(path) as raw:
        raw.execute("DROP INDEX upstream_file_source_kind_upstream_id_destination_state")
    reopened = Ledger.open(path)
    try:
        assert reopened.delivered_ids("legacy", "build", ["a", "b", "c", "d"]) == {"a"}
        assert reopened.settled_ids("legacy", "build", ["a", "b", "c", "d"]) == {"a", "c"}
        for question in ("SELECT upstream_id, state FROM upstream_file WHERE source = 'legacy' AND kind = 'build' "
                         "AND upstream_id BETWEEN 'a' AND 'c' AND destination = ''",
                         "SELECT upstream_id FROM upstream_file WHERE source = 'legacy' AND kind = 'build' "
                         "AND destination = '' AND state IN ('delivered') AND upstream_id IN ('a', 'b')"):
            plan = " ".join(row[3] for row in reopened.db.execute_sql("EXPLAIN QUERY PLAN " + question).fetchall())
            assert "COVERING INDEX upstream_file_source_kind_upstream_id_destination_state" in plan
    finally:
        reopened.close()


@pytest.mark.parametrize("argv", [
    ["feed_es", "--source", "samples", "--output", "out"], ["drp"], ["reconcile"], ["status"]])
def test_a_db_that_is_not_a_database_is_refused_before_a_lock_is_made_beside_it(argv, tmp_path):
    """`--db kcing.log` (a log for a ledger) was refused, but only after the run lock's file,
    kcing.log.lock, was made beside the log and left there."""
    log = tmp_path / "kcing.log"
    log.write_bytes(b"2024-10-15T09:00:00.000Z INFO kcing.pipeline: run finished\n")
    before = log.read_bytes()
    # Nothing listens at these: a refusal must come before any of them is asked.
    env = clean_environ(ES_HOST="http://127.0.0.1:9", KCI_SAMPLES_DIR=str(SAMPLES))
    refused = kcing(argv + ["--db", str(log)], env, tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "kcing %s: KCING_DB %s is not a usable kcing ledger: file is not a database" % (argv[0], log)]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kcing.log"]
    assert log.read_bytes() == before


def test_a_file_that_is_not_a_ledger_is_a_config_error(tmp_path):
    bogus = tmp_path / "kcing.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ConfigError) as error:
        Ledger.open(str(bogus))
    assert "not a usable kcing ledger" in str(error.value)
    assert bogus.read_bytes() == b"this is not sqlite" * 100


def test_missing_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError):
        Ledger.open(str(tmp_path / "nope" / "kcing.db"))


# -- only kcing's own ledgers are opened ------------------------------------------------------------

def kcing_shape(version=SCHEMA_VERSION, application_id=APPLICATION_ID, **tables):
    columns = {"upstream_file": EARLIEST_UPSTREAM_FILE, "run": RUN_COLUMNS}
    columns.update(tables)
    return FileShape(application_id, version, {name: frozenset(cols) for name, cols in columns.items()})


EARLIEST_UPSTREAM_FILE = ("id", "source", "kind", "upstream_id", "url", "sha256", "state", "attempts", "last_error",
                          "object_date", "first_seen", "delivered_at", "document_count")
RUN_COLUMNS = ("id", "command", "started", "ended", "outcome", "counts")


def current_tables():
    """{table: its columns} of a ledger this kcing writes."""
    return {model._meta.table_name: tuple(field.column_name for field in model._meta.sorted_fields)
            for model in TABLES}


def test_a_file_is_a_kcing_ledger_by_its_marker_or_by_the_shape_earlier_kcings_wrote():
    assert refusal(FileShape(0, 0, {})) is None  # new (an empty file too)
    assert refusal(kcing_shape(**current_tables())) is None
    for version in (1, 2, 3):  # written before ledgers were marked
        assert refusal(kcing_shape(version, application_id=0, watermark=("id", "source", "position", "moved_at"))) \
            is None
    assert "newer kcing" in refusal(kcing_shape(SCHEMA_VERSION + 1))
    for foreign in (FileShape(0, 0, {"foo": frozenset("a")}), FileShape(0, 42, {"foo": frozenset("a")}),
                    FileShape(0, 7, {}), FileShape(0x12345678, 0, {}),
                    FileShape(0x12345678, 1, kcing_shape().tables),
                    kcing_shape(1, application_id=0, watermark=("id", "name")),
                    kcing_shape(1, application_id=0, upstream_file=("id", "name")),
                    kcing_shape(0, application_id=0), kcing_shape(42, application_id=0)):
        assert "is not a kcing ledger" in refusal(foreign), foreign


def test_a_new_ledger_is_marked_and_one_from_before_the_marker_gets_it(tmp_path):
    path = tmp_path / "kcing.db"
    Ledger.open(str(path)).record([Outcome(obj("a"), DELIVERED)])
    with sqlite3.connect(str(path)) as raw:
        assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        raw.execute("PRAGMA application_id = 0")  # as the kcing before the marker wrote it
    reopened = Ledger.open(str(path))
    try:
        assert reopened.delivered_ids("legacy", "build", ["a"]) == {"a"}
    finally:
        reopened.close()
    with sqlite3.connect(str(path)) as raw:
        assert raw.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def _another_programs_tables(db):
    with sqlite3.connect(str(db)) as raw:
        raw.execute("CREATE TABLE foo (a)")
        raw.execute("INSERT INTO foo VALUES (1)")


def _another_programs_version(db):
    with sqlite3.connect(str(db)) as raw:
        raw.execute("CREATE TABLE foo (a)")
        raw.execute("PRAGMA user_version = 42")


def _a_watermark_table_of_its_own(db):
    with sqlite3.connect(str(db)) as raw:
        raw.execute("CREATE TABLE watermark (id INTEGER PRIMARY KEY, name TEXT)")


def _kcings_table_names_other_columns(db):
    with sqlite3.connect(str(db)) as raw:
        raw.execute("CREATE TABLE upstream_file (id INTEGER PRIMARY KEY, name TEXT)")
        raw.execute("CREATE TABLE run (id INTEGER PRIMARY KEY, name TEXT)")
        raw.execute("PRAGMA user_version = 1")


def _another_programs_marker_in_wal_mode(db):
    with sqlite3.connect(str(db)) as raw:
        raw.execute("PRAGMA journal_mode = wal")
        raw.execute("PRAGMA application_id = 305419896")
        raw.execute("CREATE TABLE upstream_file (id INTEGER PRIMARY KEY)")


def _another_programs_file_in_wal_mode_closed(db):
    """As that program leaves it when it is not running: no -wal or -shm file beside it."""
    raw = sqlite3.connect(str(db))
    raw.execute("PRAGMA journal_mode = wal")
    raw.execute("PRAGMA application_id = 305419896")
    raw.execute("CREATE TABLE upstream_file (id INTEGER PRIMARY KEY)")
    raw.commit()
    raw.close()
    assert not Path(str(db) + "-wal").exists() and not Path(str(db) + "-shm").exists()


FOREIGN_FILES = [_another_programs_tables, _another_programs_version, _a_watermark_table_of_its_own,
                 _kcings_table_names_other_columns, _another_programs_marker_in_wal_mode,
                 _another_programs_file_in_wal_mode_closed]
LEDGER_COMMANDS = [["status"], ["feed_es"], ["drp"], ["reconcile"]]


@pytest.mark.parametrize("make", FOREIGN_FILES, ids=lambda make: make.__name__.strip("_"))
def test_a_sqlite_file_of_another_program_is_refused_and_left_as_it_was(make, legacy_replica, logstash, tmp_path):
    db = tmp_path / "other.db"
    make(db)
    for line in refused_by_every_ledger_command(db, feed_environ(legacy_replica, logstash, db), tmp_path,
                                                "is not a kcing ledger ("):
        assert line.endswith("left as it is: point KCING_DB (or --db) at a kcing ledger or a new file"), line
    assert not logstash.store


def refused_by_every_ledger_command(db: Path, env: dict, cwd: Path, refusal: str) -> List[str]:
    """The error line of each of LEDGER_COMMANDS, each asserted to be one line saying
    "KCING_DB <db> <refusal>..." with exit 2, `db` left byte for byte as it was, and no file
    made beside it (a -wal or -shm file of the read that refused it)."""
    before = db.read_bytes()
    beside = sorted(path.name for path in db.parent.iterdir() if path.name.startswith(db.name + "-"))
    # Elasticsearch is never asked: the ledger is refused first (nothing listens there).
    env = dict(env, ES_HOST="http://127.0.0.1:9", DRP_DAYS="36500")
    lines = []
    for command in LEDGER_COMMANDS:
        result = kcing(command, env, cwd)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        [line] = result.stderr.splitlines()
        assert line.startswith("kcing %s: KCING_DB %s %s" % (command[0], db, refusal)), line
        assert db.read_bytes() == before, command
        assert sorted(path.name for path in db.parent.iterdir() if path.name.startswith(db.name + "-")) == beside, \
            command
        lines.append(line)
    return lines


def test_a_refused_ledger_leaves_no_output_directory_behind_and_keeps_one_that_was_there(legacy_replica, logstash,
                                                                                          tmp_path):
    db = tmp_path / "other.db"
    _another_programs_tables(db)
    env = feed_environ(legacy_replica, logstash, db)
    made, kept = tmp_path / "new" / "out", tmp_path / "kept"
    kept.mkdir()
    for output in (made, kept):
        result = kcing(["feed_es", "--output", str(output)], env, tmp_path)
        assert result.returncode == 2, result.stderr
        assert "is not a kcing ledger" in result.stderr
    assert not made.parent.exists() and kept.is_dir() and not any(kept.iterdir())


def test_a_directory_as_the_ledger_is_a_configuration_error(legacy_replica, logstash, tmp_path):
    folder = tmp_path / "ledger"
    folder.mkdir()
    env = feed_environ(legacy_replica, logstash, folder, ES_HOST="http://127.0.0.1:9", DRP_DAYS="36500")
    for command in LEDGER_COMMANDS:
        result = kcing(command, env, tmp_path)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stderr.splitlines() == ["kcing %s: KCING_DB %s is a directory: name a ledger file, e.g. %s"
                                              % (command[0], folder, folder / "kcing.db")]
    assert list(folder.iterdir()) == []


def test_a_ledger_that_is_no_regular_file_is_refused_before_a_lock_file_is_made_beside_it(legacy_replica, logstash,
                                                                                           tmp_path):
    """`KCING_DB=/dev/null` (to keep no ledger) was refused, but only after the run lock's file was
    made beside it: /dev/null.lock, in /dev. A FIFO stands for the device here."""
    fifo = tmp_path / "state" / "kcing.db"
    fifo.parent.mkdir()
    os.mkfifo(str(fifo))
    env = feed_environ(legacy_replica, logstash, fifo, ES_HOST="http://127.0.0.1:9", DRP_DAYS="36500")
    for command in LEDGER_COMMANDS:
        result = kcing(command, env, tmp_path)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stderr.splitlines() == ["kcing %s: KCING_DB %s is not a regular file: name a ledger file"
                                              % (command[0], fifo)]
        assert os.listdir(str(fifo.parent)) == ["kcing.db"], command


def test_a_marked_ledger_lacking_a_table_or_column_of_its_schema_is_damaged_not_older():
    assert refusal(kcing_shape(**current_tables())) is None
    for name, columns in current_tables().items():
        without_table = {table: cols for table, cols in current_tables().items() if table != name}
        assert refusal(FileShape(APPLICATION_ID, SCHEMA_VERSION, {table: frozenset(cols) for table, cols
                                                                   in without_table.items()})) \
            .startswith("is damaged (it has no %s table); left as it is" % name)
        for column in columns:
            lacking = dict(current_tables(), **{name: tuple(c for c in columns if c != column)})
            assert refusal(kcing_shape(**lacking)).startswith(
                "is damaged (its %s table has no %s column); left as it is" % (name, column))


def _drop_the_destination_column(raw):
    # A column later schemas added: opening must not take the file for a schema-2 ledger
    # and mark its rows as sent to Logstash.
    raw.execute('DROP INDEX "upstream_file_source_kind_upstream_id_destination"')
    raw.execute('DROP INDEX "upstream_file_source_kind_upstream_id_destination_state"')
    raw.execute("ALTER TABLE upstream_file DROP COLUMN destination")


@pytest.mark.parametrize("damage", [lambda raw: raw.execute("ALTER TABLE run DROP COLUMN outcome"),
                                    lambda raw: raw.execute("DROP TABLE upstream_file"),
                                    _drop_the_destination_column],
                         ids=["run.outcome", "upstream_file", "upstream_file.destination"])
def test_a_ledger_with_a_table_or_column_dropped_is_refused_and_left_as_it_was(damage, legacy_replica, logstash,
                                                                                tmp_path):
    db = tmp_path / "kcing.db"
    written = Ledger.open(str(db))
    written.record([Outcome(obj("a"), DELIVERED)], destination=lambda kind: "ndjson /out")
    written.close()
    with sqlite3.connect(str(db)) as raw:
        damage(raw)
    refused_by_every_ledger_command(db, feed_environ(legacy_replica, logstash, db), tmp_path, "is damaged (")
    assert not logstash.store


def test_a_ledger_whose_name_is_not_utf8_opens_again(tmp_path):
    path = os.fsdecode(os.fsencode(str(tmp_path)) + b"/k\xff.db")  # as Python holds such a name from argv
    Ledger.open(path).record([Outcome(obj("a"), DELIVERED)])
    reopened = Ledger.open(path)  # now an existing file, whose shape is read first
    try:
        assert reopened.delivered_ids("legacy", "build", ["a"]) == {"a"}
    finally:
        reopened.close()


def _overwrite_page(db: Path, page: int) -> None:
    """Damage one page of `db` as a failing disk or a stray write would (pages count from 1)."""
    with sqlite3.connect(str(db)) as raw:
        size = raw.execute("PRAGMA page_size").fetchone()[0]
    with open(str(db), "r+b") as handle:
        handle.seek((page - 1) * size)
        handle.write(b"\xff" * size)


def test_a_ledger_damaged_past_its_first_pages_is_said_so_in_one_line_when_a_run_meets_the_damage(
        legacy_replica, logstash, tmp_path):
    """Opening reads only the schema: a page of the index every listing reads, overwritten, was
    found in the middle of the run, and ended it as an internal error to report (exit 70)."""
    db = tmp_path / "kcing.db"
    written = Ledger.open(str(db))
    written.record([Outcome(obj("%05d" % number), DELIVERED) for number in range(2000)],
                   destination=lambda kind: "ndjson /out")
    written.close()
    with sqlite3.connect(str(db)) as raw:
        [root] = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                             ["upstream_file_source_kind_upstream_id_destination"]).fetchone()
    _overwrite_page(db, root)
    env = feed_environ(legacy_replica, logstash, db)
    for command in (["feed_es"], ["feed_es", "--output", str(tmp_path / "out")]):
        result = kcing(command, env, tmp_path)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert result.stderr.splitlines()[-1] == (
            "kcing %s: KCING_DB %s is damaged (database disk image is malformed); left as it is: restore it "
            "from a backup, or point KCING_DB (or --db) at a new file, to which everything is sent again"
            % (command[0], db)), result.stderr
        assert "Traceback" not in result.stderr


def test_an_undated_object_not_delivered_is_tried_again_while_first_seen_from_the_first_day_kept(tmp_path):
    """A row without a date was never taken again: no day placed it before the window. It is
    while first seen from the first day drp keeps, the day drp forgets rows by."""
    from dataclasses import replace

    seen = [datetime(2024, 10, 10, 12, 0)]
    ledger = Ledger.open(str(tmp_path / "kcing.db"), clock=lambda: seen[0])
    try:
        ledger.record([Outcome(replace(obj("old"), created=None), FAILED, error="GET ... answered 503")])
        seen[0] = datetime(2024, 10, 13, 0, 0)
        ledger.record([Outcome(replace(obj("new"), created=None), FAILED, error="GET ... answered 503"),
                       Outcome(replace(obj("gone"), created=None), FAILED, error="GET ... answered 404")])
        found = list(ledger.undelivered_before("legacy", "build", "", datetime(2024, 10, 14, tzinfo=timezone.utc),
                                               datetime(2024, 10, 13, tzinfo=timezone.utc)))
        assert [(found_obj.upstream_id, found_obj.created) for found_obj in found] == [("new", None)]
        found = list(ledger.undelivered_before("legacy", "build", "", datetime(2024, 10, 14, tzinfo=timezone.utc)))
        assert sorted(found_obj.upstream_id for found_obj in found) == ["new", "old"]
    finally:
        ledger.close()


def test_the_storages_recorded_are_those_of_the_sources_feed_runs_and_a_row_edited_by_hand_says_nothing(tmp_path):
    """Where a source's rows were built is read from its own feed runs; a row edited by hand
    into something else (not JSON, a list, a storage that is no text) is passed over, not a
    traceback in the feed that reads it."""
    from kcing.ledger import models

    ledger = Ledger.open(str(tmp_path / "kcing.db"))
    try:
        for command, counts in (("feed_es", {"source": "legacy", "storage": "http://127.0.0.1:2/old"}),
                                ("feed_es", {"source": "api", "storage": "http://127.0.0.1:3"}),
                                ("reconcile", {"source": "legacy", "storage": "http://127.0.0.1:4"}),
                                ("feed_es", {"source": "legacy", "storage": 5}),
                                ("feed_es", {"source": "legacy", "storage": ["http://127.0.0.1:5"]})):
            ledger.start_run(command, counts)
        for edited in ('{"storage": "http://127.0.0.1:6", "source": "legacy"', '[{"storage": "http://127.0.0.1:7"}]'):
            run_id = ledger.start_run("feed_es")
            models.Run.update(counts=edited).where(models.Run.id == run_id).execute()
        assert ledger.storages_recorded("legacy") == {"http://127.0.0.1:2/old"}
    finally:
        ledger.close()


def test_only_a_lock_another_process_holds_is_waited_for_not_a_write_refused_for_its_older_snapshot(tmp_path):
    """A write whose transaction read before another process's commit is refused for good
    (SQLITE_BUSY_SNAPSHOT): waiting KCING_DB_LOCK_WAIT for it in slices would only end in a
    message blaming a lock; a write refused while another process writes may get the lock."""
    from kcing.ledger.database import held_by_another

    path = str(tmp_path / "wal.db")
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=wal")
    setup.execute("CREATE TABLE t (x)")
    setup.commit()
    setup.close()
    reader = sqlite3.connect(path, timeout=0, isolation_level=None)
    writer = sqlite3.connect(path, timeout=0, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT * FROM t").fetchall()
    writer.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.OperationalError) as stale:
        reader.execute("INSERT INTO t VALUES (2)")
    reader.execute("ROLLBACK")
    writer.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as locked:
        reader.execute("INSERT INTO t VALUES (3)")
    writer.execute("ROLLBACK")
    reader.close()
    writer.close()
    assert stale.value.sqlite_errorcode == 517, stale.value.sqlite_errorname
    assert not held_by_another(stale.value)
    assert held_by_another(locked.value)


def test_a_copy_of_a_ledger_another_process_locks_waits_for_it_no_longer_than_the_wait_set(tmp_path):
    """An older ledger is read through a copy (status, a dry run): Python's backup tries a locked
    file again without end, so a lock taken after the file was checked held the read for good."""
    from kcing.errors import LedgerBusy
    from kcing.ledger import identity
    from tests.test_exit_codes import locked_exclusively
    db = tmp_path / "kcing.db"
    ended = []

    def copy() -> None:
        target = sqlite3.connect(":memory:")
        try:
            identity.copy_into(str(db), target, 0.5)
        except LedgerBusy as busy:
            ended.append(str(busy))
        finally:
            target.close()
    with locked_exclusively(db):
        copying = threading.Thread(target=copy, daemon=True)
        copying.start()
        copying.join(timeout=20)
        assert not copying.is_alive(), "the copy still waits for the lock, 20 s after a wait of 0.5 s"
    assert ended == ["cannot read the ledger %s: it is locked by another process (waited 0.5s, KCING_DB_LOCK_WAIT); "
                     "try again when that process is done" % db]


# Work that grows with the ledger: SQLite's virtual-machine steps (not the machine's speed) at two
# sizes ten times apart; linear work grows about ten times, work per row per chunk a hundred.
SCALE_DESTINATION = LOGSTASH + "http://127.0.0.1:8337"
# SQLite calls the progress handler once per this many virtual-machine instructions.
SQLITE_STEP = 100


def _delivered(count: int, start: int = 0) -> list:
    """Outcomes of `count` legacy builds delivered, each with one document id kept."""
    day = datetime(2024, 10, 15, tzinfo=timezone.utc)
    outcomes = []
    for number in range(start, start + count):
        upstream_id = "%08x%016x" % (int(day.timestamp()) + number, number)
        obj = UpstreamObject("legacy", "build", upstream_id, "https://storage.example/%d/build.json" % number, day)
        ids = docids.pack(["%040x" % number])
        outcomes.append(Outcome(obj, DELIVERED, sha256="%064x" % number, document_count=1,
                                documents={"build-2024.10.15": ids}))
    return outcomes


def _ledger_with_half_missing(path: str, rows: int) -> Ledger:
    """A ledger of `rows` delivered objects, every other one then found missing by reconcile (an
    index lost whole: every object delivered into it is marked so)."""
    ledger = Ledger.open(path)
    file_ids = []
    for start in range(0, rows, 5000):
        file_ids += ledger.record(_delivered(min(5000, rows - start), start), lambda kind: SCALE_DESTINATION)
    ledger.mark_missing(file_ids[::2])
    return ledger


def _steps_to_list_missing(ledger: Ledger) -> tuple:
    """(objects `reconcile --resend` lists, SQLite steps it took to list them)."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    connection = ledger.db.connection()
    connection.set_progress_handler(count, SQLITE_STEP)
    try:
        listed = sum(1 for _ in ledger.missing_objects("legacy", destination_prefix=LOGSTASH,
                                                       destination_of=lambda kind: SCALE_DESTINATION))
    finally:
        connection.set_progress_handler(None, SQLITE_STEP)
    return listed, steps[0]


def test_listing_the_objects_held_missing_grows_linearly_with_the_ledger(tmp_path):
    """`reconcile --resend` lists the objects held as missing 500 rows at a time. Each chunk's
    query read the index of (source, kind, id, ...) for every row of the source, delivered or
    not: the whole ledger again for every 500 objects re-sent (100,000 held missing of 1,000,000
    rows, a few days' index lost, took 60 s of CPU to list)."""
    small = _ledger_with_half_missing(str(tmp_path / "small.db"), 2_000)
    try:
        small_listed, small_steps = _steps_to_list_missing(small)
    finally:
        small.close()
    large = _ledger_with_half_missing(str(tmp_path / "large.db"), 20_000)
    try:
        large_listed, large_steps = _steps_to_list_missing(large)
    finally:
        large.close()
    assert (small_listed, large_listed) == (1_000, 10_000)
    ratio = large_steps / small_steps
    # Linear work grows about 10 times for 10 times the rows; today it grows about 100 times.
    assert ratio < 25, "listing 10x as many held-missing objects took %.0fx the SQLite steps (%d vs %d)" % (
        ratio, large_steps, small_steps)
