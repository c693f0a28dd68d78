"""The operations commands as cron runs them: the real program against servers on 127.0.0.1."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from kcing.admin import kibana as kb
from tests.fakes.kibana_server import KibanaEmulator
from tests.feedrun import REPO, clean_environ, feed_environ, kcing, ledger_rows

SHIPPED = REPO / "kibana" / "saved_objects.ndjson"


def kibana_environ(kibana, **extra):
    return clean_environ(KB_URL=kibana.url, **extra)


# backup_kbn / setup_kbn ------------------------------------------------------------------------

# Titles an encoding guess reads as another charset (windows-1250, johab, mac_latin2 ...) when
# taken alone; an export is UTF-8 whatever it holds.
NON_ASCII_TITLES = ["ôÉÀâç çê", "гагaaгжaе", "bcbกb กง", "Prüfung – naïve ünïcödé", "ß"]


def test_backup_keeps_non_ascii_text_exactly_and_a_restore_gives_it_back(tmp_path):
    out = tmp_path / "kibana"
    out.mkdir()  # backup_kbn makes the last directory of --kibana-dir, as mkdir does
    with KibanaEmulator() as source:
        for number, title in enumerate(NON_ASCII_TITLES):
            # One object per export: a short body is where a guessed charset goes wrong.
            source.store.clear()
            source.put({"type": "dashboard", "id": "d%d" % number, "attributes": {"title": title},
                        "references": []})
            saved = kcing(["backup_kbn", "--kibana-dir", str(out / str(number)), "--wait", "5"],
                          kibana_environ(source), tmp_path)
            assert saved.returncode == 0, saved.stderr
            [obj] = kb.parse_ndjson((out / str(number) / "saved_objects.ndjson").read_text(encoding="utf-8"))
            assert obj["attributes"]["title"] == title
    with KibanaEmulator() as target:
        for number, title in enumerate(NON_ASCII_TITLES):
            restored = kcing(["setup_kbn", "--kibana-dir", str(out / str(number)), "--wait", "5"],
                             kibana_environ(target), tmp_path)
            assert restored.returncode == 0, restored.stderr
            assert target.get("dashboard", "d%d" % number)["attributes"]["title"] == title


def test_overwrite_saves_what_it_replaces_first(tmp_path):
    directory = tmp_path / "kibana"
    directory.mkdir()
    shutil.copyfile(SHIPPED, directory / "saved_objects.ndjson")
    with KibanaEmulator() as kibana:
        kibana.put({"type": "dashboard", "id": "kcing-boots", "references": [],
                    "attributes": {"title": "Boots, as the team edited it"}})
        result = kcing(["setup_kbn", "--overwrite", "--kibana-dir", str(directory), "--wait", "5"],
                       kibana_environ(kibana), tmp_path)
        assert result.returncode == 0, result.stderr
        assert kibana.get("dashboard", "kcing-boots")["attributes"]["title"] == "kcing: boots"
    [backup] = (directory / "backups").iterdir()
    assert "saved to %s" % backup in result.stdout
    [obj] = kb.parse_ndjson(backup.read_text(encoding="utf-8"))
    assert obj["attributes"]["title"] == "Boots, as the team edited it"


# gen_samples -----------------------------------------------------------------------------------

BROKEN_MANIFESTS = {
    "a list": "[]\n",
    "objects not a list": '{"format": 1, "source": "legacy", "objects": {"build": 1}}\n',
    "an entry without its keys": '{"format": 1, "source": "legacy", "objects": [{"kind": "build"}]}\n',
    "an entry that is a string": '{"format": 1, "source": "legacy", "objects": ["build/x.json"]}\n',
    "a number for a hash": ('{"format": 1, "source": "legacy", "objects": [{"kind": "build", "upstream_id": "x", '
                            '"path": "build/x.json", "sha256": 7}]}\n'),
}


def test_gen_samples_refuses_a_manifest_it_cannot_read_and_leaves_it_alone(legacy_replica, logstash, tmp_path):
    for number, (what, text) in enumerate(BROKEN_MANIFESTS.items()):
        samples = tmp_path / ("samples-%d" % number)
        samples.mkdir()
        (samples / "manifest.json").write_text(text)
        env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
        result = kcing(["gen_samples"], env, tmp_path)
        assert result.returncode == 2, (what, result.stderr)
        [line] = result.stderr.splitlines()
        assert line.startswith("kcing gen_samples: ") and str(samples / "manifest.json") in line, (what, line)
        assert (samples / "manifest.json").read_text() == text, what
        assert sorted(path.name for path in samples.iterdir()) == ["manifest.json", "manifest.json.lock"], what


def test_gen_samples_names_what_a_manifest_entry_it_refuses_lacks(legacy_replica, logstash, tmp_path):
    # A hand-made manifest, which a replay takes, most often has no sha256: "lacks one of kind,
    # upstream_id, path, sha256" sent the user through all four.
    samples = tmp_path / "samples"
    samples.mkdir()
    text = ('{"objects": [{"kind": "build", "upstream_id": "x", "path": "build/x.json", "sha256": "%s"}, '
            '{"kind": "build", "upstream_id": "y", "path": "build/y.json"}]}\n' % ("0" * 64))
    (samples / "manifest.json").write_text(text)
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    result = kcing(["gen_samples"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        "kcing gen_samples: %s: entry 2 lacks sha256 (as text): gen_samples keeps only entries whose file it can "
        "check; fix or move the manifest" % (samples / "manifest.json")]
    assert (samples / "manifest.json").read_text() == text


def test_gen_samples_keeps_manifest_entries_whose_date_is_not_text(legacy_replica, logstash, tmp_path):
    import json

    samples = tmp_path / "samples"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    assert kcing(["gen_samples"], env, tmp_path).returncode == 0
    manifest = json.loads((samples / "manifest.json").read_text())
    assert len(manifest["objects"]) >= 3
    # Edited by hand: a date as a number and as a list, beside the dates gen_samples wrote.
    manifest["objects"][0]["date"] = 1604482867312
    manifest["objects"][1]["date"] = ["2020-11-04"]
    (samples / "manifest.json").write_text(json.dumps(manifest))
    again = kcing(["gen_samples"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    kept = {entry["upstream_id"]: entry["date"] for entry in json.loads((samples / "manifest.json").read_text())["objects"]}
    assert kept[manifest["objects"][0]["upstream_id"]] == 1604482867312
    assert kept[manifest["objects"][1]["upstream_id"]] == ["2020-11-04"]


def test_gen_samples_keeps_what_else_a_manifest_edited_by_hand_holds(legacy_replica, logstash, tmp_path):
    import json

    samples = tmp_path / "samples"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    assert kcing(["gen_samples"], env, tmp_path).returncode == 0
    manifest = json.loads((samples / "manifest.json").read_text())
    # A note on where the samples came from, and an entry's own remark: the rewrite dropped the note.
    manifest["note"] = {"from": "lab-x", "on": "2020-11-20"}
    manifest["objects"][0]["remark"] = "checked by hand"
    removed = manifest["objects"][-1]
    (samples / removed["path"]).unlink()  # so that the run saves a file, and rewrites the manifest
    (samples / "manifest.json").write_text(json.dumps(manifest))
    again = kcing(["gen_samples"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "1 saved" in again.stdout
    rewritten = json.loads((samples / "manifest.json").read_text())
    assert rewritten["note"] == {"from": "lab-x", "on": "2020-11-20"}
    assert rewritten["objects"][0]["remark"] == "checked by hand"
    assert (rewritten["format"], rewritten["source"]) == (1, "legacy")


def test_backup_of_an_empty_kibana_never_empties_a_file_that_holds_objects(tmp_path):
    directory = tmp_path / "kibana"
    directory.mkdir()
    shutil.copyfile(SHIPPED, directory / "saved_objects.ndjson")
    with KibanaEmulator(spaces=("ci",)) as kibana:  # a new Kibana, or the wrong space: nothing in it
        result = kcing(["backup_kbn", "--kibana-dir", str(directory), "--wait", "5"], kibana_environ(kibana), tmp_path)
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert "holds no saved objects" in line and str(directory / "saved_objects.ndjson") in line
        assert (directory / "saved_objects.ndjson").read_bytes() == SHIPPED.read_bytes()
        # The file it keeps restores, and a backup of what it restored gives the file back.
        assert kcing(["setup_kbn", "--space", "ci", "--kibana-dir", str(directory), "--wait", "5"],
                     kibana_environ(kibana), tmp_path).returncode == 0
        again = kcing(["backup_kbn", "--space", "ci", "--kibana-dir", str(directory), "--wait", "5"],
                      kibana_environ(kibana), tmp_path)
        assert again.returncode == 0, again.stderr
    assert (directory / "saved_objects.ndjson").read_bytes() == SHIPPED.read_bytes()


def a_fed_ledger(tmp_path):
    """(the ledger of a feed of the bundled samples to --output, the environment it ran in)."""
    db = tmp_path / "kcing.db"
    env = clean_environ()
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(REPO / "samples"), "--output",
                 str(tmp_path / "out"), "--db", str(db)], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    return db, env


# status ----------------------------------------------------------------------------------------

# Python writes stdout at once under PYTHONUNBUFFERED (set in many CI jobs and containers) and at
# exit otherwise, as a cron job or a shell runs kcing: a write that fails fails in one of two places.
BUFFERINGS = pytest.mark.parametrize("buffering", ["unbuffered", "buffered"])


def buffered_as(env, buffering):
    """`env` with stdout written at once (`unbuffered`) or held until the end (`buffered`)."""
    env = {name: value for name, value in env.items() if name != "PYTHONUNBUFFERED"}
    if buffering == "unbuffered":
        env["PYTHONUNBUFFERED"] = "1"
    return env


@BUFFERINGS
def test_status_into_a_pipe_closed_early_is_no_internal_error(tmp_path, buffering):
    db, env = a_fed_ledger(tmp_path)
    env = buffered_as(env, buffering)
    read, write = os.pipe()
    os.close(read)  # `kcing status | head -0`: the reader is gone before kcing writes
    process = subprocess.run([sys.executable, str(REPO / "kcing.py"), "status", "--db", str(db)], env=env,
                             cwd=str(tmp_path), stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write)
    assert process.stderr == ""
    assert process.returncode == 141, process.stderr


@BUFFERINGS
@pytest.mark.parametrize("args, status", [(["status"], 5), (["status", "--json"], 5), (["status", "--help"], 5),
                                          (["status", "--bogus"], 2), (["reconcile", "--dry-run"], None)])
def test_a_command_with_stdout_and_stderr_on_a_full_disk_ends_with_its_own_status(args, status, tmp_path, buffering):
    """`kcing ... >> /var/log/kcing.log 2>&1` when that disk is full: the line saying why a command
    ended could not be written either, which raised out of kcing, and every such run exited 1,
    which says that objects failed, whatever the run had done. A reconcile finding nothing to
    check ends as it would have (6) when its output is held to the end, and where its first line
    fails at once, as a run that could not write its output (5)."""
    if status is None:
        status = 5 if buffering == "unbuffered" else 6
    db, env = a_fed_ledger(tmp_path)
    env = buffered_as(env, buffering)
    with open("/dev/full", "w") as full:
        process = subprocess.run([sys.executable, str(REPO / "kcing.py"), *args, "--db", str(db)], env=env,
                                 cwd=str(tmp_path), stdout=full, stderr=full, timeout=60)
    assert process.returncode == status


@BUFFERINGS
def test_a_quiet_run_that_fails_into_a_full_disk_ends_with_its_status_and_one_line_more(tmp_path, buffering):
    """--quiet holds what a command prints and writes it to stdout when the command fails: into a
    full disk that write raised out of kcing, a traceback and exit 1 in place of the run's status."""
    db, env = a_fed_ledger(tmp_path)
    with open("/dev/full", "w") as full:
        process = subprocess.run([sys.executable, str(REPO / "kcing.py"), "reconcile", "--quiet", "--dry-run",
                                  "--db", str(db)], env=buffered_as(env, buffering), cwd=str(tmp_path),
                                 stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert "Traceback" not in process.stderr
    assert process.returncode == 6, process.stderr
    [refused, lost] = process.stderr.splitlines()
    assert refused.startswith("kcing reconcile: nothing to check: no object was delivered to Logstash since ")
    # Named by its command, whether the write failed in it or in the last flush at exit (buffering).
    assert lost == "kcing reconcile: cannot write to stdout: No space left on device; what it did not take is lost"


@BUFFERINGS
def test_a_quiet_run_that_fails_having_printed_nothing_says_nothing_of_stdout(tmp_path, buffering):
    # Nothing held, nothing lost: a failed write of nothing (which /dev/full refuses too) is no loss to report.
    with open("/dev/full", "w") as full:
        process = subprocess.run([sys.executable, str(REPO / "kcing.py"), "feed_es", "--quiet", "--source", "samples",
                                  "--samples-dir", str(tmp_path / "missing"), "--output", str(tmp_path / "out"),
                                  "--db", str(tmp_path / "kcing.db")], env=buffered_as(clean_environ(), buffering),
                                 cwd=str(tmp_path), stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert process.returncode == 2, process.stderr
    assert process.stderr.splitlines() == [
        "kcing feed_es: samples directory %s does not exist: name one with --samples-dir or KCI_SAMPLES_DIR "
        "(kcing's bundled samples are %s)" % (tmp_path / "missing", REPO / "samples")]


@BUFFERINGS
@pytest.mark.parametrize("args", [["--help"], ["status", "--help"], ["feed_es", "--help"], ["test", "--help"]])
def test_help_into_a_pipe_closed_early_ends_as_sigpipe_ends_a_tool(args, tmp_path, buffering):
    """`kcing feed_es --help | head -0`: the help is written after the reader is gone, which ended
    as an internal error (exit 70) asking for a bug report, where any other output so cut is 141."""
    read, write = os.pipe()
    os.close(read)
    process = subprocess.run([sys.executable, str(REPO / "kcing.py"), *args],
                             env=buffered_as(clean_environ(), buffering), cwd=str(tmp_path), stdout=write,
                             stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write)
    assert process.stderr == ""
    assert process.returncode == 141


@BUFFERINGS
@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["status", "--help"]])
def test_status_into_a_full_disk_ends_with_one_line_and_exit_5(args, tmp_path, buffering):
    """`kcing status > report.txt` on a full disk (/dev/full stands for it): Python's last flush of
    stdout failed at exit, which printed two lines of its own and ended the process with 120."""
    db, env = a_fed_ledger(tmp_path)
    env = buffered_as(env, buffering)
    with open("/dev/full", "w") as full:
        process = subprocess.run([sys.executable, str(REPO / "kcing.py"), *args, "--db", str(db)], env=env,
                                 cwd=str(tmp_path), stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert process.returncode == 5, process.stderr
    [line] = process.stderr.splitlines()  # the same whether a write inside the command or the last flush failed
    assert line == "kcing status: cannot write to stdout: No space left on device; what it did not take is lost"


# drp -------------------------------------------------------------------------------------------

# Names that only look like kcing's: digits of other scripts (which Python's \d and int() take
# for 0-9), and a name that goes on past the date with a newline.
LOOK_ALIKES = ["build-\uff12\uff10\uff11\uff19.\uff10\uff11.\uff10\uff11",
               "boot-\u0662\u0660\u0661\u0669.\u0660\u0661.\u0660\u0661", "log-2019.01.01\n"]


def test_drp_deletes_only_names_written_with_ascii_digits(tmp_path, es):
    for name in ["test-2019.01.01", *LOOK_ALIKES]:
        es.seed_index(name, docs={"1": {"job": "mainline"}})
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(tmp_path / "kcing.db"))
    planned = kcing(["drp", "--dry-run"], env, tmp_path)
    assert planned.returncode == 0, planned.stderr
    assert "would delete 1 index" in planned.stdout
    done = kcing(["drp"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(es.index_names()) == sorted(LOOK_ALIKES)


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_drp_with_a_ledger_named_in_a_directory_that_is_not_there_deletes_nothing(tmp_path, es, dry_run):
    """No ledger file is a retention of indices alone; no directory is a KCING_DB gone wrong
    (a typo in a cron line), whose rows drp would never forget while it exited 0."""
    es.seed_index("test-2019.01.01", docs={"1": {"job": "mainline"}})
    db = tmp_path / "gone" / "kcing.db"
    refused = kcing(["drp", *dry_run], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert refused.stderr == "kcing drp: no ledger at %s: directory %s does not exist (check KCING_DB or --db)\n" % (
        db, db.parent)
    assert es.index_names() == ["test-2019.01.01"] and not db.parent.exists()


def test_drp_without_a_ledger_leaves_no_lock_file_and_its_dry_run_waits_for_no_lock(tmp_path, es):
    """No ledger yet (indices alone to delete): no run lock either, whose file would be left beside
    the ledger's name. A --dry-run writes nothing, so a run holding the lock does not stop it."""
    import fcntl

    es.seed_index("test-2019.01.01", docs={"1": {"job": "mainline"}})
    (tmp_path / "ledger").mkdir()
    alone = kcing(["drp"], clean_environ(ES_HOST=es.url, KCING_DB=str(tmp_path / "ledger" / "kcing.db")), tmp_path)
    assert alone.returncode == 0, alone.stderr
    assert es.index_names() == [] and os.listdir(str(tmp_path / "ledger")) == []
    db, env = a_fed_ledger(tmp_path)
    with open(str(db) + ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a feed's run in progress
        planned = kcing(["drp", "--dry-run", "--db", str(db)], dict(env, ES_HOST=es.url, KCING_DB_LOCK_WAIT="0"),
                        tmp_path)
    assert planned.returncode == 0, planned.stderr


# --quiet: cron mails whatever a job prints -----------------------------------------------------

def test_a_quiet_run_prints_nothing_when_it_goes_well_and_its_failure_when_it_fails(legacy_replica, logstash,
                                                                                  tmp_path):
    db, trail = tmp_path / "kcing.db", tmp_path / "feed.log"
    env = feed_environ(legacy_replica, logstash, db, KCING_PROGRESS_EVERY="1")
    first = kcing(["feed_es", "-q", "-l", str(trail)], env, tmp_path)
    assert first.returncode == 0, first.stderr
    assert (first.stdout, first.stderr) == ("", "")
    delivered = len(logstash.store)
    assert delivered
    again = kcing(["feed_es", "--quiet", "-l", str(trail)], env, tmp_path)  # nothing new
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    # The -l log file keeps the whole trail: progress, the summary and the run's figures.
    text = trail.read_text()
    assert text.count("feed_es: listed") == 2 and text.count("run finished:") == 2, text
    rows = len(ledger_rows(db))
    assert "feed_es: listed %d, skipped %d (already delivered)" % (rows, rows) in text, text
    # An object rejected: its warning, the summary, and a last line on stderr saying what happened.
    lava = next(path for path in legacy_replica.corpus.paths() if "lava-json" in path)
    legacy_replica.corpus.add_file(lava, b"{not json")
    rejected = kcing(["feed_es", "-q", "--db", str(tmp_path / "third.db")], env, tmp_path)
    assert rejected.returncode == 1, rejected.stderr
    assert rejected.stdout.startswith("feed_es: listed"), rejected.stdout
    lines = rejected.stderr.splitlines()
    assert " WARNING kcing.pipeline: run finished: " in lines[-1] and "rejected 1," in lines[-1], lines
    assert sum("rejected lava" in line for line in lines) == 1, lines
    # A run that fails says so: its summary on stdout, the reason on stderr, its exit status.
    logstash.lava.down()
    logstash.build.down()
    logstash.boot.down()
    failing = kcing(["feed_es", "-q", "--db", str(tmp_path / "other.db"), "-l", str(tmp_path / "failing.log")],
                    env, tmp_path)
    assert failing.returncode == 3, failing.stderr
    assert failing.stdout.splitlines()[0] in (tmp_path / "failing.log").read_text()
    assert failing.stdout.startswith("feed_es: listed"), failing.stdout
    assert failing.stderr.splitlines()[-1].startswith("kcing feed_es: Logstash unreachable"), failing.stderr
    assert "progress:" not in failing.stderr and "INFO" not in failing.stderr, failing.stderr


@pytest.mark.parametrize("command", ["feed_es", "reconcile", "drp", "gen_samples", "setup_es", "setup_ls",
                                     "setup_kbn", "backup_kbn"])
def test_every_command_cron_runs_takes_quiet(command):
    from kcing.cli import command_options
    from kcing.commands import load
    assert {"-q", "--quiet"} <= set(command_options(load(command).USAGE))


# -l FILE: the trail a cron job leaves ----------------------------------------------------------

def test_a_log_file_gets_what_a_command_prints_without_quiet_too(tmp_path, es):
    """`kcing drp -l /var/log/kcing-drp.log` (drp's help) left an empty file: what drp, setup_es
    or setup_kbn say is printed, not logged, and reached the file under --quiet alone."""
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(tmp_path / "kcing.db"))
    for argv, said in ((["drp"], "drp: deleted 0 indices, no ledger at %s" % (tmp_path / "kcing.db")),
                       (["setup_es", "--wait", "5"], "setup_es: index template kcing-build (build-*) created")):
        trail = tmp_path / ("%s.log" % argv[0])
        ran = kcing([*argv, "-l", str(trail)], env, tmp_path)
        assert ran.returncode == 0, ran.stderr
        assert said in ran.stdout
        lines = trail.read_text().splitlines()
        assert [line.split(" INFO kcing.cli: ", 1)[1] for line in lines] == ran.stdout.splitlines(), lines


def test_setup_kbn_again_after_a_dashboard_was_edited_counts_that_one_alone_not_imported(tmp_path):
    """The nightly setup_kbn after the team edited one dashboard: the other objects are in Kibana
    as the file has them, and only the edited one is not imported; the line cron mails must not
    count those already there among the objects not imported."""
    directory = tmp_path / "kibana"
    directory.mkdir()
    shutil.copyfile(SHIPPED, directory / "saved_objects.ndjson")
    total = len(kb.parse_ndjson(SHIPPED.read_text(encoding="utf-8")))
    with KibanaEmulator() as kibana:
        argv = ["setup_kbn", "--kibana-dir", str(directory), "--wait", "5"]
        assert kcing(argv, kibana_environ(kibana), tmp_path).returncode == 0
        edited = dict(kibana.get("dashboard", "kcing-boots"))
        edited["attributes"] = dict(edited["attributes"], title="Boots, as the team edited it")
        kibana.put(edited)
        again = kcing(argv, kibana_environ(kibana), tmp_path)
    assert again.returncode == 1, again.stderr
    assert "setup_kbn: imported 0 of %d objects, %d already present and unchanged" % (total, total - 1) in again.stdout
    assert again.stderr.splitlines()[-1].endswith(
        "setup_kbn: 1 of %d objects not imported: run with --overwrite to replace those that differ" % total), \
        again.stderr


def test_a_command_ending_1_says_so_on_stderr_and_its_status_in_the_log_file(tmp_path):
    directory = tmp_path / "kibana"
    directory.mkdir()
    shutil.copyfile(SHIPPED, directory / "saved_objects.ndjson")
    trail = tmp_path / "kbn.log"
    with KibanaEmulator() as kibana:
        kibana.put({"type": "dashboard", "id": "kcing-boots", "references": [],
                    "attributes": {"title": "Boots, as the team edited it"}})
        result = kcing(["setup_kbn", "--kibana-dir", str(directory), "--wait", "5", "-l", str(trail)],
                       kibana_environ(kibana), tmp_path)
    assert result.returncode == 1, result.stderr
    assert 'conflict: dashboard kcing-boots "kcing: boots" already exists' in result.stdout
    assert result.stderr.splitlines()[-1].endswith(
        "setup_kbn: 1 of %d objects not imported: run with --overwrite to replace those that differ"
        % len(kb.parse_ndjson(SHIPPED.read_text(encoding="utf-8")))), result.stderr
    logged = trail.read_text()
    assert 'conflict: dashboard kcing-boots "kcing: boots" already exists' in logged
    assert logged.splitlines()[-1].endswith("WARNING kcing.cli: kcing setup_kbn: exit 1 (some objects were not "
                                            "imported, or refer to objects found neither in the file nor in "
                                            "Kibana (listed))"), logged
    assert "exit 1" not in result.stderr  # stderr has said why; the status is the process's own


# A crontab line that closes stdout or stderr (`>&-`, `2>&-`) -----------------------------------

def _kcing_with_closed(fds, args, env, cwd):
    """The real program started with the standard descriptors `fds` closed, as `>&-` leaves them."""
    def close():
        for fd in fds:
            os.close(fd)
    return subprocess.run([sys.executable, str(REPO / "kcing.py"), *args], env=env, cwd=str(cwd),
                          stdout=subprocess.PIPE if 1 not in fds else None,
                          stderr=subprocess.PIPE if 2 not in fds else None, preexec_fn=close, timeout=120)


@pytest.mark.parametrize("fds", [(1,), (1, 2), (2,)], ids=["stdout", "stdout-and-stderr", "stderr"])
def test_a_run_with_stdout_or_stderr_closed_ends_as_it_went_and_logs_its_trail(tmp_path, fds):
    """`kcing feed_es -l FILE >&-`: the run delivered everything and recorded it, then printing its
    summary through the -l copy of stdout failed (Python leaves sys.stdout None): exit 1, the
    summary and the ending missing from the log file. And the first file kcing opened took the
    closed descriptor's number, where whatever writes to stdout or stderr would have landed."""
    from tests.feedrun import SAMPLES
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    trail = tmp_path / "feed.log"
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    fed = _kcing_with_closed(fds, ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output",
                                   str(tmp_path / "out"), "-l", str(trail)], env, tmp_path)
    assert fed.returncode == 0, (fed.stdout, fed.stderr)
    logged = trail.read_text()
    assert "INFO kcing.cli: feed_es: 2462 documents in 7 batches" in logged, logged
    assert "internal error" not in logged
    refused = _kcing_with_closed(fds, ["feed_es", "--source", "nope", "-l", str(tmp_path / "refused.log")], env,
                                 tmp_path)
    assert refused.returncode == 2
    (line,) = (tmp_path / "refused.log").read_text().splitlines()
    assert line.endswith("ERROR kcing.cli: kcing feed_es: invalid KCI_SOURCE='nope' (from --source): must be one of "
                         "legacy, samples, api (exit 2)"), line
