"""`kcing reconcile` and `feed_es --verify`: does Elasticsearch hold what Logstash acknowledged?

End to end, the real `kcing` process feeds the legacy replica into the Logstash emulators, whose
store forwards what they accepted to the Elasticsearch emulator through its `_bulk` API, as the
pipeline's elasticsearch output would, except the documents a test chooses to drop: the
"200 from Logstash, then lost before Elasticsearch indexed it" case.
"""
from __future__ import annotations

import json
import re
import signal
import sqlite3
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Set, Tuple

import pytest
from elasticsearch import Elasticsearch, helpers

from kcing.admin.templates import install, templates_for
from kcing.documents import documents_for
from kcing.errors import ConfigError, ElasticsearchError, RejectedInput
from kcing.ledger import docids
from kcing.ledger.ledger import DeliveredRow, Ledger, Outcome
from kcing.ledger.models import (APPLICATION_ID, DELIVERED, DOWNLOADED, FAILED, MISSING_IN_ELASTICSEARCH, REJECTED,
                                 SCHEMA_VERSION, TOO_LARGE)
from kcing.reconcile import (
    CHUNK, EPOCH_END, MGET_BATCH, MISSING_LOGGED, REJECTED_ATTEMPTS, UNASSIGNED, KindTally, LookupFailed, ObjectCheck, Reconciler, Report,
    earliest, expired_index, is_present, lookup_result, read_groups, refeed_command, resend_plan, summary_lines,
)
from kcing.records import BUILD, CHECKOUT, UpstreamObject
from kcing.sinks import LOGSTASH, logstash_destination, ndjson_destination
from kcing.runlock import RunLock
from kcing.watermark import parse_since
from tests.fakes.elastic_server import ElasticsearchEmulator, EsError
from tests.fakes.elastic_forward import ForwardingStore
from tests.fakes.logstash_emulator import LogstashCluster
from tests.fakes.rogue_http import RogueFront, answer, trickle
from tests.fakes.serving import refusing_port, wait_until
from tests.feedrun import (SAMPLES, api_feed_environ, clean_environ, feed_environ, kcing, kcing_process, kept_ids,
                           ledger_rows, ledger_states, reaped, sample_objects, stopped_by_signal)
from tests.fakes.legacy_data import at, boot_item, boot_path, build_item, build_json, lava_json
from tests.test_cli import closed_port
from tests.test_exit_codes import Silent
from tests.test_feed_api import WIDE as API_WIDE, api_replica, watermark as api_watermark  # noqa: F401 (a fixture)

DocKey = Tuple[str, str]


@pytest.fixture
def es():
    with ElasticsearchEmulator() as emulator:
        client = Elasticsearch(emulator.url)
        install(client, emulator.url, templates_for(None), None)
        yield emulator
    assert not emulator.errors


@pytest.fixture
def forwarding(es):
    store = ForwardingStore(es.url)
    cluster = LogstashCluster(store=store)
    cluster.start()
    yield cluster
    cluster.stop()


# The samples date from 2019: a retention of a century keeps their indices inside it (documents
# in indices older than DRP_DAYS are not checked: drp deletes those on purpose).
KEEP_EVERYTHING = "36500"


@pytest.fixture
def env(legacy_replica, forwarding, es, tmp_path):
    return feed_environ(legacy_replica, forwarding, tmp_path / "kcing.db", ES_HOST=es.url, DRP_DAYS=KEEP_EVERYTHING)


needs_samples = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")


def es_client(es) -> Elasticsearch:
    return Elasticsearch(es.url, request_timeout=30)


def delete_documents(es, keys: Iterable[DocKey]) -> None:
    helpers.bulk(es_client(es), [{"_op_type": "delete", "_index": index, "_id": doc_id} for index, doc_id in keys])


def mget_requests(es) -> List[List[dict]]:
    return [json.loads(request.body)["docs"] for request in es.requests if request.route.endswith("/_mget")]


def es_keys(es) -> Set[DocKey]:
    return {(index, doc_id) for index in es.index_names() for doc_id in es.documents(index)}


def posted_keys(logstash) -> Set[DocKey]:
    return {(event.metadata["index"], event.metadata["id"]) for emulator in logstash.emulators.values()
            for event in emulator.events_received}


def runs(db: Path) -> List[tuple]:
    with sqlite3.connect(str(db)) as conn:
        return conn.execute("SELECT command, outcome, counts FROM run ORDER BY id").fetchall()


def table_dump(db: Path) -> list:
    with sqlite3.connect(str(db)) as conn:
        return [list(conn.execute("SELECT * FROM %s ORDER BY 1" % table))
                for table in ("upstream_file", "delivered_documents", "run", "watermark")]


# -- the pure parts ------------------------------------------------------------------------------

def test_ids_pack_to_20_bytes_each_sorted_and_distinct():
    ids = ["%040x" % n for n in (5, 1, 5, 3)]
    blob = docids.pack(ids)
    assert len(blob) == 3 * docids.ID_BYTES
    assert list(docids.unpack(blob)) == ["%040x" % n for n in (1, 3, 5)]
    many = ["%040x" % ((n * 7919) % 1000) for n in range(1000)]
    assert docids.pack(iter(many)) == docids.pack(many) == b"".join(bytes.fromhex(i) for i in sorted(set(many)))
    with pytest.raises(ValueError):
        docids.pack(["abc"])
    with pytest.raises(ValueError, match="40 hex digits"):  # whole bytes, but not an id's 20
        docids.pack(["%040x" % 1, "ab" * 19])
    with pytest.raises(ValueError):
        list(docids.unpack(b"x" * 21))


def test_an_mget_entry_is_present_missing_or_an_error():
    assert is_present("a", {"_id": "a", "found": True}) is True
    assert is_present("a", {"_id": "a", "found": False}) is False
    not_found = {"_id": "a", "error": {"type": "index_not_found_exception", "reason": "no such index [x]"}}
    assert is_present("a", not_found) is False  # a missing index is missing documents, not an error
    with pytest.raises(LookupFailed):
        is_present("a", {"_id": "a", "error": {"type": "no_shard_available_action_exception", "reason": "red"}})
    with pytest.raises(LookupFailed):
        is_present("a", {"_id": "b", "found": True})  # out of order


def test_a_document_of_an_index_without_its_primary_shard_is_not_checked():
    # What a real 8.15 node answers for an index whose primary shard is not assigned (red).
    red = {"_id": "a", "error": {"type": "no_shard_available_action_exception",
                                 "reason": "No shard available for [org.elasticsearch.action.get.MultiGetShardRequest/unset]"}}
    assert lookup_result("a", red) == (UNASSIGNED, "")
    with pytest.raises(LookupFailed):  # any error nobody named still stops the check
        lookup_result("a", {"_id": "a", "error": {"type": "search_context_missing_exception", "reason": "?"}})


def test_ledger_reads_are_bounded_by_a_budget_of_ids():
    rows = [DeliveredRow(n, "legacy", "lava", str(n), "", None, size) for n, size in enumerate([5, 5, 30, 1, 1])]
    assert [[row.id for row in group] for group in read_groups(rows, budget=10)] == [[0, 1], [2], [3, 4]]


def test_indices_past_the_retention_are_not_checked():
    first_kept = datetime(2024, 10, 16).date()
    assert expired_index("log-2024.10.15", first_kept)
    assert not expired_index("log-2024.10.16", first_kept)
    assert not expired_index("something-else", first_kept)
    assert not expired_index("log-2024.10.15", None)


def test_the_summary_names_kinds_counts_and_examples():
    report = Report(scope="objects delivered since 2024-10-16 00:00 UTC")
    tally = report.kind("lava")
    tally.present, tally.missing, tally.not_checkable, tally.documents, tally.documents_missing = 3, 1, 2, 40, 4
    check = ObjectCheck(DeliveredRow(1, "legacy", "lava", "5cf0", "", None, 10), asked=10, missing=4,
                        first_missing="log-2024.10.16/ab")
    tally.examples.append(check.example())
    report.marked = 1
    text = "\n".join(summary_lines(report, "http://es:9200"))
    assert "lava     checked 4, present 3, missing 1, not checkable (delivered before ids were kept) 2" in text
    assert "missing lava 5cf0: 4 of 10 documents, e.g. log-2024.10.16/ab" in text
    assert report.exit_code == 1 and report.as_counts()["missing"] == 1


# -- the ledger keeps the ids ------------------------------------------------------------------

def obj(upstream_id: str, kind: str = BUILD, source: str = "legacy") -> UpstreamObject:
    return UpstreamObject(source, kind, upstream_id, "https://storage.example/%s/build.json" % upstream_id,
                          datetime(2024, 10, 16, 7, 0, tzinfo=timezone.utc))


def packed(*numbers: int, index: str = "") -> Dict[str, bytes]:
    """{index: packed ids}; the index is today's build index unless named."""
    index = index or "build-%s" % datetime.now(timezone.utc).strftime("%Y.%m.%d")
    return {index: docids.pack("%040x" % n for n in numbers)}


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger.open(str(tmp_path / "kcing.db"))
    yield opened
    opened.close()


def test_delivery_keeps_the_ids_with_the_row_and_a_redelivery_replaces_them(ledger, tmp_path):
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1, 2)), Outcome(obj("b"), DELIVERED, documents={}),
                   Outcome(obj("c"), DELIVERED)])
    assert ledger.row("legacy", BUILD, "a").kept_ids == 2
    assert ledger.row("legacy", BUILD, "b").kept_ids == 0  # no documents: checkable, trivially complete
    assert ledger.row("legacy", BUILD, "c").kept_ids is None  # unknown: not checkable
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(7, index="build-2024.10.17"))])
    assert kept_ids(tmp_path / "kcing.db")[(BUILD, "a")] == {("build-2024.10.17", "%040x" % 7)}
    assert ledger.row("legacy", BUILD, "a").kept_ids == 1


def test_a_failed_transaction_keeps_neither_the_delivery_nor_its_ids(ledger, tmp_path):
    with pytest.raises(Exception):
        ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1)), Outcome(obj(None), DELIVERED)])
    assert ledger.delivered_ids("legacy", BUILD, ["a"]) == set()
    assert kept_ids(tmp_path / "kcing.db") == {}


def test_mark_missing_sends_objects_back_and_forgets_their_ids(ledger, tmp_path):
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1)), Outcome(obj("b"), DELIVERED, documents=packed(2))])
    row = ledger.row("legacy", BUILD, "a")
    assert ledger.mark_missing([row.id]) == 1
    again = ledger.row("legacy", BUILD, "a")
    assert (again.state, again.last_error, again.kept_ids, again.delivered_at) == (
        FAILED, MISSING_IN_ELASTICSEARCH, None, None)
    assert set(kept_ids(tmp_path / "kcing.db")) == {(BUILD, "b")}
    assert [o.upstream_id for o in ledger.missing_objects("legacy")] == ["a"]
    assert ledger.sources_with_missing() == {"legacy": 1}
    assert ledger.mark_missing([row.id]) == 0  # no longer delivered


def test_an_object_held_as_missing_stays_held_until_it_is_delivered_again(ledger):
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1))])
    ledger.mark_missing([ledger.row("legacy", BUILD, "a").id])

    def held() -> tuple:
        row = ledger.row("legacy", BUILD, "a")
        return (row.state, row.last_error, [o.upstream_id for o in ledger.missing_objects("legacy")],
                ledger.sources_with_missing())

    # Downloaded, then the run died before Logstash acknowledged it (down, stopped, killed).
    ledger.record([Outcome(obj("a"), DOWNLOADED, sha256="0" * 64, document_count=1)])
    assert held() == (FAILED, MISSING_IN_ELASTICSEARCH, ["a"], {"legacy": 1})
    ledger.record([Outcome(obj("a"), FAILED, error="storage down")])
    assert held() == (FAILED, MISSING_IN_ELASTICSEARCH + "; storage down", ["a"], {"legacy": 1})
    ledger.record([Outcome(obj("a"), FAILED, error=MISSING_IN_ELASTICSEARCH + "; re-send failed: 503")])
    assert held()[1] == MISSING_IN_ELASTICSEARCH + "; re-send failed: 503"  # the mark once, not twice
    ledger.record([Outcome(obj("a"), REJECTED, error="not JSON")])
    assert held() == (REJECTED, MISSING_IN_ELASTICSEARCH + "; not JSON", ["a"], {"legacy": 1})
    ledger.record([Outcome(obj("a"), TOO_LARGE, error="413")])
    assert held() == (TOO_LARGE, MISSING_IN_ELASTICSEARCH + "; 413", ["a"], {"legacy": 1})
    # In one transaction, as a run writes a batch: downloaded, then acknowledged.
    ledger.record([Outcome(obj("a"), DOWNLOADED), Outcome(obj("a"), DELIVERED, documents=packed(1))])
    assert held() == (DELIVERED, None, [], {})


def test_a_failed_resend_keeps_the_digest_of_what_was_delivered(ledger):
    # A later resend of a local copy is checked against this digest: losing it to a failed
    # attempt would let an edited file stand in for the documents Elasticsearch lost.
    ledger.record([Outcome(obj("a"), DELIVERED, sha256="d" * 64, documents=packed(1))])
    ledger.mark_missing([ledger.row("legacy", BUILD, "a").id])
    ledger.record([Outcome(obj("a"), FAILED, error=MISSING_IN_ELASTICSEARCH + "; re-send failed: 404")])
    assert [o.facts for o in ledger.missing_objects("legacy")] == [{"sha256": "d" * 64}]


def node_version(version: str, node_id: str = "6aec122c689dd928d5d3df79", source: str = "api") -> UpstreamObject:
    return UpstreamObject(source, "test", "%s.%s" % (node_id, version), "https://api.example/latest/node/%s" % node_id,
                          datetime(2024, 10, 16, 7, 0, tzinfo=timezone.utc), {"node_id": node_id})


def test_a_newer_version_of_a_node_delivered_clears_the_older_version_held_as_missing(ledger):
    # A node's versions make documents with the same ids: once a newer version is delivered,
    # Elasticsearch holds them again, and re-sending the older would put older content back.
    # Held, it could never be cleared: the API source lists only the newest version.
    older, newer = node_version("20241016T070000.000000"), node_version("20241017T070000.000000")
    other = node_version("20241016T070000.000000", node_id="6aec122c689dd928d5d3df7a")
    ledger.record([Outcome(found, DELIVERED, documents=packed(n)) for n, found in enumerate((older, other))])
    ledger.mark_missing([ledger.row("api", "test", found.upstream_id).id for found in (older, other)])
    ledger.record([Outcome(newer, DELIVERED, documents=packed(1))])
    assert [found.upstream_id for found in ledger.missing_objects("api")] == [other.upstream_id]
    assert ledger.sources_with_missing() == {"api": 1}
    row = ledger.row("api", "test", older.upstream_id)
    assert row.state == FAILED and not row.last_error.startswith(MISSING_IN_ELASTICSEARCH), row.last_error
    assert newer.upstream_id in row.last_error

    # An older version delivered after a newer one was found missing leaves the newer held.
    ledger.mark_missing([ledger.row("api", "test", newer.upstream_id).id])
    ledger.record([Outcome(older, DELIVERED, documents=packed(1))])
    assert newer.upstream_id in [found.upstream_id for found in ledger.missing_objects("api")]


def test_a_resend_lists_only_the_objects_held_for_the_inputs_it_sends_their_kind_to(ledger, caplog):
    # A row is cleared only by a delivery to its own destination: an object held for other
    # inputs, sent through these, would get a row of its own and stay held (and be posted to
    # inputs that never had it), while the summary counted only the others.
    from kcing.reconcile import MissingObjects

    here, there = logstash_destination(["http://ls:8337"]), logstash_destination(["http://old-ls:8337"])
    for upstream_id, destination in (("here", here), ("there", there), ("odd", there)):
        found = obj(upstream_id, kind="a kind edited by hand" if upstream_id == "odd" else BUILD)
        ledger.record([Outcome(found, DELIVERED, documents=packed(1))], lambda kind: destination)
        ledger.mark_missing([ledger.row("legacy", found.kind, upstream_id, destination).id])
    resent = MissingObjects(ledger, "legacy", None, lambda kind: here)
    assert [found.upstream_id for found in resent.list_objects()] == ["here"]
    # A kind kcing does not know is no input's: listed to be named, wherever it was delivered.
    assert "legacy odd: the ledger gives it the kind 'a kind edited by hand'" in caplog.text
    assert [found.upstream_id for found in ledger.missing_objects("legacy", destination_of=lambda kind: there)] == [
        "there", "odd"]
    assert [found.upstream_id for found in ledger.missing_objects("legacy")] == ["here", "there", "odd"]


def test_objects_held_elsewhere_are_counted_per_source_and_destination_whatever_their_kind():
    # One input may have taken several kinds (ES_BUILD and ES_BOOT naming one URL): its count is
    # theirs together. What went to no Logstash input, and a kind kcing does not know, are no
    # input's: they are not said to have been delivered through other inputs.
    from kcing.reconcile import held_elsewhere

    old, now = logstash_destination(["http://old-ls:8337"]), logstash_destination(["http://ls:8337"])
    counts = {("legacy", "build", old): 2, ("legacy", "boot", old): 3, ("legacy", "lava", now): 4,
              ("samples", "build", old): 1, ("legacy", "a kind edited by hand", old): 5, ("legacy", "boot", ""): 6,
              ("legacy", "build", "ndjson /tmp/out"): 7}
    assert held_elsewhere(counts, lambda kind: now) == {"legacy": {old: 5}, "samples": {old: 1}}
    # A row edited by hand may hold a destination of any type: read as text, not a traceback.
    edited = {("legacy", "build", old.encode()): 1, ("legacy", "boot", None): 2, ("legacy", "lava", 42): 3}
    assert held_elsewhere(edited, lambda kind: now) == {"legacy": {old: 1}}


def test_a_newer_version_delivered_leaves_the_error_of_an_older_one_not_held_as_missing(ledger):
    # Only the mark of missing documents is the newer version's to clear: an older version that
    # failed for its own reason keeps that reason, which `kcing status` counts by.
    older, newer = node_version("20241016T070000.000000"), node_version("20241017T070000.000000")
    ledger.record([Outcome(older, FAILED, error="GET https://api.example/latest/node/x failed 3 times (last: HTTP 503)")])
    ledger.record([Outcome(newer, DELIVERED, documents=packed(1))])
    row = ledger.row("api", "test", older.upstream_id)
    assert (row.state, row.last_error) == (FAILED, "GET https://api.example/latest/node/x failed 3 times (last: HTTP 503)")


def test_an_object_never_marked_takes_each_outcome_as_it_comes(ledger):
    ledger.record([Outcome(obj("b"), FAILED, error="storage down")])
    ledger.record([Outcome(obj("b"), DOWNLOADED)])
    row = ledger.row("legacy", BUILD, "b")
    assert (row.state, row.last_error, row.attempts) == (DOWNLOADED, None, 2)
    assert ledger.sources_with_missing() == {}


def test_pruning_forgets_the_ids_with_their_rows(tmp_path):
    clock = [datetime(2024, 10, 1)]
    ledger = Ledger.open(str(tmp_path / "kcing.db"), clock=lambda: clock[0])
    ledger.record([Outcome(obj("old"), DELIVERED, documents=packed(1, 2, 3))])
    clock[0] = datetime(2024, 10, 10)
    ledger.record([Outcome(obj("new"), DELIVERED, documents=packed(4))])
    assert ledger.prune_older_than(datetime(2024, 10, 5)) == 1
    ledger.close()
    assert set(kept_ids(tmp_path / "kcing.db")) == {(BUILD, "new")}


def make_schema_1(path: Path) -> None:
    """A ledger as kcing wrote it before it kept ids (schema 1), with one delivered object."""
    ledger = Ledger.open(str(path))
    ledger.record([Outcome(obj("old"), DELIVERED, sha256="0" * 64)])
    ledger.close()
    with sqlite3.connect(str(path)) as conn:
        conn.execute("DROP TABLE delivered_documents")
        conn.execute("ALTER TABLE upstream_file DROP COLUMN kept_ids")
        # Nor did it know destinations (schema 3), nor the index with the state.
        conn.execute('DROP INDEX "upstream_file_source_kind_upstream_id_destination"')
        conn.execute('DROP INDEX "upstream_file_source_kind_upstream_id_destination_state"')
        conn.execute("ALTER TABLE upstream_file DROP COLUMN destination")
        conn.execute('CREATE UNIQUE INDEX "upstream_file_source_kind_upstream_id" ON "upstream_file" '
                     '("source", "kind", "upstream_id")')
        conn.execute('DROP INDEX "watermark_source_destination"')
        conn.execute("ALTER TABLE watermark DROP COLUMN destination")
        conn.execute('CREATE UNIQUE INDEX "watermark_source" ON "watermark" ("source")')
        conn.execute("PRAGMA user_version = 1")
        conn.execute("PRAGMA application_id = 0")  # nor did it mark its ledgers


def test_a_schema_1_ledger_is_migrated_and_its_rows_are_not_checkable(tmp_path):
    db = tmp_path / "kcing.db"
    make_schema_1(db)
    ledger = Ledger.open(str(db))
    # Rows from before destinations were recorded went to Logstash (Ledger.open's default name).
    assert ledger.row("legacy", BUILD, "old", "logstash").kept_ids is None
    ledger.record([Outcome(obj("new"), DELIVERED, documents=packed(1))])
    assert ledger.integrity_ok()
    ledger.close()
    with sqlite3.connect(str(db)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


def test_a_ledger_from_a_newer_kcing_is_refused(tmp_path):
    db = tmp_path / "kcing.db"
    Ledger.open(str(db)).close()
    with sqlite3.connect(str(db)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(ConfigError) as refused:
        Ledger.open(str(db))
    assert "newer kcing" in str(refused.value)


# -- end to end ----------------------------------------------------------------------------------

@needs_samples
def test_the_feed_keeps_exactly_the_ids_it_delivered(env, tmp_path, forwarding, es):
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(tmp_path / "kcing.db")
    assert set().union(*kept.values()) == posted_keys(forwarding) == es_keys(es)
    for row in ledger_rows(tmp_path / "kcing.db"):
        assert row["kept_ids"] == len(kept.get((row["kind"], row["upstream_id"]), ()))


@needs_samples
def test_documents_dropped_after_a_200_are_found_and_sent_again(env, tmp_path, forwarding, es):
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(db)
    # Drop one document of one LAVA object and everything of one build, as if ES never indexed them.
    lava = next(key for key, ids in sorted(kept.items()) if key[0] == "lava" and len(ids) > 1)
    build = next(key for key in sorted(kept) if key[0] == "build")
    lost = {sorted(kept[lava])[0]} | kept[build]
    delete_documents(es, lost)

    checked = kcing(["reconcile"], env, tmp_path)
    assert checked.returncode == 1, checked.stderr
    assert "build    checked %d, present %d, missing 1" % (len([k for k in kept if k[0] == "build"]),
                                                            len([k for k in kept if k[0] == "build"]) - 1) \
        in checked.stdout
    assert "missing lava %s: 1 of %d documents" % (lava[1], len(kept[lava])) in checked.stdout
    states = ledger_states(db)
    assert {key for key, state in states.items() if state != DELIVERED} == {lava, build}
    assert all(row["last_error"] == MISSING_IN_ELASTICSEARCH for row in ledger_rows(db) if row["state"] == FAILED)

    forwarding.clear()
    again = kcing(["feed_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "delivered 2" in again.stdout
    assert posted_keys(forwarding) == kept[lava] | kept[build]  # exactly those two objects, whole
    assert lost <= es_keys(es)
    final = kcing(["reconcile"], env, tmp_path)
    assert final.returncode == 0, final.stdout
    assert "Elasticsearch holds every document checked" in final.stdout


@needs_samples
def test_nothing_is_sent_again_when_everything_is_there(env, tmp_path, forwarding, es):
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    before = ledger_rows(db)
    checked = kcing(["reconcile"], env, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert ", missing 0" in checked.stdout and "missing " + "lava" not in checked.stdout
    assert ledger_rows(db) == before
    forwarding.clear()
    again = kcing(["feed_es"], env, tmp_path)
    assert again.returncode == 0 and not posted_keys(forwarding)
    for docs in mget_requests(es):
        assert all(doc["_source"] is False for doc in docs)


@needs_samples
def test_a_missing_index_counts_as_missing_documents_not_as_an_error(env, tmp_path, forwarding, es):
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(db)
    log_indices = sorted({index for ids in kept.values() for index, _ in ids if index.startswith("log-")})
    if not log_indices:
        pytest.skip("the samples have no log documents")
    es_client(es).indices.delete(index=",".join(log_indices))
    with_logs = {key for key, ids in kept.items() if any(index in log_indices for index, _ in ids)}
    checked = kcing(["reconcile"], env, tmp_path)
    assert checked.returncode == 1, checked.stderr
    assert "Traceback" not in checked.stderr
    assert {key for key, state in ledger_states(db).items() if state == FAILED} == with_logs


@needs_samples
def test_resend_sends_the_missing_objects_at_once(env, tmp_path, forwarding, es):
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(db)
    boot = next(key for key in sorted(kept) if key[0] == "boot")
    delete_documents(es, kept[boot])
    forwarding.clear()
    done = kcing(["reconcile", "--resend"], env, tmp_path)
    assert done.returncode == 1, done.stderr  # something was missing, even though it was re-sent
    assert "re-sending 1 legacy object\n" in done.stdout and "delivered 1" in done.stdout
    assert posted_keys(forwarding) == kept[boot]
    assert set(ledger_states(db).values()) == {DELIVERED}
    assert kept_ids(db)[boot] == kept[boot]
    assert kcing(["reconcile"], env, tmp_path).returncode == 0


@needs_samples
@pytest.mark.parametrize("marked_by", ["reconcile", "feed_es --verify"])
def test_resend_sends_what_an_earlier_run_marked_missing(legacy_replica, forwarding, es, tmp_path, marked_by):
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, forwarding, db, ES_HOST=es.url, DRP_DAYS=KEEP_EVERYTHING,
                       ES_VERIFY_DELAY="0")
    if marked_by == "reconcile":
        assert kcing(["feed_es"], env, tmp_path).returncode == 0
        kept = kept_ids(db)
        lost_objects = [key for key in sorted(kept) if key[0] == "boot"][:1] + \
            [key for key in sorted(kept) if key[0] == "build"][:1]
        delete_documents(es, set().union(*(kept[key] for key in lost_objects)))
        marked = kcing(["reconcile"], env, tmp_path)
    else:
        # Elasticsearch drops every document of two objects after Logstash said 200.
        by_object = {(obj.kind, obj.upstream_id): keys for obj, keys in _documents_by_object().items()}
        lost_objects = [key for key in sorted(by_object) if key[0] == "boot"][:1] + \
            [key for key in sorted(by_object) if key[0] == "build"][:1]
        forwarding.index_store.drop = set().union(*(by_object[key] for key in lost_objects))
        marked = kcing(["feed_es", "--verify"], env, tmp_path)
        forwarding.index_store.drop = set()
        kept = kept_ids(db)
        kept.update({key: by_object[key] for key in lost_objects})
    assert marked.returncode == 1, marked.stdout + marked.stderr
    assert "kcing reconcile --resend` does it now" in marked.stdout
    assert {key for key, state in ledger_states(db).items() if state == FAILED} == set(lost_objects)

    forwarding.clear()
    resent = kcing(["reconcile", "--resend"], env, tmp_path)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert "re-sending 2 legacy objects" in resent.stdout and "delivered 2" in resent.stdout
    assert posted_keys(forwarding) == kept[lost_objects[0]] | kept[lost_objects[1]]
    assert set(ledger_states(db).values()) == {DELIVERED}

    final = kcing(["reconcile"], env, tmp_path)
    assert final.returncode == 0, final.stdout + final.stderr
    checked = sum(int(line.split("checked ", 1)[1].split(",", 1)[0]) for line in final.stdout.splitlines()
                  if line.startswith("reconcile: ") and " checked " in line and "documents:" in line)
    assert checked == len(ledger_states(db)), final.stdout
    assert "Elasticsearch holds every document checked" in final.stdout


def test_a_resend_of_everything_the_check_found_missing_is_recorded_ok_not_nothing_checked(env, tmp_path,
                                                                                            forwarding, es):
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(db)
    delete_documents(es, set().union(*kept.values()))
    assert kcing(["reconcile"], env, tmp_path).returncode == 1  # every object marked missing
    forwarding.clear()
    resent = kcing(["reconcile", "--resend"], env, tmp_path)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert set(ledger_states(db).values()) == {DELIVERED}
    runs = json.loads(kcing(["status", "--json"], env, tmp_path).stdout)["runs"]
    last = next(run for run in runs if run["command"] == "reconcile")  # the re-send is a feed_es run of its own
    assert last["outcome"] == "ok", runs


def one_boot_missing(env, tmp_path, es):
    """Feed the samples, delete one boot's documents from Elasticsearch and let reconcile find
    them missing: (the ledger, the ids kept per object, that boot's key)."""
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(db)
    boot = next(key for key in sorted(kept) if key[0] == "boot")
    delete_documents(es, kept[boot])
    assert kcing(["reconcile"], env, tmp_path).returncode == 1
    return db, kept, boot


@needs_samples
def test_an_object_whose_resend_failed_is_still_held_as_missing(env, tmp_path, legacy_replica, forwarding, es):
    db, kept, boot = one_boot_missing(env, tmp_path, es)

    legacy_replica.storage.fail_next("/", 404, count=None)  # storage loses the file for a while
    failed = kcing(["reconcile", "--resend"], env, tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "re-sending 1 legacy object\n" in failed.stdout and "failed 1" in failed.stdout
    row = next(row for row in ledger_rows(db) if (row["kind"], row["upstream_id"]) == boot)
    assert row["state"] == FAILED and row["last_error"].startswith(MISSING_IN_ELASTICSEARCH + "; re-send failed: ")

    legacy_replica.storage.clear_faults()
    forwarding.clear()
    resent = kcing(["reconcile", "--resend"], env, tmp_path)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert posted_keys(forwarding) == kept[boot]
    assert set(ledger_states(db).values()) == {DELIVERED}


@needs_samples
@pytest.mark.parametrize("built_at", ["", "old/"], ids=["storage-at-its-origin", "storage-under-a-path"])
def test_a_resend_asks_for_the_file_at_the_storage_it_is_given(env, tmp_path, legacy_replica, forwarding, es,
                                                               built_at):
    """--resend fetched a legacy object again from the URL its row held: once KCI_STORAGE_URL
    named a mirror, the old storage gone, the object was rejected as off the upstream origins.
    A storage under a path of its own is told from the file's place by what its feed recorded."""
    from tests.fakes.legacy_replica import LegacyStorage

    corpus = legacy_replica.corpus
    originals = list(corpus.paths())
    if built_at:
        for path in originals:
            corpus.add_file(built_at + path, corpus.read(path))
        env = dict(env, KCI_STORAGE_URL=legacy_replica.storage_url + "/" + built_at.rstrip("/"))
    db, kept, boot = one_boot_missing(env, tmp_path, es)
    legacy_replica.storage.stop()  # gone: the mirror holds its files now, under a path of its own
    for path in originals:
        corpus.add_file("mirror/" + path, corpus.read(path))
    forwarding.clear()
    with LegacyStorage(corpus) as mirror:
        resent = kcing(["reconcile", "--resend"], dict(env, KCI_STORAGE_URL=mirror.url + "/mirror"), tmp_path)
        asked = [request.path for request in mirror.requests]
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert "delivered 1" in resent.stdout and asked and all(path.startswith("/mirror/") for path in asked), asked
    assert posted_keys(forwarding) == kept[boot]
    assert set(ledger_states(db).values()) == {DELIVERED}


def _last_reconcile(env, tmp_path) -> dict:
    return json.loads(kcing(["status", "--json"], env, tmp_path).stdout)["last_reconcile"]


@needs_samples
def test_a_resend_that_leaves_objects_held_is_recorded_missing_not_ok(env, tmp_path, legacy_replica, forwarding, es):
    # The check of this run found nothing missing (the held object is no longer delivered), and
    # its row was closed `ok` before the re-send, which failed and left it held: the run exited 1
    # and `kcing status` said its last reconcile was ok.
    db = tmp_path / "kcing.db"
    builds = _lose_the_build_documents(env, tmp_path, es)
    held = _held_as_missing(db)
    legacy_replica.storage.fail_next("/", 404, count=None)
    failed = kcing(["reconcile", "--resend"], env, tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert set(_held_as_missing(db)) == set(held)
    last = _last_reconcile(env, tmp_path)
    assert last["outcome"] == "missing", last
    assert last["counts"]["held_missing"] == len(held), last

    legacy_replica.storage.clear_faults()
    resent = kcing(["reconcile", "--resend"], env, tmp_path)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert builds <= es_keys(es)
    last = _last_reconcile(env, tmp_path)
    assert last["outcome"] == "ok" and last["counts"]["held_missing"] == 0, last


@needs_samples
def test_a_resend_killed_before_logstash_answered_leaves_no_ok_reconcile_behind(env, tmp_path, forwarding, es):
    db = tmp_path / "kcing.db"
    _lose_the_build_documents(env, tmp_path, es)
    held = _held_as_missing(db)
    forwarding.build.block_pipeline()
    process = kcing_process(["reconcile", "--resend"], env, tmp_path)
    try:
        assert wait_until(lambda: forwarding.build.inflight > 0, timeout=30)
    finally:
        process.kill()
        process.communicate()
        forwarding.build.unblock_pipeline()
    assert _held_as_missing(db) == held
    last = _last_reconcile(env, tmp_path)
    assert last["outcome"] == "missing" and last["counts"]["held_missing"] == len(held), last


def _samples_fed_then_lost(env, tmp_path, es, lost_kind: str,
                           lost_id: str = "") -> Tuple[dict, DocKey, Dict[DocKey, Set[DocKey]]]:
    """gen_samples, then feed the samples; delete every document of one object of `lost_kind`
    (`lost_id`, else the first) and reconcile (which marks it). Return the samples feed's
    environment, that object and the ids the ledger kept."""
    samples = tmp_path / "saved"
    assert kcing(["gen_samples"], dict(env, KCI_SAMPLES_DIR=str(samples)), tmp_path).returncode == 0
    replay = dict(env, KCI_SOURCE="samples", KCI_SAMPLES_DIR=str(samples))
    fed = kcing(["feed_es"], replay, tmp_path)
    assert fed.returncode == 0, fed.stdout + fed.stderr
    kept = kept_ids(tmp_path / "kcing.db")
    lost = next(key for key in sorted(kept) if key[0] == lost_kind and key[1].startswith(lost_id))
    delete_documents(es, kept[lost])
    assert kcing(["reconcile"], replay, tmp_path).returncode == 1
    return replay, lost, kept


def test_resend_of_a_sample_lava_file_naming_no_lab_takes_the_lab_its_listing_named(env, tmp_path, legacy_replica,
                                                                                      forwarding, es):
    # A raw callback names no lab of its own: the listing item saved in the manifest (and the
    # storage URL it came from) does, for the re-send as for the samples feed.
    today = legacy_replica.frontend.today
    build = build_item("next", "next-20190601", "arm64", "defconfig", at(today, 0, 1))
    legacy_replica.corpus.add_build(build, build_json(build))
    boot = boot_item(build, "lab-baylibre", "meson-gxbb-p200", at(today, 0, 2))
    callback = json.loads(lava_json(boot, 370999))
    del callback["lab_name"]
    legacy_replica.corpus.add_boot(boot, boot_path(boot), json.dumps(callback).encode())
    replay, lost, kept = _samples_fed_then_lost(env, tmp_path, es, "lava", boot["_id"]["$oid"])

    forwarding.clear()
    resent = kcing(["reconcile", "--resend"], replay, tmp_path)
    assert "re-sending 1 samples object\n" in resent.stdout and "delivered 1" in resent.stdout, resent.stderr
    assert posted_keys(forwarding) == kept[lost]
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {DELIVERED}
    assert kcing(["reconcile"], replay, tmp_path).returncode == 0


def test_resend_of_a_sample_file_changed_since_it_was_delivered_is_refused_and_keeps_it_held(env, tmp_path,
                                                                                             forwarding, es):
    replay, lost, kept = _samples_fed_then_lost(env, tmp_path, es, "build")
    sample = next(Path(row["url"]) for row in ledger_rows(tmp_path / "kcing.db")
                  if (row["kind"], row["upstream_id"]) == lost)
    delivered = sample.read_bytes()
    sample.write_bytes(delivered.replace(b'"defconfig_full": "', b'"defconfig_full": "edited+', 1))
    assert sample.read_bytes() != delivered

    forwarding.clear()
    refused = kcing(["reconcile", "--resend"], replay, tmp_path)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "failed 1" in refused.stdout and "changed since it was delivered" in refused.stdout
    assert not posted_keys(forwarding)
    row = next(row for row in ledger_rows(tmp_path / "kcing.db") if (row["kind"], row["upstream_id"]) == lost)
    assert row["state"] == FAILED and row["last_error"].startswith(MISSING_IN_ELASTICSEARCH + "; ")
    assert kept_ids(tmp_path / "kcing.db").get(lost) is None

    sample.write_bytes(delivered)  # put back: the re-send sends exactly what was lost
    resent = kcing(["reconcile", "--resend"], replay, tmp_path)
    assert resent.returncode == 0 and "delivered 1" in resent.stdout, resent.stdout + resent.stderr
    assert posted_keys(forwarding) == kept[lost]
    assert kcing(["reconcile"], replay, tmp_path).returncode == 0


def _lose_the_build_documents(env, tmp_path, es) -> Set[DocKey]:
    """Feed, delete every build document in Elasticsearch, reconcile (which marks them); return them."""
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    builds = set().union(*(ids for (kind, _), ids in kept_ids(db).items() if kind == "build"))
    delete_documents(es, builds)
    marked = kcing(["reconcile"], env, tmp_path)
    assert marked.returncode == 1, marked.stdout + marked.stderr
    return builds


@needs_samples
def test_a_resend_is_no_success_of_the_feed_in_its_metrics_nor_shown_as_its_run(env, tmp_path, forwarding, es):
    """`reconcile --resend` fetches what the ledger holds as missing: it lists nothing upstream,
    so it says nothing of whether the feed works. Counted as the feed's last success, it kept the
    alert on that metric's age quiet through an outage of the listing."""
    from tests.test_metrics import parsed

    db = tmp_path / "kcing.db"
    _lose_the_build_documents(env, tmp_path, es)
    with sqlite3.connect(str(db)) as conn:
        (crawled,) = conn.execute("SELECT ended FROM run WHERE command = 'feed_es' ORDER BY id LIMIT 1").fetchone()
    resent = kcing(["reconcile", "--resend"], env, tmp_path)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert "re-sent by reconcile" in kcing(["status"], env, tmp_path).stdout.split("last runs:", 1)[1]
    prom = tmp_path / "kcing.prom"
    with refusing_port() as port:
        listing_down = kcing(["feed_es", "--metrics", str(prom)], dict(env, KCI_HOST="127.0.0.1:%d" % port,
                                                                        KCI_MAX_RETRIES="1"), tmp_path)
    assert listing_down.returncode != 0, listing_down.stdout + listing_down.stderr
    last_success = parsed(prom.read_text())[("kcing_feed_last_success_timestamp_seconds", (("source", "legacy"),))]
    assert last_success == pytest.approx(datetime.fromisoformat(crawled).replace(tzinfo=timezone.utc).timestamp(),
                                         abs=0.002)


def _held_as_missing(db: Path) -> Dict[Tuple[str, str], tuple]:
    return {(row["kind"], row["upstream_id"]): (row["state"], row["last_error"]) for row in ledger_rows(db)
            if row["state"] != DELIVERED}


@needs_samples
def test_a_resend_logstash_did_not_acknowledge_leaves_the_objects_held_as_missing(env, tmp_path, forwarding, es):
    db = tmp_path / "kcing.db"
    builds = _lose_the_build_documents(env, tmp_path, es)
    held = _held_as_missing(db)
    assert held and set(held.values()) == {(FAILED, MISSING_IN_ELASTICSEARCH)}

    forwarding.build.down()  # downloaded again, never acknowledged
    failed = kcing(["reconcile", "--resend"], env, tmp_path)
    assert failed.returncode == 3, failed.stdout + failed.stderr
    assert "downloaded %d, delivered 0" % len(held) in failed.stdout
    assert _held_as_missing(db) == held

    forwarding.build.up()
    # A check without --resend does not look at them (no longer delivered), but says they wait.
    checked = kcing(["reconcile"], env, tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "%d objects are held as missing in Elasticsearch" % len(held) in checked.stdout
    assert "kcing reconcile --resend" in checked.stdout

    resent = kcing(["reconcile", "--resend"], env, tmp_path)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert "re-sending %d legacy objects" % len(held) in resent.stdout
    assert builds <= es_keys(es)
    assert set(ledger_states(db).values()) == {DELIVERED}
    assert kcing(["reconcile"], env, tmp_path).returncode == 0


@needs_samples
def test_a_resend_leaves_objects_held_for_other_logstash_inputs_and_says_so(env, tmp_path, forwarding, es):
    # The ledger's rows are per destination: what the builds' Logstash input lost is cleared only
    # by a delivery there. Re-sent through other inputs (ES_BUILD moved, or the settings of
    # another feed sharing the ledger), the object gets a row of its own and the held one stayed
    # held for ever, each later --resend skipping it as delivered and exiting 0 while every
    # plain reconcile exited 1.
    db = tmp_path / "kcing.db"
    builds = _lose_the_build_documents(env, tmp_path, es)
    held = _held_as_missing(db)
    elsewhere = LogstashCluster(store=ForwardingStore(es.url))
    elsewhere.start()
    try:
        moved = dict(env, ES_BUILD=elsewhere.urls["build"])
        for _ in range(2):
            resent = kcing(["reconcile", "--resend"], moved, tmp_path)
            assert resent.returncode == 1, resent.stdout + resent.stderr
            assert ("%d legacy objects held as missing were delivered through other Logstash inputs"
                    % len(held)) in resent.stdout, resent.stdout
            assert logstash_destination([forwarding.urls["build"]]) in resent.stdout
            assert "re-sending" not in resent.stdout
            assert not posted_keys(elsewhere)
            assert _held_as_missing(db) == held
    finally:
        elsewhere.stop()
    resent = kcing(["reconcile", "--resend"], env, tmp_path)  # the settings of the feed that delivered them
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert "re-sending %d legacy objects" % len(held) in resent.stdout
    assert builds <= es_keys(es)
    assert set(ledger_states(db).values()) == {DELIVERED}


@needs_samples
def test_a_check_names_the_inputs_of_objects_held_for_others_not_a_resend_that_would_skip_them(
        env, tmp_path, forwarding, es):
    # Without --resend, reconcile said of every object held as missing that `kcing reconcile
    # --resend` sends it again: one run with these settings then only named the other inputs.
    _lose_the_build_documents(env, tmp_path, es)
    held = _held_as_missing(tmp_path / "kcing.db")
    elsewhere = LogstashCluster(store=ForwardingStore(es.url))
    elsewhere.start()
    try:
        checked = kcing(["reconcile"], dict(env, ES_BUILD=elsewhere.urls["build"]), tmp_path)
    finally:
        elsewhere.stop()
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert ("%d legacy objects held as missing were delivered through other Logstash inputs" % len(held)
            in checked.stdout), checked.stdout
    assert logstash_destination([forwarding.urls["build"]]) in checked.stdout
    assert "held as missing in Elasticsearch (found by this check" not in checked.stdout, checked.stdout
    # With the settings that delivered them, --resend is what sends them.
    same = kcing(["reconcile"], env, tmp_path)
    assert same.returncode == 1, same.stdout + same.stderr
    assert ("%d objects are held as missing in Elasticsearch (found by this check or an earlier one, not "
            "delivered since): `kcing reconcile --resend` sends them again" % len(held)) in same.stdout, same.stdout
    assert "through other Logstash inputs" not in same.stdout


@needs_samples
def test_a_single_object_held_as_missing_is_said_to_wait_for_a_resend(ledger, capsys):
    from kcing.commands.reconcile import _print_held

    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1))], to_logstash)
    ledger.mark_missing([ledger.row("legacy", BUILD, "a", to_logstash(BUILD)).id])
    _print_held(ledger, to_logstash, datetime(2024, 10, 16, tzinfo=timezone.utc))  # the object's day is kept
    assert capsys.readouterr().out == (
        "reconcile: 1 object is held as missing in Elasticsearch (found by this check or an earlier one, not "
        "delivered since): `kcing reconcile --resend` sends it again\n")


def test_a_resend_sends_what_is_held_for_its_inputs_and_leaves_what_is_held_for_others(env, tmp_path, forwarding, es):
    # Builds held for the build input the feed used, a boot held for the boot input these
    # settings still name: the boot alone is sent again, and no build reaches the moved input.
    db = tmp_path / "kcing.db"
    _lose_the_build_documents(env, tmp_path, es)
    builds_held = _held_as_missing(db)
    boot = next(row for row in ledger_rows(db) if row["kind"] == "boot" and row["state"] == DELIVERED)
    ledger = Ledger.open(str(db))
    try:
        assert ledger.mark_missing([boot["id"]]) == 1
    finally:
        ledger.close()
    elsewhere = LogstashCluster(store=ForwardingStore(es.url))
    elsewhere.start()
    try:
        resent = kcing(["reconcile", "--resend"], dict(env, ES_BUILD=elsewhere.urls["build"]), tmp_path)
        assert not posted_keys(elsewhere)
    finally:
        elsewhere.stop()
    assert resent.returncode == 1, resent.stdout + resent.stderr
    assert ("%d legacy objects held as missing were delivered through other Logstash inputs" % len(builds_held)
            in resent.stdout), resent.stdout
    assert "re-sending 1 legacy object\n" in resent.stdout, resent.stdout
    assert _held_as_missing(db) == builds_held


@needs_samples
def test_a_resend_stopped_before_logstash_answered_leaves_the_objects_held_as_missing(legacy_replica, forwarding,
                                                                                      es, tmp_path):
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, forwarding, db, ES_HOST=es.url, DRP_DAYS=KEEP_EVERYTHING, ES_TIMEOUT="2")
    builds = _lose_the_build_documents(env, tmp_path, es)
    held = _held_as_missing(db)

    forwarding.build.block_pipeline()  # Elasticsearch stalls: the post waits for an answer
    process = kcing_process(["reconcile", "--resend"], env, tmp_path)
    try:
        assert wait_until(lambda: forwarding.build.inflight > 0, timeout=30)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        forwarding.build.unblock_pipeline()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stdout + stderr
    assert _held_as_missing(db) == held
    # `kcing status` says how the run ended, not only what its check found.
    last = _last_reconcile(env, tmp_path)
    assert last["outcome"] == "error 130" and last["counts"]["held_missing"] == len(held), last

    forwarding.build.wait_idle()
    resent = kcing(["reconcile", "--resend"], env, tmp_path)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    assert "re-sending %d legacy objects" % len(held) in resent.stdout
    assert builds <= es_keys(es)
    assert set(ledger_states(db).values()) == {DELIVERED}


@needs_samples
@pytest.mark.parametrize("where", ["logstash-retry-wait", "upstream-retry-wait", "upstream-trickle"])
def test_one_signal_stops_a_resend_waiting_on_logstash_or_upstream_at_once(legacy_replica, forwarding, es, tmp_path,
                                                                          where):
    """As feed_es: after one SIGTERM no retry is waited for and no download goes on; only a batch
    in flight gets its grace. The re-send's source and sink wait on the run's stop."""
    db = tmp_path / "kcing.db"
    to_logstash = where.startswith("logstash")
    with RogueFront(forwarding.urls["build"] if to_logstash else legacy_replica.storage_url) as front:
        # In place from the first feed: a re-send fetches from the URLs the ledger keeps.
        env = feed_environ(legacy_replica, forwarding, db, ES_HOST=es.url, DRP_DAYS=KEEP_EVERYTHING,
                           **({"ES_BUILD": front.url} if to_logstash else {"KCI_STORAGE_URL": front.url}))
        _lose_the_build_documents(env, tmp_path, es)
        held = _held_as_missing(db)
        if where == "logstash-retry-wait":
            front.on("POST", "", answer(503, (("Retry-After", "100"),)), count=None)
            env.update(ES_RETRY_BACKOFF="100")
        elif where == "upstream-retry-wait":
            front.on("GET", "", answer(503, (("Retry-After", "100"),)), count=None)
            env.update(KCI_RETRY_BACKOFF="100")
        else:
            front.on("GET", "", trickle(length=10_000, every=0.5), count=None)
            env.update(KCI_DOWNLOAD_DEADLINE="100", KCI_THREADS="1")
        process = kcing_process(["reconcile", "--resend"], env, tmp_path)
        if not wait_until(lambda: [by for _, _, by in front.requests if by != "forward"], timeout=30):
            process.kill()
            pytest.fail("the re-send never reached %s: %s" % (where, process.communicate()))
        stdout, stderr, took = stopped_by_signal(process)
    assert process.returncode == 130, stdout + stderr
    assert took < 3, took  # not the 100 s wait, nor the second signal's 3 s
    assert "Traceback" not in stderr
    assert _held_as_missing(db) == held


def _documents_by_object() -> Dict[object, Set[DocKey]]:
    """Each sample object -> the (index, id) of every document it makes."""
    found = {}
    for obj in sample_objects():
        try:
            documents = documents_for(obj.kind, obj.path.read_bytes(), obj.date)
        except RejectedInput:
            continue
        found[obj] = {(document.index, document.doc_id) for document in documents}
    return found


@needs_samples
def test_a_dry_run_changes_nothing(env, tmp_path, forwarding, es):
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    es_client(es).indices.delete(index=",".join(es.index_names()))
    before = table_dump(db)
    forwarding.clear()
    with RunLock(str(db)):  # a dry run takes no lock
        planned = kcing(["reconcile", "--dry-run", "--resend"], env, tmp_path)
    assert planned.returncode == 1, planned.stderr
    assert "dry run" in planned.stdout and "nothing was changed" in planned.stdout
    assert "would re-send %d objects" % len(kept_ids(db)) in planned.stdout
    assert table_dump(db) == before
    assert not posted_keys(forwarding)


@needs_samples
def test_a_dry_run_of_a_resend_exits_1_while_objects_are_held_as_missing(env, tmp_path, forwarding, es):
    # Trying out the cron line with --dry-run: the objects an earlier check marked are still
    # missing, which the same dry run without --resend says with exit 1; with --resend it said 0,
    # or 6 (nothing checked) when the window held nothing else.
    db = tmp_path / "kcing.db"
    _lose_the_build_documents(env, tmp_path, es)
    held = _held_as_missing(db)
    before = table_dump(db)
    forwarding.clear()
    for window in ([], ["--since", "2099-01-01"]):
        planned = kcing(["reconcile", "--dry-run", "--resend"] + window, env, tmp_path)
        assert planned.returncode == 1, planned.stdout + planned.stderr
        assert "would re-send %d objects" % len(held) in planned.stdout
    assert table_dump(db) == before
    assert not posted_keys(forwarding)


@needs_samples
def test_status_shows_the_last_reconcile(env, tmp_path, forwarding, es):
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    never = kcing(["status"], env, tmp_path)
    assert "last reconcile" in never.stdout and "never" in never.stdout
    assert json.loads(kcing(["status", "--json"], env, tmp_path).stdout)["last_reconcile"] is None
    assert kcing(["reconcile"], env, tmp_path).returncode == 0
    es_client(es).indices.delete(index=",".join(es.index_names()))
    assert kcing(["reconcile"], env, tmp_path).returncode == 1
    text = kcing(["status"], env, tmp_path).stdout
    section = text.split("last reconcile", 1)[1]
    assert " missing " in section and "checked %d" % len(ledger_states(db)) in section
    data = json.loads(kcing(["status", "--json"], env, tmp_path).stdout)
    assert data["last_reconcile"]["outcome"] == "missing" and data["last_reconcile"]["ended"]
    assert data["last_reconcile"]["counts"]["missing"] == data["last_reconcile"]["counts"]["checked"]
    assert [command for command, _, _ in runs(db)] == ["feed_es", "reconcile", "reconcile"]


@needs_samples
def test_verify_checks_what_the_run_delivered(env, tmp_path, forwarding, es):
    db = tmp_path / "kcing.db"
    done = kcing(["feed_es", "--verify", "--verify-delay", "0"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the %d objects this feed_es run delivered" % len(ledger_states(db)) in done.stdout
    assert "Elasticsearch holds every document checked" in done.stdout
    assert [command for command, _, _ in runs(db)] == ["feed_es", "reconcile"]

    # A second feed delivers nothing: its verification asks Elasticsearch nothing.
    asked = len(mget_requests(es))
    again = kcing(["feed_es", "--verify", "--verify-delay", "0"], env, tmp_path)
    assert again.returncode == 0 and len(mget_requests(es)) == asked
    assert "no delivered objects to check" in again.stdout


@needs_samples
def test_a_verify_of_a_run_that_delivered_nothing_leaves_the_last_reconcile_shown(env, tmp_path, forwarding, es):
    # The nightly reconcile found documents missing; the hourly `feed_es --verify` that follows,
    # finding nothing new, must not take its place as the last reconcile `kcing status` shows.
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    with sqlite3.connect(str(db)) as conn:
        oldest = conn.execute("SELECT kind, upstream_id FROM upstream_file ORDER BY object_date LIMIT 1").fetchone()
    delete_documents(es, kept_ids(db)[tuple(oldest)])
    assert kcing(["reconcile"], env, tmp_path).returncode == 1
    checked = runs(db)
    # A window of one day lists only the newest objects, every one of them delivered already.
    hourly = kcing(["feed_es", "--days", "1", "--verify", "--verify-delay", "0", "-q"], env, tmp_path)
    assert hourly.returncode == 0, hourly.stdout + hourly.stderr
    assert runs(db)[:len(checked)] == checked and [run[0] for run in runs(db)[len(checked):]] == ["feed_es"]
    assert json.loads(kcing(["status", "--json"], env, tmp_path).stdout)["last_reconcile"]["outcome"] == "missing"


@needs_samples
def test_verify_marks_what_elasticsearch_dropped_and_exits_1(legacy_replica, forwarding, es, tmp_path):
    first_log_lines = _first_log_line_of_each_object()
    if not first_log_lines:
        pytest.skip("the samples have no log documents")
    forwarding.index_store.drop = set(first_log_lines.values())
    env = feed_environ(legacy_replica, forwarding, tmp_path / "kcing.db", ES_HOST=es.url, ES_VERIFY_DELAY="0.1",
                       DRP_DAYS=KEEP_EVERYTHING)
    done = kcing(["feed_es", "--verify"], env, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert forwarding.index_store.dropped == set(first_log_lines.values())
    failed = {key for key, state in ledger_states(tmp_path / "kcing.db").items() if state == FAILED}
    assert failed == set(first_log_lines)
    assert "%d objects have missing documents; %d marked undelivered" % (len(failed), len(failed)) in done.stdout


def _first_log_line_of_each_object() -> Dict[Tuple[str, str], DocKey]:
    """(kind, upstream id) -> (index, id) of the first log document of each sample that has some."""
    from kcing.documents import documents_for
    from kcing.errors import RejectedInput

    first = {}
    for sample in sample_objects():
        try:
            documents = documents_for(sample.kind, sample.path.read_bytes(), sample.date)
        except RejectedInput:
            continue
        logs = [d for d in documents if d.kind == "log"]
        if logs:
            first[(sample.kind, sample.upstream_id)] = (logs[0].index, logs[0].doc_id)
    return first


# -- large windows, bounded batches ----------------------------------------------------------------

def fill_ledger(db: Path, objects: int, per_object: int, when: datetime) -> Dict[int, List[DocKey]]:
    """A ledger of `objects` delivered builds with `per_object` documents each, written as the feed does."""
    ledger = Ledger.open(str(db), clock=lambda: when)
    made: Dict[int, List[DocKey]] = {}
    outcomes = []
    index = "build-%s" % when.strftime("%Y.%m.%d")
    for n in range(objects):
        ids = ["%040x" % (n * per_object + k) for k in range(per_object)]
        made[n] = [(index, doc_id) for doc_id in ids]
        outcomes.append(Outcome(obj("%024x" % n), DELIVERED, documents={index: docids.pack(ids)}))
        if len(outcomes) == 500:
            ledger.record(outcomes, to_logstash)
            outcomes = []
    ledger.record(outcomes, to_logstash)
    ledger.close()
    return made


def to_logstash(kind: str) -> str:
    """Where a feed with the default settings delivers: reconcile checks only what went there."""
    return logstash_destination(["http://localhost:8337"])


def seed(es, keys: Iterable[DocKey]) -> None:
    by_index: Dict[str, Dict[str, dict]] = {}
    for index, doc_id in keys:
        by_index.setdefault(index, {})[doc_id] = {"job": "mainline"}
    for index, docs in by_index.items():
        es.seed_index(index, docs)


def test_a_large_window_is_checked_in_bounded_batches(tmp_path, es):
    db = tmp_path / "kcing.db"
    now = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
    made = fill_ledger(db, objects=4000, per_object=3, when=now)
    absent = {7, 3998}
    seed(es, [key for n, keys in made.items() if n not in absent for key in (keys[:2] if n == 1999 else keys)])
    lost = absent | {1999}  # 1999 lacks its third document
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db))
    checked = kcing(["reconcile", "--days", "1"], env, tmp_path)
    assert checked.returncode == 1, checked.stderr
    assert "build    checked 4000, present 3997, missing 3; documents: 12000 checked, 7 missing" in checked.stdout

    requests = mget_requests(es)
    sizes = [len(docs) for docs in requests]
    assert max(sizes) <= MGET_BATCH
    # 500 ledger rows (1,500 ids) per chunk: one full batch and the chunk's rest, chunk after chunk.
    assert sizes == [MGET_BATCH, 500] * 8
    asked = [(doc["_index"], doc["_id"]) for docs in requests for doc in docs]
    assert len(asked) == len(set(asked)) == 12000
    failed = {int(upstream_id, 16) for (_, upstream_id), state in ledger_states(db).items() if state == FAILED}
    assert failed == lost


def test_without_days_or_since_the_objects_delivered_in_the_last_kci_days_are_checked(tmp_path, es):
    # The README: `kcing reconcile` checks the objects delivered in the last KCI_DAYS days,
    # whatever DRP_DAYS keeps.
    db = tmp_path / "kcing.db"
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    keys = []
    for n, when in enumerate((now - timedelta(days=5), now - timedelta(hours=1))):
        index = "build-%s" % when.strftime("%Y.%m.%d")
        ledger = Ledger.open(str(db), clock=lambda: when)
        ledger.record([Outcome(obj("%024x" % n), DELIVERED, documents=packed(n, index=index))], to_logstash)
        ledger.close()
        keys.append((index, "%040x" % n))
    seed(es, keys)
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db), KCI_DAYS="3",
                                                 DRP_DAYS=KEEP_EVERYTHING), tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "build    checked 1, present 1, missing 0" in checked.stdout, checked.stdout


def _one_build_a_day_delivered_an_hour_ago(db: Path, count: int) -> List[datetime]:
    """A ledger of `count` legacy builds, one a day from 2020-01-01, each with one document in its
    day's index (build n: id "%040x" % n), delivered to Logstash an hour ago; their days."""
    when = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
    ledger = Ledger.open(str(db), clock=lambda: when)
    first = datetime(2020, 1, 1, tzinfo=timezone.utc)
    days = [first + timedelta(days=n) for n in range(count)]
    ledger.record([Outcome(UpstreamObject("legacy", BUILD, "%024x" % n, "https://storage.example/%d/build.json" % n, day),
                           DELIVERED, documents=packed(n, index="build-%s" % day.strftime("%Y.%m.%d")))
                   for n, day in enumerate(days)], to_logstash)
    ledger.close()
    return days


def test_documents_missing_from_hundreds_of_indices_are_found_missing_not_a_refused_request(tmp_path, es):
    # A backfill of a year, then Elasticsearch lost it all (Logstash's output pointed nowhere):
    # reconcile asks what the index names where documents were missing are (data streams? write
    # blocks?), and hundreds of names in one URL make a request line the node refuses (400
    # too_long_http_line_exception, over 4096 bytes), which stopped the check with exit 3.
    db = tmp_path / "kcing.db"
    days = _one_build_a_day_delivered_an_hour_ago(db, 400)
    seed(es, [("build-%s" % day.strftime("%Y.%m.%d"), "%040x" % n) for n, day in enumerate(days) if n % 4 == 0])
    checked = kcing(["reconcile", "--days", "1"], clean_environ(ES_HOST=es.url, KCING_DB=str(db),
                                                                DRP_DAYS=KEEP_EVERYTHING), tmp_path)
    assert checked.returncode == 1, checked.stderr
    assert "build    checked 400, present 100, missing 300; documents: 400 checked, 300 missing" in checked.stdout
    assert not [request for request in es.requests if request.status == 400]
    assert sorted(int(upstream_id, 16) for (_, upstream_id), state in ledger_states(db).items()
                  if state == FAILED) == [n for n in range(400) if n % 4]


def test_a_user_refused_index_metadata_is_asked_once_however_many_indices_miss_documents(tmp_path, es):
    """Without view_index_metadata, the first request asking what the indices are is refused
    (403), and so would every other: the warning is said once and no more requests are made,
    not one refusal and one warning for every 50 index names."""
    db = tmp_path / "kcing.db"
    _one_build_a_day_delivered_an_hour_ago(db, 120)
    refusal = json.dumps({"error": {"type": "security_exception", "reason": "action [indices:admin/resolve/index] "
                                    "is unauthorized for user [reader]"}, "status": 403}).encode()
    with RogueFront(es.url) as front:
        front.on("GET", "/_resolve/index/", answer(403, (("Content-Type", "application/json"),), refusal))
        checked = kcing(["reconcile", "--days", "1"], clean_environ(ES_HOST=front.url, KCING_DB=str(db),
                                                                    DRP_DAYS=KEEP_EVERYTHING), tmp_path)
        asked = front.answered_by("whole_answer")
    assert checked.returncode == 1, checked.stderr
    assert "build    checked 120, present 0, missing 120" in checked.stdout, checked.stdout
    assert asked == 1
    assert checked.stderr.count("grant view_index_metadata") == 1, checked.stderr


def test_objects_delivered_before_ids_were_kept_are_not_checkable(tmp_path, es):
    db = tmp_path / "kcing.db"
    make_schema_1(db)
    with sqlite3.connect(str(db)) as conn:  # delivered recently, by a kcing that kept no ids
        conn.execute("UPDATE upstream_file SET delivered_at = ?", [str(datetime.now(timezone.utc).replace(tzinfo=None))])
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    # Nothing could be checked: not a success for cron (exit 6), and said in one line.
    assert checked.returncode == 6, checked.stderr
    assert "checked 0, present 0, missing 0, not checkable (delivered before ids were kept) 1" in checked.stdout
    assert checked.stderr.strip().splitlines() == [
        "kcing reconcile: nothing could be checked: of the objects delivered since %s, 1 delivered before the "
        "ledger kept document ids" % checked.stdout.split("since ", 1)[1].split(",", 1)[0]]
    assert runs(db)[-1][:2] == ("reconcile", "nothing checked")  # the outcome a reconcile exiting 6 records
    assert not mget_requests(es)
    assert set(ledger_states(db).values()) == {DELIVERED}


def test_a_check_of_nothing_names_each_reason_nothing_was_checked(tmp_path):
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("c1", kind=CHECKOUT, source="api"), DELIVERED, documents={})], to_logstash)
    ledger.record([Outcome(obj("b0"), DELIVERED)], to_logstash)  # no ids kept: not checkable
    ledger.close()
    down = kcing(["reconcile"], clean_environ(ES_HOST="http://127.0.0.1:%d" % closed_port(), KCING_DB=str(db)),
                 tmp_path)
    assert down.returncode == 6, down.stdout + down.stderr
    assert down.stderr.strip().splitlines()[-1].endswith(
        ", 1 delivered before the ledger kept document ids and 1 that made no documents"), down.stderr


def test_objects_that_made_no_documents_are_no_check_that_found_everything(tmp_path, es):
    # A KernelCI API checkout makes no document: Elasticsearch is not asked about it, so a check
    # of such objects alone is no success for cron, which it was even with Elasticsearch down.
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("c1", kind=CHECKOUT, source="api"), DELIVERED, documents={})], to_logstash)
    ledger.close()
    down = kcing(["reconcile"], clean_environ(ES_HOST="http://127.0.0.1:%d" % closed_port(), KCING_DB=str(db)),
                 tmp_path)
    assert down.returncode == 6, down.stdout + down.stderr
    assert "checkout checked 0, present 0, missing 0, with no documents 1" in down.stdout, down.stdout
    assert "Elasticsearch holds every document checked" not in down.stdout
    assert down.stderr.strip().splitlines()[-1].endswith(", 1 that made no documents"), down.stderr
    # The run's row keeps that count, which `kcing status` shows with the check's others.
    shown = kcing(["status"], clean_environ(KCING_DB=str(db)), tmp_path)
    assert re.search(r"\bwith no documents 1\b", shown.stdout), shown.stdout
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("b1"), DELIVERED, documents=packed(1))], to_logstash)
    ledger.close()
    seed(es, [("build-%s" % datetime.now(timezone.utc).strftime("%Y.%m.%d"), "%040x" % 1)])
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "build    checked 1, present 1, missing 0;" in checked.stdout, checked.stdout
    assert "Elasticsearch holds every document checked" in checked.stdout


def test_indices_past_the_retention_are_left_to_drp(tmp_path, es):
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("old"), DELIVERED, documents=packed(1, index="build-2019.05.31")),
                   Outcome(obj("new"), DELIVERED, documents=packed(2))], to_logstash)
    ledger.close()
    seed(es, [("build-%s" % datetime.now(timezone.utc).strftime("%Y.%m.%d"), "%040x" % 2)])
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db), DRP_DAYS="30"), tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "checked 1, present 1, missing 0, not checked (index past retention) 1" in checked.stdout
    assert [doc["_index"] for docs in mget_requests(es) for doc in docs] == [
        "build-%s" % datetime.now(timezone.utc).strftime("%Y.%m.%d")]


def test_indices_a_drp_run_with_a_shorter_retention_deleted_are_not_called_missing(tmp_path, es):
    # `drp --drp-days 1` by hand, then reconcile with DRP_DAYS=3: the index drp deleted is not
    # missing, and marking its object undelivered would have the next feed bring it back.
    now = datetime.now(timezone.utc)
    today, two_days_ago = ("build-%s" % day.strftime("%Y.%m.%d") for day in (now, now - timedelta(days=2)))
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("late"), DELIVERED, documents=packed(1, index=two_days_ago)),
                   Outcome(obj("new"), DELIVERED, documents=packed(2))], to_logstash)
    ledger.close()
    seed(es, [(two_days_ago, "%040x" % 1), (today, "%040x" % 2)])
    environ = clean_environ(ES_HOST=es.url, KCING_DB=str(db), KCI_DAYS="1")
    deleted = kcing(["drp", "--drp-days", "1"], environ, tmp_path)
    assert deleted.returncode == 0 and "drp: deleted index %s" % two_days_ago in deleted.stdout, deleted.stderr
    checked = kcing(["reconcile"], dict(environ, DRP_DAYS="3", KCI_DAYS="2"), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "checked 1, present 1, missing 0, not checked (index past retention) 1" in checked.stdout
    assert set(ledger_states(db).values()) == {DELIVERED}


def _one_object_delivered_two_days_ago(tmp_path, es):
    """A ledger holding one object delivered to Logstash with one document in the build index of
    two days ago, which Elasticsearch holds: the ledger's path and the index."""
    two_days_ago = "build-%s" % (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y.%m.%d")
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("late"), DELIVERED, documents=packed(1, index=two_days_ago))], to_logstash)
    ledger.close()
    seed(es, [(two_days_ago, "%040x" % 1)])
    return db, two_days_ago


def test_a_drp_run_that_could_not_reach_elasticsearch_deleted_nothing_for_reconcile(tmp_path, es):
    # `drp --drp-days 1` with Elasticsearch down deleted nothing: recorded as having kept from
    # yesterday, it had reconcile take every index before as deleted, and check none of them.
    db, _ = _one_object_delivered_two_days_ago(tmp_path, es)
    environ = clean_environ(ES_HOST=es.url, KCING_DB=str(db), KCI_DAYS="1")
    with refusing_port() as port:
        down = kcing(["drp", "--drp-days", "1"], dict(environ, ES_HOST="http://127.0.0.1:%d" % port), tmp_path)
    assert down.returncode == 3, down.stdout + down.stderr
    assert runs(db)[-1][:2] == ("drp", "error 3")
    checked = kcing(["reconcile"], dict(environ, DRP_DAYS="3", KCI_DAYS="2"), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "checked 1, present 1, missing 0;" in checked.stdout
    ledger = Ledger.open(str(db))
    assert ledger.deleted_before() is None
    ledger.close()


@pytest.mark.parametrize("status, kind, reason", [
    (403, "security_exception", "action [indices:admin/delete] is unauthorized for user [kcing] with effective roles "
                                "[kcing_reader] on indices [build-2019.01.01], this action is granted by the index "
                                "privileges [delete_index,manage,all]"),
    (400, "illegal_argument_exception", "injected refusal"),
])
def test_a_drp_run_whose_delete_was_refused_deleted_nothing_for_reconcile(tmp_path, es, status, kind, reason):
    # A user without the delete_index privilege: the DELETE is answered 403 before anything is
    # deleted. Recorded as having kept from yesterday, the run had reconcile take the index of two
    # days ago, there with its document, for one drp deleted, and check nothing (exit 6).
    db, two_days_ago = _one_object_delivered_two_days_ago(tmp_path, es)
    environ = clean_environ(ES_HOST=es.url, KCING_DB=str(db), KCI_DAYS="1", ES_RETRY_BACKOFF="0.01")
    es.fail_next(status, route="/" + two_days_ago, body=EsError(status, kind, reason).envelope())
    refused = kcing(["drp", "--drp-days", "1"], environ, tmp_path)
    assert refused.returncode in (2, 3), refused.stdout + refused.stderr
    assert two_days_ago in es.index_names()
    assert runs(db)[-1][:2] == ("drp", "error %d" % refused.returncode)
    _reconcile_checks_what_drp_left(db, environ, tmp_path, deleted_before=None)


def _reconcile_checks_what_drp_left(db: Path, environ: dict, tmp_path: Path, deleted_before) -> None:
    """The ledger's first day kept is `deleted_before`, and reconcile checks the object of two
    days ago (`_one_object_delivered_two_days_ago`) in its index, still there."""
    ledger = Ledger.open(str(db))
    assert ledger.deleted_before() == deleted_before
    ledger.close()
    checked = kcing(["reconcile"], dict(environ, DRP_DAYS="3", KCI_DAYS="2"), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "checked 1, present 1, missing 0;" in checked.stdout


def test_a_drp_run_refused_after_deleting_some_indices_keeps_from_the_oldest_left(tmp_path, es):
    # 50 indices deleted in a first request, the next one refused: the run deleted the days
    # before the index left, no more.
    db, two_days_ago = _one_object_delivered_two_days_ago(tmp_path, es)
    today = datetime.now(timezone.utc)
    seed(es, [("build-%s" % (today - timedelta(days=10 + n)).strftime("%Y.%m.%d"), "%040x" % 2) for n in range(50)])
    environ = clean_environ(ES_HOST=es.url, KCING_DB=str(db), KCI_DAYS="1", ES_RETRY_BACKOFF="0.01")
    es.fail_next(403, route="/" + two_days_ago)
    refused = kcing(["drp", "--drp-days", "1"], environ, tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "50 of the 51 expired indices were deleted before it" in refused.stderr
    assert es.index_names() == [two_days_ago]
    _reconcile_checks_what_drp_left(db, environ, tmp_path,
                                    deleted_before=datetime.strptime(two_days_ago, "build-%Y.%m.%d").date())


def test_a_drp_run_killed_while_deleting_has_its_first_kept_day_known_to_reconcile(tmp_path, es):
    # Killed (the out-of-memory killer, a reboot) while Elasticsearch deletes an index, drp never
    # closes its run row: the day it kept from must be in it already, or reconcile takes the index
    # gone for a loss, marks its object missing and the next feed sends it again.
    db, two_days_ago = _one_object_delivered_two_days_ago(tmp_path, es)
    deleting, killed = threading.Event(), threading.Event()
    answer = es.handle

    def held_while_deleting(method, target, headers, body):
        if method == "DELETE":
            deleting.set()
            killed.wait(30)  # Elasticsearch deletes the index all the same
        return answer(method, target, headers, body)

    es.handle = held_while_deleting
    environ = clean_environ(ES_HOST=es.url, KCING_DB=str(db), KCI_DAYS="1")
    with reaped(kcing_process(["drp", "--drp-days", "1"], environ, tmp_path)) as drp:
        assert deleting.wait(60), drp.communicate()
        drp.kill()
        drp.communicate()
    killed.set()
    assert wait_until(lambda: two_days_ago not in es.index_names())
    assert runs(db)[-1][:2] == ("drp", None)
    checked = kcing(["reconcile"], dict(environ, DRP_DAYS="3", KCI_DAYS="2"), tmp_path)
    assert checked.returncode == 6, checked.stdout + checked.stderr
    assert checked.stderr.strip().endswith("which a drp run deleted)"), checked.stderr
    assert set(ledger_states(db).values()) == {DELIVERED}


def test_nothing_checked_because_a_drp_run_deleted_it_names_that_run_not_drp_days(tmp_path, es):
    # The one line reconcile ends with said "1 in indices past the retention (DRP_DAYS=30)": an
    # index of two days ago is not past 30 days; a drp run with --drp-days 1 deleted it.
    two_days_ago = datetime.now(timezone.utc) - timedelta(days=2)
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("late"), DELIVERED, documents=packed(1, index="build-%s" % two_days_ago.strftime(
        "%Y.%m.%d")))], to_logstash)
    ledger.close()
    environ = clean_environ(ES_HOST=es.url, KCING_DB=str(db), KCI_DAYS="1")
    assert kcing(["drp", "--drp-days", "1"], environ, tmp_path).returncode == 0
    checked = kcing(["reconcile"], dict(environ, DRP_DAYS="30", KCI_DAYS="3"), tmp_path)
    assert checked.returncode == 6, checked.stdout + checked.stderr
    first_kept = (datetime.now(timezone.utc) - timedelta(days=1)).date().isoformat()
    assert checked.stderr.strip().splitlines()[-1].endswith(
        "1 in indices past the retention (dated before %s, which a drp run deleted)" % first_kept), checked.stderr
    # Past DRP_DAYS itself, the setting is named as before.
    past = kcing(["reconcile"], dict(environ, DRP_DAYS="1", KCI_DAYS="3"), tmp_path)
    assert past.returncode == 6 and past.stderr.strip().endswith("(DRP_DAYS=1)"), past.stderr


def test_the_day_a_drp_run_kept_from_is_read_from_runs_recorded_before_it_was_written(tmp_path):
    ledger = Ledger.open(str(tmp_path / "kcing.db"))
    assert ledger.deleted_before() is None
    ledger.clock = lambda: datetime(2024, 10, 16, 3, 5)
    ledger.finish_run(ledger.start_run("drp", {"days": 2}), "ok", {"days": 2})  # kept from 2024-10-14
    ledger.finish_run(ledger.start_run("drp", {"days": 9}), "ok", {"days": 9, "first_kept": "2024-10-07"})
    ledger.finish_run(ledger.start_run("drp", {"days": "x"}), "ok", {"days": "x", "first_kept": "soon"})
    ledger.finish_run(ledger.start_run("reconcile", {}), "ok", {"first_kept": "2030-01-01"})
    assert ledger.deleted_before() == date(2024, 10, 14)
    ledger.close()


def test_a_day_kept_that_no_drp_run_could_keep_by_the_ledger_s_clock_says_nothing(tmp_path):
    # drp keeps yesterday at least: a later day was written by a run whose clock was ahead.
    ledger = Ledger.open(str(tmp_path / "kcing.db"))
    ledger.clock = lambda: datetime(2024, 10, 16, 3, 5)
    ledger.finish_run(ledger.start_run("drp", {"days": 3}), "ok", {"days": 3, "first_kept": "2024-10-13"})
    ledger.finish_run(ledger.start_run("drp", {"days": 3}), "ok", {"days": 3, "first_kept": "2025-04-11"})
    ledger.finish_run(ledger.start_run("drp", {"days": 1}), "ok", {"days": 1, "first_kept": "2024-10-16"})
    assert ledger.deleted_before() == date(2024, 10, 13)
    ledger.finish_run(ledger.start_run("drp", {"days": 1}), "ok", {"days": 1, "first_kept": "2024-10-15"})
    assert ledger.deleted_before() == date(2024, 10, 15)
    ledger.clock = lambda: datetime(2025, 4, 12, 0, 0)  # the day came: what that run kept holds
    assert ledger.deleted_before() == date(2025, 4, 11)
    ledger.close()


def test_a_run_recorded_before_the_day_kept_was_written_on_a_clock_ahead_says_nothing_either(tmp_path):
    # Such a row holds the day it started and the days it kept: started half a year ahead, the day
    # it kept from is to come too.
    ledger = Ledger.open(str(tmp_path / "kcing.db"))
    ledger.clock = lambda: datetime(2025, 4, 14, 3, 5)
    ledger.finish_run(ledger.start_run("drp", {"days": 3}), "ok", {"days": 3})  # kept from 2025-04-11
    ledger.clock = lambda: datetime(2024, 10, 16, 3, 5)
    ledger.finish_run(ledger.start_run("drp", {"days": 3}), "ok", {"days": 3})  # kept from 2024-10-13
    assert ledger.deleted_before() == date(2024, 10, 13)
    ledger.clock = lambda: datetime(2025, 4, 12, 0, 0)  # the day came: what that run kept holds
    assert ledger.deleted_before() == date(2025, 4, 11)
    ledger.close()


def test_a_drp_run_whose_clock_was_ahead_does_not_stop_reconcile_checking(tmp_path, es):
    # drp run on a host whose clock was half a year ahead, then set right, recorded a first day
    # kept in the future: reconcile took every index before it for one drp deleted, checked none
    # and ended with 6 on every run until that day.
    db, _ = _one_object_delivered_two_days_ago(tmp_path, es)
    ahead = (datetime.now(timezone.utc) + timedelta(days=180)).replace(tzinfo=None)
    ledger = Ledger.open(str(db))
    ledger.clock = lambda: ahead
    ledger.finish_run(ledger.start_run("drp", {}), "ok",
                      {"days": 3, "first_kept": (ahead - timedelta(days=3)).date().isoformat()})
    ledger.close()
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db), DRP_DAYS="3", KCI_DAYS="2"),
                    tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "checked 1, present 1, missing 0;" in checked.stdout


def test_a_drp_run_row_edited_by_hand_into_no_counts_says_nothing_of_the_day_kept(tmp_path):
    """Every feed resumes from the day drp kept: a row it cannot read must not stop it."""
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.clock = lambda: datetime(2024, 10, 16, 3, 5)
    ids = [ledger.start_run("drp", {"days": 2}) for _ in range(5)]
    ledger.close()
    with sqlite3.connect(str(db)) as conn:
        for run_id, counts in zip(ids, ["null", "[2]", '"2024-10-14"', '{"days": true}', '{"days": 3}']):
            conn.execute("UPDATE run SET counts = ? WHERE id = ?", (counts, run_id))
    ledger = Ledger.open(str(db))
    assert ledger.deleted_before() == date(2024, 10, 13)  # the one row still readable
    ledger.close()


def test_an_object_with_documents_in_and_past_the_retention_is_checked_by_those_in_it(tmp_path, es):
    today = "build-%s" % datetime.now(timezone.utc).strftime("%Y.%m.%d")
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    mixed = dict(packed(3, index="build-2019.05.31"), **packed(4, index=today))
    ledger.record([Outcome(obj("old"), DELIVERED, documents=packed(1, index="build-2019.05.31")),
                   Outcome(obj("mixed"), DELIVERED, documents=mixed)], to_logstash)
    ledger.close()
    seed(es, [(today, "%040x" % 4)])
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db), DRP_DAYS="30"), tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "checked 1, present 1, missing 0, not checked (index past retention) 1;" in checked.stdout


def test_an_object_whose_kept_ids_were_lost_in_part_is_counted_missing_and_sent_again(tmp_path, es):
    # Its ids left in the ledger are all in Elasticsearch, but they are not all it produced:
    # nothing says the others are there, so it is not reported present.
    today = "build-%s" % datetime.now(timezone.utc).strftime("%Y.%m.%d")
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("a"), DELIVERED, documents=dict(packed(1, 2), **packed(3, index="build-2024.01.01")))],
                  to_logstash)
    ledger.close()
    with sqlite3.connect(str(db)) as conn:
        conn.execute("DELETE FROM delivered_documents WHERE index_name = 'build-2024.01.01'")
    seed(es, [(today, "%040x" % 1), (today, "%040x" % 2), ("build-2024.01.01", "%040x" % 3)])
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "checked 1, present 0, missing 1" in checked.stdout
    assert "a (its kept ids do not match their count; a resend rewrites them)" in checked.stdout
    assert set(ledger_states(db).values()) == {FAILED}


def test_an_object_whose_kept_ids_were_lost_in_part_is_one_warning_that_does_not_say_elasticsearch_lacks_it(
        tmp_path, es):
    # Its ids are not asked about: the warning says what is wrong with the row, once, not that
    # documents are missing in Elasticsearch.
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1, 2))], to_logstash)
    ledger.close()
    with sqlite3.connect(str(db)) as conn:
        conn.execute("UPDATE upstream_file SET kept_ids = 3")
    checked = kcing(["reconcile", "-q"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    warnings = [line for line in checked.stderr.splitlines() if " a: " in line]
    assert len(warnings) == 1, checked.stderr
    assert warnings[0].endswith("build a: the ledger's kept ids do not match their count (3); counted as missing")


def test_api_objects_are_marked_but_not_resent_at_once(tmp_path, es):
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("n1.20241016T070000Z", kind="job", source="api"), DELIVERED,
                           documents=packed(1, index="boot-%s" % datetime.now(timezone.utc).strftime("%Y.%m.%d")))],
                  to_logstash)
    ledger.close()
    done = kcing(["reconcile", "--resend"], clean_environ(ES_HOST=es.url, KCING_DB=str(db), DRP_DAYS=KEEP_EVERYTHING),
                 tmp_path)
    assert done.returncode == 1, done.stderr
    assert "1 object of the api source cannot be fetched again" in done.stdout
    assert "feed_es --source api --since" in done.stdout
    assert set(ledger_states(db).values()) == {FAILED}


@needs_samples
def test_a_dry_run_of_a_resend_counts_only_what_the_resend_would_send(env, tmp_path, forwarding, es):
    # The dry run said "would re-send N" of every object it found missing or held, API nodes and
    # objects of other inputs included, which the real --resend names and does not send.
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    es_client(es).indices.delete(index=",".join(es.index_names()))
    kinds = [kind for kind, _ in kept_ids(db)]
    builds = kinds.count(BUILD)
    assert builds and len(kinds) > builds
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("n1.20241016T070000Z", kind="job", source="api"), DELIVERED,
                           documents=packed(1, index="boot-%s" % datetime.now(timezone.utc).strftime("%Y.%m.%d")))],
                  lambda kind: logstash_destination([forwarding.urls["lava"]]))
    ledger.close()
    before = table_dump(db)
    moved = dict(env, ES_BUILD="http://127.0.0.1:9/")  # where these settings would now send builds
    planned = kcing(["reconcile", "--dry-run", "--resend"], moved, tmp_path)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert "would re-send %d objects" % (len(kinds) - builds) in planned.stdout, planned.stdout
    assert "1 object of the api source cannot be fetched again" in planned.stdout
    assert ("%d legacy objects held as missing were delivered through other Logstash inputs" % builds
            in planned.stdout), planned.stdout
    assert table_dump(db) == before


def test_a_resend_plan_sorts_what_would_be_sent_from_what_would_be_named():
    def destination_of(kind):
        return LOGSTASH + kind

    plan = resend_plan({("legacy", "build", LOGSTASH + "build"): 3, ("legacy", "lava", LOGSTASH + "old-lava"): 2,
                        ("samples", "boot", LOGSTASH + "boot"): 1, ("api", "job", LOGSTASH + "lava"): 4,
                        ("files", "bogus", LOGSTASH + "x"): 5, ("legacy", "build", "ndjson /tmp/out"): 7,
                        ("api", "job", "ndjson /tmp/out"): 6, ("files", "bogus", "ndjson /tmp/out"): 8},
                       destination_of)
    assert plan.sendable == 4
    assert plan.unfetchable == {"api": 4}
    assert plan.elsewhere == {"legacy": {LOGSTASH + "old-lava": 2}}
    assert plan.unknown == 5


def test_a_resend_that_leaves_an_object_held_does_not_exit_0(tmp_path, es, logstash):
    # A row edited to a kind kcing does not know is skipped by the re-send with a warning; it is
    # still missing in Elasticsearch, which exit 0 ("everything held was sent again") denied.
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1, index="build-2024.10.16"))],
                  lambda kind: logstash_destination([logstash.urls["lava"]]))
    ledger.mark_missing([ledger.row("legacy", BUILD, "a", logstash_destination([logstash.urls["lava"]])).id])
    ledger.close()
    with sqlite3.connect(str(db)) as conn:
        conn.execute("UPDATE upstream_file SET kind = 'bogus'")
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db), ES_BUILD=logstash.urls["build"],
                        ES_LAVA=logstash.urls["lava"], ES_BOOT=logstash.urls["boot"], DRP_DAYS=KEEP_EVERYTHING)
    done = kcing(["reconcile", "--resend"], env, tmp_path)
    assert "the ledger gives it the kind 'bogus', which kcing does not know" in done.stderr
    assert done.returncode == 1, done.stdout + done.stderr
    assert set(ledger_states(db).values()) == {FAILED}


def test_an_api_node_held_as_missing_is_cleared_by_the_feed_that_delivers_its_newer_version(api_replica, forwarding,
                                                                                           es, tmp_path):
    # What --resend tells the user for API objects: `feed_es --source api --since DATE`. It
    # delivers the node's newest version, another row; the held one stayed held for ever, and
    # every reconcile exited 1 though Elasticsearch held the node's documents again.
    db = tmp_path / "kcing.db"
    env = api_feed_environ(api_replica, forwarding, db, KCI_DAYS=API_WIDE, ES_HOST=es.url, DRP_DAYS=KEEP_EVERYTHING)
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    running = api_replica.tree["running"]
    kept = kept_ids(db)
    lost = next(key for key in kept if key[1].startswith(running["id"] + "."))
    delete_documents(es, kept[lost])
    assert kcing(["reconcile"], env, tmp_path).returncode == 1
    advised = kcing(["reconcile", "--resend"], env, tmp_path)
    assert advised.returncode == 1 and "`kcing feed_es --source api --since 20" in advised.stdout, advised.stdout

    position = api_watermark(db)
    api_replica.corpus.update(running["id"], when=position + timedelta(minutes=1), state="done", result="fail")
    since = (position - timedelta(days=1)).strftime("%Y-%m-%d")
    fed = kcing(["feed_es", "--since", since], env, tmp_path)
    assert fed.returncode == 0 and "delivered 1," in fed.stdout, fed.stdout + fed.stderr
    assert kept[lost] <= es_keys(es)
    final = kcing(["reconcile"], env, tmp_path)
    assert final.returncode == 0, final.stdout + final.stderr
    assert not _held_as_missing(db).get(lost, (None, ""))[1].startswith(MISSING_IN_ELASTICSEARCH)


def test_reconcile_names_the_feed_that_sends_lost_api_nodes_again_and_that_feed_does(api_replica, forwarding,
                                                                                      es, tmp_path):
    # Reconcile told of API nodes it marked undelivered: "the next feed_es that lists them sends
    # them again, `kcing reconcile --resend` does it now", and of those still held, "`kcing
    # reconcile --resend` sends them again". Neither does: the next feed lists from the watermark,
    # after them, and --resend cannot fetch a node's version from the ledger. A user following
    # the advice got exit 1 every night. It now names the feed to run, with the date to give.
    db = tmp_path / "kcing.db"
    env = api_feed_environ(api_replica, forwarding, db, KCI_DAYS=API_WIDE, ES_HOST=es.url, DRP_DAYS=KEEP_EVERYTHING)
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(db)
    lost = {key for key, keys in kept.items() if any(index.startswith("test-") for index, _ in keys)}
    assert len(lost) > 1
    delete_documents(es, set().union(*(kept[key] for key in lost)))

    found = kcing(["reconcile"], env, tmp_path)
    assert found.returncode == 1, found.stdout + found.stderr
    assert "--resend` does it now" not in found.stdout and "--resend` sends them" not in found.stdout, found.stdout
    # Said once: the summary's line on the nodes this check found, and the line on all those the
    # ledger holds as missing, named the same feed twice in other words.
    commands = re.findall(r"`kcing (feed_es --source api --since \S+)`", found.stdout)
    assert len(commands) == 1, found.stdout
    assert "nor does a feed from the watermark list them again" in found.stdout, found.stdout
    assert kcing(["feed_es"], env, tmp_path).returncode == 0  # from the watermark: lists none of them
    assert kcing(["reconcile"], env, tmp_path).returncode == 1

    # Within index.gc_deletes (60 s) of their delete, the node still knows the deleted documents'
    # versions (one above those sent): the same versions sent again are refused (409, which
    # Logstash drops), and the next reconcile finds them missing again.
    fed = kcing(commands[0].split(), env, tmp_path)
    assert fed.returncode == 0, fed.stdout + fed.stderr
    assert not set().union(*(kept[key] for key in lost)) & es_keys(es)
    assert kcing(["reconcile"], env, tmp_path).returncode == 1
    # Lost a while ago, as documents found missing mostly are: the feed it names sends them back.
    es.forget_deleted_versions()
    fed = kcing(commands[0].split(), env, tmp_path)
    assert fed.returncode == 0, fed.stdout + fed.stderr
    assert set().union(*(kept[key] for key in lost)) <= es_keys(es)
    final = kcing(["reconcile"], env, tmp_path)
    assert final.returncode == 0, final.stdout + final.stderr


def test_a_dry_run_of_a_resend_names_the_feed_for_lost_api_nodes_from_their_earliest_date(api_replica, forwarding,
                                                                                           es, tmp_path):
    """The dry run marks nothing: the date it gives is that of the nodes it found missing, the
    same the real check gives once it has marked them."""
    db = tmp_path / "kcing.db"
    env = api_feed_environ(api_replica, forwarding, db, KCI_DAYS=API_WIDE, ES_HOST=es.url, DRP_DAYS=KEEP_EVERYTHING)
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(db)
    lost = {key for key, keys in kept.items() if any(index.startswith("test-") for index, _ in keys)}
    with sqlite3.connect(str(db)) as conn:
        dates = {row[0] for row in conn.execute("SELECT object_date FROM upstream_file WHERE source = 'api'")
                 if row[0] is not None}
    assert len(lost) > 1 and len(dates) > 1
    delete_documents(es, set().union(*(kept[key] for key in lost)))

    planned = kcing(["reconcile", "--dry-run", "--resend"], env, tmp_path)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    found = kcing(["reconcile"], env, tmp_path)
    assert found.returncode == 1, found.stdout + found.stderr
    advised = re.findall(r"`kcing feed_es --source api --since (\S+)`", found.stdout)
    assert len(advised) == 1, found.stdout
    assert re.findall(r"`kcing feed_es --source api --since (\S+)`", planned.stdout) == advised, planned.stdout
    with sqlite3.connect(str(db)) as conn:
        first = conn.execute("SELECT MIN(object_date) FROM upstream_file WHERE source = 'api' AND state != ?",
                             (DELIVERED,)).fetchone()[0]
    assert parse_since(advised[0]) == parse_since(first.replace(" ", "T")[:19] + "Z")


def test_the_advice_for_lost_api_nodes_gives_their_earliest_date():
    report = Report(scope="test", found_missing={("api", "job", LOGSTASH + "x"): 2, ("legacy", "build", LOGSTASH + "y"): 1})
    report.kinds["job"] = KindTally(missing=2)
    report.kinds["build"] = KindTally(missing=1)
    report.marked = 3
    report.found_since = {"api": datetime(2024, 10, 16, 7, 5, 9, 123000)}
    lines = summary_lines(report, "http://es:9200")
    assert lines[-2].endswith("`kcing reconcile --resend` does it now")  # for the legacy build
    assert lines[-1] == ("reconcile: 2 of them are of the api source: no feed from the watermark lists them again, "
                         "nor can `kcing reconcile --resend` fetch them: "
                         "`kcing feed_es --source api --since 2024-10-16T07:05:09Z` sends them again")
    assert parse_since("2024-10-16T07:05:09Z") == datetime(2024, 10, 16, 7, 5, 9, tzinfo=timezone.utc)
    # reconcile itself names that feed once, in its lines on every object held as missing.
    quiet = summary_lines(report, "http://es:9200", advise_refeed=False)
    assert quiet[-1].endswith("`kcing reconcile --resend` does it now") and "--source api" not in "".join(quiet)
    report.found_since = {"api": None}  # a row edited by hand, without a readable date
    assert "--since DATE` (DATE before their last update)" in summary_lines(report, "http://es:9200")[-1]


def test_the_earliest_date_of_lost_nodes_is_unknown_when_one_of_them_has_none():
    first, later = datetime(2024, 10, 16, 7, 5, 9), datetime(2024, 10, 17, tzinfo=timezone.utc)
    assert earliest(later, first) == earliest(first, later) == first
    assert earliest(EPOCH_END, later) == later.replace(tzinfo=None)
    # A node without a readable date may be older than any other: no date is safe to give.
    assert earliest(first, None) is None and earliest(None, first) is None
    assert refeed_command("api", None) == refeed_command("api", EPOCH_END) == (
        "`kcing feed_es --source api --since DATE` (DATE before their last update) sends them again")


# -- failures --------------------------------------------------------------------------------------

def test_elasticsearch_unreachable_is_exit_3_and_changes_nothing(tmp_path):
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1))], to_logstash)
    ledger.close()
    done = kcing(["reconcile"], clean_environ(ES_HOST="http://127.0.0.1:9", KCING_DB=str(db)), tmp_path)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("kcing reconcile: cannot reach Elasticsearch")
    assert set(ledger_states(db).values()) == {DELIVERED}
    assert runs(db)[-1][:2] == ("reconcile", "error 3")


def stopped_while_elasticsearch_hangs(args, env, tmp_path, silent, signum):
    """Run `args` against an Elasticsearch that takes the connection and never answers, send
    `signum` once it asks; return (seconds from the signal to the end, exit status, stderr)."""
    process = kcing_process(args, dict(env, ES_HOST=silent.url, ES_REQUEST_DEADLINE="120"), tmp_path)
    try:
        assert wait_until(lambda: silent.accepted, timeout=30), "never asked Elasticsearch"
        time.sleep(0.5)  # well inside the _mget's wait for an answer
        signalled = time.monotonic()
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=60)
        return time.monotonic() - signalled, process.returncode, stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda signum: signum.name)
def test_a_signal_ends_a_reconcile_waiting_for_elasticsearch_at_once(tmp_path, signum):
    """An _mget is a question: nothing is lost by leaving it unanswered, so the first signal ends
    it (exit 130), rather than the run waiting up to ES_REQUEST_DEADLINE and then exiting 3."""
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1))], to_logstash)
    ledger.close()
    silent = Silent()
    try:
        took, status, stderr = stopped_while_elasticsearch_hangs(["reconcile"], clean_environ(KCING_DB=str(db)),
                                                                 tmp_path, silent, signum)
    finally:
        silent.close()
    assert took < 5, took
    assert status == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("kcing reconcile: stopped by a signal"), stderr
    assert runs(db)[-1][:2] == ("reconcile", "error 130")
    assert set(ledger_states(db).values()) == {DELIVERED}
    assert kcing(["status"], clean_environ(KCING_DB=str(db)), tmp_path).returncode == 0


@needs_samples
def test_a_signal_ends_a_verify_waiting_for_elasticsearch_at_once(env, tmp_path):
    silent = Silent()
    try:
        took, status, stderr = stopped_while_elasticsearch_hangs(["feed_es", "--verify", "--verify-delay", "0"], env,
                                                                 tmp_path, silent, signal.SIGTERM)
    finally:
        silent.close()
    assert took < 5, took
    assert status == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("kcing feed_es: stopped by a signal"), stderr
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {DELIVERED}  # the feed itself was done
    assert [run[:2] for run in runs(tmp_path / "kcing.db")] == [("feed_es", "ok"), ("reconcile", "error 130")]


def test_lock_held_no_ledger_and_bad_flags(tmp_path, es):
    db = tmp_path / "kcing.db"
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db))
    missing = kcing(["reconcile"], env, tmp_path)
    assert missing.returncode == 2 and "no ledger" in missing.stderr
    Ledger.open(str(db)).close()
    with RunLock(str(db)):
        held = kcing(["reconcile"], env, tmp_path)
    assert held.returncode == 4 and "another kcing run" in held.stderr
    assert kcing(["reconcile", "--days", "1", "--since", "2024-01-01"], env, tmp_path).returncode == 2
    assert kcing(["reconcile", "--since", "not a date"], env, tmp_path).returncode == 2
    # The first year of the calendar is written with its four digits (strftime writes "1-01-01").
    earliest = kcing(["reconcile", "--since", "0001-01-01"], env, tmp_path)
    assert earliest.returncode == 6 and "since 0001-01-01 00:00 UTC" in earliest.stderr, earliest.stderr
    assert kcing(["feed_es", "--verify", "--output", str(tmp_path / "out"), "--source", "samples"],
                 env, tmp_path).returncode == 2


def test_resend_options_without_resend_are_refused_not_ignored(tmp_path, es):
    # `reconcile --days 2 --threads 8` in a crontab reads as a line that re-sends; it only checked.
    db = tmp_path / "kcing.db"
    Ledger.open(str(db)).close()
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db))
    for option in (["--threads", "8"], ["--batch-size", "100"]):
        for extra in ([], ["--dry-run"]):
            refused = kcing(["reconcile"] + option + extra, env, tmp_path)
            assert refused.returncode == 2, refused.stdout + refused.stderr
            assert "%s is for --resend" % option[0] in refused.stderr
            assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        allowed = kcing(["reconcile", "--resend", "--dry-run"] + option, env, tmp_path)
        assert allowed.returncode == 6, allowed.stdout + allowed.stderr  # an empty ledger: nothing to check
    assert not mget_requests(es)


# -- kcing index names that cannot be read by id, or written to ------------------------------------

def day_index(kind: str, days_ago: int) -> str:
    return "%s-%s" % (kind, (datetime.now(timezone.utc) - timedelta(days=days_ago)).strftime("%Y.%m.%d"))


def test_objects_written_to_output_files_are_neither_checked_nor_marked(tmp_path, es):
    """Objects a feed wrote with --output are not in Elasticsearch until someone loads the files:
    reconcile checks what went to Logstash alone (its help), and marks none of the others missing."""
    db = tmp_path / "kcing.db"
    out = tmp_path / "out"
    out.mkdir()
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("written"), DELIVERED, documents=packed(2))], lambda kind: ndjson_destination(str(out)))
    ledger.close()
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db))
    only_files = kcing(["reconcile", "--days", "1"], env, tmp_path)
    assert only_files.returncode == 6, only_files.stdout + only_files.stderr
    assert "no object was delivered to Logstash" in only_files.stderr
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("sent"), DELIVERED, documents=packed(1))], to_logstash)
    ledger.close()
    seed(es, [(index, "%040x" % 1) for index in packed(1)])
    checked = kcing(["reconcile", "--days", "1"], env, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "build    checked 1, present 1, missing 0" in checked.stdout, checked.stdout
    assert [doc["_id"] for docs in mget_requests(es) for doc in docs] == ["%040x" % 1]
    assert set(ledger_states(db).values()) == {DELIVERED}


def test_documents_in_closed_indices_are_not_checked_nor_marked(tmp_path, es):
    """Closing old indices is a common retention practice: their documents cannot be read, so they
    are left out of the check, counted, and named with the way to check them; nothing is marked."""
    db = tmp_path / "kcing.db"
    today, closed = day_index("build", 0), day_index("build", 1)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("open"), DELIVERED, documents=packed(1, 2, index=today)),
                   Outcome(obj("shut"), DELIVERED, documents=packed(3, 4, index=closed)),
                   Outcome(obj("both"), DELIVERED, documents={**packed(5, index=today), **packed(6, index=closed)})],
                  to_logstash)
    ledger.close()
    seed(es, [(today, "%040x" % n) for n in (1, 2, 5)] + [(closed, "%040x" % n) for n in (3, 4, 6)])
    es_client(es).indices.close(index=closed)
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db))
    checked = kcing(["reconcile"], env, tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr
    assert ("build    checked 2, present 2, missing 0, not checked (index closed or unreadable) 1; "
            "documents: 3 checked, 0 missing") in checked.stdout
    assert ("reconcile: not checked: 3 documents of 2 objects in closed indices (%s): open them "
            "(POST /<index>/_open) and run reconcile again to check them" % closed) in checked.stdout
    assert set(ledger_states(db).values()) == {DELIVERED}

    # Something missing elsewhere still decides the exit status; the closed index stays unchecked.
    delete_documents(es, [(today, "%040x" % 1)])
    missing = kcing(["reconcile"], env, tmp_path)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "1 object has missing documents; 1 marked undelivered" in missing.stdout
    states = {upstream_id: state for (_, upstream_id), state in ledger_states(db).items()}
    assert states == {"open": FAILED, "shut": DELIVERED, "both": DELIVERED}


def test_documents_not_checked_are_said_by_a_quiet_run_that_exits_0(tmp_path, es):
    # -q (cron) prints only warnings, and the summary when the run fails: documents in a closed
    # index, an alias of several indices or a data stream went unchecked night after night with
    # nothing printed, for the run exits 0.
    db = tmp_path / "kcing.db"
    today, closed = day_index("build", 0), day_index("build", 1)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("open"), DELIVERED, documents=packed(1, index=today)),
                   Outcome(obj("shut"), DELIVERED, documents=packed(3, 4, index=closed))], to_logstash)
    ledger.close()
    seed(es, [(today, "%040x" % 1)] + [(closed, "%040x" % n) for n in (3, 4)])
    es_client(es).indices.close(index=closed)
    quiet = kcing(["reconcile", "-q"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert not quiet.stdout
    (line,) = quiet.stderr.strip().splitlines()
    assert "WARNING kcing.reconcile: not checked: 2 documents of 1 object in closed indices (%s)" % closed in line, line


def test_documents_in_a_red_index_are_not_checked_and_the_others_are(tmp_path, es):
    """An index whose primary shard is not assigned cannot be read until it is: its documents are
    left out, named with what to do, and the other indices are checked (a real node's answer:
    test_real_engine replays it)."""
    db = tmp_path / "kcing.db"
    today, red = day_index("build", 0), day_index("boot", 0)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("fine"), DELIVERED, documents=packed(1, index=today)),
                   Outcome(obj("lost"), DELIVERED, documents=packed(2, index=today)),
                   Outcome(obj("red"), DELIVERED, documents=packed(3, index=red))], to_logstash)
    ledger.close()
    seed(es, [(today, "%040x" % 1), (red, "%040x" % 3)])
    es.unassign(red)
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "checked 2, present 1, missing 1, not checked (index closed or unreadable) 1" in checked.stdout
    assert ("reconcile: not checked: 1 document of 1 object in indices whose primary shards are not assigned "
            "(%s): Elasticsearch cannot read them until they are (GET /_cluster/allocation/explain says why); "
            "run reconcile again then" % red) in checked.stdout
    states = {upstream_id: state for (_, upstream_id), state in ledger_states(db).items()}
    assert states == {"fine": DELIVERED, "lost": FAILED, "red": DELIVERED}
    # The help names them among what is not checked, as it names closed indices.
    helped = kcing(["reconcile", "--help"], clean_environ(), tmp_path)
    assert "whose primary shard is not assigned (red)" in " ".join(helped.stdout.split())


def test_an_index_the_user_may_not_read_is_a_configuration_error(tmp_path, es):
    """With security on, an _mget answers each document of an index the user's roles do not
    grant `read` on with a security_exception: the user's rights, not Elasticsearch, need
    mending, so the run says which index and stops with 2, and nothing is marked missing."""
    db = tmp_path / "kcing.db"
    readable, denied = day_index("build", 0), day_index("boot", 0)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("fine"), DELIVERED, documents=packed(1, index=readable)),
                   Outcome(obj("hidden"), DELIVERED, documents=packed(2, index=denied))], to_logstash)
    ledger.close()
    seed(es, [(readable, "%040x" % 1), (denied, "%040x" % 2)])
    es.deny_read(denied)
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr
    assert "denied the configured user reading %s (403)" % denied in checked.stderr
    assert "read privilege" in checked.stderr
    states = {upstream_id: state for (_, upstream_id), state in ledger_states(db).items()}
    assert states == {"fine": DELIVERED, "hidden": DELIVERED}


def test_documents_the_node_turns_away_for_now_are_asked_again(tmp_path, es):
    """Under load a node answers the documents of a shard request its get queue turned away with
    a per-document es_rejected_execution_exception (429): back-pressure, not an answer. They are
    asked again after a pause, and the check goes on."""
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("one"), DELIVERED, documents=packed(1, 2)),
                   Outcome(obj("two"), DELIVERED, documents=packed(3))], to_logstash)
    ledger.close()
    seed(es, [(day_index("build", 0), "%040x" % n) for n in (1, 2, 3)])
    es.reject_mget_docs(2)
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "checked 2, present 2, missing 0" in checked.stdout
    assert "turned away 2 of 3 documents asked for (es_rejected_execution_exception); asking again in 1s" in checked.stderr
    assert [len(json.loads(record.body)["docs"]) for record in es.requests if record.route == "/_mget"] == [3, 2]
    assert set(ledger_states(db).values()) == {DELIVERED}


def test_documents_turned_away_every_time_stop_the_check_with_the_reason():
    class Busy:
        asked = 0

        def mget(self, docs, filter_path):
            self.asked += 1
            return {"docs": [{"_id": doc["_id"], "error": {"type": "es_rejected_execution_exception",
                                                          "reason": "rejected execution"}} for doc in docs]}

    client, pauses = Busy(), []
    checker = Reconciler(client, "http://es:9200", None, Report(scope="test"), sleep=pauses.append)
    with pytest.raises(ElasticsearchError, match="es_rejected_execution_exception: rejected execution"):
        checker._look_up([(1, "build-2024.10.16", "%040x" % 1)], {})
    assert client.asked == REJECTED_ATTEMPTS and pauses == [1.0, 2.0, 4.0]


def test_only_closed_indices_is_nothing_checked(tmp_path, es):
    db = tmp_path / "kcing.db"
    closed = day_index("build", 1)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("shut"), DELIVERED, documents=packed(3, index=closed))], to_logstash)
    ledger.close()
    seed(es, [(closed, "%040x" % 3)])
    es_client(es).indices.close(index=closed)
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 6, checked.stdout + checked.stderr
    assert checked.stderr.strip().splitlines()[-1].endswith(
        "1 in closed or unreadable indices (%s)" % closed)
    assert set(ledger_states(db).values()) == {DELIVERED}


def test_aliases_blocks_and_data_streams_under_kcing_names_say_so_and_mark_nothing_wrongly(tmp_path, es):
    """An alias of several indices, an index with a read block and a data stream under a kcing
    index name cannot be looked up by id: not checked, one line each. Documents missing from an
    index with a write block are missing, but a resend cannot write them: not marked."""
    db = tmp_path / "kcing.db"
    alias, read_blocked = day_index("boot", 1), day_index("test", 1)
    stream, write_blocked = day_index("log", 2), day_index("test", 2)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("aliased", kind="lava"), DELIVERED, documents=packed(1, index=alias)),
                   Outcome(obj("unreadable", kind="lava"), DELIVERED, documents=packed(2, index=read_blocked)),
                   Outcome(obj("streamed", kind="lava"), DELIVERED, documents=packed(3, index=stream)),
                   Outcome(obj("frozen", kind="lava"), DELIVERED, documents=packed(4, 5, index=write_blocked))],
                  to_logstash)
    ledger.close()
    client = es_client(es)
    seed(es, [("kept-a", "%040x" % 1), ("kept-b", "%040x" % 9), (read_blocked, "%040x" % 2),
              (write_blocked, "%040x" % 4)])
    client.indices.update_aliases(actions=[{"add": {"index": "kept-a", "alias": alias}},
                                           {"add": {"index": "kept-b", "alias": alias}}])
    client.indices.add_block(index=read_blocked, block="read")
    client.indices.add_block(index=write_blocked, block="write")
    client.indices.put_index_template(name="user-logs", index_patterns=[stream], priority=300, data_stream={})
    refused = client.bulk(operations=[{"index": {"_index": stream, "_id": "%040x" % 3}},
                                      {"@timestamp": "2024-10-16T07:00:00Z"}])
    assert refused["errors"]  # what Logstash's `index` action meets: the stream is made, the write refused

    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db))
    checked = kcing(["reconcile"], env, tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr
    assert ("lava     checked 1, present 0, missing 1, not checked (index closed or unreadable) 3; "
            "documents: 2 checked, 1 missing") in checked.stdout
    assert ("reconcile: not checked: 1 document of 1 object in %s, an alias of several indices (kept-a, kept-b): "
            "a document cannot be looked up by id through it; point it at one index to check them" % alias
            in checked.stdout)
    assert ("reconcile: not checked: 1 document of 1 object in indices with a read block (%s): remove the block "
            "(index.blocks.read) to check them" % read_blocked in checked.stdout)
    assert ("reconcile: not checked: 1 document of 1 object in %s, a data stream: kcing's documents cannot be "
            "looked up by id there, nor written (Logstash's index action is refused); delete the data stream "
            "(DELETE /_data_stream/<name>), then the template that makes it (`kcing setup_es` names it; "
            "Elasticsearch refuses to delete it first), then run reconcile again" % stream
            in checked.stdout)
    assert ("reconcile: 1 object with missing documents was not marked undelivered: Elasticsearch refuses writes "
            "to %s (index.blocks.write); remove the block and run reconcile again" % write_blocked in checked.stdout)
    assert set(ledger_states(db).values()) == {DELIVERED}


def test_an_object_missing_a_document_beside_one_in_an_index_that_refuses_writes_is_not_marked(tmp_path, es):
    """A LAVA job's log lines in an index someone made read-only, one of its test documents lost
    elsewhere: a resend posts every document of the job, and Logstash retries the ones the block
    refuses without end, holding the pipeline every input shares. Not marked; the block named."""
    db = tmp_path / "kcing.db"
    frozen, lossy = day_index("log", 2), day_index("test", 2)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("job", kind="lava"), DELIVERED,
                           documents={**packed(1, 2, index=frozen), **packed(3, 4, index=lossy)}),
                   Outcome(obj("elsewhere", kind="lava"), DELIVERED, documents=packed(5, 6, index=lossy))],
                  to_logstash)
    ledger.close()
    seed(es, [(frozen, "%040x" % 1), (frozen, "%040x" % 2), (lossy, "%040x" % 3), (lossy, "%040x" % 5)])
    es_client(es).indices.add_block(index=frozen, block="write")

    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "lava     checked 2, present 0, missing 2; documents: 6 checked, 2 missing" in checked.stdout
    assert ("reconcile: 1 object with missing documents was not marked undelivered: Elasticsearch refuses writes "
            "to %s (index.blocks.write); remove the block and run reconcile again" % frozen in checked.stdout)
    assert {upstream_id: state for (_, upstream_id), state in ledger_states(db).items()} == {
        "job": DELIVERED, "elsewhere": FAILED}


def test_an_alias_of_one_index_that_refuses_writes_is_read_through_as_that_index(tmp_path, es):
    """An alias of one index under a kcing name is the index itself: documents missing there,
    where the index behind it has a write block, are counted missing but their objects are not
    marked undelivered (a resend through the alias would be refused), as for the index by name."""
    db = tmp_path / "kcing.db"
    alias, plain = day_index("boot", 1), day_index("boot", 2)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("behind-alias", kind="boot"), DELIVERED, documents=packed(1, 2, index=alias)),
                   Outcome(obj("by-name", kind="boot"), DELIVERED, documents=packed(3, index=plain))],
                  to_logstash)
    ledger.close()
    client = es_client(es)
    seed(es, [("kept-boot", "%040x" % 1), (plain, "%040x" % 4)])
    client.indices.update_aliases(actions=[{"add": {"index": "kept-boot", "alias": alias}}])
    client.indices.add_block(index="kept-boot", block="write")

    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "boot     checked 2, present 0, missing 2; documents: 3 checked, 2 missing" in checked.stdout
    assert ("reconcile: 1 object with missing documents was not marked undelivered: Elasticsearch refuses writes "
            "to %s (index.blocks.write); remove the block and run reconcile again" % alias in checked.stdout)
    assert {upstream_id: state for (_, upstream_id), state in ledger_states(db).items()} == {
        "behind-alias": DELIVERED, "by-name": FAILED}


def test_an_index_with_a_metadata_block_is_no_reason_to_stop_telling_write_blocks(tmp_path, es):
    """Elasticsearch refuses the settings of every index asked for when one has a metadata block
    (403 cluster_block_exception): that is not a privilege the user lacks. The blocked index is
    named (whether it refuses writes cannot be told), and the write block of the others is still
    found, so their objects are not marked for a resend Elasticsearch would refuse."""
    db = tmp_path / "kcing.db"
    described, write_blocked = day_index("test", 1), day_index("test", 2)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("hidden", kind="lava"), DELIVERED, documents=packed(1, 2, index=described)),
                   Outcome(obj("frozen", kind="lava"), DELIVERED, documents=packed(3, 4, index=write_blocked))],
                  to_logstash)
    ledger.close()
    client = es_client(es)
    seed(es, [(described, "%040x" % 1), (write_blocked, "%040x" % 3)])
    client.indices.add_block(index=described, block="metadata")
    client.indices.add_block(index=write_blocked, block="write")
    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "view_index_metadata" not in checked.stderr, checked.stderr
    assert ("refuses to describe %s (FORBIDDEN/9/index metadata (api)): whether they refuse writes is unknown"
            % described) in checked.stderr
    assert ("reconcile: 1 object with missing documents was not marked undelivered: Elasticsearch refuses writes "
            "to %s (index.blocks.write)" % write_blocked) in checked.stdout
    states = {upstream_id: state for (_, upstream_id), state in ledger_states(db).items()}
    assert states == {"hidden": FAILED, "frozen": DELIVERED}


@needs_samples
def test_resend_with_a_logstash_setting_it_cannot_use_is_refused_before_the_check_marks_anything(
        env, tmp_path, forwarding, es):
    db = tmp_path / "kcing.db"
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(db)
    delete_documents(es, kept[next(key for key in sorted(kept) if key[0] == "boot")])
    before = table_dump(db)
    refused = kcing(["reconcile", "--resend"], dict(env, LS_USER="kcing"), tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip() == "kcing reconcile: LS_USER and LS_PASSWORD must be set together"
    assert table_dump(db) == before  # not checked, not marked, no run recorded
    # Its dry run, which tries the cron line out, is refused so too, as feed_es's is: it planned
    # a re-send (exit 1) that the night's run refuses with exit 2.
    tried = kcing(["reconcile", "--resend", "--dry-run"], dict(env, LS_USER="kcing"), tmp_path)
    assert tried.returncode == 2, tried.stdout + tried.stderr
    assert tried.stderr.strip() == "kcing reconcile: LS_USER and LS_PASSWORD must be set together"
    assert table_dump(db) == before


@pytest.mark.parametrize("status", [429, 503])
def test_a_signal_ends_a_reconcile_waiting_to_ask_a_busy_elasticsearch_again(tmp_path, status):
    # The wait before asking a busy node again (a Retry-After of 100 s) is a question's too.
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("a"), DELIVERED, documents=packed(1))], to_logstash)
    ledger.close()
    busy = answer(status, (("Content-Type", "application/json"), ("X-Elastic-Product", "Elasticsearch"),
                           ("Retry-After", "100")), b'{"error":{"type":"es_rejected_execution_exception"},"status":%d}'
                  % status)
    with RogueFront() as front:
        front.on("POST", "/_mget", busy, count=None)
        process = kcing_process(["reconcile"], clean_environ(KCING_DB=str(db), ES_HOST=front.url), tmp_path)
        if not wait_until(lambda: front.requests, timeout=30):
            process.kill()
            pytest.fail("reconcile never asked: %s" % (process.communicate(),))
        stdout, stderr, took = stopped_by_signal(process, settle=0.5)
    assert process.returncode == 130, stdout + stderr
    assert took < 3 and "Traceback" not in stderr, (took, stderr)
    assert runs(db)[-1][:2] == ("reconcile", "error 130")
    assert set(ledger_states(db).values()) == {DELIVERED}


@needs_samples
def test_a_signal_ends_a_verify_waiting_to_ask_a_busy_elasticsearch_again(env, tmp_path):
    busy = answer(429, (("Content-Type", "application/json"), ("X-Elastic-Product", "Elasticsearch"),
                        ("Retry-After", "100")), b'{"error":{"type":"es_rejected_execution_exception"},"status":429}')
    with RogueFront(env["ES_HOST"]) as front:
        front.on("POST", "/_mget", busy, count=None)
        process = kcing_process(["feed_es", "--verify", "--verify-delay", "0"], dict(env, ES_HOST=front.url), tmp_path)
        if not wait_until(lambda: [by for _, _, by in front.requests if by != "forward"], timeout=60):
            process.kill()
            pytest.fail("the check never asked: %s" % (process.communicate(),))
        stdout, stderr, took = stopped_by_signal(process, settle=0.5)
    assert process.returncode == 130, stdout + stderr
    assert took < 3 and "Traceback" not in stderr, (took, stderr)
    assert set(ledger_states(tmp_path / "kcing.db").values()) == {DELIVERED}
    assert [run[:2] for run in runs(tmp_path / "kcing.db")] == [("feed_es", "ok"), ("reconcile", "error 130")]


def test_an_index_lost_whole_is_told_in_a_few_warnings_and_each_object_is_logged_with_debug(
        env, tmp_path, legacy_replica, es):
    """Every object delivered into a lost index is missing: a -q run from cron warns of the first
    MISSING_LOGGED one by one and of the rest in one line, not a line each in its mail."""
    many = MISSING_LOGGED + 7
    for number in range(many):
        item = build_item("lost", "v6.%d" % number, "arm64", "defconfig", at(legacy_replica.frontend.today, 0, 1, number))
        legacy_replica.corpus.add_build(item, build_json(item))
    fed = kcing(["feed_es", "--how-many", "1000"], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    lost = sorted({index for ids in kept_ids(tmp_path / "kcing.db").values() for index, _ in ids
                   if index.startswith("build-")})
    es_client(es).indices.delete(index=",".join(lost))
    builds = sum(1 for key in kept_ids(tmp_path / "kcing.db") if key[0] == BUILD)
    assert builds >= many

    quiet = kcing(["reconcile", "--dry-run", "-q"], env, tmp_path)
    assert quiet.returncode == 1, quiet.stderr
    one_by_one = re.findall(r"WARNING kcing\.reconcile: build \w+: \d+ of \d+ documents? missing in Elasticsearch",
                            quiet.stderr)
    assert len(one_by_one) == MISSING_LOGGED
    assert "WARNING kcing.reconcile: %d more objects are missing in Elasticsearch (each is logged with -d)" % (
        builds - MISSING_LOGGED) in quiet.stderr
    assert len(quiet.stderr.splitlines()) < MISSING_LOGGED + 10, quiet.stderr

    # Nor a line each without -q: the rest are no progress to read through either.
    default = kcing(["reconcile", "--dry-run"], env, tmp_path)
    assert default.returncode == 1
    one_by_one = re.findall(r"kcing\.reconcile: build \w+: \d+ of \d+ documents? missing", default.stderr)
    assert len(one_by_one) == MISSING_LOGGED

    debug = kcing(["reconcile", "--dry-run", "-d"], env, tmp_path)
    assert debug.returncode == 1
    each = set(re.findall(r"kcing\.reconcile: build (\w+): \d+ of \d+ documents? missing in Elasticsearch", debug.stderr))
    assert len(each) == builds


def test_the_first_objects_missing_logged_one_by_one_are_those_of_the_run_not_of_each_chunk(tmp_path, es):
    """The ledger's rows are checked CHUNK at a time: a run over an index lost whole still warns of
    MISSING_LOGGED objects one by one, and of the rest in one line."""
    db = tmp_path / "kcing.db"
    many = 2 * CHUNK + 3
    an_hour_ago = datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)
    fill_ledger(db, objects=many, per_object=1, when=an_hour_ago)
    checked = kcing(["reconcile", "--days", "1", "--dry-run", "-q"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)),
                    tmp_path)
    assert checked.returncode == 1, checked.stderr
    assert "build    checked %d, present 0, missing %d" % (many, many) in checked.stdout
    one_by_one = re.findall(r"WARNING kcing\.reconcile: build \w+: 1 of 1 document missing", checked.stderr)
    assert len(one_by_one) == MISSING_LOGGED
    assert ("WARNING kcing.reconcile: %d more objects are missing in Elasticsearch (each is logged with -d)"
            % (many - MISSING_LOGGED)) in checked.stderr


def test_an_object_held_missing_dated_before_the_first_day_drp_keeps_is_given_up_not_sent_again(
        env, tmp_path, forwarding, es):
    # A lab late to report: an object first seen today, dated days ago. Found missing, then its
    # day's index deleted by drp (whose ledger cutoff, by when rows were first seen, keeps its
    # row): `--resend` sent it again and made the index drp had deleted, and until then every
    # reconcile exited 1 for it.
    five_days_ago = datetime.now(timezone.utc) - timedelta(days=5)
    item = build_item("late", "v6.1", "arm64", "defconfig", five_days_ago)
    path = tmp_path / "build.json"
    path.write_bytes(build_json(item))
    environ = dict(env, KCI_DAYS="1", DRP_DAYS="30")
    fed = kcing(["feed_es", "--builds", str(path), "--date", five_days_ago.strftime("%Y-%m-%d")], environ, tmp_path)
    assert fed.returncode == 0, fed.stdout + fed.stderr
    (lost,) = kept_ids(tmp_path / "kcing.db").values()
    index = "build-%s" % five_days_ago.strftime("%Y.%m.%d")
    assert {key[0] for key in lost} == {index}
    delete_documents(es, lost)
    assert kcing(["reconcile"], environ, tmp_path).returncode == 1
    deleted = kcing(["drp", "--drp-days", "3"], environ, tmp_path)
    assert deleted.returncode == 0 and "drp: deleted index %s" % index in deleted.stdout, deleted.stdout + deleted.stderr
    assert len(ledger_rows(tmp_path / "kcing.db")) == 1  # first seen today: drp keeps the row

    forwarding.clear()
    resent = kcing(["reconcile", "--resend"], environ, tmp_path)
    assert resent.returncode == 6, resent.stdout + resent.stderr
    assert not posted_keys(forwarding) and index not in es.index_names()
    assert kcing(["reconcile"], environ, tmp_path).returncode == 6
    # status counts it failed, not among what `--resend` sends (missing in ES).
    shown = kcing(["status", "--json"], environ, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["objects"]["files"]["build"] == {
        "delivered": 0, "failed": 1, "rejected": 0, "pending": 0, "too_large": 0, "missing_in_es": 0}


def test_a_verify_that_could_look_at_none_of_what_the_run_delivered_exits_6_and_is_no_success(
        legacy_replica, logstash, es, tmp_path):
    """Every index the run's documents went to closed (a red index, or a data stream under a kcing
    name, where Logstash acknowledges every event and Elasticsearch stores none, alike): the check
    proved nothing. It exited 0, its row said `ok` and --metrics showed a fresh last success,
    keeping the alert on its age quiet in the very failure --verify is there to catch."""
    from tests.test_metrics import parsed

    first = kcing(["feed_es"], feed_environ(legacy_replica, logstash, tmp_path / "first.db", DRP_DAYS="36500"),
                  tmp_path)
    assert first.returncode == 0, first.stderr
    keys = {(event.metadata["index"], event.metadata["id"]) for emulator in logstash.emulators.values()
            for event in emulator.events_received}
    seed(es, keys)
    client = Elasticsearch(es.url, request_timeout=30)
    for index in {index for index, _ in keys}:
        client.indices.close(index=index)

    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", ES_HOST=es.url, DRP_DAYS="36500")
    prom = tmp_path / "kcing.prom"
    verified = kcing(["feed_es", "--verify", "--verify-delay", "0", "--metrics", str(prom)], env, tmp_path)
    assert verified.returncode == 6, verified.stdout + verified.stderr
    assert verified.stderr.splitlines()[-1].startswith(
        "kcing feed_es: --verify could check none of the objects this run delivered: ")
    assert "in closed or unreadable indices" in verified.stderr.splitlines()[-1]
    shown = json.loads(kcing(["status", "--json"], env, tmp_path).stdout)
    assert shown["last_reconcile"]["outcome"] == "nothing checked"
    (feed, *_) = [run for run in shown["runs"] if run["command"] == "feed_es"]
    assert feed["outcome"] == "nothing checked", feed
    metrics = parsed(prom.read_text())
    assert ("kcing_feed_last_success_timestamp_seconds", (("source", "legacy"),)) not in metrics
    assert metrics[("kcing_feed_exit_code", (("source", "legacy"),))] == 6


def test_a_verify_that_cannot_ask_elasticsearch_after_rejections_records_the_status_the_run_ends_with(
        logstash, tmp_path):
    """A feed that rejected a file (exit 1 so far), whose --verify then cannot reach Elasticsearch,
    ends with 3: its row kept `error 1`, another failure than the one cron and --metrics got."""
    from tests.test_metrics import parsed

    build = sorted((SAMPLES / "build").glob("*.json"))[0]
    with refusing_port() as port:
        env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"), ES_BUILD=logstash.urls["build"],
                            ES_LAVA=logstash.urls["lava"], ES_BOOT=logstash.urls["boot"],
                            ES_HOST="http://127.0.0.1:%d" % port, DRP_DAYS="36500", ES_RETRY_BACKOFF="0.05")
        prom = tmp_path / "kcing.prom"
        verified = kcing(["feed_es", "--builds", str(build), str(tmp_path / "gone.json"), "--date", "2020-11-04",
                          "--verify", "--verify-delay", "0", "--metrics", str(prom)], env, tmp_path)
    assert verified.returncode == 3, verified.stdout + verified.stderr
    assert parsed(prom.read_text())[("kcing_feed_exit_code", (("source", "files"),))] == 3
    shown = json.loads(kcing(["status", "--json"], env, tmp_path).stdout)
    (feed, *_) = [run for run in shown["runs"] if run["command"] == "feed_es"]
    assert feed["counts"]["rejected"] == 1 and feed["counts"]["delivered"] == 1, feed
    assert feed["outcome"] == "error 3", feed


def test_an_object_found_missing_but_dated_before_the_first_day_kept_is_planned_and_said_as_given_up(
        tmp_path, es, logstash):
    # Delivered today into today's index, but dated ten days ago (its listing date, or a local
    # file's --date), before the first day DRP_DAYS=3 keeps: --resend gives it up, as every object
    # held as missing so dated. The dry run's plan said it would re-send it, and the real run that
    # `kcing reconcile --resend` does it now.
    db = tmp_path / "kcing.db"
    destination = logstash_destination([logstash.urls["build"]])
    ledger = Ledger.open(str(db))
    old = UpstreamObject("legacy", BUILD, "old", "https://storage.example/old/build.json",
                         datetime.now(timezone.utc) - timedelta(days=10))
    today = "build-%s" % datetime.now(timezone.utc).strftime("%Y.%m.%d")
    ledger.record([Outcome(old, DELIVERED, documents=packed(1, index=today))], lambda kind: destination)
    ledger.close()
    env = clean_environ(ES_HOST=es.url, KCING_DB=str(db), ES_BUILD=logstash.urls["build"],
                        ES_LAVA=logstash.urls["lava"], ES_BOOT=logstash.urls["boot"], DRP_DAYS="3",
                        KCI_STORAGE_URL="https://storage.example")
    planned = kcing(["reconcile", "--dry-run", "--resend"], env, tmp_path)
    assert "would re-send 0 objects" in planned.stdout, planned.stdout
    real = kcing(["reconcile", "--resend"], env, tmp_path)
    assert real.returncode == 1, real.stdout + real.stderr
    assert re.search(r"^reconcile: 1 of them is dated before \d{4}-\d\d-\d\d, the first day drp keeps: given up, "
                     r"neither feed_es nor --resend sends them again$", real.stdout, re.MULTILINE), real.stdout
    assert "does it now" not in real.stdout and "re-sending" not in real.stdout, real.stdout


def test_an_index_whose_mapping_requires_a_routing_is_not_checked_and_the_others_are(tmp_path, es):
    """A template of the user's above kcing's gives one kcing index `_routing.required`: each of
    reconcile's lookups there is answered routing_missing_exception. It stopped the whole check
    (exit 3) every night, the missing document of another index never marked."""
    db = tmp_path / "kcing.db"
    routed, lossy = day_index("boot", 1), day_index("test", 1)
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("routed", kind="boot"), DELIVERED, documents=packed(1, index=routed)),
                   Outcome(obj("lost", kind="lava"), DELIVERED, documents=packed(2, index=lossy))], to_logstash)
    ledger.close()
    client = es_client(es)
    client.indices.put_index_template(name="user-routed", index_patterns=[routed], priority=300,
                                      template={"mappings": {"_routing": {"required": True}}})
    client.indices.create(index=routed)
    refused = client.bulk(operations=[{"index": {"_index": routed, "_id": "%040x" % 1}}, {"job": "x"}])
    assert refused["items"][0]["index"]["error"]["type"] == "routing_missing_exception"  # what Logstash meets
    client.indices.create(index=lossy)

    checked = kcing(["reconcile"], clean_environ(ES_HOST=es.url, KCING_DB=str(db)), tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert ("reconcile: not checked: 1 document of 1 object in indices whose mapping requires a routing (%s), which "
            "kcing's documents are written without (Logstash's writes there are refused) and cannot be looked up "
            "without: take `_routing` out of the template that maps them (one of yours, above kcing's priority 200), "
            "then let drp delete those indices" % routed) in checked.stdout
    assert {upstream_id: state for (_, upstream_id), state in ledger_states(db).items()} == {
        "routed": DELIVERED, "lost": FAILED}
