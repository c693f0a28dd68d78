"""Text kcing quotes from outside (upstream names, Logstash's and Elasticsearch's answers, file
names) stays on its line: no line break, no terminal escape sequence, no line of kcing's own
forged, and no line without bound, on stderr, in the -l log file and on stdout.

The run tests run the real `kcing` program against the API replica and the Logstash emulators,
as cron would.
"""
from __future__ import annotations

import json
import logging
import random
import re
import shutil
import time
from datetime import datetime, timedelta, timezone

import pytest
import yaml

from kcing import logs, progress
from kcing.errors import kept_on_one_line, one_line
from kcing.commands._shared import print_summary
from kcing.ledger.ledger import Ledger, Outcome
from kcing.ledger.models import FAILED
from kcing.logs import LOG_MESSAGE_CHARACTERS
from kcing.pipeline import RunSummary
from kcing.reconcile import ALIAS, LookupFailed, Unchecked, lookup_result, unchecked_line
from kcing.records import UpstreamObject
from kcing.status import REPORT_LINE_CHARACTERS
from tests.fakes.api_data import checkout_tree
from tests.fakes.api_replica import ApiReplica
from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.fakes.kibana_server import KibanaEmulator
from tests.fakes.rogue_http import RogueFront, answer
from tests.feedrun import REPO, api_feed_environ, clean_environ, kcing

# What a hostile answer would put into a line: a terminal escape (clear the screen), a carriage
# return and a line feed, a forged line of kcing's own, the other line breaks (U+2028, NEL), and
# the 8-bit control sequence introducer (0x9b), which a terminal in 8-bit mode obeys as ESC [.
HOSTILE = "\x1b[2J\rX\nkcing feed_es: run finished: all good\u2028Y\x9b31m\x85Z\x7f"


BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)


@pytest.fixture
def api_replica():
    replica = ApiReplica()
    replica.start()
    checkout_tree(replica.corpus, replica.files_url, BASE)
    yield replica
    replica.stop()


def controls_in(text: str) -> list:
    return [character for character in text if not (character.isprintable() or character == " ")]


@pytest.mark.parametrize("control", ["\x9b", "\x80", "\x90", "\x9d", "\x9f"])
def test_c1_controls_are_written_as_escapes(control):
    assert kept_on_one_line("a%sb" % control) == "a\\x%02xb" % ord(control)
    assert not controls_in(one_line("a%sb" % control))


# Bidirectional controls: a right-to-left override shows what follows it reversed, so that a
# name ending `\u202egnp.exe` reads `exe.png`; marks, embeddings and isolates reorder text too.
BIDI_CONTROLS = ["\u202e", "\u202d", "\u202a", "\u202b", "\u202c", "\u2066", "\u2067", "\u2068", "\u2069",
                 "\u200e", "\u200f", "\u061c"]


@pytest.mark.parametrize("control", BIDI_CONTROLS)
def test_bidirectional_controls_are_written_as_escapes(control):
    assert kept_on_one_line("a%sb" % control) == "a\\u%04xb" % ord(control)
    assert not controls_in(one_line("a%sb" % control))


def test_letters_of_right_to_left_scripts_are_kept_as_they_are():
    assert kept_on_one_line("board \u05d0\u05d1 \u0627\u0644") == "board \u05d0\u05d1 \u0627\u0644"


def test_a_hostile_text_keeps_no_control_character():
    assert not controls_in(kept_on_one_line(HOSTILE))
    assert not controls_in(one_line(HOSTILE))


# Log records --------------------------------------------------------------------------------------

def logged(tmp_path, capsys, *calls, debug=False):
    """What stderr and the -l log file got from `calls` (each a function of a logger)."""
    log_file = tmp_path / "kcing.log"
    # configure sets the levels of the root logger and of the libraries' own: the tests that run
    # after these in the same process must find them as they were.
    configured = [logging.getLogger(name) for name in ("", "urllib3", "peewee", "elastic_transport")]
    levels = [logger.level for logger in configured]
    live_allowed = progress.live_allowed
    logs.configure(debug=debug, log_file=str(log_file))
    try:
        for call in calls:
            call(logging.getLogger("kcing.test"))
    finally:
        for handler in list(logging.getLogger().handlers):
            handler.close()
            logging.getLogger().removeHandler(handler)
        for logger, level in zip(configured, levels):
            logger.setLevel(level)
        progress.live_allowed = live_allowed
    return capsys.readouterr().err, log_file.read_text(encoding="utf-8")


def test_a_logged_message_quoting_hostile_text_is_one_line_without_controls(tmp_path, capsys):
    for written in logged(tmp_path, capsys, lambda log: log.warning("rejected %s: %s", "x", HOSTILE),
                          lambda log: log.error(f"run stopped: {HOSTILE}"), lambda log: log.info("next")):
        lines = written.splitlines()
        assert len(lines) == 3 and all(re.match(r"\d{4}-\d\d-\d\dT\S+Z (INFO|WARNING|ERROR) kcing\.test: ", line)
                                       for line in lines), written
        assert not controls_in(written.replace("\n", ""))
        assert "\\x1b[2J\\rX\\nkcing feed_es: run finished: all good\\u2028Y\\x9b31m\\x85Z\\x7f" in lines[0]


def test_a_logged_message_is_bounded(tmp_path, capsys):
    for written in logged(tmp_path, capsys, lambda log: log.warning("Logstash said: %s", "B" * 10_000_000)):
        assert len(written) < LOG_MESSAGE_CHARACTERS + 200
        assert written.rstrip("\n").endswith("... (10000015 characters)")


def test_a_logged_message_of_megabytes_of_controls_is_cut_before_its_controls_are_escaped(tmp_path, capsys):
    """20 MB of controls (a binary answer quoted whole) took nine seconds to escape whole, only
    to be cut to its first 8,000 characters."""
    started = time.process_time()
    for written in logged(tmp_path, capsys, lambda log: log.warning("Logstash said: %s", "\x1b\r\n\x9b" * 5_000_000)):
        assert written.rstrip("\n").endswith("Logstash said: %s... (60000015 characters)"
                                              % ("\\x1b\\r\\n\\x9b" * 1000)[:LOG_MESSAGE_CHARACTERS - 15])
    assert time.process_time() - started < 1


def logged_line_escaping_whole(message: str) -> str:
    """logged_line as it was when it escaped a message whole before cutting it: what it wrote
    is what logged_line writes."""
    if not message.isprintable():
        message = kept_on_one_line(message)
    if len(message) > LOG_MESSAGE_CHARACTERS:
        message = "%s... (%d characters)" % (message[:LOG_MESSAGE_CHARACTERS], len(message))
    return message


def test_a_logged_line_is_what_escaping_the_message_whole_then_cutting_it_wrote():
    rng = random.Random(8000)
    controls = [chr(code) for code in list(range(0x20)) + list(range(0x7f, 0xa0))] + BIDI_CONTROLS + ["\u2028",
                                                                                                   "\u2029"]
    # Printable text of each width, and characters that are not printable but no controls either
    # (a soft hyphen, a no-break space, an unassigned code point, half of a character).
    others = list("ab \\'\"") + ["\u00e9", "\u05d0", "\u4e2d", "\U0001f600", "\u00ad", "\u00a0", "\u0378", "\udcff"]
    for _ in range(2000):
        pool = rng.choice((controls, controls + others, others + others + controls))
        tail = "".join(rng.choice(pool) for _ in range(rng.randrange(30)))
        # Around the cut, where an escape may straddle it, and short and long messages.
        lead = rng.choice((0, rng.randrange(LOG_MESSAGE_CHARACTERS - 30, LOG_MESSAGE_CHARACTERS + 5),
                           rng.randrange(LOG_MESSAGE_CHARACTERS // 6 - 10, LOG_MESSAGE_CHARACTERS // 2)))
        message = "".join(rng.choice(pool) for _ in range(lead % 200)) + "x" * (lead - lead % 200) + tail
        if rng.random() < 0.3:
            message = "".join(rng.choice(pool) for _ in range(lead)) + tail
        assert logs.logged_line(message) == logged_line_escaping_whole(message), repr(message)


def test_a_traceback_with_debug_still_follows_its_message_over_several_lines(tmp_path, capsys):
    def failed(log):
        try:
            raise ValueError("bad")
        except ValueError:
            log.debug("details of %s", "a\nb", exc_info=True)
    for written in logged(tmp_path, capsys, failed, debug=True):
        assert "details of a\\nb\nTraceback (most recent call last):\n" in written
        assert written.rstrip("\n").endswith("ValueError: bad")


def test_a_logstash_refusal_quoting_hostile_text_stays_on_its_lines(api_replica, logstash, tmp_path):
    for route in (logstash.build, logstash.lava, logstash.boot, logstash.regression):
        route.fail_next(400, count=None, body=(HOSTILE + "B" * 100_000).encode("utf-8"))
    log_file = tmp_path / "kcing.log"
    env = api_feed_environ(api_replica, logstash, tmp_path / "kcing.db", KCI_DAYS="3650")
    result = kcing(["feed_es", "-l", str(log_file)], env, tmp_path)
    assert result.returncode == 3, result.stderr
    for written in (result.stderr, log_file.read_text(encoding="utf-8"), result.stdout):
        assert not controls_in(written.replace("\n", "")), written
        assert not any(line.startswith("kcing feed_es: run finished") for line in written.splitlines())
    assert "rejected a batch with 400: \\x1b[2J\\rX\\nkcing feed_es: run finished" in log_file.read_text()


def test_a_logstash_refusal_quoting_a_right_to_left_override_shows_it_escaped(api_replica, logstash, tmp_path):
    """It reached the terminal and the log as it was: `board \u202egnp.exe` read `board exe.png`."""
    for route in (logstash.build, logstash.lava, logstash.boot, logstash.regression):
        route.fail_next(400, count=None, body="board \u202egnp.exe".encode("utf-8"))
    log_file = tmp_path / "kcing.log"
    env = api_feed_environ(api_replica, logstash, tmp_path / "kcing.db", KCI_DAYS="3650")
    result = kcing(["feed_es", "-l", str(log_file)], env, tmp_path)
    assert result.returncode == 3, result.stderr
    for written in (result.stderr, log_file.read_text(encoding="utf-8"), result.stdout):
        assert "\u202e" not in written, written
    assert "rejected a batch with 400: board \\u202egnp.exe" in result.stderr


# kcing status ------------------------------------------------------------------------------------

def test_status_shows_an_error_the_ledger_holds_on_one_bounded_line(tmp_path):
    """An error written into the ledger by an older kcing (or by hand) may hold anything."""
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    failed = UpstreamObject("api", "kbuild", "2884fedb3c789a6dd0db3e24", "http://storage.example/build.log",
                            datetime(2024, 10, 16, 7, 0, tzinfo=timezone.utc))
    ledger.record([Outcome(failed, FAILED, error="answered " + HOSTILE + "A" * 1_000_000)])
    ledger.close()
    shown = kcing(["status"], clean_environ(KCING_DB=str(db)), tmp_path)
    assert shown.returncode == 0, shown.stderr
    errors = shown.stdout.split("most frequent errors:\n", 1)[1].splitlines()
    assert len(errors) == 1 and errors[0].startswith("     1 failed   answered \\x1b[2J\\rX\\nkcing feed_es: run finished")
    assert not controls_in(shown.stdout.replace("\n", "")) and len(errors[0]) <= REPORT_LINE_CHARACTERS
    assert not any(line.startswith("kcing feed_es: run finished") for line in shown.stdout.splitlines())


# feed_es: its plan and its problems ---------------------------------------------------------------

HOSTILE_FILE_NAME = "ok\x1b[2J\rX\nkcing feed_es: run finished: all good\u2028\x9b31m.json"


def test_a_dry_run_names_a_local_file_on_its_line(tmp_path):
    given = tmp_path / HOSTILE_FILE_NAME
    given.write_text("{}")
    log_file = tmp_path / "kcing.log"
    ran = kcing(["feed_es", "--dry-run", "--builds", str(given), "-l", str(log_file)],
                clean_environ(KCING_DB=str(tmp_path / "kcing.db"), ES_BUILD="http://127.0.0.1:1"), tmp_path)
    assert ran.returncode == 0, ran.stderr
    (plan,) = [line for line in ran.stdout.splitlines() if line.startswith("would fetch")]
    assert plan.endswith(kept_on_one_line(str(given)))
    for written in (ran.stdout, log_file.read_text(encoding="utf-8")):
        assert not controls_in(written.replace("\n", ""))
        assert not any(line.startswith("kcing feed_es: run finished") for line in written.splitlines())


def test_the_problem_lines_of_a_run_are_one_bounded_line_each(capsys):
    summary = RunSummary()
    summary.problem("build x: answered " + HOSTILE + "A" * 1_000_000)
    print_summary(summary, "Logstash", dry_run=False)
    printed = capsys.readouterr().out
    (problem,) = [line for line in printed.splitlines() if line.startswith("  problem: ")]
    assert problem.startswith("  problem: build x: answered \\x1b[2J\\rX\\nkcing feed_es: run finished")
    assert not controls_in(printed.replace("\n", "")) and len(problem) < LOG_MESSAGE_CHARACTERS + 100


# setup_kbn: Kibana's import errors ----------------------------------------------------------------

def test_setup_kbn_lists_what_kibana_refused_one_line_each(tmp_path):
    directory = tmp_path / "kibana"
    directory.mkdir()
    shutil.copyfile(REPO / "kibana" / "saved_objects.ndjson", directory / "saved_objects.ndjson")
    log_file = tmp_path / "kcing.log"
    with KibanaEmulator() as kibana:
        kibana.fail_next(200, route="/api/saved_objects/_import", body={"success": False, "successCount": 0, "errors": [
            {"type": "dashboard" + HOSTILE, "id": "x" + HOSTILE, "title": "T" + HOSTILE + "A" * 100_000,
             "error": {"type": "odd" + HOSTILE, "message": "m" + HOSTILE,
                       "references": [{"type": "index-pattern" + HOSTILE, "id": "r" + HOSTILE}]}}]})
        ran = kcing(["setup_kbn", "--kibana-dir", str(directory), "--wait", "0", "--overwrite", "-l", str(log_file)],
                    clean_environ(KB_URL=kibana.url), tmp_path)
    assert ran.returncode == 1, ran.stderr
    listed = ran.stdout.split("setup_kbn: imported 0 of 37 objects\n", 1)[1].splitlines()
    assert len(listed) == 1 and listed[0].startswith("  odd\\x1b[2J\\rX\\nkcing feed_es: run finished"), ran.stdout
    assert len(listed[0]) < 1500
    for written in (ran.stdout, ran.stderr, log_file.read_text(encoding="utf-8")):
        assert not controls_in(written.replace("\n", ""))
        assert not any(line.startswith("kcing feed_es: run finished") for line in written.splitlines())


# drp: Elasticsearch's refusal ---------------------------------------------------------------------

def test_drp_names_the_blocks_elasticsearch_gives_on_one_line(tmp_path):
    expired = "build-2019.05.01"
    log_file = tmp_path / "kcing.log"
    with ElasticsearchEmulator() as es:
        es.seed_index(expired, docs={"1": {"job": "mainline"}})
        reason = "index [%s] blocked by: [FORBIDDEN/5/%s];" % (expired, HOSTILE + "A" * 100_000)
        es.fail_next(403, route="/" + expired, count=None,
                     body={"error": {"type": "cluster_block_exception", "reason": reason}, "status": 403})
        ran = kcing(["drp", "--drp-days", "30", "-l", str(log_file)],
                    clean_environ(ES_HOST=es.url, KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert ran.returncode == 3, ran.stdout + ran.stderr
    (left,) = [line for line in ran.stdout.splitlines() if line.startswith("drp: not deleted index ")]
    assert left.startswith("drp: not deleted index %s: blocked by [FORBIDDEN/5/\\x1b[2J\\rX\\nkcing feed_es" % expired)
    assert len(left) < 500
    for written in (ran.stdout, ran.stderr, log_file.read_text(encoding="utf-8")):
        assert not controls_in(written.replace("\n", ""))
        assert not any(line.startswith("kcing feed_es: run finished") for line in written.splitlines())


# setup_es: what the cluster says of itself --------------------------------------------------------

ES_HEADERS = (("Content-Type", "application/vnd.elasticsearch+json;compatible-with=8"),
              ("X-Elastic-Product", "Elasticsearch"))


def test_setup_es_names_the_version_and_status_a_cluster_gives_on_one_bounded_line(tmp_path):
    def json_answer(body):
        return answer(200, ES_HEADERS, json.dumps(body).encode())
    with RogueFront() as cluster:
        cluster.on("GET", "/_cluster/health", json_answer({"status": "green" + HOSTILE + "B" * 100_000}))
        cluster.on("GET", "/_", json_answer({}))
        cluster.on("GET", "/", json_answer({"version": {"number": "8.15.3" + HOSTILE + "A" * 100_000}}))
        cluster.on("PUT", "/", json_answer({"acknowledged": True}))
        ran = kcing(["setup_es", "--wait", "5"], clean_environ(ES_HOST=cluster.url, KCING_DB=str(tmp_path / "k.db")),
                    tmp_path)
    assert ran.returncode == 0, ran.stderr
    first = ran.stdout.splitlines()[0]
    assert first.startswith("setup_es: Elasticsearch 8.15.3\\x1b[2J\\rX\\nkcing feed_es: run finished"), first
    assert "cluster green\\x1b[2J\\rX\\nkcing feed_es: run finished" in first and len(first) < 300
    assert not controls_in(ran.stdout.replace("\n", ""))
    assert not any(line.startswith("kcing feed_es: run finished") for line in ran.stdout.splitlines())


# The command line ----------------------------------------------------------------------------------

def test_a_log_file_that_cannot_be_opened_is_named_on_one_line(tmp_path):
    named = str(tmp_path / "absent" / HOSTILE_FILE_NAME)
    refused = kcing(["status", "-l", named], clean_environ(KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [kept_on_one_line(
        "kcing status: cannot open log file %s: directory %s does not exist; create it (mkdir -p %s) or check the name"
        % (named, tmp_path / "absent", tmp_path / "absent"))]


def test_a_log_file_that_cannot_be_written_is_named_on_one_line(tmp_path):
    full = tmp_path / HOSTILE_FILE_NAME
    full.symlink_to("/dev/full")  # every write fails: ENOSPC
    ran = kcing(["status", "-l", str(full)], clean_environ(KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    (said,) = [line for line in ran.stderr.splitlines() if "cannot write the log file" in line]
    assert said == kept_on_one_line("kcing: cannot write the log file %s: No space left on device; its later lines "
                                    "are lost (stderr has them)" % full)
    assert not controls_in(ran.stderr.replace("\n", ""))


def test_backup_kbn_and_setup_kbn_name_their_directory_on_one_line(tmp_path):
    directory = tmp_path / "kibana\x1b[2J\nkcing feed_es: run finished: all good"
    env = clean_environ(KB_URL="")
    with KibanaEmulator() as kibana:
        kibana.put({"type": "dashboard", "id": "x", "attributes": {"title": "t"}})
        env["KB_URL"] = kibana.url
        saved = kcing(["backup_kbn", "--kibana-dir", str(directory), "--wait", "0"], env, tmp_path)
        restored = kcing(["setup_kbn", "--kibana-dir", str(directory), "--wait", "0", "--overwrite"], env, tmp_path)
    assert (saved.returncode, restored.returncode) == (0, 0), saved.stderr + restored.stderr
    assert saved.stdout.splitlines() == ["backup_kbn: 1 object (1 dashboard) from %s written to %s (directory %s created)"
                                         % (kibana.url, kept_on_one_line(str(directory / "saved_objects.ndjson")),
                                            kept_on_one_line(str(directory)))]
    assert len(restored.stdout.splitlines()) == 3
    for written in (saved.stdout, restored.stdout):
        assert not controls_in(written.replace("\n", ""))
        assert not any(line.startswith("kcing feed_es: run finished") for line in written.splitlines())


@pytest.mark.parametrize("dry_run", [["--dry-run"], []], ids=["dry run", "run"])
def test_drp_names_a_ledger_it_did_not_find_on_one_line(tmp_path, dry_run):
    ledger = tmp_path / "kcing\x1b[2J\nkcing feed_es: run finished: all good.db"
    with ElasticsearchEmulator() as es:
        es.seed_index("build-2019.05.01", docs={"1": {"job": "mainline"}})
        ran = kcing(["drp", "--drp-days", "30"] + dry_run, clean_environ(ES_HOST=es.url, KCING_DB=str(ledger)), tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[-1].endswith("1 index, no ledger at %s" % kept_on_one_line(str(ledger)))
    assert not controls_in(ran.stdout.replace("\n", ""))
    assert not any(line.startswith("kcing feed_es: run finished") for line in ran.stdout.splitlines())


def test_setup_ls_names_the_pipelines_file_on_one_line(tmp_path):
    settings_dir = tmp_path / "logstash\x1b[2J\nkcing feed_es: run finished: all good"
    settings_dir.mkdir()
    env = clean_environ(LS_PATH_SETTINGS=str(settings_dir), KCING_DB=str(tmp_path / "kcing.db"))
    planned = kcing(["setup_ls", "--dry-run"], env, tmp_path)
    written = kcing(["setup_ls"], env, tmp_path)
    assert (planned.returncode, written.returncode) == (0, 0), planned.stderr + written.stderr
    named = kept_on_one_line(str(settings_dir / "pipelines.yml"))
    assert planned.stdout.splitlines()[0] == "# setup_ls dry run: %s would become (changed):" % named
    assert yaml.safe_load(planned.stdout)[0]["pipeline.id"] == "kcing"  # the rest is YAML still
    assert written.stdout.splitlines()[0].endswith(" to %s" % named) and len(written.stdout.splitlines()) == 1
    for said in (planned.stdout, written.stdout):
        assert not controls_in(said.replace("\n", ""))


def test_gen_samples_names_its_directory_on_one_line(api_replica, logstash, tmp_path):
    samples = tmp_path / "samples\x1b[2J\nkcing feed_es: run finished: all good"
    env = api_feed_environ(api_replica, logstash, tmp_path / "kcing.db", KCI_DAYS="3650", KCI_SAMPLES_DIR=str(samples))
    ran = kcing(["gen_samples", "--sample-size", "2"], env, tmp_path)
    assert ran.returncode == 0, ran.stderr
    (said,) = ran.stdout.splitlines()
    assert said.startswith("gen_samples: ") and said.endswith(" in %s" % kept_on_one_line(str(samples)))


# reconcile: Elasticsearch's word on one document -------------------------------------------------

def test_what_elasticsearch_says_of_a_document_it_cannot_look_up_is_one_bounded_line():
    several = {"_id": "a", "error": {"type": "illegal_argument_exception", "reason": (
        "alias [build-2024.10.16] has more than one index associated with it [b1, %s]" % (HOSTILE + "A" * 100_000))}}
    reason, detail = lookup_result("a", several)
    assert reason == ALIAS and detail.startswith("b1, \\x1b[2J\\rX\\nkcing feed_es: run finished") and len(detail) <= 300
    line = unchecked_line(ALIAS, Unchecked(1, 1, {"build-2024.10.16": detail}))
    assert not controls_in(line)
    with pytest.raises(LookupFailed) as failed:
        lookup_result("a", {"_id": "a", "error": {"type": "odd", "reason": HOSTILE + "B" * 1_000_000}})
    assert str(failed.value).startswith("odd: \\x1b[2J X kcing feed_es: run finished")
    assert not controls_in(str(failed.value)) and len(str(failed.value)) <= 300
