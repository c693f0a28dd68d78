""""Delivered" means delivered to this run's destination: Logstash inputs or an NDJSON directory.

Runs the real program over the bundled samples against the Logstash emulators."""
from __future__ import annotations

import json
import os
from collections import Counter
import resource
import signal
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kcing import settings as settings_module
from kcing.ledger.ledger import Ledger, Outcome
from kcing.ledger.models import APPLICATION_ID, DELIVERED, SCHEMA_VERSION
from kcing.ledgerfile import open_ledger
from kcing.records import BUILD, UpstreamObject
from kcing.sinks import logstash_destination, logstash_destinations_key
from tests.fakes.api_data import checkout_tree
from tests.fakes.api_replica import ApiReplica
from tests.feedrun import REPO, SAMPLES, api_feed_environ, clean_environ, kcing, sample_objects

SAMPLE_COUNT = len(sample_objects())


def environ(logstash, db: Path, **extra) -> dict:
    return clean_environ(KCING_DB=str(db), KCI_SAMPLES_DIR=str(SAMPLES), ES_BUILD=logstash.urls["build"],
                         ES_LAVA=logstash.urls["lava"], ES_BOOT=logstash.urls["boot"], **extra)


def status(env, cwd) -> dict:
    shown = kcing(["status", "--json"], env, cwd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def delivered_per_destination(data: dict) -> dict:
    return {destination: sum(counts["delivered"] for kinds in sources.values() for counts in kinds.values())
            for destination, sources in data["destinations"].items()}


def test_an_output_directory_reached_through_a_link_is_the_same_destination(logstash, tmp_path):
    env = environ(logstash, tmp_path / "kcing.db")
    out = tmp_path / "out"
    first = kcing(["feed_es", "--source", "samples", "--output", str(out)], env, tmp_path)
    assert first.returncode == 0, first.stderr
    written = {path.name: path.read_bytes() for path in out.glob("*.ndjson")}
    (tmp_path / "link").symlink_to(out, target_is_directory=True)
    again = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "link")], env, tmp_path)
    assert "skipped %d (already delivered)" % SAMPLE_COUNT in again.stdout
    assert {path.name: path.read_bytes() for path in out.glob("*.ndjson")} == written  # nothing appended twice


def test_logstash_inputs_written_in_another_case_or_twice_are_the_same_destination(logstash, tmp_path):
    """`ES_BUILD=HTTP://127.0.0.1:PORT`, or the input listed twice, made a destination of its own:
    every build in the window was downloaded and sent again, and status showed it apart."""
    env = environ(logstash, tmp_path / "kcing.db")
    first = kcing(["feed_es", "--source", "samples"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    build = logstash.urls["build"]
    for written in (build.upper(), "%s,%s/" % (build, build.replace("http://", "HTTP://"))):
        again = kcing(["feed_es", "--source", "samples"], dict(env, ES_BUILD=written), tmp_path)
        assert again.returncode == 0, again.stderr
        assert "skipped %d (already delivered)" % SAMPLE_COUNT in again.stdout, (written, again.stdout)
    kinds = Counter(obj.kind for obj in sample_objects())
    assert delivered_per_destination(status(env, tmp_path)) == {
        "logstash %s" % logstash.urls[kind]: count for kind, count in kinds.items()}


def test_a_logstash_input_written_with_its_scheme_s_default_port_is_the_same_destination():
    # `https://ls:443` and `https://ls` are one input: named apart, a change of spelling in
    # ES_BUILD sent every build of the window again.
    assert logstash_destination(["https://ls:443"]) == logstash_destination(["https://LS"]) == "logstash https://ls"
    assert logstash_destination(["http://ls:80/"]) == logstash_destination(["http://ls/"])
    assert logstash_destination(["http://[::1]:80"]) == "logstash http://[::1]"
    assert logstash_destination(["https://ls:80"]) == "logstash https://ls:80"
    assert logstash_destination(["http://ls:443"]) == "logstash http://ls:443"
    assert logstash_destination(["http://ls:8080"]) == "logstash http://ls:8080"


def test_a_dry_run_to_an_output_directory_creates_nothing(logstash, tmp_path):
    env = environ(logstash, tmp_path / "kcing.db")
    planned = kcing(["feed_es", "--source", "samples", "--dry-run", "--output", str(tmp_path / "new")], env, tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "%d would be fetched" % SAMPLE_COUNT in planned.stdout
    assert not (tmp_path / "new").exists()


def test_files_written_with_output_do_not_make_logstash_skip_them(logstash, tmp_path):
    env = environ(logstash, tmp_path / "kcing.db")
    out = tmp_path / "out"
    offline = kcing(["feed_es", "--source", "samples", "--output", str(out)], env, tmp_path)
    assert offline.returncode == 0, offline.stderr
    assert "delivered %d" % SAMPLE_COUNT in offline.stdout

    posted = kcing(["feed_es", "--source", "samples"], env, tmp_path)
    assert posted.returncode == 0, posted.stderr
    assert "skipped 0 (already delivered), downloaded %d, delivered %d" % (SAMPLE_COUNT, SAMPLE_COUNT) in posted.stdout
    stored = len(logstash.store)
    assert stored > 0

    again = kcing(["feed_es", "--source", "samples"], env, tmp_path)
    assert "skipped %d (already delivered)" % SAMPLE_COUNT in again.stdout
    assert len(logstash.store) == stored
    elsewhere = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "elsewhere")], env, tmp_path)
    assert "skipped 0 (already delivered)" in elsewhere.stdout

    routes = {"logstash %s" % logstash.urls[kind] for kind in ("build", "lava", "boot")}
    delivered = delivered_per_destination(status(env, tmp_path))
    assert set(delivered) == routes | {"ndjson %s" % out, "ndjson %s" % (tmp_path / "elsewhere")}
    assert sum(delivered[route] for route in routes) == SAMPLE_COUNT
    assert delivered["ndjson %s" % out] == SAMPLE_COUNT

    text = kcing(["status"], env, tmp_path).stdout
    assert "to ndjson %s:" % out in text and "to logstash %s:" % logstash.urls["lava"] in text


# The previous schema (2), as that kcing created it.
SCHEMA_2 = [
    'CREATE TABLE "upstream_file" ("id" INTEGER NOT NULL PRIMARY KEY, "source" VARCHAR(255) NOT NULL, '
    '"kind" VARCHAR(255) NOT NULL, "upstream_id" VARCHAR(255) NOT NULL, "url" TEXT NOT NULL, "sha256" VARCHAR(255), '
    '"state" VARCHAR(255) NOT NULL, "attempts" INTEGER NOT NULL, "last_error" TEXT, "object_date" DATETIME, '
    '"first_seen" DATETIME NOT NULL, "delivered_at" DATETIME, "document_count" INTEGER, "kept_ids" INTEGER)',
    'CREATE INDEX "upstream_file_state" ON "upstream_file" ("state")',
    'CREATE INDEX "upstream_file_first_seen" ON "upstream_file" ("first_seen")',
    'CREATE UNIQUE INDEX "upstream_file_source_kind_upstream_id" ON "upstream_file" ("source", "kind", "upstream_id")',
    'CREATE TABLE "delivered_documents" ("id" INTEGER NOT NULL PRIMARY KEY, "upstream_file_id" INTEGER NOT NULL, '
    '"index_name" VARCHAR(255) NOT NULL, "ids" BLOB NOT NULL, FOREIGN KEY ("upstream_file_id") REFERENCES '
    '"upstream_file" ("id") ON DELETE CASCADE)',
    'CREATE UNIQUE INDEX "delivered_documents_upstream_file_id_index_name" ON "delivered_documents" '
    '("upstream_file_id", "index_name")',
    'CREATE TABLE "run" ("id" INTEGER NOT NULL PRIMARY KEY, "command" VARCHAR(255) NOT NULL, "started" DATETIME '
    'NOT NULL, "ended" DATETIME, "outcome" VARCHAR(255), "counts" TEXT)',
    'CREATE TABLE "watermark" ("id" INTEGER NOT NULL PRIMARY KEY, "source" VARCHAR(255) NOT NULL, "position" '
    'DATETIME NOT NULL, "moved_at" DATETIME NOT NULL)',
    'CREATE UNIQUE INDEX "watermark_source" ON "watermark" ("source")',
]


def make_schema_2(db: Path, delivered: list, failed: list) -> None:
    now = str(datetime.now(timezone.utc).replace(tzinfo=None))
    with sqlite3.connect(str(db)) as conn:
        for statement in SCHEMA_2:
            conn.execute(statement)
        for state, objects in ((DELIVERED, delivered), ("failed", failed)):
            for obj in objects:
                conn.execute("INSERT INTO upstream_file (source, kind, upstream_id, url, state, attempts, first_seen, "
                             "delivered_at, document_count, kept_ids) VALUES ('samples', ?, ?, ?, ?, 0, ?, ?, 1, 1)",
                             [obj.kind, obj.upstream_id, str(obj.path), state, now,
                              now if state == DELIVERED else None])
                if state == DELIVERED:
                    conn.execute("INSERT INTO delivered_documents (upstream_file_id, index_name, ids) "
                                 "VALUES (last_insert_rowid(), 'build-2020.01.01', ?)", [b"\x01" * 20])
        conn.execute("INSERT INTO watermark (source, position, moved_at) VALUES ('api', '2024-10-16 07:00:00', ?)",
                     [now])
        conn.execute("PRAGMA user_version = 2")


def test_reading_a_schema_2_ledger_in_wal_mode_leaves_no_wal_or_shm_file_beside_it(logstash, tmp_path):
    """status and the dry runs read an older ledger through a copy, made on a read-only
    connection: SQLite made a -wal and a -shm file for it, which such a connection may not
    remove, and left them beside a ledger nothing had written."""
    db = tmp_path / "kcing.db"
    objects = sample_objects()
    make_schema_2(db, delivered=objects[:3], failed=objects[3:4])
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA journal_mode = wal").fetchone()[0] == "wal"  # as kcing writes its ledgers
    conn.close()
    content = db.read_bytes()
    env = environ(logstash, db)
    for command in (["status"], ["status", "--json"], ["feed_es", "--source", "samples", "--dry-run"]):
        done = kcing(command, env, tmp_path)
        assert done.returncode == 0, done.stderr
        assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith("kcing.db")) == [
            "kcing.db"], command
    assert db.read_bytes() == content


def test_a_schema_2_ledger_keeps_its_deliveries_as_sent_to_the_configured_logstash(logstash, tmp_path):
    db = tmp_path / "kcing.db"
    objects = sample_objects()
    make_schema_2(db, delivered=objects[:3], failed=objects[3:4])
    env = environ(logstash, db)

    data = status(env, tmp_path)
    route = {obj.kind: "logstash %s" % logstash.urls["lava" if obj.kind == "lava" else obj.kind] for obj in objects}
    expected = {}
    for obj in objects[:3]:
        expected[route[obj.kind]] = expected.get(route[obj.kind], 0) + 1
    assert delivered_per_destination(data) == {**{r: 0 for r in {route[objects[3].kind]}}, **expected}
    configured = settings_module.load(environ=env, local_file=tmp_path / "none.py")
    assert list(data["watermarks"]["api"]) == [logstash_destinations_key(configured)]
    assert logstash_destinations_key(configured).startswith("logstash http://127.0.0.1:")
    with sqlite3.connect(str(db)) as conn:  # status showed it migrated, and left it as it was
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    open_ledger(configured).close()  # as a command that writes opens it
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID  # now marked as kcing's
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM delivered_documents").fetchone()[0] == 3  # ids kept
        failed = conn.execute("SELECT attempts, state FROM upstream_file WHERE upstream_id = ?",
                              [objects[3].upstream_id]).fetchall()
    assert failed == [(0, "failed")]

    posted = kcing(["feed_es", "--source", "samples"], env, tmp_path)
    assert posted.returncode == 0, posted.stderr
    assert "skipped 3 (already delivered), downloaded %d" % (SAMPLE_COUNT - 3) in posted.stdout
    written = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path)
    assert "skipped 0 (already delivered), downloaded %d" % SAMPLE_COUNT in written.stdout
    # Opening it again changes nothing more.
    assert delivered_per_destination(status(env, tmp_path))["ndjson %s" % (tmp_path / "out")] == SAMPLE_COUNT


def _files_of_at_most(limit: int):
    """A child's preexec: no file it writes may grow past `limit` bytes (the write fails with
    EFBIG, SIGXFSZ being ignored), as on a disk with that much room left."""
    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limited


def test_an_upgrade_the_disk_stops_midway_leaves_the_older_ledger_as_it_was(logstash, tmp_path):
    """The README's upgrade notes: the ledger's upgrade is one transaction. One that cannot
    write its -wal file to the end (a full disk) rolls back, and the ledger stays at schema 2,
    whole, readable by the kcing that wrote it, and upgraded by the next run that has the room."""
    db = tmp_path / "kcing.db"
    objects = sample_objects()
    make_schema_2(db, delivered=objects[:3], failed=objects[3:4])
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA journal_mode = wal").fetchone()[0] == "wal"  # as kcing writes its ledgers
        # Enough rows that rewriting them all takes more -wal file than the room left below.
        conn.executemany("INSERT INTO upstream_file (source, kind, upstream_id, url, state, attempts, first_seen) "
                         "VALUES ('legacy', 'build', ?, ?, 'delivered', 1, '2024-10-16 07:00:00')",
                         [("%024x" % number, "https://storage.example/%d/build.json" % number)
                          for number in range(4000)])
    conn.close()
    content = db.read_bytes()
    assert len(content) > 256 * 1024
    env = environ(logstash, db)

    stopped = subprocess.run([sys.executable, str(REPO / "kcing.py"), "feed_es", "--source", "samples"], env=env,
                             cwd=str(tmp_path), capture_output=True, text=True, timeout=120,
                             preexec_fn=_files_of_at_most(256 * 1024))
    assert stopped.returncode == 5, stopped.stderr
    assert "cannot write the ledger" in stopped.stderr and "Traceback" not in stopped.stderr
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert "destination" not in {row[1] for row in conn.execute("PRAGMA table_info(upstream_file)")}
        assert conn.execute("SELECT COUNT(*) FROM upstream_file").fetchone()[0] == 4 + 4000
    conn.close()
    assert len(logstash.store) == 0  # nothing was posted before the ledger was usable

    posted = kcing(["feed_es", "--source", "samples"], env, tmp_path)
    assert posted.returncode == 0, posted.stderr
    assert "skipped 3 (already delivered), downloaded %d" % (SAMPLE_COUNT - 3) in posted.stdout
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_drp_forgets_the_rows_of_every_destination_and_says_which(logstash, tmp_path, es):
    db = tmp_path / "kcing.db"
    old = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(days=40)
    ledger = Ledger.open(str(db), clock=lambda: old)
    build = UpstreamObject("legacy", BUILD, "a" * 24, "https://storage.example/build.json")
    ledger.record([Outcome(build, DELIVERED)], lambda kind: "logstash http://ls:8337")
    ledger.record([Outcome(build, DELIVERED)], lambda kind: "ndjson /srv/out")
    ledger.close()
    env = environ(logstash, db, ES_HOST=es.url, DRP_DAYS="30")
    planned = kcing(["drp", "--dry-run"], env, tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "drp: would forget 1 ledger row of objects sent to logstash http://ls:8337" in planned.stdout
    assert "drp: would forget 1 ledger row of objects sent to ndjson /srv/out" in planned.stdout
    done = kcing(["drp"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "forgot 2 ledger rows" in done.stdout
    assert "drp: forgot 1 ledger row of objects sent to logstash http://ls:8337" in done.stdout
    assert "drp: forgot 1 ledger row of objects sent to ndjson /srv/out" in done.stdout


def test_dry_runs_over_a_ledger_from_an_earlier_kcing_leave_the_file_as_it_was(logstash, es, tmp_path):
    db = tmp_path / "kcing.db"
    objects = sample_objects()
    make_schema_2(db, delivered=objects[:3], failed=[])
    before = db.read_bytes()
    env = environ(logstash, db, ES_HOST=es.url)
    planned = kcing(["feed_es", "--source", "samples", "--dry-run"], env, tmp_path)
    assert planned.returncode == 0, planned.stderr
    # Read from a migrated copy: its deliveries count as made to the configured Logstash.
    assert "listed %d, 3 already delivered, %d would be fetched" % (SAMPLE_COUNT, SAMPLE_COUNT - 3) in planned.stdout
    for argv in (["reconcile", "--dry-run"], ["drp", "--dry-run"]):
        result = kcing(argv, env, tmp_path)
        assert "Traceback" not in result.stderr and result.returncode in (0, 1, 6), result.stderr
    assert db.read_bytes() == before
    assert not Path(str(db) + "-wal").exists() or Path(str(db) + "-wal").stat().st_size == 0


# -- destination names an earlier kcing (schema 3) spelled otherwise ------------------------------
# Later kcings name the same settings otherwise: a Logstash input in lower case and once, without
# a scheme's default port; an --output directory by its path with links resolved. The ledgers
# below are what the earlier versions wrote (the same rows, the names as they spelled them).

def old_logstash_name(urls) -> str:
    """A route's name as kcing named it before 5da1fb1: the URLs as written, sorted."""
    return "logstash " + ",".join(sorted(urls))


def as_schema_3_named_them(db: Path, renamed: dict) -> None:
    """The ledger as a kcing of schema 3 left it: destination names (rows, watermarks, run rows) in
    an earlier spelling, {today's name: the earlier one}."""
    with sqlite3.connect(str(db)) as conn:
        for new, old in renamed.items():
            conn.execute("UPDATE upstream_file SET destination = ? WHERE destination = ?", (old, new))
            conn.execute("UPDATE watermark SET destination = ? WHERE destination = ?", (old, new))
            conn.execute("UPDATE run SET counts = replace(counts, ?, ?)", (new, old))
        conn.execute("PRAGMA user_version = 3")
    conn.close()


def destinations(db: Path) -> set:
    with sqlite3.connect(str(db)) as conn:
        return {row[0] for row in conn.execute("SELECT DISTINCT destination FROM upstream_file")}


def test_deliveries_an_earlier_kcing_recorded_for_a_logstash_input_in_capitals_are_not_sent_again(logstash, tmp_path):
    """README, Upgrading kcing: "What was delivered stays delivered ... feed_es skips what the
    ledger marks delivered and sends nothing twice". A kcing from before 5da1fb1 recorded
    `ES_LAVA=HTTP://LOCALHOST:<port>` (and an `ES_BUILD` listing its input twice) as written; this
    one names them otherwise, finds nothing delivered there, and sends every object again."""
    db = tmp_path / "kcing.db"
    lava_port = logstash.urls["lava"].rsplit(":", 1)[1]
    es_lava = "HTTP://LOCALHOST:%s" % lava_port
    es_build = "%s,%s" % (logstash.urls["build"], logstash.urls["build"])
    env = clean_environ(KCING_DB=str(db), KCI_SAMPLES_DIR=str(SAMPLES), ES_BUILD=es_build, ES_LAVA=es_lava,
                        ES_BOOT=logstash.urls["boot"])
    first = kcing(["feed_es", "--source", "samples"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    now_named = destinations(db)
    # What e2f26f4 (before 5da1fb1) recorded for these same settings.
    as_schema_3_named_them(db, {
        "logstash http://localhost:%s" % lava_port: old_logstash_name([es_lava]),
        "logstash %s" % logstash.urls["build"]: old_logstash_name(es_build.split(",")),
        "logstash " + ",".join(sorted({logstash.urls["build"], logstash.urls["boot"], "http://localhost:%s" % lava_port,
                                       "http://localhost:8339"})):
        old_logstash_name(es_build.split(",") + [es_lava, logstash.urls["boot"], "http://localhost:8339"]),
    })
    assert destinations(db) != now_named
    writes = len(logstash.index_store.writes)

    upgraded = kcing(["feed_es", "--source", "samples"], env, tmp_path)

    assert upgraded.returncode == 0, upgraded.stderr
    assert "skipped %d (already delivered)" % SAMPLE_COUNT in upgraded.stdout, upgraded.stdout
    assert len(logstash.index_store.writes) == writes  # nothing posted again


def test_an_output_directory_an_earlier_kcing_named_through_a_link_gets_no_record_twice(logstash, tmp_path):
    """Before ec015dc the ledger named an --output directory by os.path.abspath: a cron line giving
    a path through a symbolic link (`/var/run/...`, a home directory on another disk) was recorded
    by the link's name. This kcing names it by its real path, finds nothing delivered there, and
    appends every record a second time to the files the earlier runs wrote."""
    db = tmp_path / "kcing.db"
    (tmp_path / "disk").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "disk", target_is_directory=True)
    out = tmp_path / "link" / "out"
    env = clean_environ(KCING_DB=str(db), KCI_SAMPLES_DIR=str(SAMPLES), ES_BUILD=logstash.urls["build"],
                        ES_LAVA=logstash.urls["lava"], ES_BOOT=logstash.urls["boot"])
    first = kcing(["feed_es", "--source", "samples", "--output", str(out)], env, tmp_path)
    assert first.returncode == 0, first.stderr
    # What 4ae9793 (before ec015dc) recorded for this --output.
    as_schema_3_named_them(db, {"ndjson %s" % os.path.realpath(str(out)): "ndjson %s" % os.path.abspath(str(out))})
    written = {path.name: path.read_bytes() for path in out.glob("*.ndjson")}

    upgraded = kcing(["feed_es", "--source", "samples", "--output", str(out)], env, tmp_path)

    assert upgraded.returncode == 0, upgraded.stderr
    assert "skipped %d (already delivered)" % SAMPLE_COUNT in upgraded.stdout, upgraded.stdout
    lines = {path.name: len(path.read_bytes().splitlines()) for path in out.glob("*.ndjson")}
    assert {path.name: path.read_bytes() for path in out.glob("*.ndjson")} == written, (
        "records appended again: %s lines now, %s before"
        % (lines, {name: len(data.splitlines()) for name, data in written.items()}))


@pytest.fixture
def api_replica():
    replica = ApiReplica()
    replica.start()
    yield replica
    replica.stop()


def test_an_object_recorded_under_both_names_of_one_place_keeps_its_delivered_row(tmp_path):
    """An upgraded run may already have tried an object again under the new name (failed there)
    while its delivery is recorded under the old one: one row stays, the delivered one."""
    db = tmp_path / "kcing.db"
    old, new = "logstash HTTP://LS:8337", "logstash http://ls:8337"
    objects = [UpstreamObject("legacy", BUILD, "b%d" % n, "u", datetime(2024, 10, 16, tzinfo=timezone.utc))
               for n in range(3)]
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(objects[0], DELIVERED), Outcome(objects[1], DELIVERED)], lambda kind: old)
    ledger.record([Outcome(objects[0], "failed", error="down"), Outcome(objects[2], "failed", error="down")],
                  lambda kind: new)
    ledger.advance_watermark("api", datetime(2024, 10, 10), old)
    ledger.advance_watermark("api", datetime(2024, 10, 14), new)
    ledger.close()
    as_schema_3_named_them(db, {})
    Ledger.open(str(db)).close()
    with sqlite3.connect(str(db)) as conn:
        rows = sorted(conn.execute("SELECT upstream_id, destination, state FROM upstream_file"))
        watermarks = conn.execute("SELECT source, destination, position FROM watermark").fetchall()
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.close()
    assert rows == [("b0", new, DELIVERED), ("b1", new, DELIVERED), ("b2", new, "failed")]
    assert watermarks == [("api", new, "2024-10-10 00:00:00")]  # the earlier: nothing after it is skipped
    assert version == SCHEMA_VERSION


def test_the_api_watermark_an_earlier_kcing_left_is_kept_and_nothing_updated_after_it_is_lost(api_replica, logstash,
                                                                                              tmp_path):
    """The API feed resumes from the watermark of its destination; a ledger from before 5da1fb1
    keyed it by the inputs as written (`ES_LAVA=HTTP://LOCALHOST:<port>`). After the upgrade the
    run finds no watermark under the new name and lists as a first run does, the last KCI_DAYS
    only: nodes updated between the old watermark and then (cron failing for a few days before the
    upgrade, or a failing node holding the watermark) are never listed, never delivered."""
    db = tmp_path / "kcing.db"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    checkout_tree(api_replica.corpus, api_replica.files_url, now - timedelta(days=6), seed="before-upgrade")
    lava_port = logstash.urls["lava"].rsplit(":", 1)[1]
    es_lava = "HTTP://LOCALHOST:%s" % lava_port
    env = api_feed_environ(api_replica, logstash, db, ES_LAVA=es_lava)
    first = kcing(["feed_es", "--since", (now - timedelta(days=7)).strftime("%Y-%m-%d %H:%M:%S")], env, tmp_path)
    assert first.returncode == 0, first.stderr
    with sqlite3.connect(str(db)) as conn:
        (watermark,) = conn.execute("SELECT position FROM watermark").fetchone()
    assert watermark < (now - timedelta(days=5)).strftime("%Y-%m-%d")
    others = [logstash.urls["build"], logstash.urls["boot"], logstash.urls["regression"]]
    as_schema_3_named_them(db, {
        "logstash http://localhost:%s" % lava_port: old_logstash_name([es_lava]),
        "logstash " + ",".join(sorted(others + ["http://localhost:%s" % lava_port])):
        old_logstash_name(others + [es_lava]),
    })
    # Updated after the watermark, before the last KCI_DAYS (2): the cron runs failed meanwhile.
    missed = checkout_tree(api_replica.corpus, api_replica.files_url, now - timedelta(days=4), seed="while-failing")

    upgraded = kcing(["feed_es"], env, tmp_path)

    assert upgraded.returncode == 0, upgraded.stderr
    with sqlite3.connect(str(db)) as conn:
        delivered = {row[0].split(".", 1)[0] for row in conn.execute(
            "SELECT upstream_id FROM upstream_file WHERE state = 'delivered'")}
    lost = sorted(name for name, node in missed.items() if node["id"] not in delivered and node.get("state") == "done")
    assert not lost, "never delivered after the upgrade: %s\n%s" % (lost, upgraded.stderr[-1500:])
