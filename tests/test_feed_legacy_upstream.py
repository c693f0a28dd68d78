"""`kcing feed_es` and `gen_samples` against the legacy replica where it behaves as the real
upstream did in ways the samples do not show (upstream.md §1.3, §1.4, §1.11):

- the boot listing gone after 2020-07-27;
- dates in each extended-JSON form;
- the newest objects first for --how-many / --sample-size, however pages shift;
- a listing that runs across UTC midnight, when date_range's window moves;
- CSRF tokens that expire (routine) or are refused fresh (bounded, with the backend's reason);
- a null file_server_resource rebuilt as the backend joined it.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import date

import pytest
import requests

from kcing.sources.legacy import LegacyKernelCI
from tests.fakes.legacy_data import (
    at, boot_item, boot_json, boot_path, build_item, build_json, lava_json, small_corpus,
)
from tests.fakes.legacy_replica import LegacyCorpus, LegacyReplica
from tests.fakes.rogue_http import RogueFront, answer, endless, redirect, trickle_head
from tests.fakes.serving import ManualClock, refusing_port
from tests.feedrun import feed_environ, kcing, ledger_rows, ledger_states

TODAY = date(2019, 5, 31)


def builds_in(logstash) -> dict:
    return {doc_id: body for (index, doc_id), body in logstash.store.items() if index.startswith("build-")}


# -- the boot listing, removed upstream on 2020-07-27 ---------------------------------------------

def test_a_backend_without_the_boot_listing_still_delivers_the_builds(logstash, tmp_path):
    corpus = small_corpus(TODAY)
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock(), boot_removed=True) as replica:
        env = feed_environ(replica, logstash, tmp_path / "kcing.db")
        result = kcing(["feed_es"], env, tmp_path)
        assert [request.status for request in replica.frontend.ajax_requests("boot")] == [404]
    assert result.returncode == 0, result.stderr
    states = ledger_states(tmp_path / "kcing.db")
    assert {kind for kind, _ in states} == {"build"}
    assert set(states.values()) == {"delivered"}
    assert len(states) == corpus.count("build") and len(builds_in(logstash)) == corpus.count("build")
    assert "delivered %d" % corpus.count("build") in result.stdout
    warning = [line for line in result.stderr.splitlines() if "/_ajax/boot" in line]
    assert len(warning) == 1 and "WARNING" in warning[0] and "404" in warning[0] and "2020-07-27" in warning[0]
    assert "Traceback" not in result.stderr


# -- dates in each extended-JSON form -------------------------------------------------------------

@pytest.mark.parametrize("created_on", [
    {"$date": 1559264400000},                      # what pymongo 3 wrote: epoch milliseconds
    {"$date": {"$numberLong": "1559264400000"}},   # canonical extended JSON
    {"$date": "2019-05-31T01:00:00Z"},             # relaxed extended JSON (pymongo 4)
    {"$date": "2019-05-31T01:00:00.000+00:00"},
    {"$date": "2019-05-31T03:00:00+02:00"},
], ids=["millis", "numberLong", "iso-Z", "iso-offset", "iso-+02:00"])
def test_a_listing_date_in_any_extended_json_form_dates_the_build(logstash, tmp_path, created_on):
    corpus = LegacyCorpus()
    build = build_item("next", "next-20190531", "arm64", "defconfig", at(TODAY, 0, 1))
    corpus.add_build(dict(build, created_on=created_on), build_json(build))
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        result = kcing(["feed_es"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [(index, _)] = [key for key in logstash.store if key[0].startswith("build-")]
    assert index == "build-2019.05.31"
    [body] = builds_in(logstash).values()
    assert body["@timestamp"].startswith("2019-05-31T01:00:00")


def test_a_listing_date_in_milliseconds_keeps_its_last_millisecond_in_any_year(logstash, tmp_path):
    """Epoch milliseconds were divided into seconds as a float, which from the 2240s on cannot
    hold the millisecond: 2300-06-30T00:00:02.994 was sent as .993."""
    corpus = LegacyCorpus()
    build = build_item("next", "next-23000630", "arm64", "defconfig", at(TODAY, 0, 1))
    corpus.add_build(dict(build, created_on={"$date": 10429344002994}), build_json(build))
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        result = kcing(["feed_es", "--how-many", "1"], feed_environ(replica, logstash, tmp_path / "kcing.db"),
                       tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [body] = builds_in(logstash).values()
    assert body["@timestamp"] == "2300-06-30T00:00:02.994Z"
    assert [index for index, _ in logstash.store] == ["build-2300.06.30"]


def test_a_listing_date_of_digits_only_python_reads_so_costs_its_build_alone(logstash, tmp_path):
    """"²" is a digit to str.isdigit(), not to int(): such a date is no date, and the build is
    rejected for want of one, as with any unreadable date, while the others are delivered."""
    corpus = LegacyCorpus()
    good = build_item("next", "next-20190531", "arm64", "defconfig", at(TODAY, 0, 1))
    odd = build_item("next", "next-20190531", "riscv", "defconfig", at(TODAY, 0, 2))
    corpus.add_build(good, build_json(good))
    corpus.add_build(dict(odd, created_on={"$date": {"$numberLong": "\u00b2"}}), build_json(odd))
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        env = feed_environ(replica, logstash, tmp_path / "kcing.db")
        result = kcing(["feed_es", "--how-many", "5"], env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert sorted(ledger_states(tmp_path / "kcing.db").values()) == ["delivered", "rejected"]
    assert len(builds_in(logstash)) == 1


def test_a_listing_date_at_hour_24_dates_the_build_the_next_midnight_as_every_upstream_time(logstash, tmp_path):
    """ISO 8601's end of a day, "T24:00:00", was read as the next midnight in a LAVA job's times
    and a node's `created`, but made a listing's `created_on` no date: its build was rejected."""
    corpus = LegacyCorpus()
    build = build_item("next", "next-20190531", "arm64", "defconfig", at(TODAY, 0, 1))
    corpus.add_build(dict(build, created_on={"$date": "2019-05-31T24:00:00Z"}), build_json(build))
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        result = kcing(["feed_es", "--how-many", "5"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    [(index, _)] = [key for key in logstash.store if key[0].startswith("build-")]
    assert index == "build-2019.06.01"
    [row] = ledger_rows(tmp_path / "kcing.db")
    assert row["object_date"].startswith("2019-06-01 00:00:00")  # recorded under the day it went to


@pytest.mark.parametrize("created_on", [
    {"$date": "--1559264400000"}, {"$date": {"$numberLong": "--1559264400000"}},
    {"$date": "9" * 5000}, {"$date": {"$numberLong": "-" + "9" * 5000}},
    {"$date": float("nan")}, {"$date": float("inf")}, {"$date": 1e300},
    {"$date": " 2019-05-31T01:00:00Z "}, {"$date": {"$numberLong": " 1559264400000"}},
], ids=["two-signs", "numberLong-two-signs", "digits", "numberLong-signed-digits", "NaN", "Infinity", "beyond-9999",
        "iso-with-spaces", "numberLong-with-spaces"])
def test_a_listing_date_no_datetime_holds_costs_its_build_alone(logstash, tmp_path, created_on):
    """No day is that many milliseconds from 1970, or the text is no number: the build is
    rejected for want of a date, and the others are delivered. Read as digits once its minus
    signs were stripped, "--1559264400000" went to int(), which refused it, as it refuses more
    than 4300 digits: the ValueError ended the run as an internal error (exit 70), nothing
    delivered. Python's JSON reads NaN and Infinity. Only a listing's `created_on` was read
    without the spaces around it: a node's `created` or `updated`, a LAVA job's times, a
    manifest's date so written were no time."""
    corpus = LegacyCorpus()
    good = build_item("next", "next-20190531", "arm64", "defconfig", at(TODAY, 0, 1))
    odd = build_item("next", "next-20190531", "riscv", "defconfig", at(TODAY, 0, 2))
    corpus.add_build(good, build_json(good))
    corpus.add_build(dict(odd, created_on=created_on), build_json(odd))
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        result = kcing(["feed_es", "--how-many", "5"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "no date" in result.stdout
    assert sorted(ledger_states(tmp_path / "kcing.db").values()) == ["delivered", "rejected"]
    assert len(builds_in(logstash)) == 1


# -- --how-many and --sample-size: the newest objects ---------------------------------------------

def listed_ids(stdout: str) -> list:
    return [line.split()[3] for line in stdout.splitlines() if line.startswith("would fetch")]


def newest(corpus, collection: str, count: int) -> list:
    items = sorted(corpus.items(collection), key=lambda item: item.created_ms, reverse=True)
    return [item.oid for item in items[:count]]


@pytest.mark.parametrize("how_many", [1, 2, 5])
def test_how_many_takes_the_newest_objects_of_each_kind_whatever_their_day(logstash, tmp_path, how_many):
    corpus = small_corpus(TODAY)
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_DAYS="1", KCI_PAGE_SIZE="2")
        result = kcing(["feed_es", "--how-many", str(how_many), "--dry-run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    # Five builds would take the one of ten days ago too: --how-many is instead of --days.
    assert listed_ids(result.stdout) == newest(corpus, "build", how_many) + newest(corpus, "boot", how_many)


def dry_run_with_builds_arriving(corpus, arrivals, args, logstash, tmp_path):
    """`feed_es --dry-run` with `args`, pages of two, the `arrivals` published upstream once the
    first page of builds was read; its result and the collections of the pages it read."""
    pages = []

    def new_builds_after_the_first_page(corpus, collection, query):
        pages.append(collection)
        if pages == ["build", "build"]:
            for build in arrivals:
                corpus.add_build(build, build_json(build))

    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        replica.frontend.on_page(new_builds_after_the_first_page)
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_PAGE_SIZE="2")
        return kcing(["feed_es", *args, "--dry-run"], env, tmp_path), pages


def test_how_many_is_reached_when_newer_results_push_listed_ones_onto_the_next_page(logstash, tmp_path):
    corpus = small_corpus(TODAY)
    # One newer and one older than every listed build: either way of sorting, the page after the
    # first starts with an item the first page held.
    arrivals = [build_item("next", "next-20190531", "riscv", "defconfig", at(TODAY, 0, 23)),
                build_item("stable", "v4.14.122", "arm", "multi_v7_defconfig", at(TODAY, 20, 0))]
    result, _ = dry_run_with_builds_arriving(corpus, arrivals, ["--how-many", "3"], logstash, tmp_path)
    assert result.returncode == 0, result.stderr
    builds = [line for line in result.stdout.splitlines() if line.startswith("would fetch build")]
    assert len(builds) == 3 and len({line.split()[3] for line in builds}) == 3


def test_a_build_that_arrives_while_the_window_is_listed_is_listed_by_that_run(logstash, tmp_path):
    """A window of days is listed oldest first: a result that arrives while its pages are read
    comes after the last page, and this run lists it. Newest first, it would come before the pages
    already read, and wait for the next run."""
    corpus = small_corpus(TODAY)
    arrival = build_item("next", "next-20190531", "riscv", "defconfig", at(TODAY, 0, 23))
    result, pages = dry_run_with_builds_arriving(corpus, [arrival], ["--days", "2"], logstash, tmp_path)
    assert result.returncode == 0, result.stderr
    builds = [line.split()[3] for line in result.stdout.splitlines() if line.startswith("would fetch build")]
    assert pages[:2] == ["build", "build"]
    assert sorted(builds) == sorted(item.oid for item in corpus.items("build") if item.created_ms >= at(
        TODAY, 2, 0).timestamp() * 1000)
    assert newest(corpus, "build", 1)[0] in builds


def test_gen_samples_sample_size_saves_the_newest_objects(logstash, tmp_path):
    corpus = small_corpus(TODAY)
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(tmp_path / "samples"))
        result = kcing(["gen_samples", "--sample-size", "1"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "samples" / "manifest.json").read_text())
    assert sorted(entry["upstream_id"] for entry in manifest["objects"]) == sorted(
        newest(corpus, "build", 1) + newest(corpus, "boot", 1))


def test_gen_samples_writes_a_listing_date_before_the_year_1000_as_the_replay_reads_it(logstash, tmp_path):
    """strftime's %Y writes year 999 as "999" on glibc: the manifest said "999-06-30T00:00:00.000Z",
    which the replay refused as no date, warning so of a date kcing had written itself."""
    corpus = LegacyCorpus()
    build = build_item("next", "next-09990630", "arm64", "defconfig", at(TODAY, 0, 1))
    corpus.add_build(dict(build, created_on={"$date": "0999-06-30T00:00:00Z"}), build_json(build))
    samples = tmp_path / "samples"
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
        saved = kcing(["gen_samples", "--sample-size", "1"], env, tmp_path)
    assert saved.returncode == 0, saved.stderr
    [entry] = json.loads((samples / "manifest.json").read_text())["objects"]
    assert entry["date"] == "0999-06-30T00:00:00.000Z"
    replayed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output",
                      str(tmp_path / "out")], env, tmp_path)
    assert "is not a date" not in replayed.stderr, replayed.stderr
    assert "no date" in replayed.stdout + replayed.stderr  # no index is named after year 999, as in the crawl


# -- a listing across UTC midnight ----------------------------------------------------------------

def test_a_listing_that_runs_across_utc_midnight_misses_nothing_of_the_new_window(logstash, tmp_path):
    """date_range counts whole UTC days back from the backend's today: at midnight the window's
    start moves a day on, the items of its first day leave the front of the ascending listing,
    and the pages after that start that many items further on."""
    corpus = LegacyCorpus()
    for days_ago, hour in ((1, 1), (1, 2), (1, 3), (0, 1), (0, 2), (0, 3), (0, 4)):
        build = build_item("next", "v5.2-%d-day-%d" % (hour, days_ago), "arm64", "defconfig",
                           at(TODAY, days_ago, hour))
        corpus.add_build(build, build_json(build))
    clock = ManualClock(start=at(TODAY, 0, 23, 59).timestamp())  # the backend's today follows it
    requests = []

    def midnight_after_the_first_page(corpus, collection, query):
        requests.append(collection)
        if requests == ["build", "build"]:
            clock.advance(120)

    with LegacyReplica(corpus, clock=clock) as replica:
        replica.frontend.on_page(midnight_after_the_first_page)
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_DAYS="1", KCI_PAGE_SIZE="2")
        result = kcing(["feed_es", "--dry-run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    listed = listed_ids(result.stdout)
    assert len(listed) == len(set(listed))
    today = [item.oid for item in corpus.items("build") if item.doc["kernel"].endswith("-day-0")]
    assert len(today) == 4 and set(today) <= set(listed)


@pytest.mark.parametrize("days", [1, 2, 5])
def test_the_window_the_ledger_adds_earlier_failures_before_begins_where_date_range_does(days):
    """The README: `--days N` lists today and the N whole UTC days before it, and the failures
    the ledger adds to the listing are those dated before that window, by this host's clock: a
    failure of the window's first day is the listing's to give, not the ledger's."""
    source = LegacyKernelCI(None, "https://frontend.invalid", "https://storage.invalid", days=days)
    for now in (at(TODAY, 0, 0), at(TODAY, 0, 23, 59)):
        assert source.window_start(now) == at(TODAY, days, 0)
    newest = LegacyKernelCI(None, "https://frontend.invalid", "https://storage.invalid", how_many=5)
    assert newest.window_start(at(TODAY, 0, 12)) is None


# -- the CSRF token ----------------------------------------------------------------------------------

def test_an_expired_token_is_replaced_even_when_no_request_may_be_retried(logstash, tmp_path):
    """A token lives 10 to 20 minutes: its expiry is routine, not a failed attempt."""
    corpus = small_corpus(TODAY)
    pages = []

    def tokens_expire_after_the_first_page(corpus, collection, query):
        pages.append(collection)
        if len(pages) == 1:
            replica.frontend.expire_all_tokens()

    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        replica.frontend.on_page(tokens_expire_after_the_first_page)
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_MAX_RETRIES="1", KCI_PAGE_SIZE="2")
        result = kcing(["feed_es", "--dry-run"], env, tmp_path)
        statuses = [request.status for request in replica.frontend.ajax_requests()]
    assert result.returncode == 0, result.stderr
    assert statuses.count(403) == 1
    assert len(listed_ids(result.stdout)) == corpus.count("build") + corpus.count("boot")


@pytest.mark.parametrize("retries", ["1", "3"])
def test_fresh_tokens_refused_end_the_run_after_kci_max_retries_with_one_line(logstash, tmp_path, retries):
    corpus = small_corpus(TODAY)
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        replica.frontend.fail_next("/_ajax/build", 403, count=None, body=b"<title>403 Forbidden</title>")
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_MAX_RETRIES=retries)
        result = kcing(["feed_es"], env, tmp_path)
        home = [request for request in replica.frontend.requests if request.path == "/"]
        ajax = replica.frontend.ajax_requests()
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(ajax) == int(retries) and len(home) == int(retries)
    assert "refus" in result.stderr.splitlines()[-1] and "403" in result.stderr.splitlines()[-1]


def test_a_403_the_backend_gave_says_the_backend_reason(logstash, tmp_path):
    """The frontend passes the backend's answers through: a backend refusing the frontend's own
    token answers 403 with its JSON reason, which no fresh CSRF token mends."""
    reason = "Operation not permitted: provided token is not authorized"
    with LegacyReplica(small_corpus(TODAY), today=TODAY, clock=ManualClock()) as replica:
        replica.frontend.fail_next("/_ajax/build", 403, count=None,
                                   body=json.dumps({"code": 403, "reason": reason}).encode())
        result = kcing(["feed_es"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1].endswith("(403: %s)" % reason)


def test_a_home_page_without_a_csrf_token_says_legacy_kernelci_is_retired_and_what_to_use_instead(logstash, tmp_path):
    """kernelci.org serves the project's site since legacy KernelCI was shut down (2024): the
    default source then met a page without a token, and only said so."""
    site = (b'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>KernelCI</title>'
            b'</head><body><h1>KernelCI</h1></body></html>')
    with LegacyReplica(small_corpus(TODAY), today=TODAY, clock=ManualClock()) as replica:
        replica.frontend.fail_next("/", 200, count=None, body=site)
        result = kcing(["feed_es"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
        assert replica.frontend.ajax_requests() == []
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert "no CSRF token on %s/ (HTTP 200)" % replica.frontend_url.rstrip("/") in last
    assert "retired" in last and "--source api" in last and "Traceback" not in result.stderr


@pytest.mark.parametrize("status", [404, 410])
def test_a_kci_host_without_a_home_page_asks_whether_it_is_a_legacy_frontend(logstash, tmp_path, status):
    """KCI_HOST set to another server (the KernelCI API's host, meant for --source api) answers
    404 at `/` (a retired one, 410): the run said only "no CSRF token on ... (HTTP 404)", not what
    to check."""
    detail = b'{"detail":"Not Found"}'
    with LegacyReplica(small_corpus(TODAY), today=TODAY, clock=ManualClock()) as replica:
        replica.frontend.fail_next("/", status, count=None, body=detail)
        result = kcing(["feed_es"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
        assert replica.frontend.ajax_requests() == []
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert "no CSRF token on %s/ (HTTP %d): is KCI_HOST a legacy KernelCI frontend?" % (
        replica.frontend_url.rstrip("/"), status) in last
    assert "--source api" in last and "Traceback" not in result.stderr


def test_a_home_page_without_a_token_once_it_gave_one_is_not_asked_whether_it_is_a_legacy_frontend(
        logstash, tmp_path):
    """The token expired mid-run and the home page, which gave one for the first page, answers a
    maintenance page: the run said the host was perhaps no legacy frontend and to use --source api."""
    maintenance = answer(200, (("Content-Type", "text/html"),),
                         b"<!doctype html><html><head><title>Down for maintenance</title></head></html>")
    homes = []

    def down_after_the_first_token(front, sock, request) -> bool:
        if request.path == "/":
            homes.append(request)
            if len(homes) > 1:
                return maintenance(front, sock, request)
        return front._forward(sock, request)

    def tokens_expire(corpus, collection, query):
        replica.frontend.expire_all_tokens()

    with LegacyReplica(small_corpus(TODAY), today=TODAY, clock=ManualClock()) as replica, \
            RogueFront(replica.frontend_url) as front:
        replica.frontend.on_page(tokens_expire)
        front.on("GET", "/", down_after_the_first_token, count=None)
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_HOST=front.url.split("://")[1],
                           KCI_PAGE_SIZE="2")
        result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert "no CSRF token on %s/ (HTTP 200), which gave one earlier in this run" % front.url.rstrip("/") in last
    assert "legacy KernelCI frontend?" not in last and "--source api" not in last
    # The first page's builds were delivered before the run stopped.
    assert "delivered 2" in result.stdout and set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}


def test_a_kci_host_that_does_not_answer_asks_whether_it_is_a_legacy_frontend(logstash, tmp_path):
    """A KCI_HOST mistyped (a port nothing listens on, a name that does not resolve) ended the run
    on "GET http://host/ failed 3 times (last: connection refused)", naming no setting."""
    with LegacyReplica(small_corpus(TODAY), today=TODAY, clock=ManualClock()) as replica, refusing_port() as port:
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_HOST="127.0.0.1:%d" % port)
        result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "kcing feed_es: GET http://127.0.0.1:%d/ failed 3 times (last: connection refused): is KCI_HOST a legacy "
        "KernelCI frontend? The public one (kernelci.org, later linux.kernelci.org) was retired in 2024; --source "
        "api crawls the current KernelCI API" % port)


def test_a_frontend_that_stops_answering_when_its_token_is_renewed_is_not_asked_about(legacy_replica):
    """Once the frontend gave a token, a renewal it leaves unanswered is an outage of the frontend
    that was there: the run's last line does not ask whether KCI_HOST is one."""
    from kcing.errors import UpstreamError
    from kcing.sources.legacy import LegacyKernelCI

    class HomeThenNothing:
        def __init__(self):
            self.home = requests.get(legacy_replica.frontend_url.rstrip("/") + "/", timeout=10)

        def get(self, url, **options):
            home, self.home = self.home, None
            if home is None:
                raise UpstreamError("GET %s failed 3 times (last: connection refused)" % url)
            return home

    source = LegacyKernelCI(HomeThenNothing(), legacy_replica.frontend_url, legacy_replica.storage_url)
    assert source._csrf_token()
    source._token = None  # refused as expired: a new one is asked for
    with pytest.raises(UpstreamError) as raised:
        source._csrf_token()
    assert str(raised.value).endswith("(last: connection refused)")


def test_a_listing_page_answered_with_a_login_page_says_what_came_instead_of_json(logstash, tmp_path):
    """A proxy or single sign-on in front of the frontend answering its login page with 200."""
    login = b'<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body><form action="/login"></form></body></html>'
    with LegacyReplica(small_corpus(TODAY), today=TODAY, clock=ManualClock()) as replica:
        replica.frontend.fail_next("/_ajax/build", 200, count=None, body=login)
        result = kcing(["feed_es"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
    assert result.returncode == 1, result.stderr
    last = result.stderr.splitlines()[-1]
    assert "/_ajax/build did not answer JSON: an HTML or XML page" in last and "<title>Sign in" in last


# -- file_server_resource null: the backend's own path ------------------------------------------

def test_a_null_file_server_resource_is_rebuilt_as_the_backend_did_a_branch_with_a_slash_included(logstash, tmp_path):
    """The backend joined job, branch, kernel, arch, defconfig_full, build_environment and lab
    with os.path.join: a branch such as `thermal/linux-next` is two directories."""
    corpus = LegacyCorpus()
    build = build_item("thermal", "v5.2-rc2-7-g0123456789ab", "arm64", "defconfig+kselftest", at(TODAY, 0, 1),
                       branch="thermal/linux-next")
    corpus.add_build(build, build_json(build))
    boot = boot_item(build, "lab-baylibre", "meson-gxbb-p200", at(TODAY, 0, 2), null_resource=True)
    path = corpus.add_boot(boot, boot_path(boot), lava_json(boot, 370874))
    assert path.startswith("thermal/thermal/linux-next/v5.2-rc2-7-g0123456789ab/arm64/defconfig+kselftest/gcc-8/")
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        result = kcing(["feed_es"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
        assert replica.storage.get_count(path) == 1
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}



def test_a_null_file_server_resource_of_an_item_from_before_2019_has_no_build_environment_level(logstash, tmp_path):
    """Storage had no build environment directory before early 2019 (upstream.md §1.6), and
    items of then name no build_environment: the path rebuilt for a null file_server_resource
    ends with the defconfig, where the files are, instead of refusing the item."""
    corpus = LegacyCorpus()
    build = build_item("next", "next-20181203", "arm", "multi_v7_defconfig", at(TODAY, 0, 1))
    content = build_json(dict(build, file_server_resource=None, build_environment=None))
    old_build = {key: value for key, value in build.items() if key != "build_environment"}
    old_build["file_server_resource"] = None
    build_path = corpus.add_build(old_build, content, path="next/master/next-20181203/arm/multi_v7_defconfig/build.json")
    boot = boot_item(dict(build, build_environment=None), "lab-baylibre", "am335x-boneblack", at(TODAY, 0, 2),
                     null_resource=True)
    boot_file = lava_json(boot, 370875)
    del boot["build_environment"]
    boot_file_path = corpus.add_boot(
        boot, "next/master/next-20181203/arm/multi_v7_defconfig/lab-baylibre/lava-json-am335x-boneblack.json", boot_file)
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        result = kcing(["feed_es"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
        assert replica.storage.get_count(build_path) == 1
        assert replica.storage.get_count(boot_file_path) == 1
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}
    [body] = builds_in(logstash).values()
    assert body["kernel"] == "next-20181203" and "build_environment" not in body
    boots = [body for (index, _), body in logstash.store.items() if index.startswith("boot-")]
    assert [(body["board"], body["lab_name"]) for body in boots] == [("am335x-boneblack", "lab-baylibre")]


def test_a_boot_item_naming_no_board_or_no_lab_is_rejected_saying_which_and_never_asked_for(logstash, tmp_path):
    """Formatted as it was, a missing board made the file `lava-json-None.json`, which storage
    was asked for (and `boot-None.json` after it), and the boot counted as failed on every run."""
    corpus = LegacyCorpus()
    build = build_item("next", "next-20190531", "arm64", "defconfig", at(TODAY, 0, 1))
    corpus.add_build(build, build_json(build))
    good = boot_item(build, "lab-baylibre", "meson-gxbb-p200", at(TODAY, 0, 2))
    corpus.add_boot(good, boot_path(good), lava_json(good, 370874))
    no_board = dict(boot_item(build, "lab-baylibre", "rk3288-veyron-jaq", at(TODAY, 0, 3)), board=None)
    corpus.add_item("boot", no_board)
    absent_board = boot_item(build, "lab-collabora", "jetson-tk1", at(TODAY, 0, 4))
    del absent_board["board"]
    corpus.add_item("boot", absent_board)
    no_lab = dict(boot_item(build, "lab-broonie", "bcm2837-rpi-3-b", at(TODAY, 0, 5)), lab_name=None)
    corpus.add_item("boot", no_lab)
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        result = kcing(["feed_es"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
        asked = [request.path for request in replica.storage.requests]
    assert result.returncode == 1, result.stdout + result.stderr
    assert not [path for path in asked if "None" in path], asked
    rows = {row["upstream_id"]: row for row in ledger_rows(tmp_path / "kcing.db")}
    assert rows[good["_id"]["$oid"]]["state"] == "delivered"
    assert [(rows[item["_id"]["$oid"]]["state"], rows[item["_id"]["$oid"]]["last_error"])
            for item in (no_board, absent_board, no_lab)] == [
        ("rejected", "listing item has no board (None)"),
        ("rejected", "listing item has no board (absent)"),
        ("rejected", "listing item has no lab_name (None)")]
    assert "Traceback" not in result.stderr

# -- a listing that fails part-way -----------------------------------------------------------------

def test_a_boot_listing_that_keeps_failing_still_delivers_the_builds_listed_before_it(logstash, tmp_path):
    # The builds are listed first: a boot listing refused after its retries must not cost them.
    corpus = small_corpus(TODAY)
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        replica.frontend.fail_next("/_ajax/boot", 500, count=None)
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_MAX_RETRIES="2", KCI_RETRY_BACKOFF="0")
        result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr  # what an upstream failure exits with
    states = ledger_states(tmp_path / "kcing.db")
    assert {kind for kind, _ in states} == {"build"} and set(states.values()) == {"delivered"}
    assert len(states) == corpus.count("build") == len(builds_in(logstash))
    stopped = [line for line in result.stderr.splitlines() if "run stopped" in line]
    assert len(stopped) == 1 and "/_ajax/boot" in stopped[0] and "500" in stopped[0], result.stderr
    assert "Traceback" not in result.stderr


def test_gen_samples_saves_the_builds_listed_before_a_boot_listing_that_keeps_failing(logstash, tmp_path):
    """A listing stopped part-way ended gen_samples before any download: the builds listed before
    it were not saved, and its help gave exit 1 only for files that failed or were refused. The
    builds are saved, as a feed delivers them, and the run ends with 1 and the page's error."""
    from kcing import cli
    corpus = small_corpus(TODAY)
    samples = tmp_path / "samples"
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        replica.frontend.fail_next("/_ajax/boot", 500, count=None)
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_MAX_RETRIES="2", KCI_RETRY_BACKOFF="0")
        result = kcing(["gen_samples", "--samples-dir", str(samples)], env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    manifest = json.loads((samples / "manifest.json").read_text())
    assert sorted(entry["kind"] for entry in manifest["objects"]) == ["build"] * corpus.count("build")
    assert "gen_samples: %d saved, 0 already present, 0 failed, 0 refused" % corpus.count("build") in result.stdout
    assert result.stderr.strip().splitlines()[-1].startswith("kcing gen_samples: "), result.stderr
    assert "/_ajax/boot" in result.stderr.strip().splitlines()[-1] and "Traceback" not in result.stderr
    assert "listing stopped part-way" in cli.exit_meaning("gen_samples", 1)


def test_a_boot_listing_redirected_off_the_upstream_origins_still_delivers_the_builds_listed_before_it(
        logstash, tmp_path):
    """A redirect elsewhere (a frontend moved, a maintenance host) refuses the page, not an
    object: the run ended at once with nothing delivered, the builds listed before it dropped."""
    corpus = small_corpus(TODAY)
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica, \
            RogueFront(replica.frontend_url) as front:
        front.on("GET", "/_ajax/boot", redirect(302, "http://127.0.0.2:9/maintenance"), count=None)
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_HOST=front.url.split("://")[1])
        result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    states = ledger_states(tmp_path / "kcing.db")
    assert {kind for kind, _ in states} == {"build"} and set(states.values()) == {"delivered"}
    assert len(states) == corpus.count("build") == len(builds_in(logstash))
    stopped = [line for line in result.stderr.splitlines() if "run stopped" in line]
    assert len(stopped) == 1 and "/_ajax/boot" in stopped[0] and "not an upstream origin" in stopped[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("answer_for, setting", [
    (lambda: endless(), "KCI_MAX_OBJECT_BYTES"),
    (lambda: endless(declared=50_000_000), "KCI_MAX_OBJECT_BYTES"),
    # Its status line a byte at a time, each well within KCI_TIMEOUT.
    (lambda: trickle_head(every=0.3, status_line=True), "KCI_DOWNLOAD_DEADLINE"),
], ids=["streamed", "announced", "trickled"])
def test_a_listing_page_over_a_download_limit_stops_the_run_after_the_builds_listed_before_it(
        logstash, tmp_path, answer_for, setting):
    """The README: a listing page over either limit stops the run (exit 1), what was listed
    before it delivered; neither the page nor the run is held past the limit."""
    corpus = small_corpus(TODAY)
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica, \
            RogueFront(replica.frontend_url) as front:
        front.on("GET", "/_ajax/boot", answer_for(), count=None)
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_HOST=front.url.split("://")[1],
                           KCI_MAX_OBJECT_BYTES="1000000", KCI_DOWNLOAD_DEADLINE="1.5")
        result = kcing(["feed_es"], env, tmp_path, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    states = ledger_states(tmp_path / "kcing.db")
    assert {kind for kind, _ in states} == {"build"} and set(states.values()) == {"delivered"}
    assert len(states) == corpus.count("build") == len(builds_in(logstash))
    stopped = [line for line in result.stderr.splitlines() if "run stopped" in line]
    assert len(stopped) == 1 and "/_ajax/boot" in stopped[0] and setting in stopped[0], result.stderr
    assert front.answered_by("streamed") + front.answered_by("head_trickled") == 1  # not retried in the run
    assert "Traceback" not in result.stderr


def test_a_listing_answered_with_the_first_page_whatever_the_skip_ends_and_keeps_what_it_listed(logstash, tmp_path):
    # A cache or proxy before the frontend that keys pages without their query string: every
    # page is the first, never an empty one. Paging until an empty page would never end.
    def first_page_always(front, sock, request) -> bool:
        return front._forward(sock, replace(request, path=re.sub(r"([?&])skip=[0-9]+", r"\1skip=0", request.path)))

    corpus = small_corpus(TODAY)
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica, \
            RogueFront(replica.frontend_url) as cache:
        cache.on("GET", "/_ajax/build", first_page_always, count=None)
        env = feed_environ(replica, logstash, tmp_path / "kcing.db", KCI_HOST=cache.url.split("://")[1],
                           KCI_PAGE_SIZE="2")
        # The second run reads its first page, all delivered, by the ids alone (sources/heads.py).
        for run in (1, 2):
            result = kcing(["feed_es"], env, tmp_path, timeout=60)
            assert result.returncode == 1, result.stdout + result.stderr
            (line,) = [line for line in result.stderr.splitlines() if line.startswith("kcing feed_es:")]
            assert "/_ajax/build answered the page at skip=0 when asked for skip=2" in line
            assert cache.answered_by("first_page_always") == 2 * run  # the first page, then the second asked
            states = ledger_states(tmp_path / "kcing.db")
            assert len(states) == 2 and set(states.values()) == {"delivered"}


# -- a LAVA lab's boot stored before the backend kept LAVA callbacks ------------------------------

def test_a_boot_whose_lab_directory_holds_only_its_boot_report_is_delivered_from_it(logstash, tmp_path):
    """The backend stored each LAVA callback as lava-json-<board>.json from 2017-12-21 on; a boot
    of a lab listed as a LAVA lab from before then (or one that reported with lava-ci's own
    boot report) has only the boot-<board>.json every lab's boot got until 2020-07."""
    corpus = LegacyCorpus()
    build = build_item("next", "next-20190531", "arm", "multi_v7_defconfig", at(TODAY, 0, 1))
    corpus.add_build(build, build_json(build))
    boot = boot_item(build, "lab-collabora", "rk3288-veyron-jaq", at(TODAY, 0, 2), status="FAIL")
    report = corpus.add_boot(boot, boot_path(boot, lava=False), boot_json(boot))
    with LegacyReplica(corpus, today=TODAY, clock=ManualClock()) as replica:
        result = kcing(["feed_es"], feed_environ(replica, logstash, tmp_path / "kcing.db"), tmp_path)
        assert replica.storage.get_count(boot_path(boot)) == 1  # lava-json first, as for any LAVA lab
        assert replica.storage.get_count(report) == 1
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}
    [body] = [body for (index, _), body in logstash.store.items() if index == "boot-2019.05.31"]
    assert (body["lab_name"], body["board"], body["boot_result"], body["boot_time"]) == \
        ("lab-collabora", "rk3288-veyron-jaq", "fail", 7.62)
    # The same document, id and index as the report read as one (feed_es --boots).
    from kcing.documents import documents_for
    (expected,) = documents_for("boot", boot_json(boot), at(TODAY, 0, 2))
    stored = {name: value for name, value in logstash.store[(expected.index, expected.doc_id)].items()
              if name != "@version"}  # Logstash's own
    assert stored == dict(expected.body, **{"@timestamp": expected.timestamp})
