"""`kcing feed_es` end to end: the real program against the legacy replica and Logstash emulators."""
from __future__ import annotations

import base64
import json
import re
import time
from datetime import timedelta
from urllib.parse import unquote, urlsplit

import pytest

from tests.fakes.rogue_http import RogueFront, interim_then_forward
from tests.fakes.serving import wait_until
from tests.feedrun import (DEEPER_THAN_DECODERS_GO, expected_documents, feed_environ, integrity, kcing, kcing_process,
                           ledger_rows, ledger_states, sample_objects, stored_keys, SAMPLES)

pytestmark = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")


@pytest.fixture
def objects():
    return sample_objects()


@pytest.fixture
def expected(objects):
    return expected_documents(objects)


@pytest.fixture
def env(legacy_replica, logstash, tmp_path):
    return feed_environ(legacy_replica, logstash, tmp_path / "kcing.db")


def storage_path(obj) -> str:
    return unquote(urlsplit(obj.url).path).lstrip("/")


def test_a_full_feed_delivers_exactly_the_expected_documents(env, tmp_path, logstash, objects, expected):
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert stored_keys(logstash) == set(expected)
    for key, body in expected.items():
        stored = logstash.store[key]
        assert {name: stored.get(name) for name in body} == body
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}
    assert len(ledger_states(tmp_path / "kcing.db")) == len(objects)
    assert "delivered %d" % len(objects) in result.stdout


def test_documents_reach_the_input_of_their_origin(env, tmp_path, logstash, objects):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    for route in ("build", "lava", "boot"):
        kinds = {event.metadata["index"].split("-")[0] for event in logstash.emulators[route].events_received}
        if any(obj.kind == route for obj in objects):
            assert kinds, route
        assert kinds <= {"build": {"build"}, "lava": {"boot", "test", "log"}, "boot": {"boot"}}[route]
    for request in logstash.lava.requests:
        assert request.headers["content-type"] == "application/json"
        assert request.method == "POST" and request.status == 200
    assert not any(emulator.unrouted for emulator in logstash.emulators.values())


def test_the_original_tools_setting_of_the_lab_without_lava_chooses_the_input_of_its_boots(
        env, tmp_path, logstash, objects):
    """KCI_NON_LAVA_LAB, as the original tool named it, in its `settings` dict or the environment."""
    reports = {obj.upstream_id for obj in objects if obj.kind == "boot"}
    assert reports

    def boots_by_route() -> dict:
        return {route: {event.metadata["id"] for event in logstash.emulators[route].events_received
                        if event.metadata["index"].startswith("boot-")} for route in ("lava", "boot")}

    (tmp_path / "local_settings.py").write_text("settings = {'KCI_NON_LAVA_LAB': 'lab-baylibre-seattle'}\n")
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0 and "KCI_NON_LAVA_LAB" not in result.stderr, result.stderr
    first = boots_by_route()
    assert len(first["boot"]) == len(reports)
    # Named a lab that has no boots here, the reports' lab is a LAVA lab's: its boots are asked
    # for as lava-json files, found as boot reports, and go to the LAVA input.
    logstash.clear()
    (tmp_path / "local_settings.py").unlink()
    again = dict(env, KCI_NON_LAVA_LAB="lab-nowhere", KCING_DB=str(tmp_path / "again.db"))
    result = kcing(["feed_es"], again, tmp_path)
    assert result.returncode == 0 and "KCI_NON_LAVA_LAB" not in result.stderr, result.stderr
    assert boots_by_route() == {"lava": first["boot"] | first["lava"], "boot": set()}


def test_a_second_run_sends_nothing(env, tmp_path, logstash, objects):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    posts = sum(len(emulator.requests) for emulator in logstash.emulators.values())
    second = kcing(["feed_es"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    assert sum(len(emulator.requests) for emulator in logstash.emulators.values()) == posts
    assert "skipped %d" % len(objects) in second.stdout


def test_a_rerun_after_new_results_counts_and_fetches_only_those(env, tmp_path, legacy_replica, logstash, objects):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    boot = next(iter(legacy_replica.corpus.items("boot")))
    newer = dict(boot.doc, _id={"$oid": "f" * 24})
    legacy_replica.corpus.add_item("boot", newer)
    legacy_replica.storage.requests.clear()
    second = kcing(["feed_es", "--how-many", str(len(objects) + 5)], env, tmp_path)
    assert second.returncode == 0, second.stderr
    # Delivered items are left out while listing, yet still counted, and still count towards
    # --how-many; only the new item's file is downloaded.
    assert "listed %d, skipped %d" % (len(objects) + 1, len(objects)) in second.stdout
    assert len(legacy_replica.storage.requests) == 1


def test_an_interrupted_run_then_a_rerun_end_with_exactly_the_expected_set(env, tmp_path, logstash, expected):
    env = dict(env, LS_PIPELINE_BATCH_SIZE="50", KCI_THREADS="1")
    logstash.lava.slow_next(0.3, count=None)  # give the test time to kill the run mid-way
    process = kcing_process(["feed_es"], env, tmp_path)
    assert wait_until(lambda: len(logstash.store) >= 100, timeout=60)
    process.kill()
    process.wait()
    logstash.lava.clear_faults()
    assert 0 < len(logstash.store) < len(expected)
    db = tmp_path / "kcing.db"
    delivered_before = {key for key, state in ledger_states(db).items() if state == "delivered"}

    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert stored_keys(logstash) == set(expected)
    assert set(ledger_states(db).values()) == {"delivered"}
    assert integrity(db) == "ok"
    assert "skipped %d" % len(delivered_before) in result.stdout


@pytest.mark.parametrize("posts", [
    pytest.param({}, id="defaults"),
    # Many posts in flight when the first runs out of retries: the others failed too, and what
    # the run salvages of them at its stop must not count as acknowledged.
    pytest.param({"LS_PIPELINE_BATCH_SIZE": "1", "ES_PARALLEL_POSTS": "4"}, id="posts-in-flight"),
])
def test_logstash_down_exits_3_and_marks_nothing_delivered(env, tmp_path, logstash, objects, posts):
    for emulator in logstash.emulators.values():
        emulator.down()
    result = kcing(["feed_es"], dict(env, **posts), tmp_path)
    assert result.returncode == 3
    assert "Logstash unreachable" in result.stderr
    # ES_MAX_RETRIES's default, and the setting whose input it is
    assert re.search(r"(build|lava|boot) input \(ES_(BUILD|LAVA|BOOT)\) failed 3 attempts in a row \(last: ",
                     result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    # What was downloaded is recorded so (`kcing status` counts it), never as delivered.
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"downloaded"}

    for emulator in logstash.emulators.values():
        emulator.up()
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}


def test_malformed_and_missing_files_are_recorded_and_the_rest_delivered(env, tmp_path, legacy_replica, logstash,
                                                                         objects):
    broken, missing = objects[0], objects[-1]
    legacy_replica.corpus.add_file(storage_path(broken), b'{"job": "next", "kernel": ')  # truncated JSON
    legacy_replica.corpus.remove_file(storage_path(missing))
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    states = ledger_states(tmp_path / "kcing.db")
    assert states.pop((broken.kind, broken.upstream_id)) == "rejected"
    assert states.pop((missing.kind, missing.upstream_id)) == "failed"
    assert set(states.values()) == {"delivered"}
    rows = {(row["kind"], row["upstream_id"]): row for row in ledger_rows(tmp_path / "kcing.db")}
    assert "JSON" in rows[(broken.kind, broken.upstream_id)]["last_error"]
    assert "404" in rows[(missing.kind, missing.upstream_id)]["last_error"]
    assert "rejected 1" in result.stdout and "failed 1" in result.stdout
    healthy = [obj for obj in objects if obj not in (broken, missing)]
    assert stored_keys(logstash) == set(expected_documents(healthy))


def test_objects_that_failed_are_tried_again_once_older_than_the_crawl_window(env, tmp_path, legacy_replica,
                                                                             logstash, objects, expected):
    """The next run was to try a failed file again, but a legacy run lists only its window of
    days: a file whose day had left it was never asked for again, and the run said all was well."""
    # The replica's days are years before this host's: a retention (DRP_DAYS) that still keeps them.
    env = dict(env, DRP_DAYS="3650")
    newest = max(obj.date for obj in objects).date()
    early = [obj for obj in objects if obj.date.date() < newest - timedelta(days=2)]
    broken, missing, stubborn = early[0], early[-1], early[1]
    assert len({(obj.kind, obj.upstream_id) for obj in (broken, missing, stubborn)}) == 3
    legacy_replica.frontend.today = newest
    legacy_replica.corpus.add_file(storage_path(broken), b'{"job": "next", "kernel": ')  # truncated JSON
    for obj in early:
        legacy_replica.storage.fail_next("/" + storage_path(obj), 503, count=None)
    first = kcing(["feed_es"], env, tmp_path)
    assert first.returncode == 1, first.stderr
    states = ledger_states(tmp_path / "kcing.db")
    assert {states[(obj.kind, obj.upstream_id)] for obj in early} == {"failed"}
    # Storage answers again (but for one file, still busy), but their day is out of the window
    # of --days 2: only the ledger names them.
    legacy_replica.storage.clear_faults()
    legacy_replica.storage.fail_next("/" + storage_path(stubborn), 503, count=None)
    legacy_replica.corpus.remove_file(storage_path(missing))
    again = kcing(["feed_es", "--days", "2"], env, tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "were not delivered by an earlier run, and the listing no longer lists them: trying them again" \
        in again.stderr
    states = ledger_states(tmp_path / "kcing.db")
    assert states[(broken.kind, broken.upstream_id)] == "rejected"
    assert states[(missing.kind, missing.upstream_id)] == "failed"
    assert states[(stubborn.kind, stubborn.upstream_id)] == "failed"
    # A failure that may pass is asked for again by every run; a rejected file is not, nor one
    # storage said is not there (404) once its day has left the window: it is taken as gone.
    asked_before = len(legacy_replica.storage.requests)
    third = kcing(["feed_es", "--days", "2"], env, tmp_path)
    assert third.returncode == 1, third.stdout + third.stderr
    asked = {request.path for request in list(legacy_replica.storage.requests)[asked_before:]}
    assert "/" + storage_path(stubborn) in asked
    assert "/" + storage_path(missing) not in asked and "/" + storage_path(broken) not in asked
    legacy_replica.storage.clear_faults()
    fourth = kcing(["feed_es", "--days", "2"], env, tmp_path)
    assert fourth.returncode == 0, fourth.stdout + fourth.stderr
    assert "failed 0" in fourth.stdout or "failed" not in fourth.stdout
    assert stored_keys(logstash) == set(expected_documents([obj for obj in objects if obj is not broken
                                                            and obj is not missing]))
    states = ledger_states(tmp_path / "kcing.db")
    assert states[(missing.kind, missing.upstream_id)] == "failed"  # `kcing status` still counts it


@pytest.mark.parametrize("gone", [404, 410])
def test_a_file_storage_said_is_not_there_is_not_asked_for_once_its_day_left_the_window(
        env, tmp_path, legacy_replica, logstash, objects, gone):
    """The README: a file whose last try answered 404 or 410 (and its fallback file too) is taken
    as gone for good once its day has left the window, and stays failed for `kcing status`; a
    failure that may pass (a 503) is asked for again by every run."""
    env = dict(env, DRP_DAYS="3650")
    newest = max(obj.date for obj in objects).date()
    early = [obj for obj in objects if obj.date.date() < newest - timedelta(days=2)]
    assert len(early) >= 2
    absent, busy = early[0], early[1]
    legacy_replica.frontend.today = newest
    legacy_replica.storage.fail_next("/" + storage_path(absent).rsplit("/", 1)[0], gone, count=None)
    legacy_replica.storage.fail_next("/" + storage_path(busy), 503, count=None)
    assert kcing(["feed_es"], env, tmp_path).returncode == 1
    asked_before = len(legacy_replica.storage.requests)
    again = kcing(["feed_es", "--days", "2"], env, tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    asked = {request.path for request in list(legacy_replica.storage.requests)[asked_before:]}
    assert "/" + storage_path(busy) in asked
    assert not any(path.startswith("/" + storage_path(absent).rsplit("/", 1)[0]) for path in asked), asked
    states = ledger_states(tmp_path / "kcing.db")
    assert states[(absent.kind, absent.upstream_id)] == "failed"


def test_a_file_storage_refused_is_not_looked_for_under_its_fallback_name_nor_taken_as_gone(
        env, tmp_path, legacy_replica, logstash, objects):
    """Only a 404 sends a download to its fallback file (a build's bmeta.json, a LAVA boot's
    report): a file storage refused (403) is said as refused, and stays a failure every run asks
    for again, where the fallback's own 404 would have named a 404 and left it as gone."""
    env = dict(env, DRP_DAYS="3650")
    newest = max(obj.date for obj in objects).date()
    early = [obj for obj in objects if obj.date.date() < newest - timedelta(days=2)]
    refused = next(obj for obj in early if obj.kind in ("build", "lava"))
    legacy_replica.frontend.today = newest
    legacy_replica.storage.fail_next("/" + storage_path(refused), 403, count=None)
    assert kcing(["feed_es"], env, tmp_path).returncode == 1
    directory = "/" + storage_path(refused).rsplit("/", 1)[0] + "/"
    asked = [request.path for request in legacy_replica.storage.requests if request.path.startswith(directory)]
    assert set(asked) == {"/" + storage_path(refused)}, asked
    rows = {(row["kind"], row["upstream_id"]): row for row in ledger_rows(tmp_path / "kcing.db")}
    assert rows[(refused.kind, refused.upstream_id)]["last_error"].endswith(" answered 403")
    asked_before = len(legacy_replica.storage.requests)
    again = kcing(["feed_es", "--days", "2"], env, tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "/" + storage_path(refused) in {request.path for request in
                                           list(legacy_replica.storage.requests)[asked_before:]}
    assert ledger_states(tmp_path / "kcing.db")[(refused.kind, refused.upstream_id)] == "failed"


def test_the_summary_counts_what_upstream_listed_and_the_earlier_failures_tried_again_apart(
        env, tmp_path, legacy_replica, logstash, objects):
    """The earlier failures a run takes from the ledger were counted as listed: a user who saw
    `listed 11` where upstream listed 8 was misled, in the closing line, the run's row and the
    metrics alike."""
    from tests.test_metrics import parsed

    env = dict(env, DRP_DAYS="3650")
    newest = max(obj.date for obj in objects).date()
    early = [obj for obj in objects if obj.date.date() < newest - timedelta(days=2)]
    in_window = len(objects) - len(early)
    assert early and in_window
    legacy_replica.frontend.today = newest
    for obj in early:
        legacy_replica.storage.fail_next("/" + storage_path(obj), 503, count=None)
    assert kcing(["feed_es"], env, tmp_path).returncode == 1
    legacy_replica.storage.clear_faults()

    planned = kcing(["feed_es", "--days", "2", "--dry-run"], env, tmp_path)
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "dry run: listed %d, %d already delivered, %d would be fetched, %d of them earlier failures\n" % (
        in_window, in_window, len(early), len(early)) in planned.stdout
    prom = tmp_path / "kcing.prom"
    again = kcing(["feed_es", "--days", "2", "--metrics", str(prom)], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("feed_es: listed %d, skipped %d (already delivered), downloaded %d, delivered %d, "
                                   "rejected 0, failed 0, retried %d earlier failures\n"
                                   % (in_window, in_window, len(early), len(early), len(early))), again.stdout
    values = parsed(prom.read_text())
    assert values[("kcing_feed_objects", (("outcome", "listed"), ("source", "legacy")))] == in_window
    assert values[("kcing_feed_objects", (("outcome", "retried"), ("source", "legacy")))] == len(early)
    run = json.loads(kcing(["status", "--json"], env, tmp_path).stdout)["runs"][0]
    assert (run["counts"]["listed"], run["counts"]["retried"]) == (in_window, len(early)), run


def _failed_before_the_window(env, tmp_path, legacy_replica, objects) -> list:
    """The objects dated before a two-day window, left failed by a run over everything (their
    storage answered 503), the storage answering again afterwards."""
    newest = max(obj.date for obj in objects).date()
    early = [obj for obj in objects if obj.date.date() < newest - timedelta(days=2)]
    assert early
    legacy_replica.frontend.today = newest
    for obj in early:
        legacy_replica.storage.fail_next("/" + storage_path(obj), 503, count=None)
    assert kcing(["feed_es"], env, tmp_path).returncode == 1
    legacy_replica.storage.clear_faults()
    return early


def test_a_how_many_run_lists_no_window_of_days_and_takes_no_earlier_failure_again(env, tmp_path, legacy_replica,
                                                                                 logstash, objects):
    """The README: the earlier failures added to the listing are those dated before its window;
    a `--how-many` run, which lists the newest objects whatever their day, adds none."""
    env = dict(env, DRP_DAYS="3650")
    early = _failed_before_the_window(env, tmp_path, legacy_replica, objects)
    asked_before = len(legacy_replica.storage.requests)
    newest_only = kcing(["feed_es", "--how-many", "1"], env, tmp_path)
    assert newest_only.returncode == 0, newest_only.stdout + newest_only.stderr
    assert "retried" not in newest_only.stdout and "earlier run" not in newest_only.stderr
    asked = {request.path for request in list(legacy_replica.storage.requests)[asked_before:]}
    assert not asked & {"/" + storage_path(obj) for obj in early}
    states = ledger_states(tmp_path / "kcing.db")
    assert {states[(obj.kind, obj.upstream_id)] for obj in early} == {"failed"}
    # A run over a window of days takes them again.
    again = kcing(["feed_es", "--days", "2"], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "retried %d earlier failures" % len(early) in again.stdout


def test_a_listing_that_fails_part_way_still_tries_the_earlier_failures_again(env, tmp_path, legacy_replica,
                                                                             logstash, objects):
    """The objects listed before a failing page were delivered, but the earlier failures taken
    from the ledger, which do not depend on the listing, were tried by no run while it failed."""
    env = dict(env, DRP_DAYS="3650", KCI_MAX_RETRIES="1")
    early = _failed_before_the_window(env, tmp_path, legacy_replica, objects)
    legacy_replica.frontend.fail_next("/_ajax/boot", 500, count=None)  # after the builds, it keeps failing
    again = kcing(["feed_es", "--days", "2"], env, tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr  # what a listing that failed exits with
    [stopped] = [line for line in again.stderr.splitlines() if line.startswith("kcing feed_es:")]
    assert "/_ajax/boot" in stopped and "500" in stopped, again.stderr
    assert "retried %d earlier failures" % len(early) in again.stdout, again.stdout
    states = ledger_states(tmp_path / "kcing.db")
    assert {states[(obj.kind, obj.upstream_id)] for obj in early} == {"delivered"}
    assert stored_keys(logstash) >= set(expected_documents(early))


def test_the_progress_lines_count_the_earlier_failures_tried_again_as_the_summary_does(
        env, tmp_path, legacy_replica, logstash, objects):
    """The progress lines counted what upstream listed and left out the earlier failures a run
    takes from the ledger, which it downloads all the same: `listed 8, skipped 8, downloaded 3`
    added up to nothing a user could follow, where the closing line says `retried 3`."""
    env = dict(env, DRP_DAYS="3650")
    newest = max(obj.date for obj in objects).date()
    early = [obj for obj in objects if obj.date.date() < newest - timedelta(days=2)]
    assert early and len(early) < len(objects)
    legacy_replica.frontend.today = newest
    for obj in early:
        legacy_replica.storage.fail_next("/" + storage_path(obj), 503, count=None)
    assert kcing(["feed_es"], env, tmp_path).returncode == 1
    legacy_replica.storage.clear_faults()
    legacy_replica.storage.delay("/" + storage_path(early[-1]), 2.5)  # long enough for a progress line
    again = kcing(["feed_es", "--days", "2"], dict(env, KCING_PROGRESS_EVERY="1"), tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    progress = [line for line in again.stderr.splitlines() if " progress: " in line]
    assert progress, again.stderr
    assert all(", retried %d earlier failures, " % len(early) in line for line in progress), progress


def test_an_object_that_failed_is_not_tried_again_once_its_day_is_past_the_retention(
        legacy_replica, logstash, es, tmp_path, objects):
    """drp deletes the indices of the days before DRP_DAYS, and forgets a ledger row by when it
    was first seen, which can be days after the object's own date (a first crawl, a backfill):
    a retry delivered into an index drp had deleted, made it again."""
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", ES_HOST=es.url)
    newest = max(obj.date for obj in objects).date()
    early = [obj for obj in objects if obj.date.date() < newest - timedelta(days=2)]
    failing = early[0]
    index = "%s-%s" % ("build" if failing.kind == "build" else "boot", failing.date.strftime("%Y.%m.%d"))
    legacy_replica.storage.fail_next("/" + storage_path(failing), 503, count=None)
    assert kcing(["feed_es"], env, tmp_path).returncode == 1
    es.seed_index(index, docs={"1": {"job": "mainline"}})
    # The replica's days are years before this host's: DRP_DAYS=31 keeps none of them.
    drp = kcing(["drp"], env, tmp_path)
    assert drp.returncode == 0 and "deleted index %s" % index in drp.stdout, drp.stdout + drp.stderr
    assert ledger_states(tmp_path / "kcing.db")[(failing.kind, failing.upstream_id)] == "failed"
    legacy_replica.storage.clear_faults()
    asked_before = len(legacy_replica.storage.requests)
    sent_before = stored_keys(logstash)
    again = kcing(["feed_es", "--days", "2"], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    asked = {request.path for request in list(legacy_replica.storage.requests)[asked_before:]}
    assert "/" + storage_path(failing) not in asked
    day = failing.date.strftime("%Y.%m.%d")
    assert not {key for key in stored_keys(logstash) - sent_before if key[0].endswith(day)}
    # A DRP_DAYS that keeps its day does not bring it back: the drp run recorded deleted that day.
    longer = kcing(["feed_es", "--days", "2"], dict(env, DRP_DAYS="3650"), tmp_path)
    assert longer.returncode == 0, longer.stdout + longer.stderr
    asked = {request.path for request in list(legacy_replica.storage.requests)[asked_before:]}
    assert "/" + storage_path(failing) not in asked
    assert ledger_states(tmp_path / "kcing.db")[(failing.kind, failing.upstream_id)] == "failed"


def test_csrf_expiry_mid_crawl_is_survived(env, tmp_path, legacy_replica, logstash, expected):
    pages = []

    def expire_after_first_page(corpus, collection, query):
        pages.append(collection)
        if len(pages) == 1:
            legacy_replica.frontend.expire_all_tokens()

    legacy_replica.frontend.on_page(expire_after_first_page)
    result = kcing(["feed_es"], dict(env, KCI_PAGE_SIZE="2"), tmp_path)
    assert result.returncode == 0, result.stderr
    statuses = [request.status for request in legacy_replica.frontend.ajax_requests()]
    assert 403 in statuses
    home_pages = [request for request in legacy_replica.frontend.requests if request.path == "/"]
    assert len(home_pages) >= 2
    assert stored_keys(logstash) == set(expected)


def test_a_kept_alive_connection_upstream_closed_is_asked_again_on_another_without_costing_an_attempt(
        env, tmp_path, legacy_replica, logstash, expected, objects):
    """Every request that arrives on a connection that carried an answer before finds it closed
    (a server's or a proxy's idle timeout meeting the next request): with one attempt per
    request, the listing pages and the files failed; each is now asked again at once on a new
    connection, and no retry is logged."""
    legacy_replica.frontend.close_kept_alive(count=None)
    legacy_replica.storage.close_kept_alive(count=None)
    result = kcing(["feed_es", "-d"], dict(env, KCI_MAX_RETRIES="1", KCI_THREADS="1"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert stored_keys(logstash) == set(expected)
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}
    assert "delivered %d" % len(objects) in result.stdout and "; retry " not in result.stderr
    assert sum(1 for request in legacy_replica.storage.requests if request.status == 200) == len(objects)


def test_interim_answers_before_the_final_one_are_passed_over(env, tmp_path, legacy_replica, logstash, expected):
    """A `103 Early Hints` before each answer (a CDN in front of the site, or of an input): it was
    taken for the answer (no CSRF token on the home page, files failed with 103, a batch
    "rejected with 103"), and the final answer left on the connection was then read as the
    answer to the next request on it: a LAVA callback taken for a boot report, rejected."""
    legacy_replica.frontend.early_hints = legacy_replica.storage.early_hints = True
    with RogueFront(logstash.urls["lava"]) as front:
        front.on("POST", "/", interim_then_forward())
        result = kcing(["feed_es"], dict(env, ES_LAVA=front.url, KCI_THREADS="1"), tmp_path)
        assert result.returncode == 0, result.stderr
        assert front.answered_by("interim_first") > 0
    assert stored_keys(logstash) == set(expected)
    for key, body in expected.items():
        assert {name: logstash.store[key].get(name) for name in body} == body
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {"delivered"}


def test_429_and_503_are_retried_honouring_retry_after(env, tmp_path, logstash, expected):
    logstash.lava.fail_next(429, retry_after=1)
    logstash.build.fail_next(503, count=2)
    result = kcing(["feed_es", "-d"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert stored_keys(logstash) == set(expected)
    assert "retry 1 of 2 in 1." in result.stderr  # waited the second Retry-After asked for
    assert [status for (_, _, status) in logstash.build.trace][:3] == [503, 503, 200]


@pytest.mark.parametrize("status", [501, 505, 507])
def test_a_5xx_no_wait_mends_stops_the_run_with_exit_3_without_retries(env, tmp_path, logstash, status):
    """The README: the other 5xx (501, 505, 507, ...), which no wait mends, stop the run (exit 3),
    and nothing of the refused batches is recorded as delivered."""
    logstash.lava.fail_next(status, count=None)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stderr.splitlines()[-1] == ("kcing feed_es: Logstash at %s rejected a batch with %d: no reason given"
                                              % (logstash.urls["lava"], status)), result.stderr
    assert "retry 1 of" not in result.stderr
    assert logstash.lava.requests and {request.status for request in logstash.lava.requests} == {status}
    assert "delivered" not in {state for (kind, _), state in ledger_states(tmp_path / "kcing.db").items()
                               if kind == "lava"}


def test_a_retry_after_beyond_what_a_run_waits_fails_the_file_at_once_and_the_next_run_takes_it(
        env, tmp_path, legacy_replica, logstash, expected):
    legacy_replica.storage.fail_next("/", 429, count=None, headers=(("Retry-After", "86400"),))
    started = time.monotonic()
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    assert time.monotonic() - started < 30  # not a day, nor 120 s a file
    assert "failed once (last: HTTP 429, Retry-After 86400s (a run waits up to 120s))" in result.stderr
    assert "retry 1 of" not in result.stderr
    assert stored_keys(logstash) == set()
    legacy_replica.storage.clear_faults()
    again = kcing(["feed_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert stored_keys(logstash) == set(expected)


def test_a_failing_input_is_replaced_by_the_next_url(env, tmp_path, legacy_replica, logstash, expected):
    from tests.fakes.logstash_emulator import LogstashEmulator

    spare = LogstashEmulator(store=logstash.index_store, name="spare-lava")
    spare.start()
    try:
        logstash.lava.down()
        env = dict(env, ES_LAVA="%s,%s" % (logstash.urls["lava"], spare.url), ES_MAX_RETRIES="1")
        result = kcing(["feed_es"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert stored_keys(logstash) == set(expected)
        assert spare.requests
    finally:
        spare.stop()


def test_basic_auth_is_sent_and_a_wrong_password_is_a_clear_error(tmp_path, legacy_replica, objects):
    from tests.fakes.logstash_emulator import LogstashCluster

    with LogstashCluster(user="kcing", password="s3cret-pass") as secured:
        env = feed_environ(legacy_replica, secured, tmp_path / "kcing.db", LS_USER="kcing", LS_PASSWORD="wrong-pass")
        result = kcing(["feed_es", "-d", "-l", str(tmp_path / "feed.log")], env, tmp_path)
        assert result.returncode == 2
        assert "LS_USER and LS_PASSWORD" in result.stderr
        for text in (result.stdout, result.stderr, (tmp_path / "feed.log").read_text()):
            assert "wrong-pass" not in text
        assert "delivered" not in set(ledger_states(tmp_path / "kcing.db").values())

        env["LS_PASSWORD"] = "s3cret-pass"
        result = kcing(["feed_es"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        expected_header = "Basic " + base64.b64encode(b"kcing:s3cret-pass").decode()
        accepted = [request for emulator in secured.emulators.values() for request in emulator.requests
                    if request.status == 200]
        assert accepted and all(request.headers["authorization"] == expected_header for request in accepted)


def test_an_input_asking_for_credentials_none_were_set_for_says_to_set_them(tmp_path, legacy_replica, objects):
    from tests.fakes.logstash_emulator import LogstashCluster

    with LogstashCluster(user="kcing", password="s3cret-pass") as secured:
        result = kcing(["feed_es"], feed_environ(legacy_replica, secured, tmp_path / "kcing.db"), tmp_path)
    assert result.returncode == 2
    # Nothing was sent to check: the line says what to set, not that credentials were refused.
    assert result.stderr.splitlines()[-1].endswith("asks for credentials (401): set LS_USER and LS_PASSWORD")
    assert "refused" not in result.stderr
    assert "delivered" not in set(ledger_states(tmp_path / "kcing.db").values())


def test_dry_run_lists_and_changes_nothing(env, tmp_path, legacy_replica, logstash, objects):
    result = kcing(["feed_es", "--dry-run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("would fetch") == len(objects)
    assert not (tmp_path / "kcing.db").exists()
    assert not logstash.store
    assert sum(legacy_replica.storage.gets.values()) == 0


def test_how_many_limits_objects_per_kind(env, tmp_path, legacy_replica):
    result = kcing(["feed_es", "--how-many", "1", "--dry-run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("would fetch") == 2  # one build, one boot listing item
    limits = {request.params("limit")[0] for request in legacy_replica.frontend.ajax_requests()}
    assert limits == {"1"}


def test_days_narrows_the_crawl_window(env, tmp_path, legacy_replica, objects):
    today = legacy_replica.frontend.today
    recent = [obj for obj in objects if (today - obj.date.date()).days <= 1]
    assert 0 < len(recent) < len(objects)
    result = kcing(["feed_es", "--days", "1", "--dry-run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("would fetch") == len(recent)
    assert {request.params("date_range")[0] for request in legacy_replica.frontend.ajax_requests()} == {"1"}


def test_a_crawl_window_drp_would_forget_is_warned_of_by_the_feed(env, tmp_path, legacy_replica):
    # A window that begins before the first day drp keeps lists days drp deleted, and sends
    # their objects again: said by the cron line that gives --days, which drp does not know.
    # (The environment's DRP_DAYS of 31 exceeds every window here: drp's default of 3 is meant.)
    env = dict(env, DRP_DAYS="3")
    warning = ("DRP_DAYS=3 is less than KCI_DAYS=4: the crawl lists days whose indices drp deletes and whose "
               "ledger rows it forgets")
    assert warning in kcing(["feed_es", "--days", "4", "--dry-run"], env, tmp_path).stderr
    # A window as long as the retention begins on the first day drp keeps: nothing it lists was
    # forgotten, and a cron line chose it; a warning there came with every hourly run.
    for fine in (["--days", "3"], ["--days", "2"], ["--how-many", "1"]):
        assert "DRP_DAYS" not in kcing(["feed_es", *fine, "--dry-run"], env, tmp_path).stderr
    # Only a legacy crawl lists a window again: the bundled samples are no crawl.
    samples = kcing(["feed_es", "--source", "samples", "--dry-run"], dict(env, KCI_SAMPLES_DIR=str(SAMPLES)), tmp_path)
    assert samples.returncode == 0 and "DRP_DAYS" not in samples.stderr, samples.stderr



def test_the_feeds_help_says_a_legacy_crawl_reads_drp_days_not_only_with_verify():
    from kcing import commands

    listed = " ".join(commands.load("feed_es").USAGE.split("Settings read", 1)[1].split("\n\n", 1)[0].split())
    assert "DRP_DAYS (a legacy crawl, unless given --how-many, warns when it is less than KCI_DAYS" in listed, listed


def test_output_dir_writes_bulk_ready_ndjson(env, tmp_path, logstash, expected):
    out = tmp_path / "out"
    result = kcing(["feed_es", "--output", str(out)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert not logstash.store
    seen = set()
    for path in out.glob("*.ndjson"):
        lines = path.read_text().splitlines()
        assert len(lines) % 2 == 0
        for action, source in zip(lines[::2], lines[1::2]):
            meta = json.loads(action)["index"]
            document = json.loads(source)
            assert "@metadata" not in document and "@timestamp" in document
            seen.add((meta["_index"], meta["_id"]))
    assert seen == set(expected)


@pytest.mark.parametrize("setting, value", [("ES_MAX_RETRIES", "lots"), ("KCI_SCHEME", "gopher"),
                                            ("ES_LAVA", "not a url"), ("LS_PIPELINE_BATCH_SIZE", "0")])
def test_bad_settings_are_one_line_errors_with_exit_2(env, tmp_path, setting, value):
    result = kcing(["feed_es"], dict(env, **{setting: value}), tmp_path)
    assert result.returncode == 2
    assert setting in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "kcing.db").exists()


# The listing alone, on scripted pages ----------------------------------------------------------

def _listing_of(pages, known, how_many=None):
    from kcing.sources.legacy import LegacyKernelCI
    source = LegacyKernelCI(None, "http://frontend.invalid", "http://storage.invalid", how_many=how_many)
    source._page = lambda collection, skip, limit: ("http://frontend.invalid/_ajax/" + collection, _Answer(
        {"code": 200, "result": list(pages.get(collection, [])[skip:skip + limit])}))
    return list(source.list_objects(known=known))


class _Answer:
    """A listing page as the requester gives it: status and a JSON body, as sent."""

    status_code = 200
    encoding = "utf-8"  # what requests takes from `application/json`

    def __init__(self, envelope):
        self.content = json.dumps(envelope).encode()

    def json(self):
        return json.loads(self.content)


def test_the_listing_skips_delivered_ids_lists_the_rest_once_and_refuses_ids_that_are_not_24_hex_digits():
    def build(oid):
        return {"_id": {"$oid": oid}, "created_on": {"$date": 1604448000000}, "file_server_resource": "t/b/k/a/d/gcc"}
    delivered = "5fa2d3e4b5c6d7e8f9a0b1c2"
    fresh = "5FA2D3E4B5C6D7E8F9A0B1C3"  # upper case: the same id as in lower case
    items = [build(delivered), build(fresh), build(delivered), build(fresh), build("5fa2d3e4b5c6d7e8f9a0b1c4\n"),
             build("5fa2d3e4b5c6d7e8f9a0b1c")]
    asked = []

    def known(kind, ids):
        asked.append((kind, ids))
        return {delivered} & set(ids)

    objects = _listing_of({"build": items}, known)
    assert asked == [("build", [delivered, fresh.lower()])]
    assert [(obj.upstream_id, obj.problem) for obj in objects[:1]] == [(fresh.lower(), None)]
    # An id with a line break after its 24 digits is no object id, however a `$` would read it.
    assert [obj.problem for obj in objects[1:]] == ["listing item has no valid _id"] * 2
    assert all(obj.upstream_id.startswith("invalid-") for obj in objects[1:])


def test_a_page_of_delivered_items_is_skipped_whole_and_how_many_still_counts_them():
    ids = ["5fa2d3e4b5c6d7e8f9a0%04x" % n for n in range(6)]
    items = [{"_id": {"$oid": oid}} for oid in ids]
    assert _listing_of({"build": items}, lambda kind, asked: set(asked)) == []
    listed = _listing_of({"build": items}, lambda kind, asked: set(asked[:2]), how_many=3)
    assert [obj.upstream_id for obj in listed] == ids[2:3]


@pytest.mark.parametrize("extra", [{}, {"board_offset": float("nan")}], ids=["plain", "NaN, read whole"])
def test_a_page_with_some_items_not_delivered_lists_exactly_those_however_it_is_read(extra):
    ids = ["5fa2d3e4b5c6d7e8f9a0%04x" % n for n in range(6)]
    items = [dict({"_id": {"$oid": oid}, "created_on": {"$date": 1604448000000},
                   "file_server_resource": "t/b/k/a/d/gcc-%d" % n}, **extra) for n, oid in enumerate(ids)]
    listed = _listing_of({"build": items}, lambda kind, asked: set(asked[::2]))
    # (as JSON text: a NaN is not equal to itself)
    assert [(obj.upstream_id, json.dumps(obj.facts["listing"])) for obj in listed] == [
        (oid, json.dumps(item)) for oid, item in zip(ids[1::2], items[1::2])]


@pytest.mark.parametrize("body, outcome", [
    (b"<html>maintenance</html>", "did not answer JSON"),
    (b'{"code": 200, "result": [{"_id": {"$oid": "5fa2d3e4b5c6d7e8f9a0b1c2"}, "x": NaN}]}', None),
    (b'{"code": 200, "result": [], "x": %s}' % DEEPER_THAN_DECODERS_GO, "did not answer JSON"),
    (b'{"code": 200, "result": [], "x": 1%s}' % (b"0" * 5000), "did not answer JSON"),
], ids=["garbage", "NaN, read whole", "nested deeper than a decoder goes", "an integer Python refuses"])
def test_a_rerun_over_delivered_results_reads_odd_listing_pages_as_a_full_decoding_would(
        env, tmp_path, legacy_replica, body, outcome):
    """A routine re-run reads its listing pages only as far as ids and labs (sources/heads.py);
    a page that reading cannot take is judged by the whole decoding: garbage stops the run with a
    one-line error, a page the standard decoder reads (a NaN) is listed, and nothing is lost."""
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    before = ledger_states(tmp_path / "kcing.db")
    legacy_replica.frontend.fail_next("/_ajax/build", 200, body=body)
    result = kcing(["feed_es"], env, tmp_path)
    after = ledger_states(tmp_path / "kcing.db")
    assert {key: after[key] for key in before} == before
    if outcome is None:
        # The NaN page's item was read (whole) and listed: it has no storage directory, so it is
        # recorded as rejected (a run with a rejection exits 1), and the run goes on to the end.
        assert result.returncode == 1, result.stderr
        assert "delivered 0, rejected 1, failed 0" in result.stdout  # the boots' pages skipped as before
        assert set(after) - set(before) == {("build", "5fa2d3e4b5c6d7e8f9a0b1c2")}
        assert after[("build", "5fa2d3e4b5c6d7e8f9a0b1c2")] == "rejected"
    else:
        assert after == before
        assert result.returncode != 0 and outcome in result.stderr and "Traceback" not in result.stderr


def test_an_earlier_failure_is_asked_for_at_the_storage_the_run_is_given(env, tmp_path, legacy_replica, logstash,
                                                                          objects):
    """An earlier failure taken from the ledger was asked for at the URL its row holds: once
    KCI_STORAGE_URL named a mirror, because the old storage was gone, the object was refused as
    off the upstream origins and never tried again, though the mirror held its file."""
    from tests.fakes.legacy_replica import LegacyStorage

    env = dict(env, DRP_DAYS="3650")
    newest = max(obj.date for obj in objects).date()
    early = [obj for obj in objects if obj.date.date() < newest - timedelta(days=2)]
    assert early
    legacy_replica.frontend.today = newest
    corpus = legacy_replica.corpus
    for path in corpus.paths():  # the old storage and the mirror each under a path of their own
        corpus.add_file("old/" + path, corpus.read(path))
        corpus.add_file("mirror/" + path, corpus.read(path))
    for obj in early:
        legacy_replica.storage.fail_next("/old/" + storage_path(obj), 503, count=None)
    first = kcing(["feed_es"], dict(env, KCI_STORAGE_URL=legacy_replica.storage_url + "/old"), tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert {ledger_states(tmp_path / "kcing.db")[(obj.kind, obj.upstream_id)] for obj in early} == {"failed"}
    legacy_replica.storage.stop()  # gone: the mirror holds its files now
    with LegacyStorage(corpus) as mirror:
        again = kcing(["feed_es", "--days", "2"], dict(env, KCI_STORAGE_URL=mirror.url + "/mirror"), tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "retried %d earlier failures" % len(early) in again.stdout, again.stdout
        asked = {request.path for request in mirror.requests}
    assert {"/mirror/" + storage_path(obj) for obj in early} <= asked, asked
    assert {ledger_states(tmp_path / "kcing.db")[(obj.kind, obj.upstream_id)] for obj in early} == {"delivered"}
    assert stored_keys(logstash) >= set(expected_documents(early))


@pytest.mark.parametrize("storages, asked", [
    # The run that built the URL recorded its storage: the path after it is the file's place.
    ({"http://127.0.0.1:3/old"}, "http://127.0.0.1:2/mirror/mainline/master/v5.10/arm/defconfig/build.json"),
    # A row of a kcing that recorded none: built at its origin, as at storage.<KCI_HOST>.
    (set(), "http://127.0.0.1:2/mirror/old/mainline/master/v5.10/arm/defconfig/build.json"),
    # A storage recorded whose path the URL's only begins with is not where it was built.
    ({"http://127.0.0.1:3/ol"}, "http://127.0.0.1:2/mirror/old/mainline/master/v5.10/arm/defconfig/build.json"),
])
def test_an_earlier_failure_is_moved_to_this_runs_storage_by_its_path(storages, asked):
    from datetime import datetime, timezone

    from kcing.records import UpstreamObject
    from kcing.sources.legacy import LegacyKernelCI

    source = LegacyKernelCI(None, "http://127.0.0.1:1", "http://127.0.0.1:2/mirror/")
    when = datetime(2020, 11, 4, tzinfo=timezone.utc)
    row = UpstreamObject("legacy", "build", "a" * 24,
                         "http://127.0.0.1:3/old/mainline/master/v5.10/arm/defconfig/build.json", when)
    moved = source.at_this_storage(row, storages)
    assert (moved.url, moved.problem, moved.created) == (asked, None, when)
    # Already at this storage: left as it is, whatever was recorded before.
    assert source.at_this_storage(moved, storages | {"http://127.0.0.1:2"}) == moved


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:3/mainline/../../../etc/passwd",
    "http://127.0.0.1:3/mainline/a%2F..%2Fb/build.json",
    "http://127.0.0.1:3/mainline//build.json",
    "http://127.0.0.1:3/mainline/build.json?redirect=http://elsewhere",
    "http://127.0.0.1:4/mainline/build.json?redirect=http://elsewhere",  # no storage recorded there
    "http://127.0.0.1:4/mainline/build.json#top",
    "ftp://127.0.0.1:4/mainline/build.json",
    "file:///etc/passwd",
    "http://127.0.0.1:3",
    42,
])
def test_an_earlier_failure_whose_row_names_no_storage_path_is_refused_not_fetched(url):
    """A ledger edited by hand (or written by a broken run) never makes a run ask for a URL
    built of its parts: the path is checked as a listed one is, and the object is rejected."""
    from datetime import datetime, timezone

    from kcing.records import UpstreamObject
    from kcing.sources.legacy import LegacyKernelCI

    source = LegacyKernelCI(None, "http://127.0.0.1:1", "http://127.0.0.1:2")
    row = UpstreamObject("legacy", "build", "a" * 24, url, datetime(2020, 11, 4, tzinfo=timezone.utc))
    moved = source.at_this_storage(row, {"http://127.0.0.1:3"})
    assert moved.problem and "cannot be asked for at http://127.0.0.1:2" in moved.problem, moved
    assert moved.url == url


def test_an_earlier_failure_listed_without_a_date_is_tried_again_while_drp_keeps_its_row(
        env, tmp_path, legacy_replica, logstash, objects):
    """A listing item without a readable `created_on` (listed by --how-many, which asks for no
    window of days) whose file failed left a row without a date: no run took it from the ledger
    again, since the listing of a window never lists it, and every later run exited 0."""
    env = dict(env, DRP_DAYS="3650")
    corpus = legacy_replica.corpus
    lava = next(item for item in corpus.items("boot") if item.doc.get("lab_name") and item.doc.get("board")
                and corpus.has_file("%s/%s/lava-json-%s.json" % (item.doc["file_server_resource"],
                                                                 item.doc["lab_name"], item.doc["board"])))
    original = "%s/%s/lava-json-%s.json" % (lava.doc["file_server_resource"], lava.doc["lab_name"], lava.doc["board"])
    undated = {name: value for name, value in lava.doc.items() if name != "created_on"}
    undated.update(_id={"$oid": "e" * 24}, board="undated-board")
    path = corpus.add_boot(undated, "%s/%s/lava-json-undated-board.json" % (undated["file_server_resource"],
                                                                           undated["lab_name"]),
                           corpus.read(original))
    legacy_replica.frontend.today = max(obj.date for obj in objects).date()
    legacy_replica.storage.fail_next("/" + path, 503, count=None)
    first = kcing(["feed_es", "--how-many", str(len(objects) + 1)], env, tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    [row] = [row for row in ledger_rows(tmp_path / "kcing.db") if row["upstream_id"] == "e" * 24]
    assert (row["state"], row["object_date"]) == ("failed", None), row
    legacy_replica.storage.clear_faults()
    again = kcing(["feed_es", "--days", "2"], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "retried 1 earlier failure\n" in again.stdout, again.stdout
    assert ledger_states(tmp_path / "kcing.db")[("lava", "e" * 24)] == "delivered"
