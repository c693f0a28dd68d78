"""`kcing feed_es --source api` end to end: the real program against the KernelCI API replica
and the Logstash emulators, with the ledger's watermark carried from one run to the next."""
from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import sqlite3
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Optional, Tuple
from urllib.parse import urlsplit

import pytest

from kcing.documents import documents_for
from kcing.records import NODE_KINDS
from tests.fakes.api_corpus import parse_api_time
from tests.fakes.api_data import (MAESTRO, REAL_JOB, _Tree, checkout_tree, object_id, real_files_present, real_nodes,
                                  revision)
from tests.fakes.api_replica import ApiReplica
from tests.fakes.elastic_server import ElasticsearchEmulator
from tests.fakes.logstash_emulator import LogstashEmulator
from tests.fakes.serving import refusing_port
from tests.feedrun import (DEEPER_THAN_DECODERS_GO, REPO, api_feed_environ, kcing, ledger_rows, ledger_states,
                           stored_keys)

# The synthesized trees are recent, so a first run's default window (KCI_DAYS) would see them;
# the real payloads are from 2024, so the tests widen it to reach those too.
BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
WIDE = "3650"
# With KCI_API_PAGE_SIZE=3, where a pass asks for its second page: each page after the first starts
# one place early, at the node the page before ended with (pages at offsets 0, 2, 4, ...).
SECOND_PAGE = 2


@pytest.fixture
def api_replica():
    replica = ApiReplica()
    replica.start()
    if real_files_present():
        real_nodes(replica.corpus, replica.files_url)
    replica.tree = checkout_tree(replica.corpus, replica.files_url, BASE)
    yield replica
    replica.stop()
    assert not replica.errors


@pytest.fixture
def db(tmp_path) -> Path:
    return tmp_path / "kcing.db"


@pytest.fixture
def env(api_replica, logstash, db):
    return api_feed_environ(api_replica, logstash, db, KCI_DAYS=WIDE)


def nid(node: dict) -> str:
    """A node's id: `id`, or `_id` as the API named it in the real nodes from 2023."""
    return node["id"] if "id" in node else node["_id"]


def listed_nodes(replica: ApiReplica, since: Optional[datetime] = None) -> list:
    return [node for node in replica.corpus.nodes() if node.get("kind") in NODE_KINDS
            and (since is None or parse_api_time(node["updated"]) >= since)]


def extract(node: Optional[dict]) -> Optional[dict]:
    """What an envelope carries of a related node."""
    if node is None:
        return None
    data = {name: node["data"][name] for name in ("kernel_revision", "job_id", "device", "platform", "runtime",
                                                  "error_code", "error_msg") if node["data"].get(name) is not None}
    if "kernel_revision" in data:
        data["kernel_revision"] = {name: data["kernel_revision"][name] for name in ("tree", "url", "branch", "commit",
                                                                                    "describe")}
    return dict({name: node.get(name) for name in ("id", "kind", "name", "path", "group", "parent", "created",
                                                     "result", "state")}, data=data)


def job_of(replica: ApiReplica, node: dict) -> Optional[dict]:
    """The job at the root of `node`'s group, found by walking up the corpus."""
    if node.get("group") not in node.get("path", [])[:-1]:
        return None
    current = node
    while current.get("parent"):
        current = replica.corpus.get(current["parent"])
        if current is None:
            return None
        if current["name"] == node["group"] and current["group"] not in current["path"][:-1]:
            return current
    return None


def related(replica: ApiReplica, node: dict) -> dict:
    """The related nodes the source adds to `node`'s envelope."""
    if node["kind"] in ("job", "test", "node"):
        job = job_of(replica, node)
        return {"job_node": extract(job)} if job else {}
    if node["kind"] != "regression":
        return {}
    fail, passed = (replica.corpus.get(node["data"][name]) for name in ("fail_node", "pass_node"))
    wrapped = {"viewer_urls": {name: "%s/viewer?node_id=%s" % (replica.api_url, node["data"][name])
                               for name in ("fail_node", "pass_node")}}
    if fail is not None:
        wrapped["fail_node"] = extract(fail)
        if job_of(replica, fail):
            wrapped["fail_job_node"] = extract(job_of(replica, fail))
    if passed is not None:
        wrapped["pass_node"] = extract(passed)
    return wrapped


def envelope(replica: ApiReplica, node: dict, with_logs: bool = False) -> bytes:
    """What the source should hand the documents layer for `node`, built here independently."""
    wrapped = {"node": node, "viewer_url": "%s/viewer?node_id=%s" % (replica.api_url, nid(node))}
    wrapped.update(related(replica, node))
    artifact = {"job": "callback_data", "kbuild": "build_log"}.get(node["kind"])
    url = (node.get("artifacts") or {}).get(artifact) if with_logs else None
    if url:
        content = replica.corpus.read(urlsplit(url).path[len("/files/"):])
        content = gzip.decompress(content) if content[:2] == b"\x1f\x8b" else content
        wrapped[artifact] = content.decode("utf-8", "replace")
        if artifact == "build_log":
            wrapped["build_log_bytes"] = len(content)
    return json.dumps(wrapped).encode()


def expected_documents(replica: ApiReplica, with_logs: bool = False) -> Dict[Tuple[str, str], dict]:
    expected = {}
    for node in listed_nodes(replica):
        for document in documents_for(node["kind"], envelope(replica, node, with_logs)):
            expected[(document.index, document.doc_id)] = dict(document.body)
    return expected


def watermark(db: Path) -> Optional[datetime]:
    with sqlite3.connect(str(db)) as conn:
        row = conn.execute("SELECT position FROM watermark WHERE source = 'api'").fetchone()
    return datetime.fromisoformat(row[0]).replace(tzinfo=timezone.utc) if row else None


def newest_updated(replica: ApiReplica) -> datetime:
    return max(parse_api_time(node["updated"]) for node in listed_nodes(replica))


def document_of(logstash, node_id: str) -> Tuple[Tuple[str, str], dict]:
    (found,) = [(key, body) for key, body in logstash.store.items()
                if body["kernelci_api"]["node_id"] == node_id and key[0].split("-")[0] != "log"]
    return found


# A first run, then an incremental one ----------------------------------------------------------

def test_a_first_run_delivers_every_node_and_sets_the_watermark(env, tmp_path, db, api_replica, logstash):
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = expected_documents(api_replica)
    assert stored_keys(logstash) == set(expected)
    for key, body in expected.items():
        assert {name: logstash.store[key].get(name) for name in body} == body
    nodes = listed_nodes(api_replica)
    states = ledger_states(db)
    assert len(states) == len(nodes) and set(states.values()) == {"delivered"}
    assert "delivered %d" % len(nodes) in result.stdout
    assert watermark(db) == newest_updated(api_replica)
    kinds = [request.params("kind")[0] for request in api_replica.listing_requests()]
    assert kinds == sorted(set(kinds), key=kinds.index) == list(NODE_KINDS)  # parents first, one pass each
    for request in api_replica.listing_requests():
        (since,) = request.params("updated__gte")
        assert datetime.fromisoformat(since).tzinfo is None  # naive UTC, as the API stores times


def test_a_first_run_that_delivers_but_sets_no_watermark_does_not_say_nothing_was_delivered(env, tmp_path, db):
    """--how-many lists part of each kind, so the watermark stays unset: the log said "kept at its
    start (nothing delivered yet)" after the run had delivered its nodes."""
    result = kcing(["feed_es", "--how-many", "2"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "delivered 0," not in result.stdout and watermark(db) is None
    assert "nothing delivered yet" not in result.stderr, result.stderr
    assert "watermark of the api source not set yet: the next run lists as a first run does" in result.stderr


def test_nodes_written_with_output_are_still_sent_to_logstash(env, tmp_path, db, api_replica, logstash):
    # The listing leaves out the node versions the ledger holds as delivered: delivered to this
    # run's destination, not to an NDJSON directory an earlier run wrote.
    offline = kcing(["feed_es", "--output", str(tmp_path / "out")], env, tmp_path)
    assert offline.returncode == 0, offline.stderr
    assert not logstash.store
    posted = kcing(["feed_es"], env, tmp_path)
    assert posted.returncode == 0, posted.stderr
    assert stored_keys(logstash) == set(expected_documents(api_replica))
    assert "delivered %d" % len(listed_nodes(api_replica)) in posted.stdout


def test_output_files_of_the_api_are_named_after_the_node_kinds_as_the_readme_says(env, tmp_path, api_replica):
    """The README said an `--output` directory holds `<route>.ndjson` (`lava.ndjson`, ...), which
    is what legacy files and samples make: the KernelCI API's files are named after the kind of
    node whose documents they hold, and a user replaying `lava*.ndjson` found none."""
    out = tmp_path / "out"
    result = kcing(["feed_es", "--output", str(out)], env, tmp_path)
    assert result.returncode == 0, result.stderr
    written = {path.name for path in out.glob("*.ndjson")}
    assert {"kbuild.ndjson", "job.ndjson", "test.ndjson", "regression.ndjson"} <= written
    assert written <= {"%s.ndjson" % kind for kind in NODE_KINDS}
    readme = (REPO / "README.md").read_text()
    assert "`kbuild.ndjson`, `job.ndjson`, `test.ndjson`, `node.ndjson`, `regression.ndjson`" in readme


def test_documents_reach_the_input_of_their_kind(env, tmp_path, logstash):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    for route, kinds in {"build": {"build"}, "lava": {"boot", "test"}, "boot": set(),
                         "regression": {"regression"}}.items():
        received = {event.metadata["index"].split("-")[0] for event in logstash.emulators[route].events_received}
        assert received == kinds, route
    assert not any(emulator.unrouted for emulator in logstash.emulators.values())


def test_kunit_cases_of_the_generic_kind_node_are_delivered_as_tests_and_process_nodes_said_unlisted(
        env, tmp_path, db, api_replica, logstash):
    # Older data gives KUnit cases (and checkouts) the generic kind `node` (upstream.md §2.5):
    # their results are what a dashboard of test results shows. A root of that kind was a
    # checkout: recorded, no document. `process` nodes are not listed, and the debug log says so.
    kunit = api_replica.tree["kunit"]
    case = dict(api_replica.tree["kunit-case-0"], id="63c549319fb3b62c7626e800", kind="node", name="kunit-old-case",
                result="fail", path=kunit["path"] + ["kunit-old-case"])
    api_replica.corpus.add(case)
    api_replica.corpus.add(dict(api_replica.tree["checkout"], id="63c549319fb3b62c7626e801", kind="node"))
    api_replica.corpus.add(dict(api_replica.tree["checkout"], id="63c549319fb3b62c7626e802", kind="process",
                                name="tarball", data={"free": "form"}))
    result = kcing(["feed_es", "--debug"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    _, body = document_of(logstash, case["id"])
    assert (body["name"], body["result"], body["suite"], body["kernelci_api"]["kind"]) == (
        "kunit-old-case", "fail", "kunit-x86_64", "node")
    assert body["kernelci_api"]["job_node_id"] == kunit["id"]
    assert stored_keys(logstash) == set(expected_documents(api_replica))
    kinds = [request.params("kind")[0] for request in api_replica.listing_requests()]
    assert "node" in kinds and "process" not in kinds
    states = ledger_states(db)
    assert {kind for kind, _ in states} == set(NODE_KINDS) and set(states.values()) == {"delivered"}
    assert "process nodes are not listed" in result.stderr


def test_a_node_holding_an_escaped_lone_surrogate_is_delivered_with_a_replacement_character(
        env, tmp_path, db, api_replica, logstash):
    """JSON may escape half of a character ("\\udc80", what Python writes for a byte that is not
    UTF-8): such a node was refused whole ("could not be fetched: UnicodeEncodeError"), even for
    a key no document reads. It is read as the legacy JSON files are: U+FFFD in its place."""
    if not (MAESTRO / REAL_JOB).is_file():
        pytest.skip("real upstream file %s is absent" % REAL_JOB)
    job = json.loads((MAESTRO / REAL_JOB).read_text())
    job.update(id=object_id("lone-surrogate-job"), artifacts=None)
    job["data"]["platform"] = "sc7180-\udc80-limozeen"
    job["data"]["unread"] = {"k\udc80": "v\ud800"}
    api_replica.corpus.add(job)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    _, body = document_of(logstash, job["id"])
    assert (body["board"], body["device_type"], body["kernelci_api"]["platform"]) == ("sc7180-\ufffd-limozeen",) * 3
    assert set(ledger_states(db).values()) == {"delivered"}


def test_a_lab_job_of_the_generic_kind_node_is_a_boot_made_from_the_node_alone_even_with_logs(
        env, tmp_path, api_replica, logstash):
    """As the README's table says: `--with-logs` fetches no callback for a `node` that is a lab
    job at the root of its group; its boot document is what the node alone says."""
    baseline = api_replica.tree["baseline"]
    old = api_replica.corpus.add(dict(baseline, id="63c549319fb3b62c7626e803", kind="node", name="baseline-old",
                                      group="baseline-old", path=baseline["path"][:-1] + ["baseline-old"]))
    result = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    (index, _), body = document_of(logstash, old["id"])
    assert index.startswith("boot-") and body["kernelci_api"]["kind"] == "node"
    assert (body["boot_result"], body["lava_job_id"], body["board_instance"]) == (
        "pass", 7700001, "meson-gxbb-p200-cbg-1")
    assert "job_status" not in body and body["boot_time"] is None
    callback = urlsplit(baseline["artifacts"]["callback_data"]).path
    assert [request.path for request in api_replica.file_requests()].count(callback) == 1  # the `job`'s only


def test_a_second_run_lists_from_the_watermark_and_sends_only_what_changed(env, tmp_path, db, api_replica,
                                                                          logstash):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    first_mark = watermark(db)
    running = api_replica.tree["running"]
    api_replica.corpus.update(running["id"], when=first_mark + timedelta(minutes=3), state="done", result="pass")
    later = checkout_tree(api_replica.corpus, api_replica.files_url, first_mark + timedelta(minutes=5),
                          seed="tree-2", describe="v6.12-rc4")
    api_replica.requests.clear()
    posts_before = sum(len(emulator.requests) for emulator in logstash.emulators.values())

    second = kcing(["feed_es"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    window = {request.params("updated__gte")[0] for request in api_replica.listing_requests()}
    assert window == {(first_mark - timedelta(minutes=10)).replace(tzinfo=None).isoformat(timespec="microseconds")}
    listed = listed_nodes(api_replica, since=first_mark - timedelta(minutes=10))
    assert "listed %d, skipped %d" % (len(listed), len(listed) - len(later) - 1) in second.stdout
    assert "delivered %d" % (len(later) + 1) in second.stdout
    assert stored_keys(logstash) == set(expected_documents(api_replica))
    assert watermark(db) == newest_updated(api_replica) > first_mark
    assert sum(len(emulator.requests) for emulator in logstash.emulators.values()) > posts_before

    third = kcing(["feed_es"], env, tmp_path)
    assert third.returncode == 0 and "delivered 0" in third.stdout


def test_a_version_rejected_for_its_unreadable_time_does_not_hold_the_watermark(env, tmp_path, db, api_replica):
    """Its time says nothing of where it stands, but it is settled: it is never needed again. Held
    for it, the watermark never moved, and every run listed the whole crawl window again."""
    login = api_replica.tree["login"]
    newest = newest_updated(api_replica)
    undated = api_replica.corpus.add(dict(login, id=object_id("undated"), name="login-undated",
                                          updated="9999-12-31T23:59:59-14:00"))

    first = kcing(["feed_es"], env, tmp_path)

    assert first.returncode == 1, first.stdout + first.stderr
    rows = {row["upstream_id"].split(".")[0]: row["state"] for row in ledger_rows(db)}
    assert rows.pop(undated["id"]) == "rejected" and set(rows.values()) == {"delivered"}
    assert watermark(db) == newest
    api_replica.requests.clear()
    second = kcing(["feed_es"], env, tmp_path)
    window = {request.params("updated__gte")[0] for request in api_replica.listing_requests()}
    assert window == {(newest - timedelta(minutes=10)).replace(tzinfo=None).isoformat(timespec="microseconds")}
    assert "delivered 0" in second.stdout


def test_listed_nodes_without_a_valid_id_are_each_rejected_and_kept_with_its_own_reason(env, tmp_path, db,
                                                                                      api_replica):
    """docs/api-source.md: rejections are counted, reported and kept in the ledger with their
    reasons. Every node whose id was unusable was kept as one `invalid-item` row of its kind: the
    run said `rejected 2`, `kcing status` one, with the last node's reason alone."""
    login = api_replica.tree["login"]
    for number, name in enumerate(("login-alpha", "login-beta")):
        api_replica.corpus.add(dict(login, id="not-an-object-id-%d" % number, name=name))

    result = kcing(["feed_es"], env, tmp_path)

    assert result.returncode == 1 and "rejected 2," in result.stdout, result.stdout + result.stderr
    reasons = sorted(row["last_error"] for row in ledger_rows(db) if row["state"] == "rejected")
    assert reasons == ["listed node has no valid id: 'not-an-object-id-%d' (named 'login-%s')" % (number, name)
                       for number, name in enumerate(("alpha", "beta"))]
    status = kcing(["status"], env, tmp_path)
    assert re.search(r"api +test +\d+ +0 +2 ", status.stdout), status.stdout


def test_times_at_hour_24_are_the_next_midnight_in_updated_as_in_created(env, tmp_path, db, api_replica, logstash):
    """ISO 8601's end of a day, "T24:00:00": a `created` so written dated the node the next day,
    but an `updated` so written made the node unusable, rejected. Both are the next midnight
    now, and the node is recorded under the day of the index it went to."""
    login = api_replica.tree["login"]
    ended = api_replica.corpus.add(dict(login, id=object_id("ended"), name="login-ended",
                                        created="2024-10-16T24:00:00.000000", updated="2024-10-16T24:00:00.000000"))

    result = kcing(["feed_es"], env, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    [row] = [row for row in ledger_rows(db) if row["upstream_id"].startswith(ended["id"])]
    assert (row["upstream_id"], row["state"]) == (ended["id"] + ".20241017T000000.000000", "delivered")
    assert row["object_date"].startswith("2024-10-17 00:00:00")
    (index, _), body = document_of(logstash, ended["id"])
    assert index.endswith("-2024.10.17") and body["@timestamp"] == "2024-10-17T00:00:00.000Z"


def test_a_node_that_changed_is_delivered_again_under_the_same_id(env, tmp_path, db, api_replica, logstash):
    running = api_replica.tree["running"]
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    key, before = document_of(logstash, running["id"])
    assert before["kernelci_api"]["state"] == "running" and "result" not in before

    api_replica.corpus.update(running["id"], when=watermark(db) + timedelta(minutes=1), state="done",
                              result="fail")
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    again, after = document_of(logstash, running["id"])
    assert again == key and logstash.index_store.writes[key] == 2
    assert after["kernelci_api"]["state"] == "done" and after["result"] == "fail"
    versions = [row for row in ledger_rows(db) if row["upstream_id"].startswith(running["id"])]
    assert len(versions) == 2 and {row["state"] for row in versions} == {"delivered"}
    assert len(stored_keys(logstash)) == len(expected_documents(api_replica))


@pytest.mark.parametrize("content_type, byte_order_mark", [("text/plain", False), ("", True),
                                                            ("application/json; charset=utf-8", True)])
def test_pages_labelled_otherwise_or_starting_with_a_byte_order_mark_are_read_as_the_utf8_json_they_are(
        env, tmp_path, api_replica, logstash, content_type, byte_order_mark):
    """JSON is UTF-8 whatever its label says (RFC 8259 §8.1): a page labelled `text/plain` was
    read as ISO-8859-1 (`büro` stored as `bÃ¼ro`), and one starting with a byte order mark, which
    a JSON reader may ignore, stopped the run as "a malformed page"."""
    running = api_replica.tree["running"]
    api_replica.corpus.update(running["id"], name="büro-测试")
    api_replica.page_ascii = False
    api_replica.page_content_type = content_type
    api_replica.page_byte_order_mark = byte_order_mark
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert document_of(logstash, running["id"])[1]["kernelci_api"]["name"] == "büro-测试"
    assert stored_keys(logstash) == set(expected_documents(api_replica))


def _running_lava_job(api_replica):
    """A LAVA job below the arm64 kbuild, listed `running`: no result, no device yet; and the
    builder of its tree."""
    kbuild = api_replica.tree["kbuild-arm64"]
    builder = _Tree(api_replica.corpus, api_replica.files_url, BASE, "tree-1", kbuild["data"]["kernel_revision"])
    data = {key: kbuild["data"][key] for key in ("arch", "defconfig", "compiler", "kernel_type")}
    data.update(config_full="+lab-setup", platform="rk3399-rock-pi-4b", runtime="lava-collabora", job_id="7700009")
    return builder, builder.node("job", "baseline-arm64-rockchip", kbuild, 30, data, result=None, state="running",
                                 group="baseline-arm64-rockchip")


def test_tests_a_job_made_while_the_run_listed_carry_the_finished_jobs_device(env, tmp_path, api_replica, logstash):
    # A LAVA job is listed `running` (no device yet). Before this run lists the tests, LAVA's
    # callback finishes the job in place (its device set) and makes its tests, which the run
    # then lists: their documents name the job's device as those of tests made earlier do.
    builder, job = _running_lava_job(api_replica)
    made = []

    def callback(server, query, number):
        if dict(query).get("kind") == "test" and not made:
            done = server.corpus.update(job["id"], when=datetime.now(timezone.utc), state="done", result="pass",
                                        data={"device": "rk3399-rock-pi-4b-cbg-3"})
            setup = builder.child("job", "setup", done, 31)
            made.append(builder.child("test", "login", setup, 31.5))

    api_replica.on_page(callback)
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    _, login = document_of(logstash, made[0]["id"])
    assert (login["board_instance"], login["lava_job_id"]) == ("rk3399-rock-pi-4b-cbg-3", 7700009)
    assert login["kernelci_api"]["job_node_id"] == job["id"]


def test_tests_made_before_their_job_finished_wait_for_it_and_end_as_one_run_over_all_makes_them(
        env, tmp_path, db, api_replica, logstash):
    # Tests of a LAVA job that has no result yet (no device either). Delivered so, their documents
    # lacked the job's verdict and device for good: the job, once finished, was delivered again,
    # but its tests, unchanged, were not.
    builder, job = _running_lava_job(api_replica)
    setup = builder.child("job", "setup", job, 31)
    login = builder.child("test", "login", setup, 31.5)

    first = kcing(["feed_es"], env, tmp_path)

    assert first.returncode == 1, first.stdout + first.stderr
    assert "its job %s has not finished" % job["id"] in first.stdout
    states = {row["upstream_id"].split(".")[0]: row["state"] for row in ledger_rows(db)}
    assert (states[job["id"]], states[setup["id"]], states[login["id"]]) == ("delivered", "failed", "failed")
    api_replica.corpus.update(job["id"], when=datetime.now(timezone.utc), state="done", result="pass",
                              data={"device": "rk3399-rock-pi-4b-cbg-3"})

    second = kcing(["feed_es"], env, tmp_path)

    assert second.returncode == 0, second.stdout + second.stderr
    expected = expected_documents(api_replica)
    assert stored_keys(logstash) == set(expected)
    for key, body in expected.items():
        assert {name: logstash.store[key].get(name) for name in body} == body
    _, made = document_of(logstash, login["id"])
    assert (made["board_instance"], made["boot_result"]) == ("rk3399-rock-pi-4b-cbg-3", "pass")


def test_a_node_too_large_for_logstash_holds_the_watermark_and_is_sent_once_the_limit_is_raised(
        env, tmp_path, db, api_replica, logstash):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    mark = watermark(db)
    big = [node for node in listed_nodes(api_replica) if node["kind"] == "test"][:3]
    # Documents Logstash refuses as too large, even alone (413): a limit of the sink, which
    # says nothing about the nodes, so they must stay undelivered until it is raised.
    logstash.lava.max_content_length = 20_000
    for hours, node in enumerate(big, start=1):
        api_replica.corpus.update(node["id"], when=mark + timedelta(hours=hours), data={"error_msg": "x" * 50_000})
    later = next(node for node in listed_nodes(api_replica) if node["kind"] == "test" and node not in big)
    api_replica.corpus.update(later["id"], when=mark + timedelta(hours=5), result="fail")

    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 3, result.stderr
    held = [row for row in ledger_rows(db) if row["state"] == "too_large"]
    assert sorted(row["upstream_id"].split(".")[0] for row in held) == sorted(node["id"] for node in big)
    assert not [row for row in ledger_rows(db) if row["state"] == "rejected"]
    assert "too large for Logstash 3" in result.stdout and "max_content_length" in result.stdout
    assert all("max_content_length" in row["last_error"] for row in held)
    assert watermark(db) < mark + timedelta(hours=1)  # held: the next run lists them again
    status = json.loads(kcing(["status", "--json"], env, tmp_path).stdout)
    assert status["objects"]["api"]["test"]["too_large"] == 3
    assert status["runs"][0]["outcome"] == "error 3"

    again = kcing(["feed_es"], env, tmp_path)  # the limit is still there: held again, nothing lost
    assert again.returncode == 3, again.stderr
    assert len([row for row in ledger_rows(db) if row["state"] == "too_large"]) == 3

    logstash.lava.max_content_length = 10_000_000
    fixed = kcing(["feed_es"], env, tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert {row["state"] for row in ledger_rows(db)} == {"delivered"}
    for node in big:
        assert any(body.get("kernelci_api", {}).get("id") == node["id"] or node["id"] in json.dumps(body)
                   for body in logstash.store.values())
    assert watermark(db) == mark + timedelta(hours=5)


def test_a_watermark_held_past_the_retention_lists_from_the_first_day_drp_kept(env, tmp_path, db, api_replica,
                                                                                logstash):
    # A node too large for Logstash holds the watermark while days pass, and drp forgets the rows
    # of what changed after it: listing from that watermark would send those nodes again, into
    # indices drp deletes, every day. A run lists from the first day drp kept instead.
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    now = datetime.now(timezone.utc)
    tests = [node for node in listed_nodes(api_replica) if node["kind"] == "test"]
    big, later = tests[0], tests[1]
    logstash.lava.max_content_length = 20_000
    api_replica.corpus.update(big["id"], when=now - timedelta(days=8), data={"error_msg": "x" * 50_000})
    api_replica.corpus.update(later["id"], when=now - timedelta(days=6), result="fail")
    with sqlite3.connect(str(db)) as conn:  # the watermark as it stood eight days ago
        conn.execute("UPDATE watermark SET position = ?", [str((now - timedelta(days=9)).replace(tzinfo=None))])
    assert kcing(["feed_es"], env, tmp_path).returncode == 3
    with sqlite3.connect(str(db)) as conn:  # the two were first seen then too
        conn.execute("UPDATE upstream_file SET first_seen = ? WHERE upstream_id LIKE ? OR upstream_id LIKE ?",
                     [str((now - timedelta(days=8)).replace(tzinfo=None)), big["id"] + "%", later["id"] + "%"])
    rows = [row["upstream_id"] for row in ledger_rows(db)]
    kept = [row for row in rows if not row.startswith((big["id"], later["id"]))]
    with ElasticsearchEmulator() as es:
        retained = kcing(["drp"], dict(env, ES_HOST=es.url, DRP_DAYS="3", KCI_DAYS="2"), tmp_path)
    assert retained.returncode == 0, retained.stderr
    assert "forgot %d ledger rows" % (len(rows) - len(kept)) in retained.stdout
    assert [row["upstream_id"] for row in ledger_rows(db)] == kept
    sent = sum(len(emulator.events_received) for emulator in logstash.emulators.values())

    after = kcing(["feed_es"], dict(env, KCI_DAYS="2"), tmp_path)
    assert after.returncode == 0, after.stdout + after.stderr
    assert sum(len(emulator.events_received) for emulator in logstash.emulators.values()) == sent
    assert [row["upstream_id"] for row in ledger_rows(db)] == kept
    # From the start of that day, less the overlap every run lists again.
    first_kept = datetime.combine((now - timedelta(days=3)).date(), datetime.min.time()) - timedelta(minutes=10)
    assert "nodes updated since %s" % first_kept.strftime("%Y-%m-%dT%H:%M:%S") in after.stderr, after.stderr
    assert watermark(db) > now - timedelta(days=3)  # moved on: the node that held it is past the retention


def test_a_drp_run_whose_clock_was_ahead_does_not_move_the_listing_into_the_future(env, tmp_path, db, api_replica,
                                                                                   logstash):
    # drp on a host whose clock was half a year ahead, then set right, recorded a first day kept
    # in the future: every run listed the nodes updated since then, found none, and exited 0.
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    now = datetime.now(timezone.utc)
    changed = [node for node in listed_nodes(api_replica) if node["kind"] == "test"][0]
    api_replica.corpus.update(changed["id"], when=now - timedelta(minutes=1), result="fail")
    ahead = (now + timedelta(days=180)).replace(tzinfo=None)
    with sqlite3.connect(str(db)) as conn:
        conn.execute("INSERT INTO run (command, started, ended, outcome, counts) VALUES ('drp', ?, ?, 'ok', ?)",
                     [str(ahead), str(ahead), json.dumps({"days": 3, "first_kept": (ahead - timedelta(days=3)).date()
                                                          .isoformat()})])
    after = kcing(["feed_es"], env, tmp_path)
    assert after.returncode == 0, after.stdout + after.stderr
    assert "delivered 1," in after.stdout, after.stdout + after.stderr


def test_days_and_since_override_the_watermark_without_moving_it_over_a_gap(env, tmp_path, db, api_replica):
    assert kcing(["feed_es", "--since", "2024-01-01"], env, tmp_path).returncode == 0
    mark = watermark(db)
    api_replica.requests.clear()
    result = kcing(["feed_es", "--since", (mark + timedelta(days=1)).strftime("%d %b %Y %H:%M")], env, tmp_path)
    assert result.returncode == 0, result.stderr
    (since,) = {request.params("updated__gte")[0] for request in api_replica.listing_requests()}
    assert datetime.fromisoformat(since) > mark.replace(tzinfo=None)
    assert watermark(db) == mark  # the day between was not crawled: the watermark stays
    result = kcing(["feed_es", "--days", "1", "--since", "2024-01-01"], env, tmp_path)
    assert result.returncode == 2  # one or the other, said in one line
    assert result.stderr == "kcing feed_es: --days and --since do not go together (see kcing feed_es --help)\n"



def test_a_since_after_the_clock_is_said_to_find_nothing(env, tmp_path, db):
    """A mistyped year (2062 for 2026) listed nothing and said only "listed 0", run after run."""
    result = kcing(["feed_es", "--since", "2099-01-01 +05:30"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    [warning] = [line for line in result.stderr.splitlines() if " WARNING " in line]
    assert warning.endswith("--since 2098-12-31 18:30:00 UTC is after this host's clock (%s UTC): no node can have "
                            "been updated since (a mistyped date or offset?)" % warning.split("clock (")[1][:19])
    assert "listed 0" in result.stdout
    result = kcing(["feed_es", "--since", "2024-01-01"], env, tmp_path)
    assert result.returncode == 0 and " WARNING " not in result.stderr, result.stderr


def test_how_many_delivers_the_newest_nodes_of_each_kind_and_keeps_the_watermark(env, tmp_path, db, api_replica):
    result = kcing(["feed_es", "--how-many", "2"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    newest = {}  # the API's order is insertion order, oldest first: the newest are the last
    for node in listed_nodes(api_replica):
        newest.setdefault(node["kind"], []).append(nid(node))
    delivered = {(kind, upstream_id.split(".")[0]) for kind, upstream_id in ledger_states(db)}
    assert delivered == {(kind, node_id) for kind, ids in newest.items() for node_id in ids[-2:]}
    assert watermark(db) is None


def run_then_run_again(api_replica, on_page, env, tmp_path):
    """A feed run during which `on_page` (server, query, page number) changes upstream as pages
    are asked, then the next cron run over a quiet upstream: both runs' results."""
    api_replica.on_page(on_page)
    first = kcing(["feed_es"], env, tmp_path)
    api_replica.on_page(None)
    return first, kcing(["feed_es"], env, tmp_path)


@pytest.mark.parametrize("api_clock", [timedelta(0), timedelta(hours=-1), timedelta(hours=1)],
                         ids=["same-clock", "api-clock-behind", "api-clock-ahead"])
def test_a_change_made_after_its_kind_was_listed_is_delivered_by_the_next_run_whatever_the_apis_clock(
        env, tmp_path, db, api_replica, api_clock):
    # `updated` is the API's clock. A checkout changed while tests are listed (after the checkout
    # kind was read), then a test changed after it: the watermark must stay before the checkout's
    # change even when the API's clock is behind kcing's (no overlap to make up for it).
    api_replica.clock_offset = api_clock
    checkout, test = api_replica.tree["checkout"], api_replica.tree["login"]
    changed = []

    def change_while_tests_are_listed(server, query, number):
        if dict(query).get("kind") == "test" and not changed:
            now = server.now()
            changed.append(server.corpus.update(checkout["id"], when=now, result="pass"))
            server.corpus.update(test["id"], when=now + timedelta(milliseconds=1), result="fail")

    first, second = run_then_run_again(api_replica, change_while_tests_are_listed,
                                       dict(env, KCI_API_OVERLAP_MINUTES="0"), tmp_path)
    assert changed and first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    assert current_version(changed[0]) in delivered_versions(db)[checkout["id"]]


def test_pages_that_run_dry_short_of_the_total_fail_the_run_and_hold_the_watermark(env, tmp_path, db, api_replica):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    mark = watermark(db)
    later = checkout_tree(api_replica.corpus, api_replica.files_url, mark + timedelta(minutes=5), seed="tree-2",
                          describe="v6.12-rc4")
    api_replica.empty_from["test"] = SECOND_PAGE  # every test page from there on is empty, `total` counts them all
    env = dict(env, KCI_API_PAGE_SIZE="3")
    dry = kcing(["feed_es"], env, tmp_path)
    assert dry.returncode == 1, dry.stderr
    assert "test listing: the API answered an empty page at offset %d though it counts" % SECOND_PAGE in dry.stdout
    assert watermark(db) == mark  # the tests past the empty page were never listed

    api_replica.empty_from.clear()
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    delivered = delivered_versions(db)
    assert all(current_version(node) in delivered.get(node["id"], ()) for node in later.values())
    assert watermark(db) == newest_updated(api_replica)


def test_a_server_that_answers_the_first_page_for_every_offset_stops_the_run_and_holds_the_watermark(
        env, tmp_path, db, api_replica, logstash):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    mark = watermark(db)
    checkout_tree(api_replica.corpus, api_replica.files_url, mark + timedelta(minutes=5), seed="tree-2",
                  describe="v6.12-rc4")
    api_replica.ignores_offset = True  # a cache before the API keying pages without their offset
    env = dict(env, KCI_API_PAGE_SIZE="3")
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1
    assert result.stderr.endswith("(kind=job, offset %d) answered the page at offset 0 instead\n" % SECOND_PAGE), \
        result.stderr
    assert watermark(db) == mark

    api_replica.ignores_offset = False
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    assert stored_keys(logstash) == set(expected_documents(api_replica))
    assert watermark(db) == newest_updated(api_replica)


def test_an_api_that_refuses_the_page_size_says_which_setting_to_lower(env, tmp_path, db, api_replica):
    api_replica.limit_maximum = 100  # fastapi-pagination's own maximum, without the API's custom parameters
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.endswith("\nkcing feed_es: the KernelCI API at %s/nodes refused limit=500 (422: limit: Input "
                                  "should be less than or equal to 100): set KCI_API_PAGE_SIZE to what it allows\n"
                                  % api_replica.api_url)
    assert "Traceback" not in result.stderr
    assert kcing(["feed_es"], dict(env, KCI_API_PAGE_SIZE="100"), tmp_path).returncode == 0
    assert watermark(db) == newest_updated(api_replica)


def test_a_date_header_before_the_window_listed_is_not_taken_for_the_apis_clock(env, tmp_path, db, api_replica):
    # A proxy whose clock says 1971: nodes updated since the window's start exist, so it is wrong,
    # and a watermark bounded by it would have every next run list the API's whole history.
    api_replica.clock_offset = datetime(1971, 1, 1, tzinfo=timezone.utc) - datetime.now(timezone.utc)
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    assert watermark(db) == newest_updated(api_replica)


# A collection that moves while it is listed --------------------------------------------------

def delivered_versions(db: Path) -> Dict[str, set]:
    versions: Dict[str, set] = {}
    for row in ledger_rows(db):
        if row["state"] == "delivered":
            node_id, stamp = row["upstream_id"].split(".", 1)
            versions.setdefault(node_id, set()).add(stamp)
    return versions


def current_version(node: dict) -> str:
    return node["updated"].replace("-", "").replace(":", "")


def test_a_node_skipped_when_an_update_moves_another_past_the_end_is_delivered(env, tmp_path, db, api_replica,
                                                                               logstash):
    # An update that moves a node already listed to the end of the natural order brings every node
    # after it one place earlier: the first node of the next page comes onto the page already
    # read, and a page asked for at the offset skips it (upstream.md §2.4: offset paging can skip items).
    tests = [node for node in listed_nodes(api_replica) if node["kind"] == "test"]
    skipped = tests[3]
    moved = []

    def relocate(server, query, number):
        if dict(query).get("kind") == "test" and dict(query).get("offset") == str(SECOND_PAGE) and not moved:
            moved.append(server.corpus.update(tests[0]["id"], when=datetime.now(timezone.utc), relocate=True,
                                              result="fail"))

    first, second = run_then_run_again(api_replica, relocate, dict(env, KCI_API_PAGE_SIZE="3"), tmp_path)
    assert moved and first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr

    delivered = delivered_versions(db)
    for node in listed_nodes(api_replica):
        assert current_version(node) in delivered.get(nid(node), set()), node["name"]
    assert skipped["id"] in delivered
    assert stored_keys(logstash) == set(expected_documents(api_replica))
    _, document = document_of(logstash, tests[0]["id"])
    assert document["result"] == "fail"


@pytest.mark.parametrize("api_clock", [timedelta(0), timedelta(hours=-1)], ids=["same-clock", "api-clock-behind"])
def test_cron_runs_over_an_api_changing_between_pages_deliver_every_version_once(env, tmp_path, db, api_replica,
                                                                                logstash, api_clock):
    # Between pages, nodes change in place (MongoDB keeps their place) and whole new trees are
    # added, all stamped by the API's clock; no overlap makes up for anything. After a quiet run,
    # every node's current version is delivered, and no version was posted twice.
    api_replica.clock_offset = api_clock
    rnd = random.Random(7)
    changes = {"pages": 0, "trees": 0}

    def churn(server, query, number):
        changes["pages"] += 1
        if changes["pages"] > 12:  # a bounded burst per run
            return
        nodes = [node for node in server.corpus.nodes() if node["kind"] in ("checkout", "kbuild", "job", "test")]
        for _ in range(rnd.randint(0, 2)):
            server.corpus.update(rnd.choice(nodes)["id"], when=server.now(), result=rnd.choice(["pass", "fail"]))
        if rnd.random() < 0.2:
            changes["trees"] += 1
            checkout_tree(server.corpus, server.files_url, server.now(), seed="churn-%d" % changes["trees"],
                          describe="v6.13-rc%d" % changes["trees"])

    env = dict(env, KCI_API_PAGE_SIZE="4", KCI_API_OVERLAP_MINUTES="0")
    for _ in range(4):
        changes["pages"] = 0
        api_replica.on_page(churn)
        result = kcing(["feed_es"], env, tmp_path)
        assert result.returncode == 0, result.stderr
    api_replica.on_page(None)
    assert kcing(["feed_es"], env, tmp_path).returncode == 0

    delivered = delivered_versions(db)
    assert [nid(node) for node in listed_nodes(api_replica)
            if current_version(node) not in delivered.get(nid(node), ())] == []
    assert stored_keys(logstash) == set(expected_documents(api_replica))
    posted = Counter((event.metadata.get("index"), event.metadata.get("id"), event.fields["kernelci_api"]["updated"])
                     for emulator in logstash.emulators.values() for event in emulator.events_received
                     if "kernelci_api" in event.fields)
    assert changes["trees"] and max(posted.values()) == 1


def test_two_versions_of_a_node_listed_in_one_run_leave_the_newer_in_elasticsearch(env, tmp_path, db, api_replica,
                                                                                    logstash):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    mark = watermark(db)
    tests = [node for node in listed_nodes(api_replica) if node["kind"] == "test"]
    for minutes, node in enumerate(tests[1:7], start=1):  # the next run's window: tests 1 to 6
        api_replica.corpus.update(node["id"], when=mark + timedelta(minutes=minutes))
    repeated = tests[3]
    changed = []

    def shift(server, query, number):
        # Before the second page: a node before the offset enters the listing (updated), so the
        # last node of the first page comes again on the second, changed meanwhile.
        if dict(query).get("kind") == "test" and dict(query).get("offset") == str(SECOND_PAGE) and not changed:
            server.corpus.update(tests[0]["id"], when=mark + timedelta(minutes=20))
            changed.append(server.corpus.update(repeated["id"], when=mark + timedelta(minutes=21), result="fail"))

    api_replica.on_page(shift)
    # One document a batch; the post of the older version is answered 503, and retried after the
    # newer one went.
    logstash.lava.slow_next(0, count=2)
    logstash.lava.fail_next(503, retry_after=1)
    result = kcing(["feed_es"], dict(env, KCI_API_PAGE_SIZE="3", LS_PIPELINE_BATCH_SIZE="1"), tmp_path)
    assert changed and result.returncode == 0, result.stderr
    assert len(delivered_versions(db)[repeated["id"]]) == 3  # the first run's, and both of this one
    api_replica.on_page(None)
    assert kcing(["feed_es"], env, tmp_path).returncode == 0

    _, document = document_of(logstash, repeated["id"])
    assert document["result"] == "fail"
    assert document["kernelci_api"]["updated"].startswith(changed[0]["updated"][:19])
    assert stored_keys(logstash) == set(expected_documents(api_replica))


def test_an_older_version_indexed_after_the_newer_one_does_not_replace_it(env, tmp_path, db, api_replica, logstash):
    """Two Logstash instances behind one route, one of them backlogged: what it acknowledged, a
    test node's first version, reaches Elasticsearch after the node's next version, which the
    other instance took later. The documents carry their node's version and the pipeline writes
    them with it (external_gte): the older is refused, the newer stays."""
    backlogged = LogstashEmulator(store=logstash.index_store, name="backlogged-lava")
    with backlogged:
        backlogged.hold_queue()
        first = kcing(["feed_es"], dict(env, ES_LAVA=backlogged.url), tmp_path)
        assert first.returncode == 0, first.stderr
        node = next(node for node in listed_nodes(api_replica) if node["kind"] == "test")
        newer = api_replica.corpus.update(nid(node), when=newest_updated(api_replica) + timedelta(minutes=1),
                                          result="fail" if node.get("result") != "fail" else "pass")
        second = kcing(["feed_es"], env, tmp_path)
        assert second.returncode == 0, second.stderr
        backlogged.release_queue()
    key, document = document_of(logstash, nid(node))
    assert document["result"] == newer["result"]
    assert document["kernelci_api"]["updated"].startswith(newer["updated"][:19])
    (refused,) = [conflict for conflict in logstash.index_store.conflicts if conflict.key == key]
    assert refused.refused < refused.stored
    assert stored_keys(logstash) == set(expected_documents(api_replica))


def test_the_batches_of_one_node_version_go_out_side_by_side(tmp_path, logstash):
    # Only the newer of two versions of a node waits for the older's post: a job's own many
    # documents (its log lines) keep the posts in flight that ES_PARALLEL_POSTS allows.
    with ApiReplica() as replica:
        builder = _Tree(replica.corpus, replica.files_url, BASE, "one-job", revision("mainline", "master", "v6.12"))
        builder.checkout = builder.node("checkout", "checkout", None, 0, result=None)
        kbuild = builder.kbuild("arm64", "gcc-12", 1)
        builder.lab_job("baseline-arm64", kbuild, 10, "meson-gxbb-p200", 7700009, log_lines=40)
        logstash.lava.slow_next(0.3, count=None)
        env = api_feed_environ(replica, logstash, tmp_path / "kcing.db", LS_PIPELINE_BATCH_SIZE="5",
                               ES_PARALLEL_POSTS="2")
        result = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(logstash.lava.requests) >= 4
    assert logstash.lava.peak_inflight == 2


@pytest.mark.parametrize("echo_asked_limit", [False, True], ids=["limit-it-used", "limit-asked"])
def test_a_server_that_caps_the_page_size_is_listed_whole_whatever_limit_it_answers(env, tmp_path, db, api_replica,
                                                                                     logstash, echo_asked_limit):
    api_replica.max_limit = 4
    api_replica.echo_asked_limit = echo_asked_limit
    result = kcing(["feed_es"], dict(env, KCI_API_PAGE_SIZE="10"), tmp_path)
    assert result.returncode == 0, result.stderr
    delivered = delivered_versions(db)
    assert all(current_version(node) in delivered.get(nid(node), set()) for node in listed_nodes(api_replica))
    assert stored_keys(logstash) == set(expected_documents(api_replica))
    assert watermark(db) == newest_updated(api_replica)


def test_a_run_that_waits_still_logs_its_progress_every_interval(env, tmp_path, api_replica, logstash):
    # From cron (stderr not a terminal) a `progress:` line comes every KCING_PROGRESS_EVERY
    # seconds, also while the run only waits: here for the pauses ES_MAX_DOCS_PER_SECOND sets
    # between batches.
    documents = len(expected_documents(api_replica))
    started = time.monotonic()
    result = kcing(["feed_es"], dict(env, ES_MAX_DOCS_PER_SECOND=str(documents / 4.5), LS_PIPELINE_BATCH_SIZE="4",
                                     KCING_PROGRESS_EVERY="1"), tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed > 3.5
    lines = [line for line in result.stderr.splitlines() if " progress: listed " in line]
    assert 2 <= len(lines) <= elapsed // 1, result.stderr


def test_a_dry_run_logs_its_progress_every_kcing_progress_every_too(env, tmp_path, api_replica):
    """A dry run logged a `progress:` line every 10 s whatever KCING_PROGRESS_EVERY said. The first
    page is answered once the log file has one, or after 8 s: before the default's 10."""
    trail = tmp_path / "dry.log"

    def first_page_held(replica, query, number):
        if number == 1:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline and not (trail.exists() and " progress: " in trail.read_text()):
                time.sleep(0.05)

    api_replica.on_page(first_page_held)
    result = kcing(["feed_es", "--dry-run", "-l", str(trail)], dict(env, KCING_PROGRESS_EVERY="1"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert " INFO kcing.progress: progress: listed 0, " in result.stderr, result.stderr


# Errors ----------------------------------------------------------------------------------------

def test_a_token_is_sent_to_the_api_only_and_refusals_are_clear(env, tmp_path, db, api_replica, logstash):
    api_replica.token = "s3cret-token-value"
    missing = kcing(["feed_es"], env, tmp_path)
    assert missing.returncode == 2
    assert "asks for a token" in missing.stderr and "KCI_API_TOKEN" in missing.stderr
    assert "Traceback" not in missing.stderr

    log = tmp_path / "feed.log"
    wrong = kcing(["feed_es", "-d", "-l", str(log)], dict(env, KCI_API_TOKEN="wrong-token-value"), tmp_path)
    assert wrong.returncode == 2 and "refused KCI_API_TOKEN (401" in wrong.stderr
    for text in (wrong.stdout, wrong.stderr, log.read_text()):
        assert "wrong-token-value" not in text
    assert "delivered" not in set(ledger_states(db).values()) and watermark(db) is None

    right = kcing(["feed_es", "--with-logs"], dict(env, KCI_API_TOKEN="s3cret-token-value"), tmp_path)
    assert right.returncode == 0, right.stderr
    api_calls = [request for request in api_replica.requests if not request.path.startswith("/files/")]
    assert all(request.headers.get("authorization") == "Bearer s3cret-token-value" for request in api_calls
               if request.status == 200)
    assert api_replica.file_requests() and not any("authorization" in request.headers
                                                   for request in api_replica.file_requests())


def test_a_forbidden_answer_names_the_token(env, tmp_path, api_replica):
    api_replica.forbid = True
    result = kcing(["feed_es"], dict(env, KCI_API_TOKEN="some-token"), tmp_path)
    assert result.returncode == 2 and "(403: Forbidden)" in result.stderr


def test_a_kci_api_url_naming_another_server_asks_whether_it_is_the_apis(env, tmp_path, api_replica):
    # KCI_API_URL set to the legacy frontend, or to the API's files: "GET .../nodes (kind=checkout,
    # offset 0) answered 404" was all a newcomer read, without the setting to check.
    result = kcing(["feed_es"], dict(env, KCI_API_URL=api_replica.files_url), tmp_path)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kcing feed_es: GET %s/nodes (kind=checkout, offset 0) answered 404" % api_replica.files_url)
    assert last.endswith(" (is KCI_API_URL the KernelCI API's base URL, as https://api.kernelci.org/latest?)"), last


def test_a_kci_api_url_whose_first_page_is_refused_400_asks_whether_it_is_the_apis(env, tmp_path, api_replica, es):
    """The API answers an unknown version prefix (`.../v1`) 400 `Unsupported API version: v1`, and
    Elasticsearch's port answers GET /nodes?kind=... 400 too: the run ended on "answered 400",
    without the setting to check, where a 404 names it."""
    versioned = api_replica.api_url.rsplit("/", 1)[0] + "/v1"
    for url, said in ((versioned, "400: Unsupported API version: v1"), (es.url, "400")):
        result = kcing(["feed_es"], dict(env, KCI_API_URL=url), tmp_path)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            "kcing feed_es: GET %s/nodes (kind=checkout, offset 0) answered %s (is KCI_API_URL the KernelCI API's "
            "base URL, as https://api.kernelci.org/latest?)" % (url, said))


def test_a_kci_api_url_that_does_not_answer_asks_whether_it_is_the_apis(env, tmp_path):
    """A KCI_API_URL mistyped (a port nothing listens on, a host that does not resolve) ended the
    run on "... failed 3 times (last: connection refused)", naming no setting."""
    with refusing_port() as port:
        url = "http://127.0.0.1:%d/latest" % port
        result = kcing(["feed_es"], dict(env, KCI_API_URL=url), tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "kcing feed_es: GET %s/nodes (kind=checkout, offset 0) failed 3 times (last: connection refused) (is "
        "KCI_API_URL the KernelCI API's base URL, as https://api.kernelci.org/latest?)" % url)


def test_429_and_503_pages_are_retried_honouring_retry_after(env, tmp_path, api_replica, logstash):
    api_replica.fail_next("/latest/nodes", 429, retry_after=1)
    api_replica.fail_next("/latest/nodes", 503, count=1)
    result = kcing(["feed_es", "-d"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "retry 1 of 2 in 1." in result.stderr
    assert [request.status for request in api_replica.listing_requests()][:3] == [429, 503, 200]
    assert stored_keys(logstash) == set(expected_documents(api_replica))


def test_a_page_failing_midway_keeps_what_was_delivered_and_the_watermark(env, tmp_path, db, api_replica, logstash):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    mark = watermark(db)
    busy = set()
    for number in range(40):  # more than one ledger lookup chunk (500 objects) before the bad page
        tree = checkout_tree(api_replica.corpus, api_replica.files_url, mark + timedelta(minutes=1 + number),
                             seed="busy-%d" % number)
        busy |= {node["id"] for node in tree.values()}
    env = dict(env, KCI_API_PAGE_SIZE="50", LS_PIPELINE_BATCH_SIZE="20")
    # This run's pages: 1 checkouts, 2-3 kbuilds, 4-8 jobs, 9-15 tests; fail after 571 objects.
    api_replica.malformed_page(len(api_replica.listing_requests()) + 14)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1
    assert "malformed page" in result.stderr and "Traceback" not in result.stderr
    delivered = {row["upstream_id"].split(".")[0] for row in ledger_rows(db) if row["state"] == "delivered"}
    assert 0 < len(delivered & busy) < len(busy)  # what was delivered before the bad page stays delivered
    assert watermark(db) == mark

    api_replica.clear_faults()
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert stored_keys(logstash) == set(expected_documents(api_replica))
    assert watermark(db) == newest_updated(api_replica)


def test_a_page_redirected_off_the_upstream_origins_stops_the_run_after_the_kinds_listed_before_it(
        env, tmp_path, db, api_replica, logstash):
    """A redirect elsewhere (an API moved, a maintenance host) refuses the page, not a node: the
    run ends as for a failing page, the checkouts listed before it delivered, the watermark kept."""
    from tests.fakes.rogue_http import RogueFront, redirect
    origin, path = api_replica.api_url.split("://")[1].split("/", 1)
    with RogueFront("http://" + origin) as front:
        front.on("GET", "kind=kbuild", redirect(302, "http://127.0.0.2:9/maintenance"), count=None)
        result = kcing(["feed_es"], dict(env, KCI_API_URL="%s/%s" % (front.url, path)), tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    delivered = {kind for (kind, _), state in ledger_states(db).items() if state == "delivered"}
    assert delivered == {"checkout"}
    last = result.stderr.splitlines()[-1]
    assert "(kind=kbuild, offset 0)" in last and "not an upstream origin" in last, last
    assert watermark(db) is None


def test_a_malformed_page_stops_the_run_before_the_kinds_after_it_and_keeps_the_watermark(env, tmp_path, db,
                                                                                         api_replica, logstash):
    """As the README says: the run stops (exit 1), the kinds after the malformed page are not
    listed, what was delivered stays delivered, and the watermark stays where it was."""
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    mark = watermark(db)
    later = checkout_tree(api_replica.corpus, api_replica.files_url, mark + timedelta(minutes=1), seed="later")
    api_replica.malformed_page(len(api_replica.listing_requests()) + 2)  # this run's kbuild page
    api_replica.requests.clear()
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1 and "malformed page" in result.stderr, result.stderr
    assert "KCI_API_URL" not in result.stderr  # the checkouts were listed from it: it is the API's
    assert [request.params("kind")[0] for request in api_replica.listing_requests()] == ["checkout", "kbuild"]
    delivered = {upstream_id.split(".")[0] for (_, upstream_id), state in ledger_states(db).items()
                 if state == "delivered"}
    assert later["checkout"]["id"] in delivered and later["kbuild-arm64"]["id"] not in delivered
    assert watermark(db) == mark


@pytest.mark.parametrize("odd", [DEEPER_THAN_DECODERS_GO, b"1" + b"0" * 5000],
                         ids=["nested deeper than a decoder goes", "an integer Python refuses"])
def test_a_rerun_stops_at_a_page_the_whole_decoding_refuses_as_at_a_malformed_page(env, tmp_path, db, api_replica,
                                                                                   odd):
    """A routine run reads its pages only as far as ids and times (sources/heads.py): a page that
    reading could take and the whole decoding refuses as no JSON is left to the whole decoding,
    as on a first run. A page nested deeper than msgspec goes stopped the run as an internal
    error (RecursionError); an integer of more digits than Python reads, in a field the heads
    do not read, let the page through as the last, empty one."""
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    mark = watermark(db)
    api_replica.malformed_page(len(api_replica.listing_requests()) + 1, b'{"items": [], "total": 0, "x": %s}' % odd)
    result = kcing(["feed_es"], env, tmp_path)
    assert result.returncode == 1 and "malformed page" in result.stderr, result.stderr
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert watermark(db) == mark


def test_a_failing_page_server_stops_the_run_with_exit_1(env, tmp_path, db, api_replica):
    api_replica.fail_next("/latest/nodes", 500, count=None)
    result = kcing(["feed_es"], dict(env, KCI_MAX_RETRIES="2"), tmp_path)
    assert result.returncode == 1 and "failed 2 times (last: HTTP 500)" in result.stderr
    assert watermark(db) is None


# Logs, samples, dry run ------------------------------------------------------------------------

def test_with_logs_adds_the_lava_log_and_build_log_figures(env, tmp_path, api_replica, logstash):
    result = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    expected = expected_documents(api_replica, with_logs=True)
    assert stored_keys(logstash) == set(expected)
    logs = [body for (index, _), body in logstash.store.items() if index.startswith("log-")]
    baseline = api_replica.tree["baseline"]
    assert [body for body in logs if body["kernelci_api"]["node_id"] == baseline["id"]]
    _, boot = document_of(logstash, baseline["id"])
    assert boot["boot_time"] == 10.41 and boot["job_status"] == "complete"
    _, build = document_of(logstash, api_replica.tree["kbuild-x86"]["id"])
    assert (build["errors"], build["warnings"], build["build_result"]) == (1, 1, "FAIL")
    gz = [request for request in api_replica.file_requests() if request.path.endswith(".gz")]
    assert gz and all(request.path.endswith("lava_callback.json.gz") for request in gz)


def test_a_build_log_s_size_is_the_file_s_even_with_bytes_that_are_not_utf8(env, tmp_path, api_replica, logstash):
    """GCC quotes source lines under its warnings, and a source file in Latin-1 puts bytes that
    are not UTF-8 in build.log: its size was counted in the text decoded, each such byte
    replaced by U+FFFD (three bytes), so `build_log_size` said more than the file holds."""
    kbuild = api_replica.tree["kbuild-x86"]
    log = (b"drivers/media/x.c:12:5: warning: unused variable 'r\xe9sum\xe9'\n"
           b"   12 |  int r\xe9sum\xe9; /* Fran\xe7ois */\n"
           b"arch/x86/y.c:3:4: error: undeclared\nmake: *** [Makefile:1234: vmlinux] Error 1\n")
    api_replica.corpus.add_file(urlsplit(kbuild["artifacts"]["build_log"]).path[len("/files/"):], log)
    result = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    _, build = document_of(logstash, kbuild["id"])
    assert (build["build_log_size"], build["warnings"], build["errors"]) == (len(log), 1, 1)
    assert stored_keys(logstash) == set(expected_documents(api_replica, with_logs=True))


def test_a_missing_log_leaves_a_note_not_a_failure(env, tmp_path, api_replica, logstash):
    baseline = api_replica.tree["baseline"]
    api_replica.corpus.remove_file(urlsplit(baseline["artifacts"]["callback_data"]).path[len("/files/"):])
    result = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    _, boot = document_of(logstash, baseline["id"])
    assert boot["kernelci_api"]["artifact_errors"] == ["callback_data: HTTP 404"]
    assert boot["boot_result"] == "pass" and "job_status" not in boot



def test_a_backfill_of_jobs_whose_logs_are_gone_names_a_few_in_its_log_not_each(tmp_path, logstash):
    """Signed storage URLs expire a day or two after a job: a `--since` backfill with
    `--with-logs` meets thousands of callbacks answering 404. The log (what cron mails under -q)
    named each; it names the first few of a reason, then says the rest go unnamed, while every
    document still says what it went without."""
    from kcing.sources.api import NAMED_UNUSABLE_ARTIFACTS

    with ApiReplica() as replica:
        builder = _Tree(replica.corpus, replica.files_url, BASE, "gone-logs", revision("mainline", "master", "v6.12"))
        builder.checkout = builder.node("checkout", "checkout", None, 0, result=None)
        kbuild = builder.kbuild("arm64", "gcc-12", 1)
        jobs = [builder.lab_job("baseline-arm64-%d" % n, kbuild, 10 + n, "meson-gxbb-p200", 7700100 + n)
                for n in range(NAMED_UNUSABLE_ARTIFACTS + 3)]
        for job in jobs:
            replica.corpus.remove_file(urlsplit(job["artifacts"]["callback_data"]).path[len("/files/"):])
        env = api_feed_environ(replica, logstash, tmp_path / "kcing.db")
        result = kcing(["feed_es", "--with-logs", "-q"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    named = [line for line in result.stderr.splitlines() if "callback_data not usable (HTTP 404)" in line]
    assert len(named) == NAMED_UNUSABLE_ARTIFACTS
    (rest,) = [line for line in result.stderr.splitlines() if "further job nodes" in line]
    assert "callback_data is not usable (HTTP 404) go unnamed" in rest and "artifact_errors" in rest
    for job in jobs:
        _, boot = document_of(logstash, job["id"])
        assert boot["kernelci_api"]["artifact_errors"] == ["callback_data: HTTP 404"]


def test_a_job_delivered_again_once_its_callback_is_gone_is_made_from_the_node_alone_and_keeps_its_log(
        env, tmp_path, api_replica, logstash):
    # docs/api-source.md: a job changed after it finished is delivered again; a callback whose
    # signed URL expired meanwhile leaves a boot document made from the node alone.
    baseline = api_replica.tree["baseline"]
    assert kcing(["feed_es", "--with-logs"], env, tmp_path).returncode == 0
    _, first = document_of(logstash, baseline["id"])
    logs = {key: body for key, body in logstash.store.items()
            if key[0].startswith("log-") and body["kernelci_api"]["node_id"] == baseline["id"]}
    api_replica.corpus.update(baseline["id"], when=datetime.now(timezone.utc), processed_by_kcidb_bridge=True)
    api_replica.corpus.remove_file(urlsplit(baseline["artifacts"]["callback_data"]).path[len("/files/"):])
    result = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert result.returncode == 0 and "delivered 1," in result.stdout, result.stdout + result.stderr
    _, again = document_of(logstash, baseline["id"])
    callback_only = {"job_status", "submit_time", "start_time", "end_time", "lava_job_name", "priority",
                     "plan_variant", "dtb_addr", "loadaddr", "initrd_addr", "dtb", "kernel_image", "initrd"}
    assert {"job_status", "lava_job_name"} <= set(first) and not callback_only & set(again)
    assert first["boot_time"] is not None and again["boot_time"] is None
    data = baseline["data"]
    assert (again["device_type"], again["board_instance"], again["lava_job_id"]) == (
        data["platform"], data["device"], int(data["job_id"]))
    assert (again["boot_result"], "boot_failure" in again, "error_type" in again, "error_msg" in again) == (
        "pass", False, False, False)
    assert again["kernelci_api"]["artifact_errors"] == ["callback_data: HTTP 404"]
    assert logs and {key: logstash.store[key] for key in logs} == logs  # the log stays as it was

def test_a_build_log_stored_gzip_compressed_is_sized_as_the_log_not_as_the_compressed_file(env, tmp_path, api_replica,
                                                                                          logstash):
    kbuild = api_replica.tree["kbuild-x86"]
    log = b"arch/x86/y.c:3:4: warning: unused variable 'x'\n" * 200 + b"make: *** [Makefile:1234: vmlinux] Error 1\n"
    compressed = gzip.compress(log)
    assert len(compressed) < len(log) // 10
    api_replica.corpus.add_file(urlsplit(kbuild["artifacts"]["build_log"]).path[len("/files/"):], compressed)
    result = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    _, build = document_of(logstash, kbuild["id"])
    assert (build["build_log_size"], build["warnings"]) == (len(log), 200)


def test_a_broken_log_its_storage_labels_gzip_leaves_a_note_and_the_watermark_moves(env, tmp_path, db, api_replica,
                                                                                    logstash):
    baseline = api_replica.tree["baseline"]
    path = urlsplit(baseline["artifacts"]["callback_data"]).path[len("/files/"):]
    api_replica.corpus.add_file(path, b"\x1f\x8b\x08\x00 cut by the uploader")
    api_replica.content_encoded.add(path)
    result = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    _, boot = document_of(logstash, baseline["id"])
    (note,) = boot["kernelci_api"]["artifact_errors"]
    assert note.startswith("callback_data: GET ") and "does not decode as its Content-Encoding gzip says" in note
    assert set(ledger_states(db).values()) == {"delivered"}
    assert watermark(db) == newest_updated(api_replica)


@pytest.mark.parametrize("page", [
    b"<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head><body>back soon</body></html>\n",
    b"\n  <!-- maintenance -->\n<HTML>\n<body>Sign in to continue</body></HTML>",
])
def test_a_web_page_answered_for_a_build_log_is_not_counted_as_the_log(env, tmp_path, db, api_replica, logstash, page):
    """A storage or proxy page served with 200 was read as the build log: 0 errors and the page's
    size, delivered for good. The node fails instead, and the next run delivers the real log."""
    kbuild = api_replica.tree["kbuild-x86"]
    path = urlsplit(kbuild["artifacts"]["build_log"]).path[len("/files/"):]
    real_log = api_replica.corpus.read(path)
    api_replica.corpus.add_file(path, page)
    first = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert first.returncode == 1, first.stderr
    assert "answered a web page with 200, not the file" in first.stdout + first.stderr
    row = next(row for row in ledger_rows(db) if row["upstream_id"].startswith(kbuild["id"]))
    assert row["state"] == "failed" and "web page" in row["last_error"]
    assert not [body for body in logstash.store.values() if body["kernelci_api"]["node_id"] == kbuild["id"]]
    api_replica.corpus.add_file(path, real_log)
    second = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert second.returncode == 0, second.stderr
    _, build = document_of(logstash, kbuild["id"])
    assert (build["errors"], build["warnings"]) == (1, 1)


def test_a_build_log_starting_with_many_comments_is_read_as_the_log_at_once(env, tmp_path, api_replica, logstash):
    """Whether an artifact is a web page was asked of a regular expression that tried every way
    of cutting a run of `<!---->` into comments: 40 of them (280 bytes) held the run for days,
    deaf to SIGTERM. A log that merely starts so is the log, found in a linear scan."""
    kbuild = api_replica.tree["kbuild-x86"]
    path = urlsplit(kbuild["artifacts"]["build_log"]).path[len("/files/"):]
    api_replica.corpus.add_file(path, b"<!---->" * 40 + b"\nfile.c:1:2: warning: unused\n")
    result = kcing(["feed_es", "--with-logs"], env, tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    _, build = document_of(logstash, kbuild["id"])
    assert build["warnings"] == 1


def test_a_build_log_starting_with_a_compiler_s_angle_bracket_is_the_log(env, tmp_path, api_replica, logstash):
    kbuild = api_replica.tree["kbuild-x86"]
    path = urlsplit(kbuild["artifacts"]["build_log"]).path[len("/files/"):]
    api_replica.corpus.add_file(path, b"<stdin>:1519:2: warning: #warning syscall clone3 not implemented [-Wcpp]\n")
    result = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    _, build = document_of(logstash, kbuild["id"])
    assert build["warnings"] == 1


def test_dry_run_lists_and_changes_nothing(env, tmp_path, db, api_replica, logstash):
    result = kcing(["feed_es", "--dry-run"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("would fetch") == len(listed_nodes(api_replica))
    assert "%s/node/" % api_replica.api_url in result.stdout
    assert not db.exists() and not logstash.store and not api_replica.file_requests()


def test_gen_samples_saves_nodes_that_a_samples_feed_replays(env, tmp_path, api_replica, logstash):
    samples = tmp_path / "saved"
    result = kcing(["gen_samples", "--with-logs"], dict(env, KCI_SAMPLES_DIR=str(samples)), tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((samples / "manifest.json").read_text())
    assert manifest["source"] == "api" and len(manifest["objects"]) == len(listed_nodes(api_replica))
    kinds = {entry["kind"] for entry in manifest["objects"]}
    assert kinds == {node["kind"] for node in listed_nodes(api_replica)}
    # Every kind when the real nodes are there (a plain `node` comes from them alone).
    assert kinds == set(NODE_KINDS) or not real_files_present()
    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples)], env, tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert stored_keys(logstash) == set(expected_documents(api_replica, with_logs=True))


def test_gen_samples_with_logs_saves_again_the_samples_saved_without_their_logs(env, tmp_path, api_replica, logstash):
    samples = tmp_path / "saved"
    saving = dict(env, KCI_SAMPLES_DIR=str(samples))
    assert kcing(["gen_samples"], saving, tmp_path).returncode == 0
    replay = ["feed_es", "--source", "samples", "--samples-dir", str(samples)]
    assert kcing(replay, env, tmp_path).returncode == 0  # without the logs
    saved_without = {entry["upstream_id"]: entry["sha256"]
                     for entry in json.loads((samples / "manifest.json").read_text())["objects"]}
    with_logs = kcing(["gen_samples", "--with-logs"], saving, tmp_path)
    assert with_logs.returncode == 0, with_logs.stderr
    logged = [node for node in listed_nodes(api_replica) if node["kind"] in ("job", "kbuild")]
    assert "%d saved, %d already present" % (len(logged), len(listed_nodes(api_replica)) - len(logged)) in with_logs.stdout
    entries = json.loads((samples / "manifest.json").read_text())["objects"]
    assert {entry["with_logs"] for entry in entries if entry["kind"] in ("job", "kbuild")} == {True}
    # A run without --with-logs keeps the files that have the logs.
    again = kcing(["gen_samples"], saving, tmp_path)
    assert "0 saved, %d already present" % len(listed_nodes(api_replica)) in again.stdout
    # The samples saved again with a log are not what Logstash got: they are delivered again,
    # the rest (those saved again as they were: no log to add) skipped.
    changed = [entry for entry in entries if entry["sha256"] != saved_without[entry["upstream_id"]]]
    assert changed and {entry["kind"] for entry in changed} <= {"job", "kbuild"}
    replayed = kcing(replay, env, tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert "skipped %d (already delivered), downloaded %d" % (len(entries) - len(changed), len(changed)) in replayed.stdout
    assert stored_keys(logstash) == set(expected_documents(api_replica, with_logs=True))


def test_a_samples_replay_of_two_versions_of_a_node_leaves_the_newer_in_elasticsearch(env, tmp_path, api_replica,
                                                                                       logstash):
    samples, manifest, older, newer, node_id, _, changed = _two_versions_saved(env, tmp_path, api_replica)
    # The directory keeps both versions; the replay here holds only them.
    manifest["objects"] = [older, newer]
    (samples / "manifest.json").write_text(json.dumps(manifest))
    # One document a batch, the newer posted a moment after the older, whose post is answered
    # 503 and retried after a second.
    logstash.lava.fail_next(503, retry_after=1)
    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples)],
                   dict(env, LS_PIPELINE_BATCH_SIZE="1", ES_LOAD_INTERVAL="0.3"), tmp_path)
    assert replay.returncode == 0, replay.stderr
    _, document = document_of(logstash, node_id)
    assert document["result"] == changed
    assert document["kernelci_api"]["updated"].startswith(_updated_now(api_replica, node_id)[:23])


def test_a_samples_replay_of_a_manifest_listing_a_node_s_newer_version_first_leaves_the_newer(env, tmp_path,
                                                                                              api_replica, logstash):
    # A manifest edited or merged by hand: replayed in its order, the older version went last,
    # and Elasticsearch kept it.
    samples, manifest, older, newer, node_id, _, changed = _two_versions_saved(env, tmp_path, api_replica)
    others = [entry for entry in manifest["objects"] if entry not in (older, newer)]
    manifest["objects"] = [newer, *others, older]  # the newer first, the older last
    (samples / "manifest.json").write_text(json.dumps(manifest))
    output = tmp_path / "out"
    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(output)],
                   env, tmp_path)
    assert replay.returncode == 0, replay.stderr
    lines = (output / "test.ndjson").read_text().splitlines()
    written = [json.loads(document) for document in lines[1::2]]
    last = [document for document in written if document["kernelci_api"]["node_id"] == node_id][-1]
    assert last["result"] == changed
    assert last["kernelci_api"]["updated"].startswith(_updated_now(api_replica, node_id)[:23])


def test_a_samples_replay_never_delivers_a_node_s_older_version_after_a_newer_one(env, tmp_path, api_replica,
                                                                                 logstash):
    # An older version added to a manifest after the newer was replayed (directories merged by
    # hand): delivered then, it replaced the newer in Elasticsearch.
    samples, manifest, older, newer, node_id, _, changed = _two_versions_saved(env, tmp_path, api_replica)
    manifest["objects"].remove(older)
    (samples / "manifest.json").write_text(json.dumps(manifest))
    replay = ["feed_es", "--source", "samples", "--samples-dir", str(samples)]
    assert kcing(replay, env, tmp_path).returncode == 0
    assert document_of(logstash, node_id)[1]["result"] == changed

    manifest["objects"].append(older)
    (samples / "manifest.json").write_text(json.dumps(manifest))
    again = kcing(replay, env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert ("test %s is older than version %s of its node, delivered already: skipped, so that Elasticsearch keeps "
            "the newer" % (older["upstream_id"], newer["upstream_id"])) in again.stderr
    assert document_of(logstash, node_id)[1]["result"] == changed


def _two_versions_saved(env, tmp_path, api_replica):
    """A samples directory holding a test node's version and, saved after upstream changed it,
    its newer: (samples directory, manifest, older entry, newer entry, the node's id, the older
    version's result, the newer's)."""
    samples = tmp_path / "saved"
    saving = dict(env, KCI_SAMPLES_DIR=str(samples))
    assert kcing(["gen_samples"], saving, tmp_path).returncode == 0
    test = next(node for node in listed_nodes(api_replica) if node["kind"] == "test")
    node_id, result = test["id"], test["result"]
    changed = api_replica.corpus.update(node_id, result="pass" if result == "fail" else "fail")
    assert kcing(["gen_samples"], saving, tmp_path).returncode == 0
    manifest = json.loads((samples / "manifest.json").read_text())
    older, newer = [entry for entry in manifest["objects"] if entry["upstream_id"].startswith(node_id + ".")]
    return samples, manifest, older, newer, node_id, result, changed["result"]


def _updated_now(api_replica, node_id: str) -> str:
    """The `updated` of the node's version the API serves now (the newer one saved)."""
    return next(node for node in listed_nodes(api_replica) if node.get("id") == node_id)["updated"]


def test_a_samples_replay_never_delivers_a_node_s_older_version_after_the_api_feed_delivered_a_newer(
        env, tmp_path, api_replica, logstash):
    # Samples saved before the feed delivered the node's newer version: replayed then, the older
    # replaced the newer in Elasticsearch.
    samples, manifest, older, newer, node_id, result, changed = _two_versions_saved(env, tmp_path, api_replica)
    manifest["objects"].remove(newer)
    (samples / "manifest.json").write_text(json.dumps(manifest))
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    assert document_of(logstash, node_id)[1]["result"] == changed

    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples)], env, tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert ("test %s is older than version %s of its node" % (older["upstream_id"], newer["upstream_id"])
            in replay.stderr)
    assert document_of(logstash, node_id)[1]["result"] == changed


def test_a_node_s_newer_version_that_failed_does_not_keep_its_older_from_being_replayed(
        env, tmp_path, api_replica, logstash):
    # Only a delivered version is in Elasticsearch: one that failed (its file corrupted) stands
    # in the way of no older version.
    samples, manifest, older, newer, node_id, result, changed = _two_versions_saved(env, tmp_path, api_replica)
    manifest["objects"].remove(older)
    (samples / "manifest.json").write_text(json.dumps(manifest))
    (samples / newer["path"]).write_bytes(b"{}")
    replay = ["feed_es", "--source", "samples", "--samples-dir", str(samples)]
    failed = kcing(replay, env, tmp_path)
    assert failed.returncode != 0 and "Traceback" not in failed.stderr, failed.stderr
    assert ledger_states(tmp_path / "kcing.db")[("test", newer["upstream_id"])] == "failed"

    manifest["objects"] = [older]
    (samples / "manifest.json").write_text(json.dumps(manifest))
    again = kcing(replay, env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "is older than version" not in again.stderr
    assert document_of(logstash, node_id)[1]["result"] == result


def test_a_node_s_newest_sample_changed_on_purpose_since_it_was_delivered_is_delivered_again(
        env, tmp_path, api_replica, logstash):
    # The same version, delivered already: not older than itself.
    samples, manifest, older, newer, node_id, result, changed = _two_versions_saved(env, tmp_path, api_replica)
    replay = ["feed_es", "--source", "samples", "--samples-dir", str(samples)]
    assert kcing(replay, env, tmp_path).returncode == 0
    envelope = json.loads((samples / newer["path"]).read_text())
    envelope["node"]["result"] = result  # put back by hand, its manifest entry recording it
    content = json.dumps(envelope).encode()
    (samples / newer["path"]).write_bytes(content)
    newer.update(sha256=hashlib.sha256(content).hexdigest(), size=len(content))
    (samples / "manifest.json").write_text(json.dumps(manifest))

    again = kcing(replay, env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "test %s changed since it was delivered" % newer["upstream_id"] in again.stderr
    assert "is older than version" not in again.stderr
    assert document_of(logstash, node_id)[1]["result"] == result


def test_a_samples_replay_skips_a_node_s_version_older_than_the_newest_delivered_not_only_than_the_oldest(
        env, tmp_path, api_replica, logstash):
    # Three versions: the first and the third delivered, the second added afterwards. Newer than
    # the first, it is still older than the third, which Elasticsearch must keep.
    samples = tmp_path / "saved"
    saving = dict(env, KCI_SAMPLES_DIR=str(samples))
    assert kcing(["gen_samples"], saving, tmp_path).returncode == 0
    test = next(node for node in listed_nodes(api_replica) if node["kind"] == "test")
    node_id, first = test["id"], test["result"]
    other = "pass" if first == "fail" else "fail"
    api_replica.corpus.update(node_id, result=other)
    assert kcing(["gen_samples"], saving, tmp_path).returncode == 0
    api_replica.corpus.update(node_id, result=first)
    assert kcing(["gen_samples"], saving, tmp_path).returncode == 0
    manifest = json.loads((samples / "manifest.json").read_text())
    oldest, middle, newest = [entry for entry in manifest["objects"] if entry["upstream_id"].startswith(node_id + ".")]
    assert oldest["upstream_id"] < middle["upstream_id"] < newest["upstream_id"]
    manifest["objects"].remove(middle)
    (samples / "manifest.json").write_text(json.dumps(manifest))
    replay = ["feed_es", "--source", "samples", "--samples-dir", str(samples)]
    assert kcing(replay, env, tmp_path).returncode == 0

    manifest["objects"].append(middle)
    (samples / "manifest.json").write_text(json.dumps(manifest))
    again = kcing(replay, env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert ("test %s is older than version %s of its node" % (middle["upstream_id"], newest["upstream_id"])
            in again.stderr)
    assert document_of(logstash, node_id)[1]["result"] == first


def test_status_shows_the_watermark(env, tmp_path, db):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    text = kcing(["status"], env, tmp_path)
    assert text.returncode == 0 and "watermarks" in text.stdout
    data = json.loads(kcing(["status", "--json"], env, tmp_path).stdout)
    # One watermark per destination: this run's Logstash inputs.
    (position,) = data["watermarks"]["api"].values()
    assert datetime.fromisoformat(position) == watermark(db)


def test_a_listing_page_that_fails_still_delivers_what_was_listed_before_it(env, tmp_path, db, api_replica,
                                                                            logstash):
    # The last listing page is malformed (a proxy cut it short): the nodes of the pages before it
    # are delivered and recorded, the run exits 1, and the watermark stays where it was.
    small = dict(env, KCI_API_PAGE_SIZE="3")
    planned = kcing(["feed_es", "--dry-run"], small, tmp_path)
    assert planned.returncode == 0, planned.stderr
    pages = len(api_replica.listing_requests())
    api_replica.malformed_page(2 * pages)  # the last page of the run below
    result = kcing(["feed_es"], small, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    states = ledger_states(db)
    assert states and set(states.values()) == {"delivered"}
    last_kind = api_replica.listing_requests()[-1].params("kind")[0]
    earlier = [node for node in listed_nodes(api_replica) if node["kind"] != last_kind]
    assert {nid(node) for node in earlier} <= {upstream_id.split(".")[0] for (_, upstream_id) in states}
    assert watermark(db) is None
    assert [line for line in result.stderr.splitlines() if "run stopped" in line and "malformed" in line]
    again = kcing(["feed_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "skipped %d" % len(states) in again.stdout
    assert stored_keys(logstash) == set(expected_documents(api_replica))


@pytest.mark.parametrize("page_size", ["500", "4"])
def test_a_node_the_api_cannot_answer_is_left_out_and_the_rest_delivered(env, tmp_path, db, api_replica, logstash,
                                                                         page_size):
    # One node stored in a form the API's response model refuses makes it answer 500 for every
    # page that holds it. Its neighbours are delivered; the watermark stays before it, and the
    # next run (once the API answers it) delivers it.
    nodes = listed_nodes(api_replica)
    poisoned = next(node for node in nodes if node["kind"] == "test")
    api_replica.unanswerable.add(poisoned["id"])
    small = dict(env, KCI_API_PAGE_SIZE=page_size, KCI_RETRY_BACKOFF="0")
    result = kcing(["feed_es"], small, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr  # a node was not delivered
    assert "failed 1" in result.stdout and "offset" in result.stdout
    states = ledger_states(db)
    delivered = {upstream_id.split(".")[0] for (_, upstream_id), state in states.items() if state == "delivered"}
    assert delivered == {nid(node) for node in nodes} - {poisoned["id"]}
    assert watermark(db) is None
    left_out = [line for line in result.stderr.splitlines() if "left out" in line]
    assert len(left_out) == 1 and "WARNING" in left_out[0], result.stderr
    api_replica.unanswerable.clear()
    again = kcing(["feed_es"], small, tmp_path)
    assert again.returncode == 0, again.stderr
    assert stored_keys(logstash) == set(expected_documents(api_replica))
    assert watermark(db) == newest_updated(api_replica)


def _documents_written(directory: Path) -> Dict[str, list]:
    """{file name: its (action line, document line) pairs, sorted} of an --output directory."""
    written = {}
    for path in sorted(directory.glob("*.ndjson")):
        lines = path.read_bytes().splitlines()
        written[path.name] = sorted(zip(lines[::2], lines[1::2]))
    return written


@pytest.mark.parametrize("logs", [[], ["--with-logs"]], ids=["without-logs", "with-logs"])
def test_a_samples_feed_of_what_gen_samples_saved_writes_the_documents_the_live_crawl_wrote(env, tmp_path,
                                                                                            api_replica, logs):
    """Replayed, the saved nodes make the documents the crawl of the same nodes made: the same
    indices, ids and fields, `@timestamp` included (the order within a file may differ: the
    crawl writes nodes as the API lists them, the replay as the manifest does, by date)."""
    samples, live, replayed = tmp_path / "saved", tmp_path / "live", tmp_path / "replayed"
    crawl = kcing(["feed_es", "--output", str(live), *logs], dict(env, KCING_DB=str(tmp_path / "live.db")), tmp_path)
    assert crawl.returncode == 0, crawl.stdout + crawl.stderr
    saved = kcing(["gen_samples", *logs], dict(env, KCI_SAMPLES_DIR=str(samples)), tmp_path)
    assert saved.returncode == 0, saved.stdout + saved.stderr
    assert "%d saved" % len(listed_nodes(api_replica)) in saved.stdout
    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(replayed)],
                   dict(env, KCING_DB=str(tmp_path / "replay.db")), tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    expected = _documents_written(live)
    assert expected and all(pairs for pairs in expected.values())
    for pairs in expected.values():
        assert len(set(pairs)) == len(pairs)  # each document once: the comparison below is exact
    assert _documents_written(replayed) == expected


def test_a_node_saved_with_a_log_that_makes_its_file_larger_than_any_download_is_kept_and_replayed(env, tmp_path,
                                                                                                   api_replica):
    """A build log under KCI_MAX_OBJECT_BYTES, whose text escaped in JSON (a terminal's colour
    codes, quotes) makes the saved node larger than it: the feed of the node delivers it, so
    the replay of its sample must, and gen_samples must find it saved the next time."""
    kbuild = api_replica.tree["kbuild-x86"]
    path = urlsplit(kbuild["artifacts"]["build_log"]).path[len("/files/"):]
    line = b'\x1b[31mwarning: "unused" variable\x1b[0m\n'
    api_replica.corpus.add_file(path, line * (1_500_000 // len(line)))
    limited = dict(env, KCI_MAX_OBJECT_BYTES="2000000")
    samples, live, replayed = tmp_path / "saved", tmp_path / "live", tmp_path / "replayed"
    crawl = kcing(["feed_es", "--with-logs", "--output", str(live)], dict(limited, KCING_DB=str(tmp_path / "live.db")),
                  tmp_path)
    assert crawl.returncode == 0, crawl.stdout + crawl.stderr
    saving = dict(limited, KCI_SAMPLES_DIR=str(samples))
    assert kcing(["gen_samples", "--with-logs"], saving, tmp_path).returncode == 0
    (saved,) = [entry for entry in json.loads((samples / "manifest.json").read_text())["objects"]
                if entry["upstream_id"].startswith(kbuild["id"] + ".")]
    assert saved["size"] > 2_000_000  # the case at hand
    again = kcing(["gen_samples", "--with-logs"], saving, tmp_path)
    assert "0 saved, %d already present" % len(listed_nodes(api_replica)) in again.stdout, again.stdout + again.stderr
    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(replayed)],
                   dict(limited, KCING_DB=str(tmp_path / "replay.db")), tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert _documents_written(replayed) == _documents_written(live)


def test_a_kci_api_url_that_leads_to_a_logstash_input_asks_whether_it_is_the_apis(env, tmp_path, logstash):
    """A Logstash input answers "ok" to GET /nodes: the run stopped on "a malformed page: no items
    list and total", as for a page of the API gone wrong, where a 404 asks about KCI_API_URL."""
    result = kcing(["feed_es"], dict(env, KCI_API_URL=logstash.build.url), tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "kcing feed_es: GET %s/nodes (kind=checkout, offset 0) answered a malformed page: no items list and total "
        "(is KCI_API_URL the KernelCI API's base URL, as https://api.kernelci.org/latest?)" % logstash.build.url)


def _boot_of(logstash, node_id):
    (found,) = [body for key, body in logstash.store.items()
                if body["kernelci_api"]["node_id"] == node_id and key[0].startswith("boot-")]
    return found


def test_a_gzip_callback_whose_connection_closes_half_way_fails_its_job_for_the_next_run(api_replica, logstash,
                                                                                       tmp_path):
    # The LAVA callback, stored gzip and served as its bytes, read until the connection closes (no
    # Content-Length, no chunks), and the connection dropped half-way: taken for a file cut short,
    # the boot went for good without its callback (job_status, boot_time, log lines), where the
    # next try has it whole, as when its host labels the same bytes Content-Encoding: gzip.
    from tests.fakes.rogue_http import RogueFront, exact_head

    baseline = api_replica.tree["baseline"]
    path = urlsplit(baseline["artifacts"]["callback_data"]).path
    whole = api_replica.corpus.read(path[len("/files/"):])
    assert whole[:2] == b"\x1f\x8b"
    with RogueFront(api_replica.url) as storage:
        storage.on("GET", path, exact_head(200, (("Content-Type", "application/octet-stream"), ("Connection", "close")),
                                           whole[:len(whole) // 2]), count=1)
        api_replica.corpus.update(baseline["id"], artifacts=dict(baseline["artifacts"], callback_data=storage.url + path))
        env = api_feed_environ(api_replica, logstash, tmp_path / "kcing.db", KCI_DAYS="3650",
                               KCI_ARTIFACT_ORIGINS=storage.url)
        cut = kcing(["feed_es", "--with-logs"], env, tmp_path)
        assert cut.returncode == 1, cut.stdout + cut.stderr
        assert "the connection closed before the end of its gzip file (sent without a Content-Length or chunks)" \
            in cut.stdout
        assert not [body for body in logstash.store.values() if body["kernelci_api"]["node_id"] == baseline["id"]]
        again = kcing(["feed_es", "--with-logs"], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    boot = _boot_of(logstash, baseline["id"])
    assert "artifact_errors" not in boot["kernelci_api"] and boot.get("job_status") == "complete"


def test_a_job_lookup_redirected_off_the_upstream_origins_fails_the_test_for_the_next_run(api_replica, logstash,
                                                                                         tmp_path):
    # The API in maintenance redirecting its single-node answers to a page on another host: a
    # listing page so redirected fails, and so must the lookup of a test's job. Rejected, the
    # test's new version never held the watermark and was never fetched again: Elasticsearch kept
    # its old result for good.
    db = tmp_path / "kcing.db"
    # No overlap: each run lists from where the last one got to, as an hourly cron run does.
    env = api_feed_environ(api_replica, logstash, db, KCI_DAYS="3650", KCI_API_OVERLAP_MINUTES="0")
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    login = api_replica.tree["login"]
    now = datetime.now(timezone.utc)
    api_replica.corpus.update(login["id"], when=now, result="fail")
    api_replica.corpus.update(api_replica.tree["kbuild-x86"]["id"], when=now + timedelta(seconds=1))
    api_replica.redirect("/latest/node/", "http://127.0.0.1:9/maintenance.html", count=None)
    second = kcing(["feed_es"], env, tmp_path)
    assert second.returncode == 1, second.stdout + second.stderr
    newest = max((row for row in ledger_rows(db) if row["upstream_id"].startswith(login["id"])),
                 key=lambda row: row["upstream_id"])
    assert newest["state"] == "failed", newest
    api_replica.clear_faults()
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    (stored,) = [body for body in logstash.store.values() if body["kernelci_api"]["node_id"] == login["id"]]
    assert stored["result"] == "fail"
