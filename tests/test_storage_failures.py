"""The machine fails kcing, not the services: the ledger locked by another process, a full disk
under the ledger or under --output. The real `kcing` process meets each condition for real (a
second process holding SQLite's lock, a small tmpfs that fills up) and must end with one line,
its documented exit status, a closed run row, a consistent ledger and whole output records.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

from kcing import cli
from kcing.commands import status as status_command
from kcing.errors import INTERNAL_ERROR, KcingError, StorageFailed
from kcing.ledger.ledger import Ledger, Outcome
from kcing.ledger.models import DELIVERED
from kcing.records import Document, UpstreamObject
from kcing.runlock import RunLock
from kcing.shutdown import GRACE_SECONDS
from kcing.status import UNRECORDED_END
from kcing.sinks.batching import Batch
from kcing.sinks.encoding import ndjson_record
from kcing.sinks.ndjson import NdjsonDirSink, whole_records_end
from tests.feedrun import (SAMPLES, clean_environ, expected_documents, feed_environ, integrity, kcing, kcing_process,
                           ledger_states, reaped, sample_objects)
from tests.fakes.rogue_http import RogueFront, answer
from tests.fakes.serving import wait_until
from tests.tmpfs import fill_leaving, resize, small_tmpfs

needs_samples = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")


def feed(db: Path, out: Path, cwd: Path, **settings) -> subprocess.CompletedProcess:
    env = clean_environ(KCING_DB=str(db), **settings)
    return kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(out)], env, cwd)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def run_rows(db: Path) -> List[Tuple[str, str]]:
    with sqlite3.connect(str(db)) as conn:
        return conn.execute("SELECT command, outcome FROM run ORDER BY id").fetchall()


def status_runs(db: Path, cwd: Path) -> List[dict]:
    shown = kcing(["status", "--json"], clean_environ(KCING_DB=str(db)), cwd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)["runs"]


def records(path: Path) -> List[Tuple[dict, dict]]:
    """The (action, document) pairs of an NDJSON _bulk file; fails on anything but whole records."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), "%s ends in a torn line" % path
    lines = data.split(b"\n")[:-1]
    assert len(lines) % 2 == 0, "%s ends with an action line without its document" % path
    pairs = []
    for number in range(0, len(lines), 2):
        action, document = json.loads(lines[number]), json.loads(lines[number + 1])
        assert list(action) == ["index"] and set(action["index"]) == {"_index", "_id"}, lines[number][:200]
        assert isinstance(document, dict) and "index" not in document
        pairs.append((action, document))
    return pairs


def written_keys(out: Path) -> Dict[Tuple[str, str], int]:
    keys: Dict[Tuple[str, str], int] = {}
    for path in out.glob("*.ndjson"):
        for action, _ in records(path):
            key = (action["index"]["_index"], action["index"]["_id"])
            keys[key] = keys.get(key, 0) + 1
    return keys


# -- --output on a full disk ----------------------------------------------------------------------

@needs_samples
def test_output_on_a_full_disk_keeps_whole_records_and_the_next_run_completes(tmp_path):
    db, out = tmp_path / "kcing.db", tmp_path / "out"
    expected = expected_documents(sample_objects())
    with small_tmpfs(out, "1m"):
        full = feed(db, out, tmp_path)
        assert full.returncode == 5, full.stdout + full.stderr
        assert last_line(full).startswith("kcing feed_es: cannot write the output file %s/" % out)
        assert "No space left on device" in last_line(full)
        first = written_keys(out)  # whole records only, in every file
        assert first, "a 1 MiB disk holds some of the samples' documents"
        delivered = {key for key, state in ledger_states(db).items() if state == "delivered"}
        for obj in sample_objects():
            if (obj.kind, obj.upstream_id) in delivered:
                assert set(expected_documents([obj])) <= set(first)
        assert status_runs(db, tmp_path)[0]["outcome"] == "error 5"

        resize(out, "16m")
        again = feed(db, out, tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert set(written_keys(out)) == set(expected)
        assert integrity(db) == "ok"


@needs_samples
def test_a_torn_tail_left_by_a_killed_run_is_cut_before_appending(tmp_path):
    db, out = tmp_path / "kcing.db", tmp_path / "out"
    out.mkdir()
    action = b'{"index":{"_index":"build-2019.05.30","_id":"' + b"0" * 40 + b'"}}\n'
    document = b'{"@timestamp":"2019-05-30T00:00:00Z","job":"next"}\n'
    whole = action + document
    (out / "build.ndjson").write_bytes(whole + action + document[:20])  # killed inside a document
    (out / "lava.ndjson").write_bytes(whole + action)  # killed between an action and its document
    done = feed(db, out, tmp_path)
    assert done.returncode == 0, done.stderr
    for name in ("build.ndjson", "lava.ndjson"):
        assert (out / name).read_bytes().startswith(whole + b'{"index"')
        assert records(out / name)


def test_the_end_of_whole_records_is_found_from_the_tail(tmp_path):
    path = tmp_path / "f.ndjson"
    action = b'{"index":{"_index":"i","_id":"a"}}\n'
    document = b'{"@timestamp":"t","message":"' + b"x" * 200_000 + b'"}\n'
    for tail, kept in ((b"", 2), (action, 2), (action + document[:70_000], 2), (document[:10], 2),
                       (action + document, 4)):
        path.write_bytes(action + document + tail)
        fd = os.open(str(path), os.O_RDONLY)
        try:
            assert whole_records_end(fd) == len((action + document) * (kept // 2))
        finally:
            os.close(fd)
    path.write_bytes(b'{"torn')
    fd = os.open(str(path), os.O_RDONLY)
    assert whole_records_end(fd) == 0
    os.close(fd)


def test_a_versioned_action_line_left_without_its_document_is_cut_too(tmp_path):
    # A KernelCI API node's action line carries its version: kept, it would take the next
    # record's action line for its document, and Elasticsearch refuse the file's whole _bulk.
    document = Document("test", "test-2024.10.16", "a" * 40, "2024-10-16T02:22:58.113Z", {"message": "x" * 5000},
                        version=1729045378113000)
    record = ndjson_record(document)
    action = record[:record.index(b"\n") + 1]
    assert b'"version":1729045378113000' in action
    path = tmp_path / "test.ndjson"
    for tail in (action, action + record[len(action):len(action) + 100]):
        path.write_bytes(record + tail)
        fd = os.open(str(path), os.O_RDONLY)
        try:
            assert whole_records_end(fd) == len(record)
        finally:
            os.close(fd)


def test_a_failed_append_is_cut_back_and_reported(tmp_path):
    with small_tmpfs(tmp_path / "out", "64k") as out:
        sink = NdjsonDirSink(str(out))
        small = Batch.of_items("build", [b'{"index":{"_index":"i","_id":"a"}}\n{"@timestamp":"t"}\n'], [("o",)],
                               NdjsonDirSink.separator)
        sink.send(small)
        large = Batch.of_items("build", [b'{"index":{"_index":"i","_id":"b"}}\n{"m":"' + b"y" * 200_000 + b'"}\n'],
                               [("p",)], NdjsonDirSink.separator)
        with pytest.raises(StorageFailed, match="cut back to its last whole record"):
            sink.send(large)
        assert (out / "build.ndjson").read_bytes() == small.items[0]


def test_a_new_output_file_and_the_directories_made_for_it_are_flushed_by_name_before_the_batch_counts(
        tmp_path, monkeypatch):
    # A file's records outlive a power loss only once its name in its directory does, and that
    # directory's name in its parent: fsync of the file alone left both to the kernel's leisure.
    from kcing.sinks import ndjson
    out = tmp_path / "made" / "out"
    synced: List[Tuple[str, str]] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        kind = "directory" if os.path.isdir("/proc/self/fd/%d" % fd) else "file"
        synced.append((kind, os.readlink("/proc/self/fd/%d" % fd)))

    monkeypatch.setattr(ndjson.os, "fsync", recording_fsync)
    sink = NdjsonDirSink(str(out))
    record = b'{"index":{"_index":"i","_id":"a"}}\n{"@timestamp":"t"}\n'
    sink.send(Batch.of_items("build", [record], [("o",)], NdjsonDirSink.separator))
    assert synced[0] == ("file", str(out / "build.ndjson"))
    assert set(synced[1:]) == {("directory", str(out)), ("directory", str(out.parent)),
                               ("directory", str(tmp_path))}
    synced.clear()
    sink.send(Batch.of_items("build", [record], [("p",)], NdjsonDirSink.separator))
    assert synced == [("file", str(out / "build.ndjson"))]  # an existing name: nothing more to flush
    synced.clear()
    sink.send(Batch.of_items("boot", [record], [("q",)], NdjsonDirSink.separator))
    assert synced == [("file", str(out / "boot.ndjson")), ("directory", str(out))]  # a new name: flushed


# -- the ledger on a full disk --------------------------------------------------------------------

@needs_samples
def test_a_full_disk_under_the_ledger_is_exit_5_with_the_run_closed_and_the_ledger_whole(tmp_path):
    ledger_dir, out = tmp_path / "ledger", tmp_path / "out"
    with small_tmpfs(ledger_dir, "512k"):
        db = ledger_dir / "kcing.db"
        Ledger.open(str(db)).close()
        filler = fill_leaving(ledger_dir, 128)
        full = feed(db, out, tmp_path)
        assert full.returncode == 5, full.stdout + full.stderr
        assert last_line(full) == ("kcing feed_es: cannot write the ledger %s: the disk is full; the ledger keeps "
                                   "every whole transaction, and the next run does again what this one could "
                                   "not record" % db)
        assert integrity(db) == "ok"
        assert run_rows(db) == [("feed_es", "error 5")]
        assert "running or killed" not in json.dumps(status_runs(db, tmp_path))
        recorded = {key for key, state in ledger_states(db).items() if state == "delivered"}
        assert len(recorded) < len(sample_objects())
        # The summary counts as delivered only what the ledger kept as delivered.
        assert ", delivered %d," % len(recorded) in full.stdout, full.stdout

        filler.unlink()
        again = feed(db, out, tmp_path)
        assert again.returncode == 0, again.stderr
        assert set(ledger_states(db).values()) == {"delivered"}
        assert len(ledger_states(db)) == len(sample_objects())
        assert set(written_keys(out)) == set(expected_documents(sample_objects()))


@needs_samples
def test_a_disk_that_stays_full_to_the_runs_end_still_gives_the_summary_and_the_metrics(tmp_path):
    """The disk under the ledger fills mid-run and stays full: the write that closes the run's row
    failed too, and the run ended with its one line alone: no summary of what it did, and the
    metrics file (on another disk) kept the last run's exit code 0, which an alert on it missed."""
    from prometheus_client.parser import text_string_to_metric_families
    ledger_dir, out, prom = tmp_path / "ledger", tmp_path / "out", tmp_path / "kcing.prom"
    with small_tmpfs(ledger_dir, "1m"):
        db = ledger_dir / "kcing.db"
        prom.write_text("kcing_feed_exit_code{source=\"samples\"} 0\n")
        run = kcing_process(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(out),
                             "--metrics", str(prom)], clean_environ(KCING_DB=str(db), ES_LOAD_INTERVAL="0.5"), tmp_path)
        with reaped(run):
            assert wait_until(lambda: out.is_dir() and any(out.glob("*.ndjson")), timeout=30)
            fill_leaving(ledger_dir, 0)
            stdout, stderr = run.communicate(timeout=60)
        assert run.returncode == 5, stdout + stderr
        assert stderr.strip().splitlines()[-1].startswith("kcing feed_es: cannot write the ledger %s: " % db), stderr
        assert "feed_es: listed 11, skipped 0 (already delivered), downloaded" in stdout, stdout
        exit_codes = [sample.value for family in text_string_to_metric_families(prom.read_text())
                      for sample in family.samples if sample.name == "kcing_feed_exit_code"]
        assert exit_codes == [5], prom.read_text()
        assert integrity(db) == "ok"


@needs_samples
@pytest.mark.parametrize("left_kib", [8, 16, 24])
@pytest.mark.parametrize("ledger_made", [True, False])
def test_a_disk_too_full_for_the_ledgers_shm_file_is_said_to_be_full(tmp_path, left_kib, ledger_made):
    """With a few KiB left, SQLite fails to grow the WAL ledger's -shm file and says 'disk I/O
    error' (SQLITE_IOERR_SHMSIZE, or, from a commit, no code at all), not that the disk is full:
    the line said a failing device might be to blame, where the disk was full."""
    ledger_dir = tmp_path / "ledger"
    with small_tmpfs(ledger_dir, "512k"):
        db = ledger_dir / "kcing.db"
        if ledger_made:
            Ledger.open(str(db)).close()
        fill_leaving(ledger_dir, left_kib)
        full = feed(db, tmp_path / "out", tmp_path)
        assert full.returncode == 5, full.stdout + full.stderr
        assert last_line(full) == ("kcing feed_es: cannot write the ledger %s: the disk is full; the ledger keeps "
                                   "every whole transaction, and the next run does again what this one could "
                                   "not record" % db)


def test_a_full_disk_under_the_ledger_stops_drp_with_exit_5_every_row_kept_and_the_next_drp_forgets_them(tmp_path):
    """drp's one transaction needs room in the -wal file for every page it changes: on a disk
    without it the line says what the next drp does (forget them), not what a feed does."""
    from tests.fakes.elastic_server import ElasticsearchEmulator
    ledger_dir = tmp_path / "ledger"
    with small_tmpfs(ledger_dir, "4m"), ElasticsearchEmulator() as es:
        db = ledger_dir / "kcing.db"
        long_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=30)
        ledger = Ledger.open(str(db), clock=lambda: long_ago)
        ledger.record([Outcome(UpstreamObject("legacy", "build", "b%05d" % number, "http://x/b%05d" % number),
                               DELIVERED) for number in range(6000)])
        ledger.close()
        filler = fill_leaving(ledger_dir, 16)
        env = clean_environ(KCING_DB=str(db), ES_HOST=es.url, DRP_DAYS="3", KCI_DAYS="2")
        full = kcing(["drp"], env, tmp_path)
        assert full.returncode == 5, full.stdout + full.stderr
        assert last_line(full) == ("kcing drp: cannot write the ledger %s: the disk is full; the ledger keeps "
                                   "every whole transaction, and the next run does again what this one could "
                                   "not record" % db)
        filler.unlink()  # (reading the ledger needs room too, for its -shm file)
        assert integrity(db) == "ok"
        assert len(ledger_states(db)) == 6000
        again = kcing(["drp"], env, tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "forgot 6000 ledger rows" in again.stdout, again.stdout
        assert ledger_states(db) == {}


def test_no_room_even_to_open_the_ledger_is_exit_5(tmp_path):
    ledger_dir = tmp_path / "ledger"
    with small_tmpfs(ledger_dir, "256k"):
        db = ledger_dir / "kcing.db"
        Ledger.open(str(db)).close()
        fill_leaving(ledger_dir, 0)
        full = feed(db, tmp_path / "out", tmp_path)
        assert full.returncode == 5, full.stderr
        assert "kcing feed_es: cannot write" in last_line(full)


# -- the ledger locked by another process ---------------------------------------------------------

HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@contextmanager
def ledger_locked_by_another_process(db: Path) -> Iterator[subprocess.Popen]:
    """A second process holding SQLite's write lock on `db` until the block ends."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


@needs_samples
def test_a_ledger_locked_past_the_wait_is_exit_4_in_one_line_after_a_bounded_wait(tmp_path):
    db, out = tmp_path / "kcing.db", tmp_path / "out"
    assert feed(db, out, tmp_path).returncode == 0
    before = ledger_states(db)
    with ledger_locked_by_another_process(db):
        started = time.monotonic()
        locked = feed(db, out, tmp_path, KCING_DB_LOCK_WAIT="2")
        took = time.monotonic() - started
        assert locked.returncode == 4, locked.stdout + locked.stderr
        assert last_line(locked) == ("kcing feed_es: the ledger %s is locked by another process (waited 2s, "
                                     "KCING_DB_LOCK_WAIT); nothing more was recorded: try again when that process "
                                     "is done" % db)
        assert 2 <= took < 30
        # Reading is not blocked: status works while the lock is held.
        assert status_runs(db, tmp_path)[0]["outcome"] == "ok"
    assert ledger_states(db) == before
    assert [outcome for _, outcome in run_rows(db)] == ["ok"]
    assert integrity(db) == "ok"


@needs_samples
def test_a_ledger_locked_for_less_than_the_wait_is_waited_for(tmp_path):
    db, out = tmp_path / "kcing.db", tmp_path / "out"
    Ledger.open(str(db)).close()
    with ledger_locked_by_another_process(db):
        env = clean_environ(KCING_DB=str(db), KCING_DB_LOCK_WAIT="60")
        running = kcing_process(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output",
                                 str(out)], env, tmp_path)
        time.sleep(1.5)
        assert running.poll() is None  # waiting for the lock, not failing
    stdout, stderr = running.communicate(timeout=120)
    assert running.returncode == 0, stdout + stderr
    assert set(ledger_states(db).values()) == {"delivered"}


HOLD_LOCK_THEN_WRITE = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO run (command, started) VALUES ('operator', '2024-10-16 08:00:00')")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@contextmanager
def ledger_written_by_another_process(db: Path, seconds: float) -> Iterator[None]:
    """A second process holding SQLite's write lock on `db` for `seconds`, then committing a row:
    what an operator's sqlite3 shell does."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK_THEN_WRITE, str(db), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield
    finally:
        holder.wait(timeout=30)


def _unmarked(db: Path) -> None:
    """As a kcing from before the application_id marker left it: status reads a copy of it, as
    it does of any ledger this user may not write to (a monitoring account's)."""
    raw = sqlite3.connect(str(db))
    raw.execute("PRAGMA application_id = 0")
    raw.close()


@pytest.mark.parametrize("change", [_unmarked, lambda db: None], ids=["opening writes", "opening reads"])
def test_opening_a_ledger_another_process_is_writing_waits_for_it(tmp_path, change):
    """Opening reads the ledger's version, then marks or migrates it: in one transaction begun for
    reading, SQLite refuses the write at once when another process holds the lock, without the
    wait, and the run stopped saying it had waited KCING_DB_LOCK_WAIT."""
    db = tmp_path / "kcing.db"
    Ledger.open(str(db)).close()
    change(db)
    with ledger_written_by_another_process(db, 1.5):
        started = time.monotonic()
        ledger = Ledger.open(str(db), wait=20)
        took = time.monotonic() - started
    assert ledger.last_run("operator") is not None
    ledger.close()
    assert took < 15
    assert integrity(db) == "ok"


def test_moving_a_watermark_while_another_process_writes_the_ledger_waits_for_it(tmp_path):
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db), wait=20)
    ledger.advance_watermark("api", datetime(2024, 10, 16, tzinfo=timezone.utc), "logstash")
    assert ledger.watermark("api", "logstash") is not None  # the transaction that reads it is over
    with ledger_written_by_another_process(db, 1.5):
        moved = ledger.advance_watermark("api", datetime(2024, 10, 17, tzinfo=timezone.utc), "logstash")
    assert moved == datetime(2024, 10, 17, tzinfo=timezone.utc)
    assert ledger.last_run("operator") is not None
    ledger.close()


def test_status_of_a_ledger_lacking_an_index_a_later_kcing_added_reads_it_while_another_process_writes(tmp_path):
    """status made the index (a write, however large the ledger): it changed the file it only
    reads, and while another process held the write lock it stopped at once with exit 4."""
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(UpstreamObject("legacy", "build", "5fa2773359b5140d3b3a61d1", "https://x/build.json"),
                           DELIVERED)], destination=lambda kind: "ndjson /out")
    ledger.close()
    with sqlite3.connect(str(db)) as raw:
        raw.execute('DROP INDEX "upstream_file_source_kind_upstream_id_destination_state"')
    raw.close()
    before = db.read_bytes()
    env = clean_environ(KCING_DB=str(db), KCING_DB_LOCK_WAIT="5")
    with ledger_locked_by_another_process(db):
        shown = kcing(["status", "--json"], env, tmp_path)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert json.loads(shown.stdout)["objects"]["legacy"]["build"]["delivered"] == 1
    assert kcing(["status"], env, tmp_path).returncode == 0
    assert db.read_bytes() == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kcing.db"]


READ_FOR = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM run").fetchall()
print("reading", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def test_a_ledger_in_rollback_journal_mode_that_another_process_reads_is_waited_for_as_long_as_set(tmp_path):
    """Opening puts the ledger back in WAL mode (a copy made by a backup tool may not be in it),
    which waits for readers to finish: it gave up after SQLite's default 5 s, whatever
    KCING_DB_LOCK_WAIT said, and said it had waited KCING_DB_LOCK_WAIT."""
    db = tmp_path / "kcing.db"
    Ledger.open(str(db)).close()
    with sqlite3.connect(str(db)) as raw:
        raw.execute("PRAGMA journal_mode = delete")
    raw.close()
    reader = subprocess.Popen([sys.executable, "-c", READ_FOR, str(db), "7"], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "reading"
        started = time.monotonic()
        ledger = Ledger.open(str(db), wait=30)
        took = time.monotonic() - started
        ledger.close()
    finally:
        reader.wait(timeout=30)
    assert 5 < took < 25
    with sqlite3.connect(str(db)) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


# -- every end of a run closes its row --------------------------------------------------------------

@pytest.mark.parametrize("error, outcome", [(StorageFailed("disk full"), "error 5"),
                                            (KeyboardInterrupt(), "error 130"),
                                            (ValueError("a bug"), "error %d" % INTERNAL_ERROR)])
def test_a_run_ended_by_any_exception_closes_its_row(tmp_path, error, outcome):
    ledger = Ledger.open(str(tmp_path / "kcing.db"))
    with pytest.raises(type(error)):
        with ledger.recorded_run("feed_es", {"source": "samples"}):
            raise error
    assert run_rows(tmp_path / "kcing.db") == [("feed_es", outcome)]
    ledger.close()


def test_an_unexpected_error_is_one_line_and_exit_70(tmp_path, monkeypatch, capsys):
    def broken(args, settings):
        raise ValueError("secret-looking text that must not be printed")

    monkeypatch.setattr(status_command, "run", broken)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["status"]) == INTERNAL_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["kcing status: internal error (ValueError); run again with -d for the traceback, and report it"]
    assert issubclass(StorageFailed, KcingError) and StorageFailed.exit_code == 5


# -- files kcing replaces whole, on a full disk -----------------------------------------------------

def test_setup_ls_on_a_full_disk_is_exit_5_and_leaves_pipelines_yml_as_it_was(tmp_path):
    with small_tmpfs(tmp_path / "logstash", "256k") as home:
        (home / "config").mkdir()
        pipelines = home / "config" / "pipelines.yml"
        original = "- pipeline.id: main\n  path.config: /etc/logstash/conf.d/main.conf\n"
        pipelines.write_text(original)
        fill_leaving(home, 0)
        result = kcing(["setup_ls"], clean_environ(LS_HOME=str(home)), tmp_path)
        assert result.returncode == 5, result.stdout + result.stderr
        assert last_line(result).startswith("kcing setup_ls: cannot write %s/config/pipelines.yml." % home)
        assert "No space left on device" in last_line(result)
        assert pipelines.read_text() == original
        assert not list((home / "config").glob(".partial-*"))


def test_setup_kbn_whose_backup_finds_a_full_disk_is_exit_5_and_imports_nothing(tmp_path):
    from tests.fakes.kibana_server import KibanaEmulator
    shipped = Path(__file__).resolve().parent.parent / "kibana" / "saved_objects.ndjson"
    with small_tmpfs(tmp_path / "kibana", "256k") as kibana_dir, KibanaEmulator() as kibana:
        (kibana_dir / "saved_objects.ndjson").write_bytes(shipped.read_bytes())
        env = clean_environ(KB_URL=kibana.url)
        first = kcing(["setup_kbn", "--kibana-dir", str(kibana_dir)], env, tmp_path)
        assert first.returncode == 0, first.stdout + first.stderr  # nothing to back up yet
        imports = len([record for record in kibana.requests if record.route == "/api/saved_objects/_import"])
        fill_leaving(kibana_dir, 0)
        result = kcing(["setup_kbn", "--kibana-dir", str(kibana_dir), "--overwrite"], env, tmp_path)
        assert result.returncode == 5, result.stdout + result.stderr
        assert last_line(result).startswith("kcing setup_kbn: cannot write %s/backups/" % kibana_dir)
        assert "No space left on device" in last_line(result)
        assert len([record for record in kibana.requests if record.route == "/api/saved_objects/_import"]) == imports
        assert not list(kibana_dir.rglob(".partial-*"))


def test_status_tells_a_running_run_from_one_that_ended_without_a_record(tmp_path):
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.start_run("feed_es")  # a run that was killed, or could not write its end
    ledger.close()
    assert status_runs(db, tmp_path)[0]["outcome"] == UNRECORDED_END
    with RunLock(str(db)):
        ledger = Ledger.open(str(db))
        ledger.start_run("feed_es")  # the run holding the lock now
        ledger.close()
        shown = status_runs(db, tmp_path)
    assert [run["outcome"] for run in shown] == ["running (pid %d)" % os.getpid(), UNRECORDED_END]
    text = kcing(["status"], clean_environ(KCING_DB=str(db)), tmp_path).stdout
    assert "running or killed" not in text and UNRECORDED_END in text


def test_status_read_from_a_copy_names_the_ledger_and_tells_the_run_holding_its_lock(tmp_path):
    """It said `ledger: :memory:` and took the run in progress for one that ended without a record."""
    db = tmp_path / "kcing.db"
    with RunLock(str(db)):
        ledger = Ledger.open(str(db))
        ledger.start_run("feed_es")  # the run holding the lock now
        ledger.close()
        _unmarked(db)
        shown = kcing(["status", "--json"], clean_environ(KCING_DB=str(db)), tmp_path)
        text = kcing(["status"], clean_environ(KCING_DB=str(db)), tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["ledger"] == str(db)
    assert [run["outcome"] for run in json.loads(shown.stdout)["runs"]] == ["running (pid %d)" % os.getpid()]
    assert text.stdout.splitlines()[0] == "ledger: %s" % db


def test_damage_met_in_a_copy_of_the_ledger_names_the_ledger(tmp_path):
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.start_run("feed_es")
    ledger.close()
    _unmarked(db)
    with sqlite3.connect(str(db)) as raw:
        [root] = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'run'").fetchone()
        size = raw.execute("PRAGMA page_size").fetchone()[0]
    raw.close()
    with open(str(db), "r+b") as handle:
        handle.seek((root - 1) * size)
        handle.write(b"\xff" * size)
    shown = kcing(["status"], clean_environ(KCING_DB=str(db)), tmp_path)
    assert shown.returncode == 2, shown.stdout + shown.stderr
    assert shown.stderr.splitlines() == ["kcing status: KCING_DB %s is damaged (database disk image is malformed); "
                                         "left as it is: restore it from a backup, or point KCING_DB (or --db) at "
                                         "a new file, to which everything is sent again" % db]


def test_gen_samples_on_a_full_disk_is_exit_5_and_keeps_whole_files(legacy_replica, logstash, tmp_path):
    with small_tmpfs(tmp_path / "saved", "256k") as samples:
        env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
        result = kcing(["gen_samples"], env, tmp_path)
        assert result.returncode == 5, result.stdout + result.stderr
        assert last_line(result).startswith("kcing gen_samples: cannot write %s/" % samples)
        assert "No space left on device" in last_line(result)
        assert not list(samples.rglob(".partial-*"))
        manifest = samples / "manifest.json"
        saved = json.loads(manifest.read_text())["objects"] if manifest.exists() else []
        for entry in saved:  # whatever the manifest lists is there, whole
            content = (samples / entry["path"]).read_bytes()
            assert len(content) == entry["size"]


@needs_samples
def test_a_log_file_on_a_full_disk_is_reported_once_not_with_tracebacks(tmp_path):
    with small_tmpfs(tmp_path / "logs", "64k") as logs:
        log_file = logs / "feed.log"
        log_file.write_text("")
        fill_leaving(logs, 0)
        env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
        done = kcing(["-l", str(log_file), "feed_es", "--source", "samples", "--samples-dir", str(SAMPLES),
                      "--output", str(tmp_path / "out")], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Logging error" not in done.stderr
    assert done.stderr.count("kcing: cannot write the log file %s: No space left on device" % log_file) == 1
    assert "run finished" in done.stderr


HOLD_LOCK_WHEN_RUNNING = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
while not conn.execute("SELECT 1 FROM run WHERE ended IS NULL").fetchone():
    time.sleep(0.01)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


def _run_to_be_locked(legacy_replica, logstash, tmp_path, **settings):
    """A new ledger, the environment of a feed to the replicas with `settings`, its posts slowed
    so that the run is long enough to be caught in the middle, and a process that takes the
    ledger's write lock once the run has begun (it holds it until its stdin is closed)."""
    db = tmp_path / "kcing.db"
    Ledger.open(str(db)).close()
    env = feed_environ(legacy_replica, logstash, db, **settings)
    logstash.lava.slow_next(0.3, count=None)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK_WHEN_RUNNING, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    return db, env, holder


@needs_samples
def test_a_ledger_locked_mid_run_stops_it_in_one_line_and_loses_nothing(legacy_replica, logstash, tmp_path):
    db, env, holder = _run_to_be_locked(legacy_replica, logstash, tmp_path, KCING_DB_LOCK_WAIT="1",
                                        LS_PIPELINE_BATCH_SIZE="100")
    try:
        stopped = kcing(["feed_es"], env, tmp_path)
        assert holder.stdout.readline().strip() == "locked"
        assert stopped.returncode == 4, stopped.stdout + stopped.stderr
        assert last_line(stopped).startswith("kcing feed_es: the ledger %s is locked by another process (waited 1s"
                                             % db)
        # The run could not write its end either; status says what became of it.
        assert status_runs(db, tmp_path)[0]["outcome"] == UNRECORDED_END
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert integrity(db) == "ok"
    stored = set(logstash.store.keys())
    for obj in sample_objects():
        if ledger_states(db).get((obj.kind, obj.upstream_id)) == "delivered":
            assert set(expected_documents([obj])) <= stored
    logstash.lava.clear_faults()
    again = kcing(["feed_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert set(ledger_states(db).values()) == {"delivered"}
    assert set(logstash.store.keys()) == set(expected_documents(sample_objects()))


@needs_samples
def test_a_ledger_locked_mid_run_ends_another_posts_wait_to_retry(legacy_replica, logstash, tmp_path):
    """The ledger locked past KCING_DB_LOCK_WAIT while a LAVA batch waits 100 s to be retried
    (429, Retry-After): the run, which could record nothing more, waited that out and posted the
    batch again. It now ends at once, exit 4, and leaves the batch to the next run."""
    db = tmp_path / "kcing.db"
    logstash.build.block_pipeline()  # the builds' batch is answered once the ledger is locked
    try:
        with RogueFront(logstash.urls["lava"]) as lava_front:
            lava_front.on("POST", "/", answer(429, (("Retry-After", "100"),), b"busy"), count=1)
            env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url, KCING_DB_LOCK_WAIT="1",
                               ES_TIMEOUT="60")
            with reaped(kcing_process(["feed_es", "--batch-size", "5"], env, tmp_path)) as running:
                assert wait_until(lambda: lava_front.requests.snapshot() and logstash.build.inflight, timeout=30)
                with ledger_locked_by_another_process(db):
                    logstash.build.unblock_pipeline()
                    unblocked = time.monotonic()
                    _, stderr = running.communicate(timeout=300)
                    took = time.monotonic() - unblocked
            assert running.returncode == 4, stderr
            assert took < 30, stderr
            assert stderr.splitlines()[-1].startswith("kcing feed_es: the ledger %s is locked by another process "
                                                      "(waited 1s" % db), stderr
            assert len(lava_front.requests) == 1  # the batch that waited was not retried
            assert integrity(db) == "ok"
            assert not any(state == "delivered" for (kind, _), state in ledger_states(db).items() if kind == "lava")
            lava_front.clear()  # it forwards to the LAVA input now: the next run sends the rest
            again = kcing(["feed_es"], env, tmp_path)
    finally:
        logstash.build.unblock_pipeline()
    assert again.returncode == 0, again.stderr
    assert set(ledger_states(db).values()) == {"delivered"}


@needs_samples
def test_a_signal_is_acted_on_while_the_ledger_is_locked_and_the_run_waits_no_longer_than_its_grace(
        legacy_replica, logstash, tmp_path):
    """SIGTERM while a write waits for another process's lock: the main thread was inside SQLite
    for the whole KCING_DB_LOCK_WAIT (60 s here, up to a day), the signal's handler unrun until
    then, where a stopping service kills after 10 s. The signal is now taken at once, and the
    run waits for the lock as long as it waits for the batch in flight, then ends in one line."""
    db, env, holder = _run_to_be_locked(legacy_replica, logstash, tmp_path, KCING_DB_LOCK_WAIT="60",
                                        LS_PIPELINE_BATCH_SIZE="20")
    try:
        running = kcing_process(["feed_es"], env, tmp_path)
        assert holder.stdout.readline().strip() == "locked"
        time.sleep(1)  # the run's next write waits for the lock
        running.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        stdout, stderr = running.communicate(timeout=120)
        took = time.monotonic() - signalled
        assert running.returncode == 4, stdout + stderr
        assert took < GRACE_SECONDS + 5, took
        assert stderr.splitlines()[-1] == (
            "kcing feed_es: the ledger %s is locked by another process, and a run stopped by a signal waits for it "
            "no longer than for the batch in flight; nothing more was recorded: try again when that process is done"
            % db)
        taken = [line for line in stderr.splitlines() if "SIGTERM received" in line]
        assert len(taken) == 1, stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert integrity(db) == "ok"


@needs_samples
def test_a_run_that_found_the_ledger_locked_past_the_wait_does_not_wait_again_for_each_write_left(
        legacy_replica, logstash, tmp_path):
    """After the first write that waited KCING_DB_LOCK_WAIT in vain, the posts still answered,
    the run's outcomes and its row each waited as long again: four times the wait set, for a
    line saying the run had waited it once."""
    # (Posts are still in flight when the first write gives up.)
    db, env, holder = _run_to_be_locked(legacy_replica, logstash, tmp_path, KCING_DB_LOCK_WAIT="6",
                                        LS_PIPELINE_BATCH_SIZE="20")
    try:
        running = kcing_process(["feed_es"], env, tmp_path)
        assert holder.stdout.readline().strip() == "locked"
        locked = time.monotonic()
        stdout, stderr = running.communicate(timeout=120)
        took = time.monotonic() - locked
        assert running.returncode == 4, stdout + stderr
        assert stderr.splitlines()[-1].startswith("kcing feed_es: the ledger %s is locked by another process "
                                                  "(waited 6s" % db)
        assert took < 6 + 5, took
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert integrity(db) == "ok"
