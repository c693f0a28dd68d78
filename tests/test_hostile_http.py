"""The real `kcing feed_es` against HTTP servers that misbehave the way real deployments do: a
proxy that redirects, a body limit (413), an answer or a file that trickles a byte at a time, one
cut shorter than its Content-Length, one that never ends; and the signals sent to stop such a run.

Each server is a loopback front (tests/fakes/rogue_http.py) passing everything else on to the
legacy replica or the Logstash emulators, so the rest of the run behaves normally.
"""
from __future__ import annotations

import ctypes
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from urllib.parse import unquote, urlsplit

import pytest

from kcing import http as kcing_http
from kcing.documents import documents_for
from kcing.sinks.logstash import LogstashSink
from kcing.shutdown import GRACE_SECONDS
from tests.fakes.rogue_http import RogueFront, answer, cut_short, endless, exact_head, redirect, trickle, trickle_head
from tests.fakes.serving import refusing_port, wait_until
from tests.fakes.kibana_server import KibanaEmulator
from tests.feedrun import (REPO, SAMPLES, clean_environ, expected_documents, feed_environ, integrity, kcing,
                           kcing_process, ledger_rows, ledger_states, sample_objects, stopped_by_signal)

pytestmark = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")


def storage_path(obj) -> str:
    return unquote(urlsplit(obj.url).path)


def last_run(env, cwd) -> dict:
    status = kcing(["status", "--json"], env, cwd)
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)["runs"][0]


def error_lines(stderr: str):
    return [line for line in stderr.splitlines() if line.startswith("kcing ")]


def assert_it_alone_ended(db, obj, state: str, setting: str) -> None:
    """Every object in the ledger was delivered but `obj`, which ended `state` for a reason
    naming `setting`."""
    states = ledger_states(db)
    assert states.pop((obj.kind, obj.upstream_id)) == state
    assert set(states.values()) == {"delivered"}
    (row,) = [row for row in ledger_rows(db) if row["upstream_id"] == obj.upstream_id]
    assert setting in row["last_error"]


@pytest.fixture
def lava_front(logstash):
    with RogueFront(logstash.urls["lava"]) as front:
        yield front


@pytest.fixture
def storage_front(legacy_replica):
    with RogueFront(legacy_replica.storage_url) as front:
        yield front


@pytest.fixture
def build_object():
    return next(obj for obj in sample_objects() if obj.kind == "build")


# 3xx to a POST -----------------------------------------------------------------------------------

@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_from_logstash_is_a_configuration_error_and_nothing_is_marked_delivered(
        legacy_replica, logstash, lava_front, tmp_path, status):
    db = tmp_path / "kcing.db"
    # What a proxy that moved the input answers; a GET to the new place gets 200, which a
    # followed redirect would take for the acknowledgement of a batch it never sent.
    moved = lava_front.url + "/moved?token=abc"
    lava_front.on("POST", "/", redirect(status, moved))
    lava_front.on("GET", "/", answer(200, body=b"ok"))
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    # The Location is named without its query string, which may carry a token.
    assert "ES_LAVA" in line and lava_front.url + "/moved" in line and str(status) in line
    assert "abc" not in line
    assert "Traceback" not in result.stderr
    assert lava_front.answered_by("forward") == 0 and not [r for r in lava_front.requests if r[0] == "GET"]
    lava_objects = {key for key, state in ledger_states(db).items() if key[0] == "lava"}
    assert lava_objects and all(ledger_states(db)[key] != "delivered" for key in lava_objects)
    assert last_run(env, tmp_path)["outcome"] == "error 2"


@pytest.mark.parametrize("status, body, content_type", [
    (200, b"<html><body>Welcome to nginx!</body></html>", "text/html"),  # a web server where the input should be
    (200, b'{"acknowledged":true}', "application/json"),
    (202, b"queued", "text/plain"),
    # Only 204 comes without a body: a 200 with none is a stub or a proxy's, not the input's "ok".
    (200, b"", "text/plain"),
    (202, b"", "application/octet-stream"),
])
def test_a_2xx_that_is_not_logstashs_ok_is_no_acknowledgement(legacy_replica, logstash, lava_front, tmp_path,
                                                               status, body, content_type):
    line = refused_as_misconfigured(legacy_replica, logstash, lava_front, tmp_path, answer(
        status, (("Content-Type", content_type),), body))
    assert "instead of a Logstash http input's \"ok\"" in line and content_type in line


def refused_as_misconfigured(legacy_replica, logstash, lava_front, tmp_path, answered) -> str:
    """The feed against an ES_LAVA that answers POSTs with `answered`: exit 2, one line naming
    ES_LAVA (returned), no LAVA object delivered."""
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", answered)
    result = kcing(["feed_es"], feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url), tmp_path)
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    assert "ES_LAVA" in line, line
    lava_objects = {key for key, state in ledger_states(db).items() if key[0] == "lava"}
    assert lava_objects and all(ledger_states(db)[key] != "delivered" for key in lava_objects)
    return line


@pytest.mark.parametrize("status, body, content_type", [
    # Elasticsearch where the input should be: POST / is not one of its methods there.
    (405, b'{"error":"Incorrect HTTP method for uri [/] and method [POST], allowed: [GET, HEAD]","status":405}',
     "application/json"),
    (404, b"<html><body>404 Not Found</body></html>", "text/html"),  # a proxy with no route for the path
])
def test_an_answer_no_logstash_input_gives_is_a_configuration_error_naming_the_setting(
        legacy_replica, logstash, lava_front, tmp_path, status, body, content_type):
    # The http input takes any method on any path: 404 or 405 says the URL is not an input's.
    line = refused_as_misconfigured(legacy_replica, logstash, lava_front, tmp_path, answer(
        status, (("Content-Type", content_type),), body))
    assert str(status) in line, line
    assert lava_front.answered_by("whole_answer") <= 2  # the posts in flight, none retried


@pytest.mark.parametrize("status, body", [(200, b"ok"), (201, b"ok"), (204, b"")])
def test_each_answer_a_logstash_input_can_be_set_to_give_acknowledges(legacy_replica, logstash, lava_front, tmp_path,
                                                                      status, body):
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", answer(status, (("Content-Type", "text/plain"),), body))
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert {state for (kind, _), state in ledger_states(db).items() if kind == "lava"} == {"delivered"}


# 413 from the sink (legacy source; the API source is in test_feed_api.py) ---------------------

def test_a_document_too_large_for_logstash_is_kept_and_sent_once_the_limit_is_raised(
        legacy_replica, logstash, tmp_path):
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, logstash, db)
    # The largest LAVA document does not fit even alone (a POST body is a JSON array of them).
    largest = max(len(LogstashSink.encode(document)) for obj in sample_objects() if obj.kind == "lava"
                  for document in documents_for(obj.kind, obj.path.read_bytes(), obj.date))
    logstash.lava.max_content_length = largest
    prom = tmp_path / "kcing.prom"
    first = kcing(["feed_es", "--metrics", str(prom)], env, tmp_path)
    assert first.returncode == 3, first.stderr
    held = [row for row in ledger_rows(db) if row["state"] == "too_large"]
    assert held and all("max_content_length" in row["last_error"] for row in held)
    assert 'kcing_feed_objects{source="legacy",outcome="too_large"} %d' % len(held) in prom.read_text()
    assert not [row for row in ledger_rows(db) if row["state"] == "rejected"]
    assert "max_content_length" in first.stdout
    status = kcing(["status"], env, tmp_path).stdout
    assert "too large" in status and "error 3" in status

    logstash.lava.max_content_length = 100 * 1024 * 1024
    second = kcing(["feed_es"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert set(ledger_states(db).values()) == {"delivered"}
    assert "delivered %d" % len(held) in second.stdout


def test_a_local_file_too_large_for_logstash_is_named_by_its_file_not_only_by_its_hash(
        legacy_replica, logstash, tmp_path):
    # A local file is known by the hash of its content: of ten files given, "lava 2a64fe34...: a
    # document of ... bytes is larger than Logstash accepts" does not say which one to split.
    lava = next(obj for obj in sample_objects() if obj.kind == "lava")
    content = lava.path.read_bytes()
    logstash.lava.max_content_length = max(len(LogstashSink.encode(document))
                                           for document in documents_for("lava", content, lava.date))
    (tmp_path / "big-lava.json").write_bytes(content)
    fed = kcing(["feed_es", "--lavas", "big-lava.json", "--date", "2020-11-04"],
                feed_environ(legacy_replica, logstash, tmp_path / "kcing.db"), tmp_path)
    assert fed.returncode == 3, fed.stdout + fed.stderr
    named = "lava big-lava.json (sha256 %s): a document of " % hashlib.sha256(content).hexdigest()[:12]
    assert "  problem: " + named in fed.stdout, fed.stdout
    assert "too large for Logstash: " + named in fed.stderr, fed.stderr


# Downloads: endless, oversized, trickling ---------------------------------------------------------

@pytest.mark.parametrize("answer_for", [
    lambda front, path: endless(),
    lambda front, path: endless(declared=50_000_000),
    # A redirect within the upstream origin: its body is read before it is followed.
    lambda front, path: endless(status=302, location=front.url + path + "?moved=1"),
], ids=["streamed", "announced", "redirect-body"])
def test_a_download_beyond_the_size_limit_is_rejected_while_it_streams(
        legacy_replica, logstash, storage_front, tmp_path, build_object, answer_for):
    db = tmp_path / "kcing.db"
    path = storage_path(build_object)
    storage_front.on("GET", path, answer_for(storage_front, path), count=None)
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url,
                       KCI_MAX_OBJECT_BYTES="2000000")
    started = time.monotonic()
    result = kcing(["feed_es"], env, tmp_path, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode == 1, result.stderr
    assert_it_alone_ended(db, build_object, "rejected", "KCI_MAX_OBJECT_BYTES")


def test_a_trickling_download_fails_at_its_deadline_without_holding_up_the_others(
        legacy_replica, logstash, storage_front, tmp_path, build_object):
    db = tmp_path / "kcing.db"
    storage_front.on("GET", storage_path(build_object), trickle(length=5000, every=0.2), count=None)
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url,
                       KCI_DOWNLOAD_DEADLINE="1.5", KCI_THREADS="2")
    started = time.monotonic()
    result = kcing(["feed_es"], env, tmp_path, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 20, elapsed  # one deadline (not retried in the run), not 1000 s of trickle
    assert_it_alone_ended(db, build_object, "failed", "KCI_DOWNLOAD_DEADLINE")
    assert storage_front.answered_by("trickled") == 1

    storage_front.clear()  # the file is served normally again: the next run takes it
    again = kcing(["feed_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert set(ledger_states(db).values()) == {"delivered"}


def test_a_retry_after_date_is_read_by_the_storages_clock_not_this_hosts(
        legacy_replica, logstash, storage_front, tmp_path, build_object):
    """A storage whose clock runs three hours ahead asks to wait a second, as a date: that is a
    second, not three hours beyond what a run waits (which would fail the file)."""
    server_now = datetime.now(timezone.utc) + timedelta(hours=3)
    headers = (("Date", format_datetime(server_now, usegmt=True)),
               ("Retry-After", format_datetime(server_now + timedelta(seconds=1), usegmt=True)),
               ("Content-Type", "text/plain"))
    storage_front.on("GET", storage_path(build_object), answer(503, headers, b"busy"), count=1)
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url, KCI_MAX_RETRIES="2")

    result = kcing(["feed_es"], env, tmp_path, timeout=60)

    assert result.returncode == 0, result.stderr
    assert storage_front.answered_by("whole_answer") == 1
    assert set(ledger_states(db).values()) == {"delivered"}


@pytest.mark.parametrize("page", [b"<html><head><title>502 Bad Gateway</title></head></html>",
                                  b"\n  <!DOCTYPE html><html><body>Sign in</body></html>"], ids=["error", "login"])
def test_gen_samples_never_saves_a_web_page_answered_in_place_of_a_file(
        legacy_replica, logstash, storage_front, tmp_path, build_object, page):
    """A saved sample is not fetched again: a proxy's page saved in place of the file would be
    replayed for good. It fails instead, and the next run saves the file."""
    samples = tmp_path / "samples"
    storage_front.on("GET", storage_path(build_object), answer(200, (("Content-Type", "text/html"),), page),
                     count=None)
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_STORAGE_URL=storage_front.url,
                       KCI_SAMPLES_DIR=str(samples))
    result = kcing(["gen_samples"], env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 0 refused" in result.stdout
    warning = [line for line in result.stderr.splitlines() if build_object.upstream_id in line]
    assert len(warning) == 1 and "an HTML or XML page" in warning[0] and "next run asks again" in warning[0], result.stderr
    saved = {entry["upstream_id"] for entry in json.loads((samples / "manifest.json").read_text())["objects"]}
    assert build_object.upstream_id not in saved and saved
    assert all(page not in path.read_bytes() for path in samples.rglob("*.json"))

    storage_front.clear()  # the file is served again: the next run saves it
    again = kcing(["gen_samples"], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    entries = json.loads((samples / "manifest.json").read_text())["objects"]
    (entry,) = [entry for entry in entries if entry["upstream_id"] == build_object.upstream_id]
    assert (samples / entry["path"]).read_bytes() == build_object.path.read_bytes()


@pytest.mark.parametrize("stuck", ["trickle", "retry-wait"])
def test_gen_samples_stopped_while_upstream_holds_it_ends_at_once_and_keeps_what_it_saved(
        legacy_replica, logstash, storage_front, tmp_path, stuck):
    """One signal ends the downloads in flight and the retry waits (not 3 s later, as whatever a
    thread is stuck in), and the manifest lists every file saved before it."""
    samples = tmp_path / "samples"
    served = []
    held = trickle(length=10_000, every=0.5) if stuck == "trickle" else answer(503, (("Retry-After", "100"),))

    def after_three_files(front, sock, request):
        served.append(request.path)
        if len(served) > 3:
            return held(front, sock, request)
        return front._forward(sock, request)

    storage_front.on("GET", "", after_three_files, count=None)
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_STORAGE_URL=storage_front.url,
                       KCI_SAMPLES_DIR=str(samples), KCI_THREADS="1", KCI_RETRY_BACKOFF="100",
                       KCI_DOWNLOAD_DEADLINE="100")
    process = kcing_process(["gen_samples"], env, tmp_path)
    if not wait_until(lambda: len(served) > 3, timeout=30):
        process.kill()
        pytest.fail("gen_samples never reached its fourth file: %s" % (process.communicate(),))
    _, stderr, took = stopped_by_signal(process, timeout=30)
    assert process.returncode == 130, stderr
    assert took < 2, took  # stopped, not ended by the exit 3 s after the signal
    assert stderr.strip().splitlines()[-1] == "kcing gen_samples: interrupted", stderr
    entries = json.loads((samples / "manifest.json").read_text())["objects"]
    assert len(entries) == 3
    for entry in entries:
        assert hashlib.sha256((samples / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]


@pytest.mark.parametrize("status_line", [False, True], ids=["headers", "status-line"])
def test_a_download_whose_headers_trickle_fails_at_its_deadline(
        legacy_replica, logstash, storage_front, tmp_path, build_object, status_line):
    # The socket timeout never fires on a byte every 0.2 s, and a hundred header lines of 600
    # bytes at that pace take hours: only the download's deadline ends the wait.
    db = tmp_path / "kcing.db"
    storage_front.on("GET", storage_path(build_object), trickle_head(every=0.2, status_line=status_line),
                     count=None)
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url,
                       KCI_DOWNLOAD_DEADLINE="1.5", KCI_TIMEOUT="10")
    started = time.monotonic()
    result = kcing(["feed_es"], env, tmp_path, timeout=120)
    assert time.monotonic() - started < 20
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert_it_alone_ended(db, build_object, "failed", "KCI_DOWNLOAD_DEADLINE")


def test_a_download_whose_content_length_is_not_a_number_fails_and_the_next_run_takes_it(
        legacy_replica, logstash, storage_front, tmp_path, build_object):
    # "²" is a digit to str.isdigit(), not to int(): where the body ends is unknown (RFC 9112).
    db = tmp_path / "kcing.db"
    storage_front.on("GET", storage_path(build_object), exact_head(200, (("Content-Length", "\u00b2"),),
                                                                   build_object.path.read_bytes()), count=None)
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url, KCI_MAX_RETRIES="2")
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert_it_alone_ended(db, build_object, "failed", "Content-Length that is not a number")
    storage_front.clear()
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    assert set(ledger_states(db).values()) == {"delivered"}


@pytest.mark.parametrize("answer_for, said", [
    (lambda content: cut_short(declared=len(content), sent=content[:len(content) // 2]), "connection broken mid-body"),
    (lambda content: exact_head(200, (("Content-Length", "\u00b2"),), content), "Content-Length that is not a number"),
], ids=["short", "not-a-number"])
def test_a_download_cut_short_of_its_content_length_or_framed_by_no_number_is_retried_in_the_run(
        legacy_replica, logstash, storage_front, tmp_path, build_object, answer_for, said):
    """The README: a download shorter than its Content-Length, or whose Content-Length is not a
    number, is a broken connection, retried like a timeout (unlike one cut at its deadline)."""
    db = tmp_path / "kcing.db"
    path = storage_path(build_object)
    storage_front.on("GET", path, answer_for(build_object.path.read_bytes()), count=1)
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url, KCI_MAX_RETRIES="2")
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line for line in result.stderr.splitlines() if said in line and "retry 1 of 1" in line], result.stderr
    assert [answered for (_, requested, answered) in storage_front.requests
            if unquote(requested) == path] == [
        "cut" if said.startswith("connection") else "exactly", "forward"]
    assert set(ledger_states(db).values()) == {"delivered"}


@pytest.mark.parametrize("framing, reason", [
    # The storage holds a gzip file cut short (an interrupted upload), which it labels gzip.
    ("content-length", "does not decode as its Content-Encoding gzip says"),
    # Read until the connection closed, which it did early: only the gzip stream tells.
    ("close", "connection closed before the end of its gzip stream"),
])
def test_a_gzip_download_cut_short_fails_and_is_never_taken_for_the_whole_file(
        legacy_replica, logstash, storage_front, tmp_path, build_object, framing, reason):
    db = tmp_path / "kcing.db"
    whole = gzip.compress(build_object.path.read_bytes())
    cut = whole[:-8]  # all of the JSON inflates; the gzip trailer that vouches for it is missing
    framed = ("Content-Length", str(len(cut))) if framing == "content-length" else ("Connection", "close")
    storage_front.on("GET", storage_path(build_object), exact_head(200, (("Content-Encoding", "gzip"), framed), cut),
                     count=None)
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url, KCI_MAX_RETRIES="2")
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert_it_alone_ended(db, build_object, "failed", reason)
    storage_front.clear()
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    assert set(ledger_states(db).values()) == {"delivered"}


def test_a_storage_redirect_loop_fails_its_file_at_once_saying_so(
        legacy_replica, logstash, storage_front, tmp_path, build_object):
    db = tmp_path / "kcing.db"
    path = storage_path(build_object)
    storage_front.on("GET", path, redirect(302, storage_front.url + path), count=None)
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url, KCI_MAX_RETRIES="3")
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert_it_alone_ended(db, build_object, "failed", "redirected more than 30 times (a redirect loop)")
    # Followed as far as requests goes once, not once more for every retry: a loop stays a loop.
    assert storage_front.answered_by("redirected") == 31
    storage_front.clear()
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    assert set(ledger_states(db).values()) == {"delivered"}


# Locations no URL parser reads: a bracket left open, a byte that is not UTF-8 (sent as latin-1).
UNREADABLE_LOCATIONS = [("http://[::1/x", "not a URL"), ("/caf\u00e9.json", "not UTF-8")]


@pytest.mark.parametrize("location, reason", UNREADABLE_LOCATIONS, ids=["open-bracket", "latin-1"])
def test_a_storage_redirect_to_a_location_no_parser_reads_rejects_its_file_alone(
        legacy_replica, logstash, storage_front, tmp_path, build_object, location, reason):
    db = tmp_path / "kcing.db"
    storage_front.on("GET", storage_path(build_object), redirect(302, location), count=None)
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert_it_alone_ended(db, build_object, "rejected", "redirected to a Location that is %s" % reason)


@pytest.mark.parametrize("location, reason", UNREADABLE_LOCATIONS, ids=["open-bracket", "latin-1"])
def test_a_listing_redirected_to_a_location_no_parser_reads_stops_the_run_in_one_line(
        legacy_replica, logstash, tmp_path, location, reason):
    with RogueFront(legacy_replica.frontend_url) as frontend:
        frontend.on("GET", "/_ajax/build", redirect(302, location), count=None)
        env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_HOST=frontend.url.split("://")[1])
        result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    (line,) = error_lines(result.stderr)
    assert "/_ajax/build" in line and "redirected to a Location that is %s" % reason in line


DEEP_JSON = b"[" * 100_000 + b"]" * 100_000  # deeper than Python's JSON decoder recurses


def test_a_listing_page_nested_too_deeply_stops_the_run_in_one_line(legacy_replica, logstash, tmp_path):
    with RogueFront(legacy_replica.frontend_url) as frontend:
        frontend.on("GET", "/_ajax/build", answer(200, (("Content-Type", "application/json"),), DEEP_JSON), count=None)
        env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_HOST=frontend.url.split("://")[1])
        result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    (line,) = error_lines(result.stderr)
    assert "/_ajax/build did not answer JSON" in line


# Logstash answers: trickling, cut short ----------------------------------------------------------

def test_a_trickling_answer_from_logstash_is_cut_at_the_post_deadline_and_retried(
        legacy_replica, logstash, lava_front, tmp_path):
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", trickle(length=2000, every=0.2), count=1)
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url, ES_POST_DEADLINE="1")
    started = time.monotonic()
    result = kcing(["feed_es"], env, tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    assert "not complete within 1s" in result.stderr  # logged as the failed attempt
    assert set(ledger_states(db).values()) == {"delivered"}
    assert lava_front.answered_by("trickled") == 1 and lava_front.answered_by("forward") >= 1


def test_logstash_trickling_its_headers_is_cut_at_the_post_deadline_and_retried(
        legacy_replica, logstash, lava_front, tmp_path):
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", trickle_head(every=0.2), count=1)
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url, ES_POST_DEADLINE="1",
                       ES_TIMEOUT="10")
    started = time.monotonic()
    result = kcing(["feed_es"], env, tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 30
    assert "not complete within 1s" in result.stderr  # logged as the failed attempt
    assert set(ledger_states(db).values()) == {"delivered"}
    assert lava_front.answered_by("head_trickled") == 1 and lava_front.answered_by("forward") >= 1


def test_an_answer_shorter_than_its_content_length_is_a_connection_failure_and_retried(
        legacy_replica, logstash, lava_front, tmp_path):
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", cut_short(declared=100, sent=b"ok"), count=2)
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "IncompleteRead" in result.stderr
    assert set(ledger_states(db).values()) == {"delivered"}
    assert last_run(env, tmp_path)["outcome"] == "ok"


def test_answers_always_cut_short_end_the_run_cleanly_with_exit_3(legacy_replica, logstash, lava_front, tmp_path):
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", cut_short(declared=100, sent=b"ok"), count=None)
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = error_lines(result.stderr)
    assert "Logstash unreachable" in line
    assert not any(state == "delivered" for (kind, _), state in ledger_states(db).items() if kind == "lava")
    assert last_run(env, tmp_path)["outcome"] == "error 3"
    assert integrity(db) == "ok"


# Header values a Logstash, or a proxy before it, may send that read as digits to str.isdigit()
# ("²" is a digit to Python, not to int() or float()): a failed attempt, never an internal error.
@pytest.mark.parametrize("head, failure", [
    ((("Retry-After", "\u00b2"), ("Content-Length", "0")), "answered 429"),
    ((("Content-Length", "\u00b2"),), "framed by a Content-Length that is not a number"),
], ids=["retry-after", "content-length"])
def test_an_answer_with_a_header_that_is_not_a_number_is_a_failed_attempt(
        legacy_replica, logstash, lava_front, tmp_path, head, failure):
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", exact_head(429 if "Retry-After" in dict(head) else 200, head, b"ok"), count=None)
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url, ES_MAX_RETRIES="2")
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 3, result.stderr
    (line,) = error_lines(result.stderr)
    assert "Logstash unreachable" in line and failure in line
    assert not any(state == "delivered" for (kind, _), state in ledger_states(db).items() if kind == "lava")
    assert last_run(env, tmp_path)["outcome"] == "error 3"


# Signals -----------------------------------------------------------------------------------------

def stopped_at_once(process, signum) -> str:
    """Send `signum` to a running kcing; it must exit 130 within 5 s. Return its stderr."""
    process.send_signal(signum)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert time.monotonic() - started < 5
    return stderr


def test_one_sigint_while_logstash_is_down_exits_130_without_waiting_the_retries_out(
        legacy_replica, logstash, tmp_path):
    db = tmp_path / "kcing.db"
    logstash.lava.down()
    env = feed_environ(legacy_replica, logstash, db, ES_MAX_RETRIES="6", ES_RETRY_BACKOFF="20")
    trail = tmp_path / "feed.log"
    process = kcing_process(["feed_es", "-l", str(trail)], env, tmp_path)
    # The first POST has failed: the run waits 10-20 s for its first retry.
    assert wait_until(lambda: trail.exists() and "retry 1 of 5" in trail.read_text(), timeout=30)
    stderr = stopped_at_once(process, signal.SIGINT)
    assert "Traceback" not in stderr
    assert not any(state == "delivered" for (kind, _), state in ledger_states(db).items() if kind == "lava")
    assert last_run(env, tmp_path)["outcome"] == "error 130"


@pytest.mark.parametrize("behaviour, name", [(trickle(length=100_000, every=0.5), "trickled"),
                                             (trickle_head(every=0.5), "head_trickled")],
                         ids=["body", "headers"])
def test_a_run_stuck_on_a_download_stops_on_a_signal(legacy_replica, logstash, storage_front, tmp_path,
                                                     build_object, behaviour, name):
    # Stuck in the body, or still waiting for the headers: a signal ends both at once.
    db = tmp_path / "kcing.db"
    storage_front.on("GET", storage_path(build_object), behaviour, count=None)
    env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url,
                       KCI_DOWNLOAD_DEADLINE="600", KCI_TIMEOUT="600")
    process = kcing_process(["feed_es"], env, tmp_path)
    assert wait_until(lambda: storage_front.answered_by(name) == 1, timeout=30)
    time.sleep(1.0)
    stderr = stopped_at_once(process, signal.SIGTERM)
    assert "Traceback" not in stderr
    assert last_run(env, tmp_path)["outcome"] == "error 130"
    assert ledger_states(db).get(("build", build_object.upstream_id)) != "delivered"


def test_a_signal_ends_a_long_pause_between_batches(legacy_replica, logstash, tmp_path):
    db = tmp_path / "kcing.db"
    # Ten documents a second: the pause before each batch of hundreds lasts tens of seconds.
    env = feed_environ(legacy_replica, logstash, db, ES_MAX_DOCS_PER_SECOND="10")
    posts = lambda: sum(len(emulator.requests) for emulator in logstash.emulators.values())  # noqa: E731
    process = kcing_process(["feed_es"], env, tmp_path)
    assert wait_until(lambda: posts() >= 1, timeout=30)
    time.sleep(1.0)
    stderr = stopped_at_once(process, signal.SIGTERM)
    assert "Traceback" not in stderr
    assert last_run(env, tmp_path)["outcome"] == "error 130"
    assert posts() == 1  # no batch went out after the stop


def signal_a_thread_other_than_main(process, signum) -> None:
    """Send `signum` to one of the process's threads that is not its main thread, as the kernel
    may choose to when a signal is sent to the process."""
    others = sorted(int(tid) for tid in os.listdir("/proc/%d/task" % process.pid) if int(tid) != process.pid)
    assert others, "the feed has no thread besides its main one"
    assert ctypes.CDLL(None, use_errno=True).tgkill(process.pid, others[-1], signum) == 0


def signal_the_process(process, signum) -> None:
    process.send_signal(signum)


@pytest.mark.parametrize("send", [
    signal_the_process,
    # The main thread, waiting for the post's answer, must still run the handler.
    pytest.param(signal_a_thread_other_than_main, marks=pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="tgkill and /proc are Linux's")),
], ids=["to-the-process", "to-another-thread"])
def test_a_second_signal_stops_at_once_while_a_post_is_in_flight(send, legacy_replica, logstash, lava_front,
                                                                 tmp_path):
    db = tmp_path / "kcing.db"
    # The first signal lets the batch in flight finish; this one would take 1000 s.
    lava_front.on("POST", "/", trickle(length=2000, every=0.5), count=None)
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url, ES_POST_DEADLINE="600",
                       ES_TIMEOUT="600")
    process = kcing_process(["feed_es"], env, tmp_path)
    assert wait_until(lambda: lava_front.answered_by("trickled") >= 1, timeout=30)
    send(process, signal.SIGTERM)
    time.sleep(1.0)
    assert process.poll() is None  # still finishing the batch in flight
    send(process, signal.SIGTERM)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130 and time.monotonic() - started < 5, stderr
    assert "Traceback" not in stderr and "finishing the batch in flight" in stderr and "stopped at once" in stderr
    assert last_run(env, tmp_path)["outcome"] == "error 130"
    assert integrity(db) == "ok"
    assert not any(state == "delivered" for (kind, _), state in ledger_states(db).items() if kind == "lava")


def never_answering(front, sock, request) -> bool:
    """A Logstash front that reads a batch and never answers it."""
    front.stopping.wait(600)
    return False


def test_after_one_signal_a_batch_in_flight_gets_the_grace_period_to_be_answered_then_is_cut(
        legacy_replica, logstash, lava_front, tmp_path):
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", never_answering, count=None)
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url, ES_POST_DEADLINE="600",
                       ES_TIMEOUT="600")
    process = kcing_process(["feed_es"], env, tmp_path)
    assert wait_until(lambda: lava_front.requests.snapshot(), timeout=30)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    took = time.monotonic() - started
    assert process.returncode == 130, stderr
    assert GRACE_SECONDS - 1 < took < GRACE_SECONDS + 5, (took, stderr)  # not ES_TIMEOUT's 600 s
    assert "finishing the batch in flight (for up to %gs)" % GRACE_SECONDS in stderr and "Traceback" not in stderr
    # No retry is started after a signal, and none is announced.
    assert "retry 1 of" not in stderr and "not retried: the run is stopping" in stderr, stderr
    assert last_run(env, tmp_path)["outcome"] == "error 130"
    assert integrity(db) == "ok"
    assert not any(state == "delivered" for (kind, _), state in ledger_states(db).items() if kind == "lava")
    lava_front.clear()  # it forwards to the LAVA input now: the same destination, answering
    again = kcing(["feed_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert set(ledger_states(db).values()) == {"delivered"}


def test_a_batch_cut_at_the_end_of_the_grace_period_is_said_not_retried_while_downloads_are_waited_for(
        legacy_replica, logstash, lava_front, tmp_path):
    """The main thread waiting on a download, not on the post, when the signal came: the cut
    batch's failure went unsaid (the posts left were salvaged in silence)."""
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", never_answering, count=None)
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url, ES_POST_DEADLINE="600",
                       ES_TIMEOUT="600", ES_PARALLEL_POSTS="8")
    process = kcing_process(["feed_es", "--threads", "1"], env, tmp_path)
    assert wait_until(lambda: lava_front.requests.snapshot(), timeout=30)
    legacy_replica.storage.delay("/", 3, count=None)  # the downloads left wait while the signal comes
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "retry 1 of" not in stderr and "not retried: the run is stopping" in stderr, stderr
    assert not any(state == "delivered" for (kind, _), state in ledger_states(db).items() if kind == "lava")


# A post that fails for good ends the run's waits -------------------------------------------------

# What a proxy without the input's route answers: no retry fixes it (exit 2).
NOT_AN_INPUT = answer(404, (("Content-Type", "text/html"),), b"<html><body>404 Not Found</body></html>")


def failed_at_once(args, env, tmp_path, setting: str):
    """`kcing ARGS`, which must end with exit 2 within 30 s (the waits it cut were of 100 s or
    more), its one error line the 404 of the input `setting` names."""
    started = time.monotonic()
    result = kcing(args, env, tmp_path, timeout=300)
    assert time.monotonic() - started < 30, result.stderr
    assert result.returncode == 2, result.stderr
    (line,) = error_lines(result.stderr)
    assert "answered 404" in line and "never answers: set %s" % setting in line, line
    return result


@pytest.mark.parametrize("busy, setting", [
    (answer(429, (("Retry-After", "100"),), b"busy"), {}),
    # No Retry-After: the first retry waits 50 to 100 s, as ES_RETRY_BACKOFF draws it.
    (answer(503, body=b"busy"), {"ES_RETRY_BACKOFF": "100"}),
], ids=["429-retry-after", "503-backoff"])
def test_a_post_that_fails_for_good_ends_another_posts_wait_to_retry(legacy_replica, logstash, lava_front, tmp_path,
                                                                    busy, setting):
    """Two LAVA batches in flight: one answered 429 (or 503) waits to be retried, the other gets
    an answer no Logstash input gives. The run exited 2 only once the wait was over (100 s): now
    at once, with that answer's error, and what Logstash acknowledged recorded, nothing else."""
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", busy, count=1)
    lava_front.on("POST", "/", NOT_AN_INPUT, count=None)
    env = feed_environ(legacy_replica, logstash, db, ES_LAVA=lava_front.url, **setting)
    result = failed_at_once(["feed_es", "--batch-size", "5"], env, tmp_path, "ES_LAVA")
    assert "Traceback" not in result.stderr
    assert len(lava_front.requests) == 2  # the batch that waited was not retried
    assert last_run(env, tmp_path)["outcome"] == "error 2"
    assert integrity(db) == "ok"
    states = ledger_states(db)
    assert not any(state == "delivered" for (kind, _), state in states.items() if kind == "lava")
    # The builds Logstash acknowledged, and only those, are recorded delivered.
    builds = [obj for obj in sample_objects() if obj.kind == "build"]
    acknowledged = {obj.upstream_id for obj in builds if set(expected_documents([obj])) <= set(logstash.store)}
    assert acknowledged
    assert {upstream_id for (kind, upstream_id), state in states.items()
            if kind == "build" and state == "delivered"} == acknowledged
    lava_front.clear()  # it forwards to the LAVA input now: the next run sends the rest
    again = kcing(["feed_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert set(ledger_states(db).values()) == {"delivered"}


def test_a_post_that_fails_for_good_ends_the_downloads_wait_to_retry(legacy_replica, logstash, storage_front,
                                                                     tmp_path):
    """The storage answers the LAVA files 503 with `Retry-After: 100` while the batch of builds
    gets an answer no Logstash input gives: the run waited out each file's two retries (200 s),
    then recorded them failed; now it exits 2 at once, and the next run asks for them again."""
    db = tmp_path / "kcing.db"
    for obj in sample_objects():
        if obj.kind == "lava":
            storage_front.on("GET", storage_path(obj), answer(503, (("Retry-After", "100"),), b"busy"), count=None)
    with RogueFront(logstash.urls["build"]) as build_front:
        build_front.on("POST", "/", NOT_AN_INPUT, count=None)
        env = feed_environ(legacy_replica, logstash, db, KCI_STORAGE_URL=storage_front.url, ES_BUILD=build_front.url)
        failed_at_once(["feed_es", "--batch-size", "5"], env, tmp_path, "ES_BUILD")
        assert storage_front.answered_by("whole_answer") <= 2  # each LAVA file asked once at most
        assert not {"delivered", "failed"} & set(ledger_states(db).values())
        storage_front.clear()  # the files are served again,
        build_front.clear()  # and the builds' input answers
        again = kcing(["feed_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert set(ledger_states(db).values()) == {"delivered"}


@pytest.mark.parametrize("setting", [{"ES_LOAD_INTERVAL": "100"}, {"ES_MAX_DOCS_PER_SECOND": "0.05"}],
                         ids=["load-interval", "docs-per-second"])
def test_a_post_that_fails_for_good_ends_the_pause_before_the_next_batch(lava_front, tmp_path, setting):
    """The first batch gets an answer no Logstash input gives while the next waits its turn (100 s
    either way): the run exited 2 after that pause, having posted the next batch all the same."""
    db = tmp_path / "kcing.db"
    lava_front.on("POST", "/", NOT_AN_INPUT, count=None)
    env = clean_environ(ES_LAVA=lava_front.url, KCING_DB=str(db), LS_PIPELINE_BATCH_SIZE="5", ES_TIMEOUT="10",
                        **setting)
    lava = sorted((SAMPLES / "lava").iterdir())[0]
    failed_at_once(["feed_es", "--lavas", str(lava)], env, tmp_path, "ES_LAVA")
    assert len(lava_front.requests) == 1  # no batch went out after the failure
    assert last_run(env, tmp_path)["outcome"] == "error 2"
    assert set(ledger_states(db).values()) == {"downloaded"}


# Credentials in clear text -----------------------------------------------------------------------

def test_credentials_for_a_plain_http_logstash_are_warned_about_once(legacy_replica, logstash, tmp_path):
    for emulator in logstash.emulators.values():
        emulator.user, emulator.password = "feeder", "pw-secret-value"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", LS_USER="feeder",
                       LS_PASSWORD="pw-secret-value")
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "clear text" in line]
    assert len(warnings) == 1
    assert "LS_PASSWORD" in warnings[0] and "ES_BUILD" in warnings[0] and "ES_LAVA" in warnings[0]
    assert "pw-secret-value" not in result.stderr


@pytest.mark.parametrize("source, plain", [("api", None), ("api", "ES_BUILD"), ("legacy", None), ("legacy", "ES_LAVA"),
                                           ("files", None), ("files", "ES_LAVA")])
def test_the_logstash_password_is_warned_about_only_for_the_inputs_the_run_posts_to(tmp_path, source, plain):
    """The API source never posts to ES_BOOT, the legacy one to ES_REGRESSION, `--lavas` files to
    ES_LAVA alone: one of the others left at its default http:// URL beside https:// inputs had
    every run warn (in cron's mail, under --quiet too) of a password never sent there."""
    posted_to = {"api": ("ES_BUILD", "ES_LAVA", "ES_REGRESSION"), "legacy": ("ES_BUILD", "ES_LAVA", "ES_BOOT"),
                 "files": ("ES_LAVA",)}[source]
    args = ["feed_es", "-q"]
    with refusing_port() as port:  # upstream and Logstash alike: the run ends at its first request
        where = "127.0.0.1:%d" % port
        env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"), LS_USER="feeder", LS_PASSWORD="pw-secret-value",
                            KCI_MAX_RETRIES="1", ES_MAX_RETRIES="1",
                            **{name: ("http://" if name == plain else "https://") + where for name in posted_to})
        if source == "api":
            env.update(KCI_SOURCE="api", KCI_API_URL="http://%s/latest" % where)
        elif source == "legacy":
            env.update(KCI_HOST=where, KCI_SCHEME="http", KCI_STORAGE_URL="http://" + where)
        else:
            args += ["--lavas", str(sorted((SAMPLES / "lava").iterdir())[0])]
        result = kcing(args, env, tmp_path)
    assert result.returncode in (1, 3), result.stdout + result.stderr
    assert [line.split(": ", 1)[-1] for line in result.stderr.splitlines() if "clear text" in line] == (
        ["the Logstash password (LS_PASSWORD) is sent in clear text: %s is http://, not https://" % plain]
        if plain else [])


def test_the_kibana_password_and_the_api_token_for_plain_http_are_warned_about(tmp_path):
    """Only the Logstash and Elasticsearch credentials were: KB_PASSWORD and KCI_API_TOKEN went to
    http:// URLs without a word."""
    with KibanaEmulator(user="elastic", password="kb-secret-value") as kibana:
        env = clean_environ(KB_URL=kibana.url, KB_USER="elastic", KB_PASSWORD="kb-secret-value")
        exported = kcing(["backup_kbn", "--dry-run", "--kibana-dir", str(tmp_path / "kibana")], env, tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert [line.split(": ", 1)[-1] for line in exported.stderr.splitlines() if "clear text" in line] == [
        "the Kibana password (KB_PASSWORD) is sent in clear text: KB_URL is http://, not https://"]
    assert "kb-secret-value" not in exported.stderr
    with RogueFront() as api:  # answers 404 to everything
        api_url = api.url
    env = clean_environ(KCI_SOURCE="api", KCI_API_URL=api_url, KCI_MAX_RETRIES="1",
                        KCI_API_TOKEN="api-secret-value", KCING_DB=str(tmp_path / "kcing.db"))
    fed = kcing(["feed_es", "--output", str(tmp_path / "out")], env, tmp_path)
    assert fed.returncode == 1, fed.stderr  # the API is gone: the warning comes first all the same
    assert [line.split(": ", 1)[-1] for line in fed.stderr.splitlines() if "clear text" in line] == [
        "the KernelCI API token (KCI_API_TOKEN) is sent in clear text: KCI_API_URL is http://, not https://"]
    assert "api-secret-value" not in fed.stderr


def test_a_kibana_api_key_for_plain_http_is_warned_about(tmp_path):
    with KibanaEmulator(api_key="a2Itc2VjcmV0LXZhbHVl") as kibana:
        env = clean_environ(KB_URL=kibana.url, KB_API_KEY="a2Itc2VjcmV0LXZhbHVl")
        exported = kcing(["backup_kbn", "--dry-run", "--kibana-dir", str(tmp_path / "kibana")], env, tmp_path)
    assert exported.returncode == 0, exported.stderr
    assert [line.split(": ", 1)[-1] for line in exported.stderr.splitlines() if "clear text" in line] == [
        "the Kibana API key (KB_API_KEY) is sent in clear text: KB_URL is http://, not https://"]
    assert "a2Itc2VjcmV0LXZhbHVl" not in exported.stderr


def test_no_clear_text_warning_for_https_only():
    assert kcing_http.cleartext_warning("the password", {"ES_HOST": ["https://es:9200"]}) is None
    warning = kcing_http.cleartext_warning("the password (ES_PASSWORD)", {"ES_HOST": ["http://es:9200"]})
    assert "ES_HOST" in warning and "ES_PASSWORD" in warning


def test_a_second_signal_ends_the_process_even_when_a_thread_is_stuck(tmp_path):
    # A worker thread that never returns (a wait no signal reaches) would hold up the exit forever.
    script = tmp_path / "stuck.py"
    script.write_text(
        "import sys, threading, time\n"
        "sys.path.insert(0, %r)\n"
        "from kcing.shutdown import stop_on_signals\n"
        "with stop_on_signals() as stop:\n"
        "    threading.Thread(target=lambda: time.sleep(3600)).start()\n"
        "    print('ready', flush=True)\n"
        "    try:\n"
        "        while True:\n"
        "            time.sleep(0.05)\n"
        "    except KeyboardInterrupt:\n"
        "        print('interrupted', flush=True)\n" % str(REPO))
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert process.poll() is None  # the first signal only asks
    stderr = stopped_at_once(process, signal.SIGTERM)
    assert "exiting now" in stderr
