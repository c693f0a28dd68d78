"""The administration commands as a user runs them: the real `kcing` process, settings from the
environment, against the Elasticsearch and Kibana emulators and a Logstash home in a temp dir."""
from __future__ import annotations

import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml
from elasticsearch import Elasticsearch

from tests.fakes.kibana_server import KibanaEmulator
from tests.fakes.rogue_http import RogueFront, answer, endless, silent_then_forward, trickle_head
from tests.fakes.serving import wait_until
from tests.feedrun import REPO, clean_environ, kcing, kcing_process, stopped_by_signal

SECRET = "s3cr3t-kibana-pw"


def test_setup_es_installs_templates_and_policy(tmp_path, es):
    env = clean_environ(ES_HOST=es.url, ES_READY_TIMEOUT="5", DRP_DAYS="10")
    done = kcing(["setup_es", "--ilm"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert {"kcing-build", "kcing-boot", "kcing-test", "kcing-log"} <= set(es.templates)
    assert es.policies and "created" in done.stdout
    again = kcing(["setup_es", "--ilm"], env, tmp_path)
    assert again.returncode == 0 and "created" not in again.stdout


def test_setup_es_against_nothing_is_one_clear_line_and_exit_3(tmp_path):
    env = clean_environ(ES_HOST="http://127.0.0.1:9", ES_READY_TIMEOUT="0")
    done = kcing(["setup_es", "--wait", "0.2"], env, tmp_path)
    assert done.returncode == 3
    # Progress lines are log records; the error itself is one line, last, naming the command.
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kcing setup_es: ") and "not ready" in last
    assert "Traceback" not in done.stderr and "WARNING" not in done.stderr


def refusal_with_es_host_at(url: str, command: list, directory: Path) -> str:
    """The one line `command` is refused with (exit 2) when ES_HOST is `url`, a server that is not
    Elasticsearch, beside a ledger holding one object delivered to Logstash (for reconcile to check)."""
    from kcing.ledger.ledger import Ledger, Outcome
    from kcing.ledger.models import DELIVERED
    from tests.test_reconcile import obj, packed, to_logstash
    db = directory / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1))], to_logstash)
    ledger.close()
    done = kcing(command, clean_environ(ES_HOST=url, KCING_DB=str(db)), directory)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["setup_es", "--wait", "5"], ["drp"], ["reconcile"]])
def test_es_host_set_to_kibanas_port_is_a_setting_to_fix_not_elasticsearch_refusing(command, tmp_path):
    # Kibana answers 404 to Elasticsearch's paths, without the X-Elastic-Product header every
    # answer of Elasticsearch carries (its errors too): setup_es said "Elasticsearch ... refused a
    # request while checking cluster health (404 error): Not Found" and exited 3, as for an outage.
    with KibanaEmulator() as kibana:
        line = refusal_with_es_host_at(kibana.url, command, tmp_path)
    assert line.startswith("kcing %s: ES_HOST %s is not Elasticsearch: it answered HTTP 404 without "
                           "Elasticsearch's X-Elastic-Product header while " % (command[0], kibana.url)), line
    assert line.endswith("set ES_HOST to the address Elasticsearch answers at"), line


@pytest.mark.parametrize("command", [["setup_es", "--wait", "5"], ["drp"], ["reconcile"]])
def test_es_host_set_to_a_logstash_input_names_the_setting_to_fix(command, tmp_path):
    """A Logstash http input answers 200 `ok` to any path: the client's missing-header error was
    said as "is not Elasticsearch (no X-Elastic-Product header; OpenSearch is not supported)",
    naming neither ES_HOST nor what to do."""
    from tests.fakes.logstash_emulator import LogstashEmulator
    with LogstashEmulator() as logstash:
        line = refusal_with_es_host_at(logstash.url, command, tmp_path)
    assert line.startswith("kcing %s: ES_HOST %s is not Elasticsearch: it answered without "
                           "Elasticsearch's X-Elastic-Product header while " % (command[0], logstash.url)), line
    assert line.endswith("set ES_HOST to the address Elasticsearch answers at"), line
    # What was being done, then the servers likely at that port.
    likely = " (a Logstash input's port, another server's, or OpenSearch, which is not supported): "
    assert likely in line, line
    assert command[0] != "setup_es" or " header while checking cluster health (" in line, line


def test_only_a_404_or_405_without_elasticsearchs_header_is_taken_for_another_server():
    """Elasticsearch's own 404 (an index it lacks) carries its header; its 401 may not, and is a
    refusal of the credentials, as a proxy's 503 is an outage: neither is a setting to fix."""
    from kcing.admin.elastic import answered_by_another_server

    elastic = {"X-Elastic-Product": "Elasticsearch"}
    assert answered_by_another_server(404, {}) and answered_by_another_server(405, None)
    assert not answered_by_another_server(404, elastic) and not answered_by_another_server(405, elastic)
    assert not any(answered_by_another_server(status, {}) for status in (400, 401, 403, 429, 502, 503))


@pytest.mark.parametrize("command", [["setup_ls"], ["setup_ls", "--dry-run"], ["setup_kbn"], ["setup_kbn", "--dry-run"]])
def test_a_file_to_read_that_is_a_fifo_is_refused_not_waited_on_for_good(command, tmp_path):
    """pipelines.yml or saved_objects.ndjson that is a FIFO (or a link to one, or to /dev/zero): the
    command waited for a writer that never came, and would have until killed."""
    home = tmp_path / "logstash"
    (home / "config").mkdir(parents=True)
    kibana_dir = tmp_path / "kibana"
    kibana_dir.mkdir()
    fifo = home / "config" / "pipelines.yml" if command[0] == "setup_ls" else kibana_dir / "saved_objects.ndjson"
    os.mkfifo(str(fifo))
    env = clean_environ(LS_HOME=str(home), KB_URL="http://127.0.0.1:9")
    done = kcing(command + ["--kibana-dir", str(kibana_dir)] * (command[0] == "setup_kbn"), env, tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["kcing %s: cannot read %s: not a regular file (a FIFO or a device is never "
                                        "read)" % (command[0], fifo)]


@pytest.mark.parametrize("command", ["setup_ls", "setup_kbn"])
def test_a_file_to_read_that_is_not_utf8_is_refused_and_left_as_it_was(command, tmp_path):
    # pipelines.yml in another encoding: read as any other, it would be written back in UTF-8 with
    # its own text turned into other characters.
    home = tmp_path / "logstash"
    (home / "config").mkdir(parents=True)
    kibana_dir = tmp_path / "kibana"
    kibana_dir.mkdir()
    path = home / "config" / "pipelines.yml" if command == "setup_ls" else kibana_dir / "saved_objects.ndjson"
    written = b"- pipeline.id: caf\xe9\n  path.config: /etc/logstash/conf.d/*.conf\n"
    path.write_bytes(written)
    env = clean_environ(LS_HOME=str(home), KB_URL="http://127.0.0.1:9")
    done = kcing([command] + ["--kibana-dir", str(kibana_dir)] * (command == "setup_kbn"), env, tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["kcing %s: cannot read %s: not UTF-8 text (byte %d)"
                                        % (command, path, written.index(b"\xe9"))]
    assert path.read_bytes() == written


def test_backup_kbn_over_a_saved_objects_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    # The objects the file holds are counted before it is replaced: reading a FIFO waited for good.
    kibana_dir = tmp_path / "kibana"
    kibana_dir.mkdir()
    fifo = kibana_dir / "saved_objects.ndjson"
    os.mkfifo(str(fifo))
    with KibanaEmulator() as kibana:
        done = kcing(["backup_kbn", "--kibana-dir", str(kibana_dir), "--wait", "5"], clean_environ(KB_URL=kibana.url),
                     tmp_path, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "it is a FIFO" in done.stderr and fifo.is_fifo(), done.stderr


def test_an_installed_kcing_without_the_clones_kibana_dir_asks_for_one_and_writes_nothing(tmp_path):
    # `pip install .` copies the package alone: the default kibana/ beside it would have been made
    # in site-packages by backup_kbn, the export and its backups written there.
    site = tmp_path / "site-packages"
    shutil.copytree(REPO / "kcing", site / "kcing", ignore=shutil.ignore_patterns("__pycache__"))
    env = clean_environ(PYTHONPATH=str(site))
    with KibanaEmulator() as kibana:
        env["KB_URL"] = kibana.url
        for command in ("backup_kbn", "setup_kbn"):
            done = subprocess.run([sys.executable, "-m", "kcing", command, "--wait", "5"], env=env, cwd=str(tmp_path),
                                  capture_output=True, text=True, timeout=60)
            assert done.returncode == 2, done.stderr
            assert done.stderr.strip().splitlines() == [
                "kcing %s: no kibana/ directory at %s, where a clone of kcing has it: pass --kibana-dir DIR"
                % (command, site / "kibana")], done.stderr
    assert sorted(path.name for path in site.iterdir()) == ["kcing"]


def test_drp_deletes_only_expired_kcing_indices(tmp_path, es):
    today = date.today()
    old = "boot-%s" % (today - timedelta(days=40)).strftime("%Y.%m.%d")
    recent = "boot-%s" % today.strftime("%Y.%m.%d")
    for name in (old, recent, "metrics-2001.01.01"):
        es.seed_index(name, docs={"1": {"job": "mainline"}})
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(tmp_path / "kcing.db"))
    planned = kcing(["drp", "--drp-days", "30", "--dry-run"], env, tmp_path)
    assert planned.returncode == 0 and "would delete index %s" % old in planned.stdout
    assert old in es.index_names()
    done = kcing(["drp", "--drp-days", "30"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(es.index_names()) == sorted([recent, "metrics-2001.01.01"])


def test_elasticsearch_is_reached_directly_whatever_the_proxy_variables_say(tmp_path, es):
    """As the README says: the Elasticsearch client reads no proxy variable, so a proxy set for
    upstream and Logstash neither sees the admin commands' requests nor stands in their way."""
    es.seed_index("boot-2001.01.01", docs={"1": {"job": "mainline"}})
    with socket.socket() as proxy:
        proxy.bind(("127.0.0.1", 0))
        proxy.listen(8)
        proxy.setblocking(False)
        url = "http://127.0.0.1:%d" % proxy.getsockname()[1]
        env = clean_environ(ES_HOST=es.url, KCING_DB=str(tmp_path / "kcing.db"), HTTP_PROXY=url, HTTPS_PROXY=url,
                            ALL_PROXY=url, http_proxy=url, NO_PROXY="", no_proxy="")
        done = kcing(["drp", "--drp-days", "30", "--dry-run"], env, tmp_path)
        with pytest.raises(BlockingIOError):
            proxy.accept()  # nothing ever connected to the proxy
    assert done.returncode == 0, done.stderr
    assert "would delete index boot-2001.01.01" in done.stdout


def test_drp_days_must_be_a_number(tmp_path, es):
    done = kcing(["drp", "--drp-days", "a week"], clean_environ(ES_HOST=es.url), tmp_path)
    assert done.returncode == 2 and "DRP_DAYS" in done.stderr


@pytest.mark.parametrize("password", ["pässwörd-for-kibana", "密码-for-kibana"], ids=["latin-1", "beyond-latin-1"])
def test_a_kibana_password_beyond_ascii_is_sent_in_utf8(tmp_path, password):
    """Kibana decodes basic credentials as UTF-8 (and passes them on to Elasticsearch, which
    does too): sent as latin-1 the right password was refused with 401, or could not be sent."""
    with KibanaEmulator(user="kcing", password=password) as kibana:
        env = clean_environ(KB_URL=kibana.url, KB_USER="kcing", KB_PASSWORD=password)
        exported = kcing(["backup_kbn", "--kibana-dir", str(tmp_path / "kibana"), "--wait", "5", "--dry-run"], env,
                         tmp_path)
        assert exported.returncode == 0, exported.stderr
        assert [record.status for record in kibana.requests] == [200, 200]


def test_backup_then_setup_kbn_round_trip_with_auth(tmp_path):
    kibana_dir = tmp_path / "kibana"
    kibana_dir.mkdir()
    shutil.copyfile(REPO / "kibana" / "saved_objects.ndjson", kibana_dir / "saved_objects.ndjson")
    with KibanaEmulator(user="kcing", password=SECRET, spaces=("ci",)) as kibana:
        env = clean_environ(KB_URL=kibana.url, KB_USER="kcing", KB_PASSWORD=SECRET)
        log = tmp_path / "kbn.log"
        imported = kcing(["setup_kbn", "--space", "ci", "--kibana-dir", str(kibana_dir), "--wait", "5",
                          "-d", "-l", str(log)], env, tmp_path)
        assert imported.returncode == 0, imported.stderr
        assert kibana.objects("ci") and not kibana.objects("default")
        shipped = (kibana_dir / "saved_objects.ndjson").read_bytes()
        exported = kcing(["backup_kbn", "--space", "ci", "--kibana-dir", str(kibana_dir)], env, tmp_path)
        assert exported.returncode == 0, exported.stderr
        assert (kibana_dir / "saved_objects.ndjson").read_bytes() == shipped
        everything = imported.stdout + imported.stderr + exported.stdout + exported.stderr + log.read_text()
        assert SECRET not in everything
        wrong = kcing(["backup_kbn", "--kibana-dir", str(kibana_dir)],
                      clean_environ(KB_URL=kibana.url, KB_USER="kcing", KB_PASSWORD="nope"), tmp_path)
        assert wrong.returncode == 2 and "Traceback" not in wrong.stderr


def test_setup_ls_writes_pipelines_yml_keeping_other_pipelines(tmp_path):
    home = tmp_path / "logstash"
    (home / "config").mkdir(parents=True)
    (home / "config" / "pipelines.yml").write_text("- pipeline.id: other\n  path.config: /etc/other.conf\n")
    env = clean_environ(LS_HOME=str(home), LS_QUEUE_TYPE="memory", LS_NUM_WORKERS="3")
    planned = kcing(["setup_ls", "--dry-run"], env, tmp_path)
    assert planned.returncode == 0 and "pipeline.id: kcing" in planned.stdout
    assert "kcing" not in (home / "config" / "pipelines.yml").read_text()
    done = kcing(["setup_ls"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    entries = {entry["pipeline.id"]: entry for entry in yaml.safe_load((home / "config" / "pipelines.yml").read_text())}
    assert set(entries) == {"other", "kcing"}
    assert entries["kcing"]["queue.type"] == "memory" and entries["kcing"]["pipeline.workers"] == 3


def test_setup_ls_refuses_a_bad_queue_type(tmp_path):
    home = tmp_path / "logstash"
    (home / "config").mkdir(parents=True)
    done = kcing(["setup_ls"], clean_environ(LS_HOME=str(home), LS_QUEUE_TYPE="disk"), tmp_path)
    assert done.returncode == 2 and "LS_QUEUE_TYPE" in done.stderr
    assert not (home / "config" / "pipelines.yml").exists()


# Servers that answer a byte at a time: each wait stays within the read timeout, so only the
# deadline on the whole request ends it -----------------------------------------------------------

@pytest.mark.parametrize("status_line", [False, True], ids=["headers", "status-line"])
def test_drp_against_an_elasticsearch_trickling_its_answer_stops_at_the_request_deadline(
        tmp_path, es, status_line):
    with RogueFront(es.url) as front:
        front.on("GET", "/_cat/indices", trickle_head(every=0.2, status_line=status_line), count=None)
        env = clean_environ(ES_HOST=front.url, KCING_DB=str(tmp_path / "kcing.db"), ES_REQUEST_DEADLINE="2")
        started = time.monotonic()
        done = kcing(["drp", "--drp-days", "30"], env, tmp_path, timeout=120)
    assert time.monotonic() - started < 20
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kcing drp: ") and "ES_REQUEST_DEADLINE" in last
    assert "Traceback" not in done.stderr


def test_drp_takes_an_answer_that_comes_whole_within_the_request_deadline_after_a_long_silence(tmp_path, es):
    """ES_REQUEST_DEADLINE is what a request may take: a busy node that answers after 32 s, well
    within the 60 s set here, is answered, not cut at a shorter wait of the client's own."""
    es.seed_index("boot-2001.01.01", docs={"1": {"job": "mainline"}})
    with RogueFront(es.url) as front:
        front.on("GET", "/_cat/indices", silent_then_forward(32), count=None)
        env = clean_environ(ES_HOST=front.url, KCING_DB=str(tmp_path / "kcing.db"), ES_REQUEST_DEADLINE="60")
        done = kcing(["drp", "--drp-days", "30", "--dry-run"], env, tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "would delete index boot-2001.01.01" in done.stdout


def test_setup_es_waiting_on_a_trickling_health_answer_gives_up_in_time(tmp_path, es):
    with RogueFront(es.url) as front:
        front.on("GET", "/_cluster/health", trickle_head(every=0.2), count=None)
        env = clean_environ(ES_HOST=front.url, ES_REQUEST_DEADLINE="2")
        started = time.monotonic()
        done = kcing(["setup_es", "--wait", "1"], env, tmp_path, timeout=120)
    assert time.monotonic() - started < 20
    assert done.returncode == 3, done.stderr
    assert "not ready" in done.stderr and "Traceback" not in done.stderr
    assert not any(name.startswith("kcing-") for name in es.templates)


def test_setup_es_waits_for_a_trickling_health_answer_its_wait_and_10_s_more_not_the_request_deadline(tmp_path, es):
    """The health wait gets --wait and 10 s more, as the README says: with --wait 1 and the
    default ES_REQUEST_DEADLINE (60 s), a node trickling its health answer held setup_es 60 s."""
    with RogueFront(es.url) as front:
        front.on("GET", "/_cluster/health", trickle_head(every=0.2), count=None)
        started = time.monotonic()
        done = kcing(["setup_es", "--wait", "1"], clean_environ(ES_HOST=front.url), tmp_path, timeout=120)
    assert time.monotonic() - started < 30
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "not ready" in last and "ES_REQUEST_DEADLINE" not in last, last
    assert re.search(r"no whole answer within 1[01](\.\d+)?s", last), last


def test_backup_kbn_against_a_kibana_trickling_its_export_stops_at_the_request_deadline(tmp_path):
    kibana_dir = tmp_path / "kibana"
    kibana_dir.mkdir()
    before = (REPO / "kibana" / "saved_objects.ndjson").read_bytes()
    (kibana_dir / "saved_objects.ndjson").write_bytes(before)
    with KibanaEmulator() as kibana, RogueFront(kibana.url) as front:
        front.on("POST", "/_export", trickle_head(every=0.2), count=None)
        env = clean_environ(KB_URL=front.url, KB_REQUEST_DEADLINE="2")
        started = time.monotonic()
        done = kcing(["backup_kbn", "--kibana-dir", str(kibana_dir), "--wait", "5"], env, tmp_path, timeout=120)
    assert time.monotonic() - started < 20
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kcing backup_kbn: ") and "KB_REQUEST_DEADLINE" in last
    assert (kibana_dir / "saved_objects.ndjson").read_bytes() == before


# Servers whose answer never ends, fast: the deadline bounds the time, the size limit the memory ---

# Address space a kcing process may take in these tests: several times what one needs, far less
# than what an answer read to its deadline fills (gigabytes on loopback).
MEMORY_CAP = 1536 * 1024 * 1024


def kcing_within_memory(args, env, cwd) -> subprocess.CompletedProcess:
    """`kcing ARGS` as tests.feedrun.kcing runs it, its address space capped at MEMORY_CAP (what
    it fills past that ends it with MemoryError, not the machine)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    return subprocess.run([sys.executable, str(REPO / "kcing.py"), *args], env=env, cwd=str(cwd), capture_output=True,
                          text=True, timeout=120, preexec_fn=cap)


@pytest.mark.parametrize("declared", [None, 10 ** 12], ids=["until-closed", "announced"])
def test_drp_against_an_elasticsearch_answer_without_end_stops_at_the_size_limit(tmp_path, es, declared):
    with RogueFront(es.url) as front:
        front.on("GET", "/_cat/indices", endless(declared=declared), count=None)
        env = clean_environ(ES_HOST=front.url, KCING_DB=str(tmp_path / "kcing.db"), ES_REQUEST_DEADLINE="30")
        started = time.monotonic()
        done = kcing_within_memory(["drp", "--drp-days", "30"], env, tmp_path)
    assert time.monotonic() - started < 20  # the size limit ended it, not the 30 s deadline
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        "kcing drp: Elasticsearch at %s sent an answer larger than kcing takes (%s than the limit of 67108864 "
        "bytes) while listing indices (build-*,boot-*,test-*,log-*,regression-*)"
        % (front.url, "announced 1000000000000 bytes, more" if declared else "more")]


def test_setup_es_waiting_on_a_health_answer_without_end_stops_at_once(tmp_path, es):
    with RogueFront(es.url) as front:
        front.on("GET", "/_cluster/health", endless(), count=None)
        started = time.monotonic()
        done = kcing_within_memory(["setup_es", "--wait", "60"], clean_environ(ES_HOST=front.url), tmp_path)
        asked = front.answered_by("streamed")
    assert time.monotonic() - started < 20  # not polled again and again for the 60 s of the wait
    assert done.returncode == 3, done.stderr
    assert asked == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "kcing setup_es: Elasticsearch at %s sent an answer larger than kcing takes (more than the limit of "
        "67108864 bytes) while checking cluster health" % front.url)


@pytest.mark.parametrize("command", ["backup_kbn", "setup_kbn"])
def test_a_kibana_answer_without_end_stops_at_the_size_limit_and_writes_nothing(tmp_path, command):
    kibana_dir = tmp_path / "kibana"
    kibana_dir.mkdir()
    before = (REPO / "kibana" / "saved_objects.ndjson").read_bytes()
    (kibana_dir / "saved_objects.ndjson").write_bytes(before)
    with KibanaEmulator() as kibana, RogueFront(kibana.url) as front:
        front.on("POST", "/_export", endless(), count=None)
        env = clean_environ(KB_URL=front.url, KB_REQUEST_DEADLINE="60")
        started = time.monotonic()
        done = kcing_within_memory([command, "--kibana-dir", str(kibana_dir), "--wait", "5"], env, tmp_path)
        assert not [record for record in kibana.requests if "_import" in record.path]
    assert time.monotonic() - started < 30  # the size limit ended it, not the 60 s deadline
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "kcing %s: Kibana at %s sent an answer larger than kcing takes (more than the limit of 268435456 bytes) "
        "to export saved objects" % (command, front.url))
    assert sorted(path.name for path in kibana_dir.iterdir()) == ["saved_objects.ndjson"]
    assert (kibana_dir / "saved_objects.ndjson").read_bytes() == before


# Successful answers that are not what Elasticsearch answers: read as empty, they made drp delete
# nothing and exit 0; taken for objects, they ended the command with an internal error ------------

ELASTIC = (("X-Elastic-Product", "Elasticsearch"),)
NOT_ANSWERS = [("text/html", b"<html><body>502 Bad Gateway</body></html>"), ("application/json", b"null"),
               ("application/json", b'"ok"'), ("application/json", b"{}"), ("application/json", b"")]


def drp_answered_in_place_of_elasticsearch(tmp_path, es, method: str, path: str, content_type: str, body: bytes):
    """Run drp through a front answering `method path` with a 200 of `body` in place of
    Elasticsearch, an expired index waiting there; (the run, that index, the front's URL)."""
    old = "boot-%s" % (date.today() - timedelta(days=40)).strftime("%Y.%m.%d")
    es.seed_index(old, docs={"1": {"job": "mainline"}})
    with RogueFront(es.url) as front:
        front.on(method, path, answer(200, ELASTIC + (("Content-Type", content_type),), body), count=None)
        env = clean_environ(ES_HOST=front.url, KCING_DB=str(tmp_path / "kcing.db"))
        return kcing(["drp", "--drp-days", "30"], env, tmp_path), old, front.url


@pytest.mark.parametrize("content_type, body", NOT_ANSWERS, ids=["html", "null", "string", "object", "empty"])
def test_drp_given_an_index_listing_that_is_no_json_array_stops_and_deletes_nothing(tmp_path, es, content_type, body):
    done, old, front_url = drp_answered_in_place_of_elasticsearch(tmp_path, es, "GET", "/_cat/indices",
                                                                  content_type, body)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "kcing drp: Elasticsearch at %s sent an unreadable answer while listing indices "
        "(build-*,boot-*,test-*,log-*,regression-*): not a JSON array (%s)"
        % (front_url, repr(body.decode()[:40]) if body else "no body")]
    assert old in es.index_names()


def test_an_unreadable_answer_of_megabytes_is_quoted_by_its_start_only(tmp_path, es):
    cut_short = b'[{"index": "' + b"boot-2019.05.31\n" * 100_000
    with RogueFront(es.url) as front:
        front.on("GET", "/_cat/indices", answer(200, ELASTIC + (("Content-Type", "application/json"),), cut_short),
                 count=None)
        done = kcing(["drp", "--drp-days", "30"], clean_environ(ES_HOST=front.url, KCING_DB=str(tmp_path / "kcing.db")),
                     tmp_path)
    assert done.returncode == 3, done.stderr[:1000]
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("kcing drp: Elasticsearch at %s sent an unreadable answer while listing indices "
                           "(build-*,boot-*,test-*,log-*,regression-*): Unable to deserialize as JSON: " % front.url)
    assert len(line) < 600, len(line)


@pytest.mark.parametrize("content_type, body", [answer for answer in NOT_ANSWERS if answer[1] != b"{}"],
                         ids=["html", "null", "string", "empty"])
def test_drp_never_takes_an_answer_that_is_no_elasticsearch_answer_for_a_deletion(tmp_path, es, content_type, body):
    """A proxy's page answered with 200 to the DELETE: the index is not gone, and drp must not
    say it is (nor go on to forget the ledger's rows as if it were)."""
    done, old, front_url = drp_answered_in_place_of_elasticsearch(tmp_path, es, "DELETE", "/", content_type, body)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "deleted index" not in done.stdout
    assert done.stderr.strip().splitlines()[-1].startswith(
        "kcing drp: Elasticsearch at %s sent an unreadable answer while deleting 1 index (%s ... ): not a JSON "
        "object" % (front_url, old)), done.stderr
    assert old in es.index_names()


def setup_es_given_a_server_version(tmp_path, es, content_type: str, body: bytes):
    """Run setup_es through a front answering `GET /` (the server's version) with a 200 of `body`,
    everything else going to Elasticsearch; (the run, the front's URL)."""
    def version_answer(front, sock, request):
        if request.path == "/":
            return answer(200, ELASTIC + (("Content-Type", content_type),), body)(front, sock, request)
        return front._forward(sock, request)

    with RogueFront(es.url) as front:
        front.on("GET", "", version_answer, count=None)
        return kcing(["setup_es", "--wait", "5"], clean_environ(ES_HOST=front.url), tmp_path), front.url


@pytest.mark.parametrize("content_type, body", [answer for answer in NOT_ANSWERS if answer[1] != b"{}"],
                         ids=["html", "null", "string", "empty"])
def test_setup_es_given_a_server_version_that_is_no_json_object_stops_in_one_line(tmp_path, es, content_type, body):
    done, front_url = setup_es_given_a_server_version(tmp_path, es, content_type, body)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "kcing setup_es: Elasticsearch at %s sent an unreadable answer while reading the server version: not a "
        "JSON object (%s)" % (front_url, repr(body.decode()[:40]) if body else "no body"))
    assert not any(name.startswith("kcing-") for name in es.templates)


def test_setup_es_given_a_server_version_that_is_no_object_says_its_version_is_unknown(tmp_path, es):
    done, front_url = setup_es_given_a_server_version(tmp_path, es, "application/json", b'{"version": "8.15.3"}')
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "kcing setup_es: Elasticsearch at %s is version unknown; kcing needs Elasticsearch 8 or 9" % front_url)


@pytest.mark.parametrize("command", [["drp", "--drp-days", "30"], ["setup_es", "--wait", "5"], ["reconcile"]],
                         ids=lambda args: args[0])
@pytest.mark.parametrize("location", ["https://sso.example/login?next=%2F", None], ids=["location", "no-location"])
@pytest.mark.parametrize("body", [b"", b"Moved. Redirecting to https://sso.example/login"], ids=["empty", "text"])
def test_a_redirect_from_elasticsearch_is_a_setting_to_fix_naming_where_it_leads(tmp_path, es, command, location, body):
    """Elasticsearch sends no redirect: a proxy in front of it does. Said as a setting to fix (exit
    2), as one from Kibana or a Logstash input is, never followed."""
    from tests.test_reconcile import obj, packed, to_logstash
    from kcing.ledger.ledger import Ledger, Outcome
    from kcing.ledger.models import DELIVERED
    ledger = Ledger.open(str(tmp_path / "kcing.db"))
    ledger.record([Outcome(obj("one"), DELIVERED, documents=packed(1))], to_logstash)
    ledger.close()
    headers = (("Location", location),) if location else ()
    with RogueFront(es.url) as front:
        for method in ("GET", "POST"):
            front.on(method, "", answer(302, headers, body), count=None)  # no Content-Type
        env = clean_environ(ES_HOST=front.url, KCING_DB=str(tmp_path / "kcing.db"))
        done = kcing(command, env, tmp_path)
        asked = [path for _, path, _ in front.requests]
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kcing %s: Elasticsearch at %s answered HTTP 302, a redirect to %s, while "
                           % (command[0], front.url, location or "nowhere (no Location)")), last
    assert last.endswith(": set ES_HOST to the address Elasticsearch answers at itself (kcing follows no redirect)")
    assert len(asked) == 1 and "login" not in asked[0]


def many_headers(front, sock, request) -> bool:
    """200 with 150 header lines: more than http.client reads (100)."""
    lines = "".join("X-Padding-%d: %s\r\n" % (number, "p" * 40) for number in range(150))
    sock.sendall(("HTTP/1.1 200 OK\r\n%sContent-Length: 2\r\n\r\n{}" % lines).encode())
    return False


def a_long_header(front, sock, request) -> bool:
    sock.sendall(("HTTP/1.1 200 OK\r\nX-Padding: %s\r\nContent-Length: 2\r\n\r\n{}" % ("p" * 70_000)).encode())
    return False


@pytest.mark.parametrize("head, reason", [(many_headers, "an answer of more than 100 header lines"),
                                          (a_long_header, "an answer with a header line of more than 64 KiB")],
                         ids=["many-lines", "long-line"])
def test_an_answer_head_beyond_http_limits_is_named_so(tmp_path, es, head, reason):
    kibana_dir = tmp_path / "kibana"
    kibana_dir.mkdir()
    with KibanaEmulator() as kibana, RogueFront(kibana.url) as kibana_front, RogueFront(es.url) as es_front:
        kibana_front.on("POST", "/_export", head, count=None)
        es_front.on("GET", "/_cat/indices", head, count=None)
        exported = kcing(["backup_kbn", "--kibana-dir", str(kibana_dir), "--wait", "5"],
                         clean_environ(KB_URL=kibana_front.url), tmp_path)
        retained = kcing(["drp", "--drp-days", "30"],
                         clean_environ(ES_HOST=es_front.url, KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert exported.returncode == 3 and retained.returncode == 3, exported.stderr + retained.stderr
    assert exported.stderr.strip().splitlines() == [
        "kcing backup_kbn: cannot reach Kibana at %s to export saved objects (%s)" % (kibana_front.url, reason)]
    assert retained.stderr.strip().splitlines() == [
        "kcing drp: cannot reach Elasticsearch at %s: %s" % (es_front.url, reason)]


def test_setup_es_names_a_user_template_of_the_same_priority_and_installs_the_others(es, tmp_path):
    """Elasticsearch refuses two templates with overlapping patterns and the same priority: kcing's
    template for that kind cannot be installed, but the others can, and the error says what to do."""
    client = Elasticsearch(es.url)
    client.indices.put_index_template(name="user-build", index_patterns=["build-2*"], priority=200)
    done = kcing(["setup_es"], clean_environ(ES_HOST=es.url, ES_READY_TIMEOUT="5"), tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "kcing setup_es: index template kcing-build (build-*) not installed: the index template user-build "
        "(build-2*) has the same priority [200] and patterns that overlap, which Elasticsearch refuses; give "
        "user-build a priority below 200 (kcing's then applies) or above it (yours then applies), or patterns "
        "that leave build-* alone, then run setup_es again")
    installed = {item["name"] for item in client.indices.get_index_template(name="kcing-*")["index_templates"]}
    assert installed == {"kcing-boot", "kcing-test", "kcing-log", "kcing-regression"}


def test_setup_es_warns_of_a_user_template_that_overrides_kcings(es, tmp_path):
    client = Elasticsearch(es.url)
    client.indices.put_index_template(name="user-logs", index_patterns=["log-*", "other-*"], priority=500)
    client.indices.put_index_template(name="user-archive", index_patterns=["build-*"], priority=10)
    done = kcing(["setup_es"], clean_environ(ES_HOST=es.url, ES_READY_TIMEOUT="5"), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [line for line in done.stderr.splitlines() if "takes precedence" in line]
    assert len(warnings) == 1, done.stderr
    assert ("index template user-logs (log-*, other-*; priority 500) takes precedence over kcing-log (log-*; "
            "priority 200) for the indices both match: they get its mappings and settings, not kcing's; give "
            "user-logs a priority below 200 or patterns that leave log-* alone") in warnings[0]


# A busy node: 429 and 503 are asked again after a wait, not at once --------------------------

REJECTED = (b'{"error":{"root_cause":[],"type":"es_rejected_execution_exception","reason":"rejected execution of '
            b'coordinating operation"},"status":429}')
FLOOD_BLOCK = (b'{"error":{"root_cause":[],"type":"cluster_block_exception","reason":"index [build-2019.05.01] '
               b'blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has '
               b'read-only-allow-delete block];"},"status":429}')


def busy_for(seconds: float, status: int = 429, body: bytes = REJECTED, retry_after: str = ""):
    """Answer `status` from the first request until `seconds` later, then pass requests on: an
    Elasticsearch error, or a proxy's page when `body` is no JSON."""
    began = []

    def busy(front, sock, request) -> bool:
        began.append(began[0] if began else time.monotonic())
        if time.monotonic() - began[0] >= seconds:
            return front._forward(sock, request)
        headers = ([("Content-Type", "application/json"), ("X-Elastic-Product", "Elasticsearch")]
                   if body.startswith(b"{") else [("Content-Type", "text/html")])
        return answer(status, tuple(headers + ([("Retry-After", retry_after)] if retry_after else [])), body)(
            front, sock, request)
    return busy


# What a proxy in front of a restarting node answers: no Elasticsearch error in it.
PROXY_PAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@pytest.mark.parametrize("status, retry_after, backoff, body", [(429, "", "0.5", REJECTED),
                                                           (503, "2", "0.01", REJECTED),
                                                           (502, "", "0.5", PROXY_PAGE), (504, "", "0.5", PROXY_PAGE)],
                         ids=["backoff", "retry-after", "bad-gateway", "gateway-timeout"])
def test_drp_asks_a_busy_node_again_after_a_wait(tmp_path, es, status, retry_after, backoff, body):
    # Asked again at once, a node whose queues are full answers 429 again: drp failed on a
    # moment's load. With ES_RETRY_BACKOFF 0.5 the retries come 0.25 s or more and 0.5 s or more
    # later; a Retry-After of 2 s is waited even with a backoff of 0.01 s.
    es.seed_index("build-2019.05.01", {})
    with RogueFront(es.url) as front:
        front.on("GET", "/_cat/indices", busy_for(0.6 if not retry_after else 1.5, status, body, retry_after))
        done = kcing(["drp", "--drp-days", "30"], clean_environ(ES_HOST=front.url, ES_RETRY_BACKOFF=backoff,
                                                                 KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert done.returncode == 0, done.stderr
    assert es.index_names() == []
    assert "GET /_cat/indices/build-*,boot-*,test-*,log-*,regression-*: HTTP %d; retry 1 of 2 in" % status in done.stderr



def test_a_retry_after_date_from_elasticsearch_is_read_by_its_clock_not_this_hosts(tmp_path, es):
    # A proxy before the node whose clock runs three hours ahead asks, as a date, for a pause of
    # a second: drp waits that second, not the longest wait it makes (two minutes).
    from datetime import datetime, timezone
    from email.utils import format_datetime

    es.seed_index("build-2019.05.01", {})
    asked = []

    def busy_ahead(front, sock, request) -> bool:
        asked.append(request.path)
        if len(asked) > 1:
            return front._forward(sock, request)
        there = datetime.now(timezone.utc) + timedelta(hours=3)
        return answer(429, (("Content-Type", "application/json"), ("X-Elastic-Product", "Elasticsearch"),
                            ("Date", format_datetime(there, usegmt=True)),
                            ("Retry-After", format_datetime(there + timedelta(seconds=1), usegmt=True))),
                      REJECTED)(front, sock, request)

    with RogueFront(es.url) as front:
        front.on("GET", "/_cat/indices", busy_ahead)
        done = kcing(["drp", "--drp-days", "30"], clean_environ(ES_HOST=front.url, ES_RETRY_BACKOFF="0.01",
                                                                 KCING_DB=str(tmp_path / "kcing.db")), tmp_path,
                     timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.search(r"HTTP 429; retry 1 of 2 in 1\.\ds", done.stderr), done.stderr
    assert es.index_names() == []

def test_the_wait_for_a_busy_node_is_es_retry_backoffs(tmp_path):
    # ES_RETRY_BACKOFF of 0.01 s: waits of 0.01 s and 0.02 s at most, not the default's second.
    with RogueFront() as front:
        front.on("GET", "/_cat/indices", busy_for(1000))
        began = time.monotonic()
        done = kcing(["drp", "--drp-days", "30"], clean_environ(ES_HOST=front.url, ES_RETRY_BACKOFF="0.01",
                                                                 KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
        took = time.monotonic() - began
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert re.findall(r"HTTP 429; retry (\d) of 2 in (\S+)s", done.stderr) == [("1", "0.0"), ("2", "0.0")], done.stderr
    assert took < 10, took


PERMANENT_BREAKER = (b'{"error":{"root_cause":[],"type":"circuit_breaking_exception","reason":"[parent] Data too '
                     b'large, data for [<http_request>] would be [1073741824/1gb], which is larger than the limit of '
                     b'[1020054732/972.7mb]","bytes_wanted":1073741824,"bytes_limit":1020054732,"durability":'
                     b'"PERMANENT"},"status":429}')


@pytest.mark.parametrize("final, asked_again", [(FLOOD_BLOCK, REJECTED),
                                                (PERMANENT_BREAKER, PERMANENT_BREAKER.replace(b'"PERMANENT"',
                                                                                              b'"TRANSIENT"'))],
                         ids=["flood-stage-block", "permanent-breaker"])
def test_a_429_no_wait_lifts_is_answered_at_once(tmp_path, final, asked_again):
    # A full disk's flood-stage block answers a write 429, and so does a circuit breaker
    # Elasticsearch calls PERMANENT (an operator's to change): asked again after ES_RETRY_BACKOFF's
    # waits, they would be refused the same, later. A full queue or a TRANSIENT breaker is asked again.
    from elasticsearch import ApiError

    from kcing import settings as settings_module
    from kcing.admin.elastic import make_client
    with RogueFront() as front:
        front.on("PUT", "/build-2019.05.01/_doc/1", busy_for(100, body=final))
        front.on("PUT", "/build-2019.05.02/_doc/1", busy_for(100, body=asked_again))
        client = make_client(settings_module.load(environ={"ES_HOST": front.url, "ES_RETRY_BACKOFF": "0.05"},
                                                  local_file=tmp_path / "none.py"))
        for index, asked in (("build-2019.05.01", 1), ("build-2019.05.02", 3)):
            with pytest.raises(ApiError) as refused:
                client.index(index=index, id="1", document={})
            assert refused.value.meta.status == 429
            assert [path for _, path, _ in front.requests].count("/%s/_doc/1" % index) == asked


def test_a_signal_ends_the_wait_for_a_busy_node_at_once(tmp_path, es):
    with RogueFront(es.url) as front:
        front.on("GET", "/_cat/indices", busy_for(1000, retry_after="100"))
        process = kcing_process(["drp", "--drp-days", "30"], clean_environ(ES_HOST=front.url,
                                                                         KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
        if not wait_until(lambda: front.answered_by("busy"), timeout=30):
            process.kill()
            pytest.fail("drp never asked: %s" % (process.communicate(),))
        stdout, stderr, took = stopped_by_signal(process, settle=0.5)
    assert process.returncode == 130, stdout + stderr
    assert took < 3 and "Traceback" not in stderr


def test_setup_es_health_wait_is_not_stretched_by_the_busy_node_waits(tmp_path):
    # The health wait polls a starting node itself, within --wait: the waits for a busy node
    # (here a Retry-After of 30 s, twice) would hold `setup_es --wait 1` a minute.
    not_ready = b'{"error":{"root_cause":[],"type":"master_not_discovered_exception","reason":null},"status":503}'
    with RogueFront() as front:
        front.on("GET", "/_cluster/health", busy_for(1000, 503, body=not_ready, retry_after="30"))
        began = time.monotonic()
        done = kcing(["setup_es", "--wait", "1"], clean_environ(ES_HOST=front.url, KCING_DB=str(tmp_path / "k.db")),
                     tmp_path)
        took = time.monotonic() - began
    assert done.returncode == 3, done.stderr
    assert "was not ready (yellow or green) within 1s: 503 master_not_discovered_exception" in done.stderr
    assert took < 11 and "retry 1 of" not in done.stderr, (took, done.stderr)


@pytest.mark.parametrize("flag, env", [(["--wait", "-0"], {}), ([], {"ES_READY_TIMEOUT": "-0"})],
                         ids=["--wait", "ES_READY_TIMEOUT"])
def test_a_wait_of_minus_zero_is_said_as_zero_seconds(tmp_path, flag, env):
    """-0 is a wait of 0 seconds, taken as such: the message said "not ready ... within -0s", a
    negative wait its help refuses."""
    done = kcing(["setup_es", *flag], clean_environ(ES_HOST="http://127.0.0.1:9", **env), tmp_path)
    assert done.returncode == 3, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "within 0s" in last and "-0" not in last, last


@pytest.mark.parametrize("command", [["setup_es"], ["backup_kbn"]], ids=lambda command: command[0])
def test_a_wait_under_a_second_is_said_as_given(tmp_path, command):
    """`--wait 0.4` waited 0.4 s, and the line announcing it said "waiting up to 0s", a wait of none."""
    env = clean_environ(ES_HOST="http://127.0.0.1:9", KB_URL="http://127.0.0.1:9")
    done = kcing([*command, "--wait", "0.4"], env, tmp_path)
    assert done.returncode == 3, done.stderr
    started = [line for line in done.stderr.splitlines() if "waiting up to " in line]
    assert len(started) == 1 and "waiting up to 0.4s for " in started[0], done.stderr
