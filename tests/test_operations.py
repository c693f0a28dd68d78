"""Commands around the main job: gen_samples, status, the run lock, signals, help and docs."""
from __future__ import annotations

import hashlib
import json
import re
import signal
from datetime import date
from pathlib import Path

import pytest

from kcing.ledger.ledger import Ledger

from kcing import cli, commands
from kcing.samples import sample_path
from tests.fakes.legacy_data import (
    at, bmeta_json, boot_item, boot_json, boot_path, build_item, build_json, lava_json, small_corpus,
)
from tests.fakes.legacy_replica import LegacyCorpus, LegacyReplica
from tests.fakes.serving import ManualClock
from tests.fakes.serving import wait_until
from tests.feedrun import (REPO, clean_environ, feed_environ, integrity, kcing, kcing_process, ledger_states,
                           reaped)
from kcing.runlock import RunLock


# gen_samples -----------------------------------------------------------------------------------

def test_gen_samples_saves_files_and_a_manifest_a_feed_can_replay(legacy_replica, logstash, tmp_path):
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    result = kcing(["gen_samples"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((samples / "manifest.json").read_text())
    listed = legacy_replica.corpus.count("build") + legacy_replica.corpus.count("boot")
    assert len(manifest["objects"]) == listed
    for entry in manifest["objects"]:
        assert re.fullmatch(r"(build|lava|boot)/[0-9a-f]{24}\.json", entry["path"])
        assert (samples / entry["path"]).stat().st_size == entry["size"]
        assert entry["listing"]["_id"]["$oid"] == entry["upstream_id"]
    assert not list(samples.rglob("*.tmp"))

    again = kcing(["gen_samples"], env, tmp_path)
    assert "0 saved, %d already present" % listed in again.stdout

    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples)], env, tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert "delivered %d" % listed in replay.stdout


def test_a_samples_feed_of_what_gen_samples_saved_writes_byte_for_byte_what_the_live_crawl_wrote(tmp_path):
    """Samples are for offline work: replayed, they must make the documents the crawl of the same
    objects made, in the same indices under the same ids, whatever way the crawl found each file
    (a bmeta.json where build.json is missing, a LAVA lab's boot report where no callback is, a
    callback naming no lab, a listing date finer than milliseconds, a null file_server_resource)."""
    today = date(2019, 5, 31)
    corpus = small_corpus(today)  # a null file_server_resource, a `+` in a path, a lab without LAVA
    nested = build_item("next", "next-20190531", "riscv", "defconfig", at(today, 0, 4))
    corpus.add_bmeta_build(nested, bmeta_json(nested))
    report_only = boot_item(nested, "lab-collabora", "qemu", at(today, 0, 5))
    corpus.add_boot(report_only, boot_path(report_only, lava=False), boot_json(report_only))
    fine = dict(build_item("next", "next-20190531", "mips", "defconfig", at(today, 0, 6)),
                created_on={"$date": "2019-05-31T06:00:00.123456Z"})
    corpus.add_build(fine, build_json(fine))
    unnamed = boot_item(fine, "lab-x", "malta", at(today, 0, 7))
    callback = json.loads(lava_json(unnamed, 999))
    del callback["lab_name"]
    corpus.add_boot(unnamed, boot_path(unnamed), json.dumps(callback).encode())
    samples, live, replayed = tmp_path / "saved", tmp_path / "live", tmp_path / "replayed"
    with LegacyReplica(corpus, today=today, clock=ManualClock()) as replica:
        env = feed_environ(replica, _NO_LOGSTASH, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
        crawl = kcing(["feed_es", "--output", str(live)], env, tmp_path)
        assert crawl.returncode == 0, crawl.stdout + crawl.stderr
        saved = kcing(["gen_samples"], env, tmp_path)
        assert saved.returncode == 0, saved.stdout + saved.stderr
    listed = corpus.count("build") + corpus.count("boot")
    assert "listed %d," % listed in crawl.stdout and "%d saved" % listed in saved.stdout
    replay = kcing(["feed_es", "--source", "samples", "--output", str(replayed)], env, tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    written = sorted(path.name for path in live.glob("*.ndjson"))
    assert written == ["boot.ndjson", "build.ndjson", "lava.ndjson"]
    assert sorted(path.name for path in replayed.glob("*.ndjson")) == written
    for name in written:
        assert (replayed / name).read_bytes() == (live / name).read_bytes(), name


def test_gen_samples_never_saves_a_web_page_answered_in_place_of_a_file_and_saves_the_file_next_run(
        legacy_replica, logstash, tmp_path):
    """A proxy's 502 or login page sent with 200 is no upstream file: saved, it was "already
    present" for every later run, and its replay rejected for good."""
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    build = legacy_replica.corpus.items("build")[0].doc
    page = b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>proxy</body></html>\n"
    legacy_replica.storage.fail_next("/%s/build.json" % build["file_server_resource"], 200, body=page)
    listed = legacy_replica.corpus.count("build") + legacy_replica.corpus.count("boot")
    first = kcing(["gen_samples"], env, tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "%d saved, 0 already present, 1 failed" % (listed - 1) in first.stdout
    assert "502 Bad Gateway" in first.stderr and "Traceback" not in first.stderr
    upstream_id = build["_id"]["$oid"]
    assert upstream_id not in {entry["upstream_id"] for entry in json.loads((samples / "manifest.json").read_text())["objects"]}
    assert not sample_path(samples, "build", upstream_id).exists()
    again = kcing(["gen_samples"], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 saved, %d already present" % (listed - 1) in again.stdout
    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples)], env, tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr


def test_gen_samples_records_the_url_that_served_a_file_found_by_its_fallback(tmp_path):
    """The manifest's url says where the saved file is upstream: for a build whose directory holds
    only bmeta.json, or a LAVA lab's boot with only its boot report, not the file that answered 404.
    A replica built from such samples then serves each file where storage had it."""
    today = date(2019, 5, 31)
    corpus = LegacyCorpus()
    nested = build_item("next", "next-20190531", "riscv", "defconfig", at(today, 0, 4))
    corpus.add_bmeta_build(nested, bmeta_json(nested))
    report_only = boot_item(nested, "lab-collabora", "qemu", at(today, 0, 5))
    corpus.add_boot(report_only, boot_path(report_only, lava=False), boot_json(report_only))
    samples = tmp_path / "saved"
    with LegacyReplica(corpus, today=today, clock=ManualClock()) as replica:
        env = feed_environ(replica, _NO_LOGSTASH, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
        saved = kcing(["gen_samples"], env, tmp_path)
        storage = replica.storage_url
    assert saved.returncode == 0, saved.stdout + saved.stderr
    urls = {entry["kind"]: entry["url"] for entry in json.loads((samples / "manifest.json").read_text())["objects"]}
    assert urls == {"build": "%s/%s/bmeta.json" % (storage, nested["file_server_resource"]),
                    "lava": "%s/%s" % (storage, boot_path(report_only, lava=False))}
    rebuilt = LegacyCorpus.from_samples(samples)
    assert rebuilt.has_file(boot_path(report_only, lava=False)) and not rebuilt.has_file(boot_path(report_only))


class _NO_LOGSTASH:
    """The feeds here write NDJSON (--output): no Logstash input is ever asked."""
    urls = {route: "http://127.0.0.1:9" for route in ("build", "lava", "boot")}


def test_a_gen_samples_run_killed_on_the_way_keeps_what_it_saved_for_the_next(legacy_replica, logstash, tmp_path):
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples), KCI_THREADS="1",
                       KCING_PROGRESS_EVERY="1")
    legacy_replica.storage.delay("/", 0.5, count=None)
    listed = legacy_replica.corpus.count("build") + legacy_replica.corpus.count("boot")

    def saved_in_manifest() -> int:
        try:
            return len(json.loads((samples / "manifest.json").read_text())["objects"])
        except (OSError, ValueError):
            return 0

    process = kcing_process(["gen_samples"], env, tmp_path)
    try:
        assert wait_until(lambda: saved_in_manifest() >= 3, timeout=60), "no manifest written on the way"
    finally:
        process.kill()
        process.communicate()
    kept = json.loads((samples / "manifest.json").read_text())["objects"]
    assert 3 <= len(kept) < listed
    for entry in kept:
        assert hashlib.sha256((samples / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]
    # What a writer killed before its rename leaves (a SIGKILL between two syscalls is hard to
    # time): the next run, holding the directory's lock, removes it.
    (samples / ".partial-x1y2z3.tmp").write_bytes(b'{"half": ')
    legacy_replica.storage.clear_faults()
    again = kcing(["gen_samples"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "%d saved, %d already present" % (listed - len(kept), len(kept)) in again.stdout
    assert not list(samples.rglob(".partial-*"))
    assert "removed 1 partly written file a stopped run left in %s" % samples in again.stderr


@pytest.mark.parametrize("hostile", ["../../etc/x", "/etc/passwd", "a\x00b", "..", "a/../../b", ""])
def test_sample_paths_never_leave_the_samples_directory(tmp_path, hostile):
    with pytest.raises(ValueError):
        sample_path(tmp_path, "lava", hostile)
    with pytest.raises(ValueError):
        sample_path(tmp_path, hostile, "5cf0b1c259b5140d3b1f2a10")


def test_gen_samples_replaces_a_symlink_at_a_sample_s_name_and_never_writes_through_it(legacy_replica, logstash,
                                                                                       tmp_path):
    """One sample's name made a link to another's (a duplicate finder's `-makesymlinks`, a
    mistaken edit): saving the first again must replace the link, not write the first's content
    into the second's file."""
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    assert kcing(["gen_samples"], env, tmp_path).returncode == 0
    first, second = [entry for entry in json.loads((samples / "manifest.json").read_text())["objects"]
                     if entry["kind"] == "build"][:2]
    second_content = (samples / second["path"]).read_bytes()
    (samples / first["path"]).unlink()
    (samples / first["path"]).symlink_to(Path(second["path"]).name)

    again = kcing(["gen_samples"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert (samples / second["path"]).read_bytes() == second_content
    assert not (samples / first["path"]).is_symlink()
    entries = {entry["upstream_id"]: entry for entry in json.loads((samples / "manifest.json").read_text())["objects"]}
    assert entries[first["upstream_id"]]["path"] == first["path"]
    for entry in entries.values():
        assert hashlib.sha256((samples / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], entry["path"]
    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                   env, tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    third = kcing(["gen_samples"], env, tmp_path)
    assert "0 saved, %d already present" % len(entries) in third.stdout


def test_gen_samples_saves_again_a_sample_linked_to_a_file_outside_the_directory_which_a_replay_refuses(
        legacy_replica, logstash, tmp_path):
    """A sample moved elsewhere and linked back (to another disk, to share it): the replay never
    follows a link out of the samples directory, so gen_samples must not take it as present,
    which would leave it refused by every replay; it saves the file in the link's place."""
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    assert kcing(["gen_samples"], env, tmp_path).returncode == 0
    entries = json.loads((samples / "manifest.json").read_text())["objects"]
    moved = next(entry for entry in entries if entry["kind"] == "build")
    elsewhere = tmp_path / "elsewhere.json"
    (samples / moved["path"]).rename(elsewhere)
    (samples / moved["path"]).symlink_to(elsewhere)

    again = kcing(["gen_samples"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 saved, %d already present" % (len(entries) - 1) in again.stdout
    assert not (samples / moved["path"]).is_symlink()
    assert (samples / moved["path"]).read_bytes() == elsewhere.read_bytes()
    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                   env, tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert "delivered %d, rejected 0" % len(entries) in replay.stdout


def test_a_file_where_gen_samples_needs_a_directory_is_named_not_called_a_file_that_exists(legacy_replica, logstash,
                                                                                          tmp_path):
    # mkdir's "File exists", said of the sample to write or of the samples directory, named
    # neither what was in the way nor what to do about it.
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    samples.write_text("")
    refused = kcing(["gen_samples"], env, tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "kcing gen_samples: samples directory %s is not a directory: name a directory for the samples" % samples)

    samples.unlink()
    samples.mkdir()
    (samples / "build").write_text("")
    refused = kcing(["gen_samples"], env, tmp_path)
    assert refused.returncode == 2, refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"kcing gen_samples: cannot write %s/[0-9a-f]{24}\.json: %s is not a directory"
                        % (re.escape(str(samples / "build")), re.escape(str(samples / "build"))), last), last
    assert (samples / "build").read_text() == ""


def test_a_samples_directory_named_by_a_link_to_nothing_is_said_not_to_be_a_directory(legacy_replica, logstash,
                                                                                      tmp_path):
    # A link whose target is gone (a disk not mounted): mkdir's "File exists" again, of a name
    # where the user sees nothing.
    samples = tmp_path / "saved"
    samples.symlink_to(tmp_path / "unmounted" / "samples")
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    refused = kcing(["gen_samples"], env, tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        "kcing gen_samples: samples directory %s is not a directory: name a directory for the samples" % samples)
    assert not (tmp_path / "unmounted").exists()


def test_hostile_upstream_names_are_refused_not_written(legacy_replica, logstash, tmp_path):
    today = legacy_replica.frontend.today
    build = build_item("next", "next-x", "arm64", "defconfig", at(today, 0, 1))
    legacy_replica.corpus.add_build(build, build_json(build))
    evil = boot_item(build, "../../../../tmp/evil-lab", "board", at(today, 0, 2))
    legacy_replica.corpus.add_item("boot", evil)
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    result = kcing(["gen_samples"], env, tmp_path)
    assert result.returncode == 1
    assert "1 refused" in result.stdout
    assert all(samples in path.parents for path in samples.rglob("*"))
    assert not Path("/tmp/evil-lab").exists()


# status ----------------------------------------------------------------------------------------

def test_status_reports_counts_runs_and_errors(legacy_replica, logstash, tmp_path):
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db")
    first = legacy_replica.corpus.items("build")[0].doc
    legacy_replica.corpus.remove_file(first["file_server_resource"] + "/build.json")
    assert kcing(["feed_es"], env, tmp_path).returncode == 1
    text = kcing(["status"], env, tmp_path)
    assert text.returncode == 0, text.stderr
    assert re.search(r"build\s+\d+\s+1\s+0\s+0", text.stdout)
    assert "404" in text.stdout and "feed_es" in text.stdout
    data = json.loads(kcing(["status", "--json"], env, tmp_path).stdout)
    assert data["objects"]["legacy"]["build"]["failed"] == 1
    assert data["runs"][0]["outcome"] == "error 1"


def test_status_of_a_ledger_with_no_run_says_so_in_words(tmp_path):
    Ledger.open(str(tmp_path / "kcing.db")).close()
    result = kcing(["status", "--db", str(tmp_path / "kcing.db")], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    runs = result.stdout.split("last runs:\n", 1)[1].split("\n", 1)[0]
    assert runs == "  none yet"


def test_status_without_a_ledger_is_a_clear_error(tmp_path):
    result = kcing(["status", "--db", str(tmp_path / "none.db")], {}, tmp_path)
    assert result.returncode == 2 and "no ledger" in result.stderr


# the run lock and signals ----------------------------------------------------------------------

def test_a_second_run_exits_4_while_the_first_holds_the_lock(legacy_replica, logstash, tmp_path):
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db")
    with RunLock(str(tmp_path / "kcing.db")):
        result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 4
    assert "another kcing run" in result.stderr
    assert kcing(["feed_es"], env, tmp_path).returncode == 0  # released with its holder


@pytest.mark.parametrize("command", [["feed_es"], ["reconcile"], ["drp"]])
def test_a_run_through_another_name_of_the_ledger_is_refused_while_the_first_holds_the_lock(legacy_replica, logstash,
                                                                                          tmp_path, command):
    """A symlink to the ledger (or a relative name) is the same ledger: one lock, not one per name."""
    db = tmp_path / "data" / "kcing.db"
    db.parent.mkdir()
    env = feed_environ(legacy_replica, logstash, db, ES_HOST="http://127.0.0.1:9")
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    (tmp_path / "link.db").symlink_to(db)
    linked = dict(env, KCING_DB=str(tmp_path / "link.db"))
    relative = dict(env, KCING_DB="kcing.db")
    before = ledger_states(db)
    with RunLock(str(db)):
        for other in (linked, relative):
            refused = kcing(command, other, db.parent if other is relative else tmp_path)
            assert refused.returncode == 4, refused.stdout + refused.stderr
            assert refused.stderr.splitlines()[-1].startswith("kcing %s: another kcing run (pid " % command[0])
    assert ledger_states(db) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "link.db"]


def test_a_ledger_file_with_another_hard_link_is_refused_by_the_commands_that_write_it(tmp_path):
    """SQLite keeps a -wal per name and the run lock is `<name>.lock`: runs through two hard
    links of one ledger would write it at once, each unaware of the other. A command that writes
    the ledger refuses it; status and the dry runs, which only read it, still do."""
    db = tmp_path / "kcing.db"
    env = clean_environ(KCING_DB=str(db), KCI_SAMPLES_DIR=str(REPO / "samples"), ES_HOST="http://127.0.0.1:9")
    feed = ["feed_es", "--source", "samples", "--output", str(tmp_path / "out")]
    assert kcing(feed, env, tmp_path).returncode == 0
    other = tmp_path / "other.db"
    other.hardlink_to(db)
    before = ledger_states(db)
    for name in (db, other):
        named = dict(env, KCING_DB=str(name))
        for command in (feed, ["reconcile"], ["drp"]):
            refused = kcing(command, named, tmp_path)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert refused.stderr.splitlines()[-1] == (
                "kcing %s: KCING_DB %s is one file under 2 names (hard links): a run through another of its names "
                "would take its own run lock and -wal file and write the ledger at the same time, losing rows; keep "
                "one name (a symbolic link may point to it) and remove the others" % (command[0], name))
    # Refused before SQLite opened it: no -wal or -shm of the other name.
    assert not [path.name for path in tmp_path.iterdir() if path.name.startswith("other.db-")]
    assert ledger_states(db) == before
    for name in (db, other):
        for command in (["status"], feed + ["--dry-run"]):
            read = kcing(command, dict(env, KCING_DB=str(name)), tmp_path)
            assert read.returncode == 0, read.stdout + read.stderr
    assert ledger_states(db) == before
    other.unlink()
    assert kcing(feed, env, tmp_path).returncode == 0  # one name again: written as before


def test_a_ledger_named_by_a_loop_of_symbolic_links_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "a.db").symlink_to("b.db")
    (tmp_path / "b.db").symlink_to("a.db")
    refused = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")],
                    clean_environ(KCING_DB=str(tmp_path / "a.db"), KCI_SAMPLES_DIR=str(REPO / "samples")), tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines() == ["kcing feed_es: %s is a loop of symbolic links: point it at a file"
                                           % (tmp_path / "a.db")]


def test_a_killed_run_does_not_leave_the_lock_held(legacy_replica, logstash, tmp_path):
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db")
    logstash.lava.slow_next(5, count=None)
    process = kcing_process(["feed_es"], env, tmp_path)
    assert wait_until(lambda: logstash.lava.inflight > 0, timeout=30)
    process.kill()
    process.wait()
    logstash.lava.clear_faults()
    assert kcing(["feed_es"], env, tmp_path).returncode == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_finishes_the_batch_in_flight_and_records_it(legacy_replica, logstash, tmp_path, signum):
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, logstash, db, LS_PIPELINE_BATCH_SIZE="20", KCI_THREADS="1")
    logstash.lava.slow_next(0.5, count=None)
    process = kcing_process(["feed_es"], env, tmp_path)
    assert wait_until(lambda: logstash.lava.inflight > 0, timeout=30)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "stopped by a signal" in stderr and "Traceback" not in stderr
    assert logstash.lava.trace and logstash.lava.trace[-1][2] == 200  # the batch in flight was answered
    assert integrity(db) == "ok"
    logstash.lava.clear_faults()
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(ledger_states(db).values()) == {"delivered"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_runs_last_batch_is_in_flight_ends_it_with_130_too(legacy_replica, logstash, tmp_path,
                                                                              signum):
    # Each route's documents in one batch, posted once everything is listed and built: once the
    # other routes' are answered, the lava batch in flight is the run's last. The run finished it
    # and ended as one never stopped, 0.
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, logstash, db, LS_PIPELINE_BATCH_SIZE="100000")
    logstash.lava.slow_next(3.0, count=None)  # long enough for the signal to land on a loaded machine
    others = (logstash.build, logstash.boot)
    process = kcing_process(["feed_es"], env, tmp_path)
    assert wait_until(lambda: logstash.lava.inflight > 0 and all(
        emulator.requests and not emulator.inflight for emulator in others), timeout=30)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert len(logstash.lava.requests) == 1, "the lava documents took more than one batch"
    assert process.returncode == 130, stderr
    assert "stopped by a signal" in stderr and "Traceback" not in stderr
    assert logstash.lava.trace[-1][2] == 200  # the batch in flight was answered, and recorded:
    assert set(ledger_states(db).values()) == {"delivered"}
    logstash.lava.clear_faults()
    again = kcing(["feed_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "delivered 0" in again.stderr


def test_a_signal_stopping_a_run_into_output_files_says_what_was_written_not_what_logstash_acknowledged(tmp_path):
    # A pause between batches (ES_LOAD_INTERVAL) holds the run once its first batch is written.
    out = tmp_path / "out"
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"), KCI_SAMPLES_DIR=str(REPO / "samples"),
                        ES_LOAD_INTERVAL="60")
    process = kcing_process(["feed_es", "--source", "samples", "--output", str(out), "--batch-size", "5"], env,
                            tmp_path)
    assert wait_until(lambda: any(path.stat().st_size for path in out.glob("*.ndjson")), timeout=30)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert stderr.splitlines()[-1] == ("kcing feed_es: stopped by a signal; what was written to the NDJSON files is "
                                       "recorded, the rest is sent by the next run"), stderr


# help and documentation ------------------------------------------------------------------------

@pytest.mark.parametrize("command", sorted(commands.NAMES))
def test_every_command_is_documented_and_has_help(command, capsys):
    assert "kcing %s" % command in commands.load(command).USAGE
    assert command in (REPO / "README.md").read_text()
    assert cli.main([command, "--help"]) == 0
    assert "Usage:" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    assert cli.main(["feed_es", "--no-such-flag"]) == 2
    assert cli.main(["no_such_command"]) == 2


def test_every_setting_is_in_the_readme():
    from kcing.settings import SPECS

    from kcing.settings import markdown_table

    readme = (REPO / "README.md").read_text()
    missing = [name for name in SPECS if name not in readme]
    assert not missing
    # Defaults and meanings too: regenerate with `python -m kcing.settings` when this fails.
    assert markdown_table() in readme


def test_log_file_gets_the_trail(legacy_replica, logstash, tmp_path):
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db")
    log = tmp_path / "feed.log"
    assert kcing(["feed_es", "-l", str(log)], env, tmp_path).returncode == 0
    trail = log.read_text()
    assert "run finished: listed" in trail and "delivered" in trail


@pytest.mark.parametrize("rotation", ["moved", "removed"])
def test_a_log_file_rotated_during_a_run_gets_the_rest_of_the_trail_at_its_name(tmp_path, rotation):
    """logrotate moves the file away (and, with compress, removes it once gzip has read it): the
    run kept writing into the moved or removed file, and its end (the summary, how it ended),
    what a cron job's reader looks for, never reached the file at the name."""
    from tests.feedrun import SAMPLES
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    log = tmp_path / "feed.log"
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"), ES_LOAD_INTERVAL="0.5", KCING_PROGRESS_EVERY="1")
    run = kcing_process(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output",
                         str(tmp_path / "out"), "-q", "-l", str(log)], env, tmp_path)
    with reaped(run):
        assert wait_until(lambda: log.exists() and "progress:" in log.read_text(), timeout=30)
        if rotation == "moved":
            log.rename(tmp_path / "feed.log.1")
        else:
            log.unlink()
        assert run.wait(timeout=60) == 0, run.communicate()
    run.communicate()
    trail = log.read_text()
    assert "run finished: listed 11" in trail and "feed_es: 2462 documents in 7 batches" in trail, trail
    if rotation == "moved":
        assert "run finished" not in (tmp_path / "feed.log.1").read_text()


def test_a_log_directory_removed_during_a_run_costs_the_log_not_the_run(tmp_path):
    """The log file is opened again at its name once it is gone; its directory gone too, that
    fails outside the handler's own guard: the run goes on, saying once that the log is lost."""
    import shutil
    from tests.feedrun import SAMPLES
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    log = tmp_path / "logs" / "feed.log"
    log.parent.mkdir()
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"), ES_LOAD_INTERVAL="0.5", KCING_PROGRESS_EVERY="1")
    run = kcing_process(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output",
                         str(tmp_path / "out"), "-q", "-l", str(log)], env, tmp_path)
    with reaped(run):
        assert wait_until(lambda: log.exists() and "progress:" in log.read_text(), timeout=30)
        shutil.rmtree(str(log.parent))
        stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stdout + stderr
    assert "Traceback" not in stderr and stderr.count("cannot write the log file") == 1, stderr
    written = sum(len(path.read_bytes().splitlines()) for path in (tmp_path / "out").glob("*.ndjson"))
    assert written == 2 * 2462  # an action and a document each


def test_a_log_file_in_a_directory_not_made_yet_says_to_make_it(tmp_path):
    """The cron lines log into /var/log/kcing/, which a new install lacks: the run was refused
    with "No such file or directory", which does not say which part is missing or what to do."""
    log = tmp_path / "kcing-logs" / "feed.log"
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    refused = kcing(["status", "-l", str(log)], env, tmp_path, timeout=30)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.splitlines() == [
        "kcing status: cannot open log file %s: directory %s does not exist; create it (mkdir -p %s) or check the "
        "name" % (log, log.parent, log.parent)]
    assert not log.parent.exists()  # made by no one but the user


@pytest.mark.parametrize("option, file_name", [("-l", "kcing.log"), ("--metrics", "kcing.prom"), ("--db", "kcing.db")])
def test_a_file_option_ending_with_a_slash_names_a_directory_and_is_refused(option, file_name, tmp_path):
    """`-l /var/log/kcing/` before that directory was made: Python drops the slash, so the run
    logged into a new file /var/log/kcing, where the cron line's `mkdir -p` then failed; a ledger
    or metrics file so named was made as a file too, where a shell refuses the name."""
    from tests.feedrun import SAMPLES
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    ledger = tmp_path / "kcing.db"
    feed = ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")]
    assert kcing(feed, clean_environ(KCING_DB=str(ledger)), tmp_path, timeout=120).returncode == 0
    before = ledger.read_bytes()
    directory = str(tmp_path / "state") + "/"
    refused = kcing(feed + [option, directory], clean_environ(KCING_DB=str(ledger)), tmp_path, timeout=30)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = "ends with /, which names a directory: name the file in it, e.g. %s%s" % (directory, file_name)
    [line] = refused.stderr.splitlines()
    if option == "--db":
        # A long value is shown shortened in the middle (a temporary directory's path can be long).
        assert line.startswith("kcing feed_es: invalid KCING_DB='/") and line.endswith(" (from --db): " + said), line
    else:
        assert line == "kcing feed_es: %s %s %s (see kcing feed_es --help)" % (
            "--log-file" if option == "-l" else option, directory, said)
    assert not (tmp_path / "state").exists()
    assert ledger.read_bytes() == before



@pytest.mark.parametrize("command", [["feed_es", "--source", "samples", "--output", "out"], ["status"]])
def test_a_log_file_named_as_the_ledger_not_made_yet_is_refused_and_leaves_no_file(command, tmp_path):
    """A first run of `kcing feed_es --db kcing.db -l kcing.db` wrote its log lines into the ledger
    it then made there, and only the next run was refused."""
    from tests.feedrun import SAMPLES
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    env = clean_environ(KCI_SAMPLES_DIR=str(SAMPLES), KCING_DB=str(tmp_path / "kcing.db"))
    for log_file in ("kcing.db", str(tmp_path / "kcing.db")):
        refused = kcing(command + ["-l", log_file], env, tmp_path, timeout=60)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.splitlines() == [
            "kcing %s: cannot open log file %s: it is the ledger (KCING_DB), which log lines would damage: name "
            "another file, e.g. kcing.log" % (command[0], log_file)]
        assert list(tmp_path.iterdir()) == []
    # Another name is taken (status then ends as it does without a ledger, its log file written).
    done = kcing(command + ["-l", "kcing.log"], env, tmp_path, timeout=120)
    assert done.returncode == (0 if command[0] == "feed_es" else 2), done.stderr
    assert (tmp_path / "kcing.log").read_text().strip()

@pytest.mark.parametrize("option", ["-l", "--metrics"])
def test_a_log_or_metrics_file_that_is_the_ledger_is_refused_and_the_ledger_kept(option, tmp_path):
    """`--metrics kcing.db` for `--db kcing.db` replaced the ledger with the run's figures (exit 0,
    then every command refused the file as no ledger), and `-l kcing.db` appended log lines to it."""
    from tests.feedrun import SAMPLES
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    ledger, other = tmp_path / "kcing.db", tmp_path / "other.db"
    feed = ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")]
    assert kcing(feed, clean_environ(KCING_DB=str(ledger)), tmp_path, timeout=120).returncode == 0
    assert kcing(feed, clean_environ(KCING_DB=str(other)), tmp_path, timeout=120).returncode == 0
    kept = {path: path.read_bytes() for path in (ledger, other)}
    for named, what in (("kcing.db", "the ledger (KCING_DB)" if option == "--metrics" else None),
                        ("other.db", None)):
        what = what or "an SQLite database (a kcing ledger?)"
        refused = kcing(feed + [option, named], clean_environ(KCING_DB=str(ledger)), tmp_path, timeout=60)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.splitlines() == [
            "kcing feed_es: --metrics %s is %s, which the run's figures would replace: name another file, e.g. "
            "kcing.prom" % (named, what) if option == "--metrics" else
            "kcing feed_es: cannot open log file %s: it is %s, which log lines would damage: name another file, "
            "e.g. kcing.log" % (named, what)]
    assert {path: path.read_bytes() for path in (ledger, other)} == kept
    if option == "--metrics":  # a ledger the run would make: not there yet, still the ledger's name
        new = tmp_path / "new.db"
        refused = kcing(feed + ["--db", str(new), option, str(new)], clean_environ(), tmp_path, timeout=60)
        assert refused.returncode == 2 and "is the ledger (KCING_DB)" in refused.stderr, refused.stderr
        assert not new.exists()


def test_a_log_file_that_is_a_fifo_nobody_reads_is_refused_not_waited_for(tmp_path):
    """Opening a FIFO for writing waits for a reader: a log shipper that was down held every
    run there for good, one more each time cron started one. With a reader, it is a log file."""
    import os
    from tests.feedrun import SAMPLES
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    fifo = tmp_path / "feed.log"
    os.mkfifo(str(fifo))
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    feed = ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out"), "-q",
            "-l", str(fifo)]
    refused = kcing(feed, env, tmp_path, timeout=30)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.splitlines() == ["kcing feed_es: cannot open log file %s: no process reads it (a FIFO "
                                           "without a reader, or a socket)" % fifo]
    assert not (tmp_path / "kcing.db").exists()
    # A reader (the trail of a samples run fits in the pipe's buffer, read once the run ended).
    reader = os.open(str(fifo), os.O_RDONLY | os.O_NONBLOCK)
    try:
        fed = kcing(feed, env, tmp_path, timeout=60)
        assert fed.returncode == 0, fed.stdout + fed.stderr
        trail = os.read(reader, 1 << 20).decode()
    finally:
        os.close(reader)
    assert "run finished: listed 11" in trail, trail


def test_a_log_fifo_whose_reader_lags_gets_the_whole_trail(tmp_path):
    """The FIFO is opened without waiting, then written as any log file: a reader that lags (a
    log shipper busy elsewhere) holds the writes until it reads, and no line is lost (written
    without waiting, a full pipe refused them: EAGAIN, "cannot write" and the rest dropped)."""
    import fcntl
    import os
    import threading
    import time
    from tests.feedrun import SAMPLES, kcing_process
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    fifo = tmp_path / "feed.log"
    os.mkfifo(str(fifo))
    reader = os.open(str(fifo), os.O_RDONLY | os.O_NONBLOCK)
    fcntl.fcntl(reader, 1031, 4096)  # F_SETPIPE_SZ: a page, less than the trail of a -d run
    feed = ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out"), "-q",
            "-d", "-l", str(fifo)]
    process = kcing_process(feed, clean_environ(KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    read = []

    def lagging_reader() -> None:
        time.sleep(1.0)  # the run fills the pipe meanwhile
        while True:
            try:
                chunk = os.read(reader, 1 << 16)
            except BlockingIOError:
                chunk = None
            if chunk:
                read.append(chunk)
            elif process.poll() is not None and chunk == b"":
                return
            else:
                time.sleep(0.01)

    reading = threading.Thread(target=lagging_reader, daemon=True)
    reading.start()
    try:
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    reading.join(10)
    os.close(reader)
    trail = b"".join(read).decode()
    assert process.returncode == 0, stdout + stderr
    assert "cannot write" not in stderr, stderr
    assert len(trail) > 4096 and "run finished: listed 11" in trail, trail[-500:]


def test_a_run_refused_at_start_says_why_in_the_log_file_too(tmp_path):
    """The -l file is the trail a cron job's reader has: a setting gone wrong (here in
    local_settings.py, edited by hand) ended every run with exit 2 and left nothing in it."""
    (tmp_path / "local_settings.py").write_text("ES_LAVA = 'ls.example:8338'\n")
    log = tmp_path / "feed.log"
    refused = kcing(["feed_es", "-l", str(log)], clean_environ(KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert refused.returncode == 2
    why = ("kcing feed_es: invalid ES_LAVA='ls.example:8338' (from local_settings.py): 'ls.example:8338' is not an "
           "http(s) URL: give its scheme, e.g. http://ls.example:8338")
    assert refused.stderr == why + "\n"
    (line,) = log.read_text().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ERROR kcing\.cli: (.*)", line).group(1) == \
        why + " (exit 2)"


def test_a_line_naming_a_path_that_is_not_utf8_reaches_the_log_file(tmp_path):
    """A byte of a name that is not UTF-8 (Python holds it as a lone surrogate) made the UTF-8
    log file refuse the line: "cannot write the log file", and every later line was lost."""
    log = tmp_path / "feed.log"
    metrics = str(tmp_path) + "/no\udcffdir/m.prom"  # passed to the child as the byte 0xff
    refused = kcing(["feed_es", "--source", "samples", "--output", str(tmp_path / "out"), "--metrics", metrics,
                     "-l", str(log)], clean_environ(KCING_DB=str(tmp_path / "kcing.db"), LC_ALL="C.UTF-8"), tmp_path)
    assert refused.returncode == 2
    assert "cannot write the log file" not in refused.stderr
    (line,) = log.read_text(encoding="utf-8").splitlines()
    assert line.endswith("ERROR kcing.cli: kcing feed_es: --metrics %s/no\\udcffdir/m.prom: directory %s/no\\udcffdir "
                         "does not exist (exit 2)" % (tmp_path, tmp_path))
