"""`kcing status` tells a cron user the truth about every state the ledger holds, and the last
runs as they ended: each ledger built through the real program, read back through it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import re
import shutil
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from kcing.admin.templates import install, templates_for
from kcing.ledger.ledger import Ledger, Outcome
from kcing.ledger.models import DELIVERED
from kcing.sinks import ndjson_destination
from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.feedrun import REPO, SAMPLES, clean_environ, feed_environ, kcing
from tests.test_reconcile import (  # noqa: F401 (env and forwarding are fixtures)
    _lose_the_build_documents, day_index, env, es_client, forwarding, obj, packed, seed, to_logstash,
)


@pytest.fixture
def es():
    with ElasticsearchEmulator() as emulator:
        install(Elasticsearch(emulator.url), emulator.url, templates_for(None), None)
        yield emulator
    assert not emulator.errors


def status_json(env: dict, cwd: Path) -> dict:
    shown = kcing(["status", "--json"], env, cwd)
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def status_text(env: dict, cwd: Path) -> str:
    shown = kcing(["status"], env, cwd)
    assert shown.returncode == 0, shown.stderr
    return shown.stdout


def section(text: str, title: str) -> str:
    return text.split(title, 1)[1].split("\n\n", 1)[0]


def closed_and_missing_ledger(tmp_path: Path, es) -> Path:
    """Four objects delivered to Logstash: one whole in an open index, one in a closed index, one
    split over both, one whose only document Elasticsearch lacks."""
    db = tmp_path / "kcing.db"
    today, closed = day_index("build", 0), day_index("build", 1)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("open"), DELIVERED, documents=packed(1, 2, index=today)),
                   Outcome(obj("shut"), DELIVERED, documents=packed(3, 4, index=closed)),
                   Outcome(obj("gone"), DELIVERED, documents=packed(7, index=today)),
                   Outcome(obj("both"), DELIVERED, documents={**packed(5, index=today), **packed(6, index=closed)})],
                  to_logstash)
    ledger.close()
    seed(es, [(today, "%040x" % n) for n in (1, 2, 5)] + [(closed, "%040x" % n) for n in (3, 4, 6)])
    es_client(es).indices.close(index=closed)
    return db


def test_the_last_reconcile_shows_what_it_could_not_check_and_what_it_marked(tmp_path, es):
    """The objects in a closed index were not checked: a status reading `ok, checked 2, present 2`
    alone would claim Elasticsearch holds them."""
    db = closed_and_missing_ledger(tmp_path, es)
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db))
    first = kcing(["reconcile"], env, tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    text = status_text(env, tmp_path)
    last = section(text, "last reconcile")
    assert "missing 1" in last and "not checked (index closed or unreadable) 1" in last, text
    assert "marked undelivered 1" in last, text


def test_a_reconcile_that_exits_1_for_objects_held_missing_is_not_recorded_ok(tmp_path, es):
    """A second reconcile finds nothing new missing but exits 1: an object found missing earlier
    was not sent again. The runs table must not say `ok` for that run."""
    db = closed_and_missing_ledger(tmp_path, es)
    # A retention that keeps the objects' day (2024-10-16): one held missing dated before the
    # first day drp keeps is given up, as its index is drp's to delete.
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db), DRP_DAYS="36500")
    assert kcing(["reconcile"], env, tmp_path).returncode == 1
    again = kcing(["reconcile"], env, tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "1 object is held as missing" in again.stdout
    data = status_json(env, tmp_path)
    assert data["last_reconcile"]["outcome"] == "missing", data["last_reconcile"]
    assert data["last_reconcile"]["counts"]["held_missing"] == 1
    last = section(status_text(env, tmp_path), "last reconcile")
    assert " missing " in last and "held missing 1" in last, last


needs_samples = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")


@needs_samples
def test_each_run_line_names_its_source_and_destination(legacy_replica, logstash, tmp_path):
    """The README's cron feeds two sources, and --output feeds a directory, into one ledger: a run
    line that does not say which one it was cannot be told from another."""
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, logstash, db)
    first = legacy_replica.corpus.items("build")[0].doc
    legacy_replica.corpus.remove_file(first["file_server_resource"] + "/build.json")
    assert kcing(["feed_es"], env, tmp_path).returncode == 1
    out = tmp_path / "out"
    offline = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(out)],
                    env, tmp_path)
    assert offline.returncode == 0, offline.stderr
    runs = [line.strip() for line in section(status_text(env, tmp_path), "last runs:").strip().splitlines()]
    assert len(runs) == 2
    assert re.search(r"^feed_es .* ok .*\(samples to ndjson %s\)$" % re.escape(str(out.resolve())), runs[0]), runs
    assert re.search(r"^feed_es .* error 1 .*\(legacy to logstash http://127\.0\.0\.1:\d+", runs[1]), runs
    data = status_json(env, tmp_path)
    assert data["runs"][0]["counts"]["destination"] == "ndjson %s" % out.resolve()
    assert data["runs"][1]["counts"]["source"] == "legacy"


@needs_samples
def test_status_says_from_which_day_on_the_objects_not_delivered_are_still_tried_again(legacy_replica, logstash, es,
                                                                                     tmp_path):
    """A legacy run tries an object that failed again only while its day is one drp keeps:
    status counted the failed objects and never said so, and an operator could not tell which
    failures were given up."""
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, logstash, db, DRP_DAYS="60", ES_HOST=es.url, KCI_MAX_RETRIES="1")

    def first_kept(days: int) -> str:
        return (datetime.now(timezone.utc).date() - timedelta(days=days)).isoformat()

    def retries_shown(days: int) -> list:
        """The lines saying until when objects are tried again, checked against `days` kept."""
        # Read on either side of the command: a test that runs across midnight UTC sees either day.
        before = first_kept(days)
        text, data = status_text(env, tmp_path), status_json(env, tmp_path)
        days_kept = {before, first_kept(days)}
        assert data["retried_from"] in days_kept, (data["retried_from"], days_kept)
        lines = [line for line in text.splitlines() if "tried again" in line]
        for line in lines:
            assert line in {"legacy objects not delivered (failed, pending, too large) are tried again by every run "
                            "to their destination while dated %s or later (the first day drp keeps; one without a "
                            "date while first seen then or later; a file the storage answered 404 or 410 for, or "
                            "one reconcile found missing in Elasticsearch, only while within the run's --days, the latter sent by reconcile --resend); those dated before are given up"
                            % day for day in days_kept}, text
            # Its own paragraph, below the table of what is not delivered.
            assert "\n\n%s\n\nlast runs:\n" % line in text, text
        return lines

    failing = legacy_replica.corpus.items("build")[0].doc["file_server_resource"] + "/build.json"
    legacy_replica.storage.fail_next("/" + failing, 503, count=None)
    assert kcing(["feed_es"], env, tmp_path).returncode == 1
    assert len(retries_shown(60)) == 1
    # A drp run that kept fewer days than DRP_DAYS says: its first day kept is the one.
    assert kcing(["drp", "--drp-days", "45"], env, tmp_path).returncode == 0
    assert len(retries_shown(45)) == 1
    legacy_replica.storage.clear_faults()
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    assert retries_shown(45) == []  # nothing waits: the JSON alone names the day


def test_the_line_on_objects_tried_again_leaves_out_those_no_run_takes(tmp_path):
    """An object reconcile found missing in Elasticsearch, dated after the first day drp keeps
    but before the crawl's window: no feed run takes it from the ledger (`reconcile --resend`
    sends it), yet the line said every run tried it again; nor does a run to another
    destination try what failed for this one."""
    from kcing.records import UpstreamObject
    db = tmp_path / "kcing.db"
    dated = datetime.now(timezone.utc) - timedelta(days=10)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(UpstreamObject("legacy", "build", "b1", "https://storage.example/b1/build.json", dated),
                           DELIVERED, documents=packed(1))], to_logstash)
    ledger.mark_missing([ledger.row("legacy", "build", "b1", to_logstash("build")).id])
    window_start = datetime.now(timezone.utc) - timedelta(days=2)
    assert list(ledger.undelivered_before("legacy", "build", to_logstash("build"), window_start)) == []
    ledger.close()
    text = status_text(clean_environ(KCING_DB=str(db), DRP_DAYS="60"), tmp_path)
    (line,) = [line for line in text.splitlines() if "tried again" in line]
    assert "by every run to their destination while dated" in line, line
    assert "or one reconcile found missing in Elasticsearch, only while within the run's --days" in line, line


def test_objects_reconcile_found_missing_have_a_column_of_their_own(tmp_path, es):
    """They are `failed` as a download that failed is, but what to do differs: status counts them
    apart, per destination, source and kind, in the text and the JSON."""
    db = closed_and_missing_ledger(tmp_path, es)
    # A retention that keeps the objects' day (2024-10-16): one held missing dated before the
    # first day drp keeps is given up, and counted failed alone.
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db), DRP_DAYS="36500")
    assert kcing(["reconcile"], env, tmp_path).returncode == 1
    text = status_text(env, tmp_path)
    assert re.search(r"^\s+source\s+kind\s+delivered\s+failed\s+rejected\s+pending\s+too large\s+missing in ES$",
                     text, re.M), text
    assert re.search(r"^\s+legacy\s+build\s+3\s+1\s+0\s+0\s+0\s+1$", text, re.M), text
    data = status_json(env, tmp_path)
    assert data["objects"]["legacy"]["build"]["missing_in_es"] == 1
    (counts,) = [kinds["legacy"]["build"] for kinds in data["destinations"].values()]
    assert counts == {"delivered": 3, "failed": 1, "rejected": 0, "pending": 0, "too_large": 0, "missing_in_es": 1}


def test_the_objects_of_a_source_and_kind_sum_their_destinations(tmp_path):
    """The README: `status --json` prints `objects` summing the destinations and `destinations`
    splitting them: builds delivered to Logstash and others written to an --output directory."""
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1)),
                   Outcome(obj("b"), DELIVERED, documents=packed(2))], to_logstash)
    ledger.record([Outcome(obj("c"), DELIVERED, documents=packed(3))],
                  lambda kind: ndjson_destination(str(tmp_path / "out")))
    ledger.close()
    data = status_json(clean_environ(KCING_DB=str(db)), tmp_path)
    assert sorted(kinds["legacy"]["build"]["delivered"] for kinds in data["destinations"].values()) == [1, 2]
    assert data["objects"]["legacy"]["build"]["delivered"] == 3


def test_a_killed_run_is_not_shown_running_while_drp_holds_the_lock(legacy_replica, logstash, tmp_path):
    """While drp holds the run lock, its own row reads `running (pid N)`; the row of a feed killed
    earlier is not the lock holder's and must not. Then drp's row ends with its exit status."""
    from kcing.status import UNRECORDED_END
    from tests.fakes.serving import wait_until
    from tests.feedrun import kcing_process
    from tests.test_exit_codes import Silent
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, logstash, db)
    logstash.lava.slow_next(30, count=None)
    feeding = kcing_process(["feed_es"], env, tmp_path)
    try:
        assert wait_until(lambda: logstash.lava.inflight > 0, timeout=20)
    finally:
        feeding.kill()
        feeding.communicate()
    logstash.lava.clear_faults()
    assert status_json(env, tmp_path)["runs"][0]["outcome"] == UNRECORDED_END
    silent = Silent()
    retention = kcing_process(["drp"], dict(env, ES_HOST=silent.url), tmp_path)
    try:
        assert wait_until(lambda: silent.accepted, timeout=20)  # drp holds the lock and waits
        shown = status_json(env, tmp_path)
        text = status_text(env, tmp_path)
    finally:
        retention.kill()
        retention.communicate()
        silent.close()
    assert shown["runs"][0]["command"] == "drp", shown["runs"]
    assert shown["runs"][0]["outcome"] == "running (pid %d)" % retention.pid, shown["runs"][0]
    assert shown["runs"][1]["outcome"] == UNRECORDED_END, shown["runs"][1]
    assert text.count("running (pid") == 1, text
    from tests.fakes.serving import refusing_port
    with refusing_port() as port:
        unreachable = kcing(["drp"], dict(env, ES_HOST="http://127.0.0.1:%d" % port), tmp_path)
    assert unreachable.returncode == 3, unreachable.stderr
    last = status_json(env, tmp_path)["runs"][0]
    assert (last["command"], last["outcome"]) == ("drp", "error 3"), last


@needs_samples
def test_a_reconcile_whose_resend_could_not_reach_logstash_is_recorded_with_its_exit_status(
        env, tmp_path, forwarding, es):
    """The runs table closes a run with `error N`, N its exit status: a reconcile --resend that
    exits 3 (Logstash down) is not `ok` because its check found nothing new."""
    builds = _lose_the_build_documents(env, tmp_path, es)
    assert builds
    forwarding.build.down()
    failed = kcing(["reconcile", "--resend"], env, tmp_path)
    assert failed.returncode == 3, failed.stdout + failed.stderr
    data = status_json(env, tmp_path)
    assert data["last_reconcile"]["outcome"] == "error 3", data["last_reconcile"]
    assert [run["command"] for run in data["runs"][:2]] == ["feed_es", "reconcile"]
    assert data["runs"][0]["outcome"] == "error 3"


def test_a_ledger_read_from_a_copy_is_named_and_its_running_run_shown_running(tmp_path):
    """status reads a copy of a ledger it must not change (an older schema, migrated in memory;
    a ledger the monitoring account may only read): it still names the file, not the copy
    (`:memory:`), and a run in progress on the file, whose process holds the lock beside it, is
    `running`, not `ended without a record`."""
    import os
    import sqlite3
    from kcing.runlock import RunLock
    from tests.test_destinations import make_schema_2
    db = tmp_path / "kcing.db"
    make_schema_2(db, delivered=[], failed=[])
    with sqlite3.connect(str(db)) as conn:
        conn.execute("INSERT INTO run (command, started, counts) VALUES ('feed_es', '2024-10-16 08:00:00', ?)",
                     [json.dumps({"pid": os.getpid(), "source": "api"})])
    env = clean_environ(KCING_DB=str(db))
    with RunLock(str(db)):
        data = status_json(env, tmp_path)
        text = status_text(env, tmp_path)
    assert data["ledger"] == str(db), data["ledger"]
    assert data["runs"][0]["outcome"] == "running (pid %d)" % os.getpid(), data["runs"]
    assert text.splitlines()[0] == "ledger: %s" % db, text
    assert "running (pid %d)" % os.getpid() in text, text


def test_a_run_of_a_kcing_that_recorded_no_pid_is_running_while_the_lock_is_held(tmp_path):
    """A run started by a kcing from before the runs table held pids: its row names no pid, and
    the run holding the lock is taken for it, newest first, rather than shown ended."""
    import os
    import sqlite3
    from kcing.runlock import RunLock
    db = tmp_path / "kcing.db"
    Ledger.open(str(db)).close()
    with sqlite3.connect(str(db)) as conn:
        conn.execute("INSERT INTO run (command, started, counts) VALUES ('feed_es', '2024-10-16 08:00:00', ?)",
                     [json.dumps({"source": "legacy"})])
    conn.close()
    env = clean_environ(KCING_DB=str(db))
    with RunLock(str(db)):
        data = status_json(env, tmp_path)
    assert data["runs"][0]["outcome"] == "running (pid %d)" % os.getpid(), data["runs"]


def test_the_table_lines_up_under_its_header_whatever_the_kinds():
    """The KernelCI API's kinds (`regression`, `checkout`) are longer than the legacy ones."""
    from kcing.status import as_text
    counts = dict(delivered=1, failed=0, rejected=0, pending=0, too_large=0, missing_in_es=0)
    data = {"ledger": "kcing.db", "runs": [], "errors": [], "watermarks": {}, "last_reconcile": None,
            "destinations": {"logstash http://ls:8339": {"api": {"regression": counts, "job": counts}}}}
    header, *rows = as_text(data).split("to logstash http://ls:8339:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(rows) == 2
    for row in rows:
        assert len(row) == len(header), (header, row)
        assert row.rindex("1") == header.index("delivered") + len("delivered") - 1, (header, row)


def test_objects_failing_for_one_cause_count_together_though_each_message_names_its_own_url(legacy_replica,
                                                                                              logstash, tmp_path):
    """A download error names the file's URL: grouped by whole message, every failing file was
    a cause of its own (1 object each), and a cause of two objects outranked one of many."""
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, logstash, db, KCI_MAX_RETRIES="1")
    builds = [item.doc for item in legacy_replica.corpus.items("build")[:3]]
    for build in builds:
        legacy_replica.corpus.remove_file(build["file_server_resource"] + "/build.json")
    assert kcing(["feed_es"], env, tmp_path).returncode == 1
    [error] = [error for error in status_json(env, tmp_path)["errors"] if error["state"] == "failed"]
    assert error["objects"] == 3, error
    assert "/<path>" in error["error"] and builds[0]["file_server_resource"] not in error["error"], error
    assert any(build["file_server_resource"] in error["example"] for build in builds), error
    shown = section(status_text(env, tmp_path), "most frequent errors:").strip().splitlines()
    assert shown[0].split(None, 2)[:2] == ["3", "failed"], shown


def test_documents_too_large_for_logstash_count_as_one_cause_whatever_their_sizes(legacy_replica, logstash,
                                                                                    tmp_path):
    """The message of an object Logstash refused with 413 names its document's size: grouped with
    it, every such object was a cause of its own (1 object each) and pushed the other causes out
    of the five shown."""
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", ES_MAX_RETRIES="1")
    logstash.lava.fail_next(413, count=None)
    assert kcing(["feed_es"], env, tmp_path).returncode == 3
    too_large = [error for error in status_json(env, tmp_path)["errors"] if error["state"] == "too_large"]
    assert [error["objects"] for error in too_large] == [2], too_large
    assert "a document of <n> bytes is larger than Logstash" in too_large[0]["error"], too_large
    assert re.search(r"a document of \d+ bytes", too_large[0]["example"]), too_large


def test_samples_edited_since_they_were_saved_count_as_one_cause_whatever_their_hashes(tmp_path):
    """Each such failure names the sha256 its manifest entry records and the file's own, which
    differ from file to file: grouped with them, every edited sample was a cause of its own."""
    samples = tmp_path / "samples"
    shutil.copytree(SAMPLES, samples)
    edited = sorted((samples / "build").glob("*.json"))[:3]
    for path in edited:
        path.write_bytes(path.read_bytes() + b" ")
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"), KCI_SAMPLES_DIR=str(samples))
    fed = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 1, fed.stderr
    failed = [error for error in status_json(env, tmp_path)["errors"] if error["state"] == "failed"]
    assert [error["objects"] for error in failed] == [3], failed
    assert "is not the file its manifest entry describes" in failed[0]["error"], failed
    assert re.search(r"\(sha256 [0-9a-f]{12}, the file's [0-9a-f]{12}\)", failed[0]["example"]), failed


def test_files_cut_short_count_as_one_cause_wherever_they_were_cut(tmp_path):
    """A file that is not valid JSON is rejected with the place the decoder stopped (`line 12
    column 5 (char 300)`), which differs from file to file: grouped with it, every file of an
    interrupted upload was a cause of its own."""
    cut = []
    for lines in (1, 5, 9):  # each ends inside a string, on another line
        path = tmp_path / ("cut-%d.json" % lines)
        path.write_text("{" + '"job": "mainline",\n' * lines + '"kernel": "v5.4-rc', encoding="utf-8")
        cut.append(str(path))
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    fed = kcing(["feed_es", "--builds", "--date", "2020-11-04", *cut, "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 1, fed.stderr
    rejected = [error for error in status_json(env, tmp_path)["errors"] if error["state"] == "rejected"]
    assert [error["objects"] for error in rejected] == [3], rejected
    assert rejected[0]["error"].startswith("not valid JSON: Unterminated string starting at: line <n> column <n>"), rejected


def test_lava_jobs_refused_for_one_reason_count_as_one_cause_whatever_their_job_ids(tmp_path):
    """A LAVA job's refusal names the job (`LAVA job 2783047 has no definition text`): grouped
    with its id, every job of a lab that sends such callbacks was a cause of its own."""
    callback = json.loads((SAMPLES / "lava" / "5fa2dae359b5140d3b3a61f3.json").read_bytes())
    files = []
    for job_id in (101, 2783047, 99999999):
        callback.update(id=job_id, definition=None)
        path = tmp_path / ("lava-json-%d.json" % job_id)
        path.write_text(json.dumps(callback), encoding="utf-8")
        files.append(str(path))
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    fed = kcing(["feed_es", "--lavas", *files, "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 1, fed.stderr
    rejected = [error for error in status_json(env, tmp_path)["errors"] if error["state"] == "rejected"]
    assert [(error["error"], error["objects"]) for error in rejected] == [("LAVA job <n> has no definition text", 3)]


def test_node_versions_superseded_by_newer_ones_count_as_one_cause_whatever_the_newer_version(tmp_path):
    """Each older version a newer delivery clears names that newer version (`<node id>.<updated>`):
    grouped with its time, every such node was a cause of its own, pushing the others out."""
    from datetime import timezone
    from kcing.records import UpstreamObject
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    destination = lambda kind: "logstash:http://ls:8001"  # noqa: E731
    for number, day in enumerate(("16", "17", "18")):
        node_id = "6aec122c689dd928d5d3df%02d" % number
        older, newer = (UpstreamObject("api", "test", "%s.202410%sT070000.%06d" % (node_id, day, micro), "u",
                                       datetime(2024, 10, 16, tzinfo=timezone.utc), {"node_id": node_id})
                        for micro in (0, 1))
        ledger.record([Outcome(older, DELIVERED, documents={})], destination)
        ledger.mark_missing([ledger.row("api", "test", older.upstream_id, "logstash:http://ls:8001").id])
        ledger.record([Outcome(newer, DELIVERED, documents={})], destination)
    ledger.close()
    errors = status_json(clean_environ(KCING_DB=str(db)), tmp_path)["errors"]
    assert [(error["error"], error["objects"]) for error in errors] == [
        ("superseded by version <id>, delivered after Elasticsearch lost this one (the versions of a node make "
         "documents with the same ids)", 3)]


def test_an_error_cause_is_found_in_time_linear_in_the_message():
    # Each word of `a.a.a...` was read as a scheme to the end of the run: 100 kB, five seconds.
    from kcing import status
    message = "rejected: " + "a." * 50_000 + " (sha256 0123456789ab)"
    started = time.process_time()
    assert status.error_cause(message) == "rejected: " + "a." * 50_000 + " (sha256 <sha256>)"
    taken = time.process_time() - started
    started = time.process_time()
    status._OBJECT_ID.sub("<id>", message)
    assert taken < 100 * (time.process_time() - started) + 0.01
    assert status.error_cause("GET " + "x+" * 200 + "://h/p") == "GET " + "x+" * 200 + "://h/<path>"


def test_an_error_cause_leaves_out_what_names_one_object_and_keeps_the_rest():
    from kcing.status import error_cause
    url = "https://storage.kernelci.org/mainline/v5.4/x86/build.json"
    assert error_cause("GET %s failed 3 times (last: HTTP 503)" % url, url, "5e1f0c2b8a1d4e0f9b3c2a10") == (
        "GET https://storage.kernelci.org/<path> failed 3 times (last: HTTP 503)")
    # Another service's URL keeps its origin; a path ending a sentence keeps the sentence's stop.
    assert error_cause("GET http://ls:8007/x/y: redirected to https://evil.example/a.", url, "") == (
        "GET http://ls:8007/<path>: redirected to https://evil.example/<path>.")
    assert error_cause("node 65a1b2c3d4e5f60718293a4b: no kernel", "https://api/x", "65a1b2c3d4e5f60718293a4b") == (
        "node <id>: no kernel")
    assert error_cause("/data/in/boot-8.json: not JSON", "/data/in/boot-8.json", "boot-8.json") == "<file>: not JSON"
    assert error_cause("GET https://kernelci.org/ failed once (last: HTTP 500)") == (
        "GET https://kernelci.org/ failed once (last: HTTP 500)")
    # A size is the object's own; a limit is the same for every object, and stays.
    assert error_cause("GET https://kernelci.org/x: announced 9000001 bytes, more than the limit of 8000000") == (
        "GET https://kernelci.org/<path>: announced <n> bytes, more than the limit of 8000000")
    assert error_cause("/in/lava-1.json: 123456 bytes, more than the limit of 1000 bytes: raise it", "/in/lava-1.json") == (
        "<file>: <n> bytes, more than the limit of 1000 bytes: raise it")
    assert error_cause("document id longer than 512 bytes") == "document id longer than 512 bytes"
    # A file's own SHA-256, whole or its first 12 digits; a document id (40 digits) stays.
    assert error_cause("missing in Elasticsearch; re-send refused: /in/b.json changed since it was delivered "
                       "(sha256 0123456789ab, now 9f86d081884c); put back the file", "/in/b.json") == (
        "missing in Elasticsearch; re-send refused: <file> changed since it was delivered (sha256 <sha256>, "
        "now <sha256>); put back the file")
    assert error_cause("e.g. log-2024.10.15/%s" % ("ab" * 20)) == "e.g. log-2024.10.15/%s" % ("ab" * 20)
    assert error_cause("a copy of build %s, delivered from another file" % ("9f86d081" * 8)) == (
        "a copy of build <sha256>, delivered from another file")
    # Where in its file a decoder stopped.
    assert error_cause("not valid JSON: Expecting ',' delimiter: line 12 column 5 (char 300)") == (
        "not valid JSON: Expecting ',' delimiter: line <n> column <n> (char <n>)")
    assert error_cause("not UTF-8 text (byte 11)") == "not UTF-8 text (byte <n>)"
    # A KernelCI API node version is the node's id and the time it was updated.
    assert error_cause("superseded by version 6aec122c689dd928d5d3df79.20241017T070000.000000, delivered") == (
        "superseded by version <id>, delivered")


@pytest.mark.parametrize("locale_env", [dict(LC_ALL="C", PYTHONUTF8="0"),
                                        dict(LC_ALL="C.UTF-8", PYTHONIOENCODING="ascii")],
                         ids=["C-without-utf8-mode", "ascii-stdout"])
def test_status_prints_a_non_ascii_destination_on_an_ascii_stdout(tmp_path, locale_env):
    # A user's non-ASCII directory names reach the ledger (the --output destination); under an
    # ASCII locale `status` must still print its report, escaping what stdout cannot hold.
    where = tmp_path / "çıktı→"
    where.mkdir()
    env = clean_environ(KCING_DB=str(where / "kcing.db"))
    env.pop("LANG", None)
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(where / "out")],
                dict(env, LC_ALL="C.UTF-8"), tmp_path)
    assert fed.returncode == 0, fed.stderr
    shown = kcing(["status"], dict(env, **locale_env), tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "internal error" not in shown.stderr
    assert "to ndjson %s" % (tmp_path / "\\u00e7\\u0131kt\\u0131\\u2192" / "out") in shown.stdout


def test_status_prints_a_ledger_path_that_is_not_utf8_on_a_strict_utf8_stdout(tmp_path):
    # Under a UTF-8 locale other than C.UTF-8 (en_US.UTF-8) stdout is strict: the ledger's own
    # path holding a byte that is not UTF-8 ended `status` as an internal error.
    where = str(tmp_path) + "/x\udcff"  # the byte 0xff in the child's arguments
    env = clean_environ(KCING_DB=where + "/kcing.db", LC_ALL="C.UTF-8")
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", where + "/out"],
                env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    shown = subprocess.run([sys.executable, str(REPO / "kcing.py"), "status"], env=dict(env, PYTHONIOENCODING="utf-8"),
                           cwd=str(tmp_path), capture_output=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert b"ledger: %s/x\xff/kcing.db\n" % bytes(tmp_path) in shown.stdout


def test_status_shows_run_rows_edited_by_hand_as_they_are(tmp_path):
    import sqlite3

    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")],
                env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    with sqlite3.connect(str(tmp_path / "kcing.db")) as edited:
        edited.execute("UPDATE run SET started = 'yesterday', ended = 'soon', counts = '[1, 2]'")
    shown = kcing(["status"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "feed_es   yesterday (not a time) -> soon (not a time)  ok" in shown.stdout
    again = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output",
                   str(tmp_path / "out"), "--metrics", str(tmp_path / "metrics.prom")], env, tmp_path)
    assert again.returncode == 0, again.stderr


def test_a_reconcile_killed_before_it_counted_anything_ends_no_line_with_spaces(tmp_path):
    # The line of the last reconcile, as each run line, holds no trailing space for a script to
    # trip over when there is no end and no count to show.
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.start_run("reconcile")
    ledger.close()
    shown = status_text(clean_environ(KCING_DB=str(db)), tmp_path)
    assert "ended without a record" in section(shown, "last reconcile")
    assert [line for line in shown.splitlines() if line != line.rstrip()] == []


def test_a_watermark_edited_into_no_time_is_a_one_line_error_naming_the_row(tmp_path):
    import sqlite3

    from kcing.errors import ConfigError

    ledger_path = tmp_path / "kcing.db"
    ledger = Ledger.open(str(ledger_path))
    ledger.advance_watermark("api", datetime.fromisoformat("2024-10-16T08:00:00+00:00"), "logstash http://ls:8338")
    ledger.close()
    with sqlite3.connect(str(ledger_path)) as edited:
        edited.execute("UPDATE watermark SET position = '16/10/2024'")
    expected = ("KCING_DB %s holds a watermark for api to logstash http://ls:8338 that is not a time ('16/10/2024'): "
                "fix or delete that row of its watermark table (without it, the next run starts as a first run)"
                % ledger_path)
    shown = kcing(["status"], clean_environ(KCING_DB=str(ledger_path)), tmp_path)
    assert (shown.returncode, shown.stderr.strip()) == (2, "kcing status: " + expected)
    ledger = Ledger.open(str(ledger_path))
    try:
        with pytest.raises(ConfigError) as refused:
            ledger.watermark("api", "logstash http://ls:8338")
        assert str(refused.value) == expected
        with pytest.raises(ConfigError):
            ledger.advance_watermark("api", datetime.fromisoformat("2024-10-17T08:00:00+00:00"), "logstash http://ls:8338")
    finally:
        ledger.close()


def _in_own_pid_namespace(args: list) -> list:
    """`args` run in a pid namespace of their own (as in a container), with its own /proc: the
    kernel's list of locks shows there only the processes of that namespace."""
    import os
    import shutil
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("pid namespaces need root and unshare")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("cannot make a pid namespace here: %s" % probe.stderr.decode(errors="replace").strip())
    return ["unshare", "--pid", "--fork", "--mount-proc"] + args


@needs_samples
@pytest.mark.parametrize("run_inside", [True, False], ids=["run-in-a-container", "status-in-a-container"])
def test_a_run_in_another_pid_namespace_is_shown_running(tmp_path, run_inside):
    """A feed in a container, its status read from the host (or the reverse), was shown `ended
    without a record (killed, ...)` while it ran: the kernel lists its lock under another pid
    than the one its row holds, or not at all."""
    from tests.fakes.serving import wait_until
    db = tmp_path / "kcing.db"
    # Pauses of 5 s between batches: the feed runs for tens of seconds (it is killed once status
    # has read it), not the five that a status started slowly on a loaded machine could outlast.
    env = clean_environ(KCING_DB=str(db), ES_LOAD_INTERVAL="5")
    feed = [sys.executable, str(REPO / "kcing.py"), "feed_es", "--source", "samples", "--samples-dir", str(SAMPLES),
            "--output", str(tmp_path / "out"), "-q"]
    status = [sys.executable, str(REPO / "kcing.py"), "status", "--json"]
    if run_inside:
        feed = _in_own_pid_namespace(feed)
    else:
        status = _in_own_pid_namespace(status)
    # A group of its own: the kill below reaches the feed inside the namespace, not only unshare.
    feeding = subprocess.Popen(feed, env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        assert wait_until(lambda: (tmp_path / "out").is_dir() and any((tmp_path / "out").iterdir()), timeout=30)
        shown = subprocess.run(status, env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert feeding.poll() is None, "the feed ended before status was read: %s" % (feeding.communicate(),)
    finally:
        if feeding.poll() is None:
            os.killpg(feeding.pid, signal.SIGKILL)
        feeding.communicate()
    assert shown.returncode == 0, shown.stderr
    (run,) = json.loads(shown.stdout)["runs"]
    recorded = Path(str(db) + ".lock").read_text()
    assert run["outcome"] == "running (pid %s)" % recorded, run


def test_a_lock_file_not_holding_its_holders_pid_still_tells_the_run_running(tmp_path):
    """Between taking the lock and writing its pid, the file holds the last run's pid (or
    nothing): the pid the kernel lists for the holder tells the run then."""
    import fcntl
    import os
    if not os.path.exists("/proc/locks"):
        pytest.skip("no /proc/locks")
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.start_run("feed_es")  # this process's run, holding the lock below
    ledger.close()
    lock = Path(str(db) + ".lock")
    lock.write_text("0")  # no process has pid 0
    held = os.open(str(lock), os.O_RDWR)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        (run,) = status_json(clean_environ(KCING_DB=str(db)), tmp_path)["runs"]
    finally:
        os.close(held)
    assert run["outcome"] == "running (pid %d)" % os.getpid(), run


def test_status_shows_the_ledger_at_one_moment_while_a_run_records_its_objects_and_its_end(tmp_path, monkeypatch,
                                                                                          capsys):
    """A feed that records its last objects and closes its row while status reads the ledger: its
    row and the objects it delivered are shown from one moment, both before (the run `running`,
    not `ended without a record` once its lock is gone) or both after, never its end (`ok,
    delivered 1`) beside counts read before it delivered anything."""
    import os
    import sqlite3
    from kcing import settings as settings_module
    from kcing.commands import status as status_command
    from kcing.runlock import RunLock
    db = tmp_path / "kcing.db"
    Ledger.open(str(db)).close()
    with sqlite3.connect(str(db)) as conn:
        conn.execute("INSERT INTO run (command, started, counts) VALUES ('feed_es', '2024-10-16 08:00:00', ?)",
                     [json.dumps({"pid": os.getpid(), "source": "legacy"})])
    conn.close()
    lock = RunLock(str(db)).__enter__()
    first_read = Ledger.missing_counts

    def the_run_ends_meanwhile(ledger, **options):
        counted = first_read(ledger, **options)
        with sqlite3.connect(str(db)) as writer:  # the feed, in its own process
            writer.execute("INSERT INTO upstream_file (source, kind, upstream_id, url, state, attempts, first_seen, "
                           "destination) VALUES ('legacy', 'build', 'b1', 'u', 'delivered', 1, '2024-10-16 08:00:01', "
                           "'logstash http://ls:8337')")
            writer.execute("UPDATE run SET ended = '2024-10-16 08:00:02', outcome = 'ok', counts = ? WHERE id = 1",
                           [json.dumps({"source": "legacy", "delivered": 1})])
        writer.close()
        lock.__exit__(None, None, None)
        return counted

    monkeypatch.setattr(Ledger, "missing_counts", the_run_ends_meanwhile)
    settings = settings_module.load(environ={"KCING_DB": str(db)}, local_file=tmp_path / "none.py")
    assert status_command.run({"--json": True}, settings) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["objects"] == {}, data["objects"]
    assert data["runs"][0]["outcome"] == "running (pid %d)" % os.getpid(), data["runs"]


def test_a_killed_run_is_not_shown_running_while_a_later_run_under_the_same_pid_holds_the_lock(tmp_path):
    """In containers each run may get the same pid (1, the first process of a `docker run` or a
    Kubernetes job): a run killed there leaves its row open with the pid of the run that holds the
    lock after it. That run, its feed's row closed and waiting to check Elasticsearch (`feed_es
    --verify`), is not the killed one: its row is `ended without a record`, not `running`."""
    import os
    from kcing.runlock import RunLock
    from kcing.status import UNRECORDED_END
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    try:
        ledger.start_run("feed_es", {"source": "api"})  # the killed run: its row keeps its pid, this process's
        with RunLock(str(db)):  # the run after it, under the same pid
            later = ledger.start_run("feed_es", {"source": "api"})
            ledger.finish_run(later, "ok", {"source": "api", "delivered": 1})
            data = status_json(clean_environ(KCING_DB=str(db)), tmp_path)
            text = status_text(clean_environ(KCING_DB=str(db)), tmp_path)
            with_its_row_open = ledger.start_run("reconcile")  # its check begins: its own row is the running one
            checking = status_json(clean_environ(KCING_DB=str(db)), tmp_path)
    finally:
        ledger.close()
    assert [run["outcome"] for run in data["runs"]] == ["ok", UNRECORDED_END], data["runs"]
    assert "running (pid" not in text, text
    assert with_its_row_open == later + 1
    assert [run["outcome"] for run in checking["runs"]] == ["running (pid %d)" % os.getpid(), "ok", UNRECORDED_END]


def test_a_killed_run_is_not_shown_running_while_a_run_that_has_not_opened_its_row_yet_holds_the_lock(tmp_path):
    """The newest row is open, left by a run killed under another pid than the run holding the
    lock now, which has not opened its own row yet: that row `ended without a record`."""
    from kcing.ledger import models
    from kcing.runlock import RunLock
    from kcing.status import UNRECORDED_END
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    try:
        killed = ledger.start_run("feed_es", {"source": "api"})
        models.Run.update(counts=json.dumps({"source": "api", "pid": 4194300999})).where(
            models.Run.id == killed).execute()
        with RunLock(str(db)):
            data = status_json(clean_environ(KCING_DB=str(db)), tmp_path)
            text = status_text(clean_environ(KCING_DB=str(db)), tmp_path)
    finally:
        ledger.close()
    assert [run["outcome"] for run in data["runs"]] == [UNRECORDED_END], data["runs"]
    assert "running (pid" not in text, text


def test_a_run_that_took_the_lock_after_status_first_looked_is_shown_running(tmp_path):
    """status asks who holds the lock, then reads its snapshot: a run that took the lock and
    opened its row between the two holds the lock now, and its open row is its run in progress,
    not one `ended without a record`."""
    import os
    from kcing.runlock import RunLock
    from kcing.status import report
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    try:
        with RunLock(str(db)):
            ledger.start_run("feed_es", {"source": "api"})
            with ledger.snapshot():
                data = report(ledger, held_before=())
    finally:
        ledger.close()
    assert data["runs"][0]["outcome"] == "running (pid %d)" % os.getpid(), data["runs"]


def test_the_readme_s_example_is_what_status_prints_for_the_ledger_it_describes():
    """The README's example of `kcing status` left out the last reconcile and the most frequent
    errors, which status prints whenever there is a reconcile or an object not delivered."""
    from kcing.status import as_text
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    [example] = re.findall(r"```\n(ledger: /srv/kcing/kcing\.db\n.*?)```", readme, re.S)
    reconcile = {"command": "reconcile", "started": "2024-10-16 08:18:00 UTC", "ended": "2024-10-16 08:18:09 UTC",
                 "outcome": "missing", "counts": {"documents": 412, "checked": 412, "present": 411, "missing": 1,
                                                  "marked": 1, "held_missing": 1, "expired": 0, "unreadable": 0}}
    feed = {"command": "feed_es", "started": "2024-10-16 08:17:00 UTC", "ended": "2024-10-16 08:17:41 UTC",
            "outcome": "error 1", "counts": {"delivered": 40, "rejected": 1, "failed": 1, "too_large": 0,
                                             "documents": 5210, "source": "legacy", "destination":
                                             "logstash http://ls:8007,http://ls:8337,http://ls:8338,http://ls:8339"}}
    errors = [{"state": "failed", "objects": 1, "error": "GET https://storage.kernelci.org/<path> failed 3 times "
                                                         "(last: HTTP 503)"},
              {"state": "failed", "objects": 1, "error": "missing in Elasticsearch"},
              {"state": "rejected", "objects": 1,
               "error": "not valid JSON: Expecting ',' delimiter: line <n> column <n> (char <n>)"}]
    data = {"ledger": "/srv/kcing/kcing.db", "retried_from": "2024-10-13", "watermarks": {},
            "destinations": {"logstash http://ls:8337": {"legacy": {"build": {
                "delivered": 412, "failed": 2, "rejected": 1, "pending": 0, "too_large": 0, "missing_in_es": 1}}}},
            "runs": [reconcile, feed], "last_reconcile": reconcile, "errors": errors}
    assert as_text(data) + "\n" == example


def _strict_json(text: str):
    """JSON as RFC 8259 (and JSON.parse, Go, serde_json...) reads it: no NaN, Infinity."""
    def refuse(constant):
        raise ValueError("not JSON: %s" % constant)
    return json.loads(text, parse_constant=refuse)


def test_status_json_is_valid_json_whatever_a_run_row_s_counts_hold(tmp_path):
    """A run row's counts edited by hand (sqlite3) to hold NaN or 1e999, which Python's json
    reads as nan and inf: `status --json` printed `NaN` and `Infinity`, which are no JSON,
    and a monitoring script's parser refused the whole report."""
    db = tmp_path / "kcing.db"
    env = clean_environ(KCING_DB=str(db))
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")],
                env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    with sqlite3.connect(str(db)) as connection:
        connection.execute("""UPDATE run SET counts = '{"delivered": NaN, "documents": 1e999}'""")
    connection.close()
    shown = kcing(["status", "--json"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    _strict_json(shown.stdout)


def test_lava_jobs_refused_for_repeating_too_much_count_as_one_cause(tmp_path):
    """Two LAVA jobs refused for one reason: the message names each job's own count of documents
    and its own MiB, which made each job a cause of its own, pushing others out of the five shown."""
    from tests.test_documents_lava import with_long_tree_and_lines
    files = []
    for number, (tree, lines) in enumerate(((60_000, 8_000), (70_000, 9_000))):
        callback = json.loads(with_long_tree_and_lines(tree, lines))
        callback["id"] = 1000 + number
        path = tmp_path / ("lava-json-%d.json" % number)
        path.write_text(json.dumps(callback), encoding="utf-8")
        files.append(str(path))
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    fed = kcing(["feed_es", "--lavas", *files, "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 1, fed.stderr
    shown = kcing(["status", "--json"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    rejected = [error for error in json.loads(shown.stdout)["errors"] if error["state"] == "rejected"]
    assert [error["objects"] for error in rejected] == [2], rejected
