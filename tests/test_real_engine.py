"""kcing's Elasticsearch commands against a real Elasticsearch node (tests/realengine).

setup_es and its templates, the feed end to end (kcing feed_es -> the Logstash emulator with the
pipeline's routing -> the node's _bulk), reconcile finding exactly what was deleted and
reconcile --resend restoring it, drp deleting exactly the expired indices by name, and the
answers the emulator's strictness is modelled on.
"""
from __future__ import annotations

import json
import random
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Dict, Set, Tuple

import pytest
from elasticsearch import ApiError, Elasticsearch, helpers

from kcing.admin.templates import KINDS, TEMPLATE_DIR, template_name
from kcing.ledger.models import DELIVERED, FAILED, MISSING_IN_ELASTICSEARCH
from tests.fakes.logstash_emulator import LogstashCluster, LogstashEmulator
from tests.feedrun import SAMPLES, clean_environ, feed_environ, kcing, kept_ids, ledger_rows, ledger_states
from tests.test_setup_es import setup_es_beside_a_data_stream
from tests.test_elastic_emulator import (ALIAS_REQUESTS, CAT_REQUESTS, FIELD_NAME_ANSWERS, NODE_ALIAS_ANSWERS,
                                         NODE_CAT_ANSWERS, NODE_ROUTING_ANSWERS, NODE_STREAM_ANSWERS, ROUTING_REQUESTS,
                                         STREAM_REQUESTS, field_name_statuses, node_answers)

pytestmark = pytest.mark.realengine

DocKey = Tuple[str, str]
KEEP_EVERYTHING = "36500"  # the samples date from 2019-2020: keep their indices inside the retention

needs_samples = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")


def client_for(node) -> Elasticsearch:
    return Elasticsearch(node.url, request_timeout=120)


def admin_environ(node, tmp_path: Path, **extra) -> Dict[str, str]:
    return clean_environ(ES_HOST=node.url, KCING_DB=str(tmp_path / "kcing.db"), ES_READY_TIMEOUT="60", **extra)


def template_files() -> Dict[str, dict]:
    """{template name: body} of mapping_templates/, whatever kinds it holds."""
    return {template_name(path.stem): json.loads(path.read_text()) for path in sorted(TEMPLATE_DIR.glob("*.json"))}


def normalised(template: dict) -> dict:
    """A template body as Elasticsearch reads it back: settings nested under `index`, as strings."""
    body = json.loads(json.dumps(template))
    settings = body.get("template", {}).get("settings")
    if settings:
        flat = {key if key.startswith("index.") else "index." + key: str(value).lower()
                if isinstance(value, bool) else str(value) for key, value in settings.items()}
        nested: dict = {}
        for key, value in flat.items():
            node = nested
            *parents, last = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[last] = value
        body["template"]["settings"] = nested
    body.setdefault("composed_of", [])
    return body


# -- setup_es ------------------------------------------------------------------------------------

def test_setup_es_installs_every_template_idempotently_and_they_read_back_equal(real_es, tmp_path):
    files = template_files()
    assert set(files) == {template_name(kind) for kind in KINDS}  # every kind kcing knows has its file
    env = admin_environ(real_es, tmp_path)
    first = kcing(["setup_es"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    for name in files:
        assert "index template %s" % name in first.stdout and "created" in first.stdout
    again = kcing(["setup_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "created" not in again.stdout and "updated" not in again.stdout
    assert again.stdout.count("unchanged") == len(files)

    found = client_for(real_es).indices.get_index_template(name="kcing-*")["index_templates"]
    assert {item["name"] for item in found} == set(files)
    for item in found:
        assert item["index_template"] == normalised(files[item["name"]]), item["name"]


def test_a_kcing_index_on_a_single_node_has_no_replica_and_leaves_the_cluster_green(real_es, tmp_path, es):
    """The templates ask for one replica where a second node can hold it (auto_expand_replicas
    0-1): a single node gives the index none, so it stays green; the emulator answers alike."""
    env = admin_environ(real_es, tmp_path)
    assert kcing(["setup_es"], env, tmp_path).returncode == 0
    assert kcing(["setup_es"], dict(env, ES_HOST=es.url), tmp_path).returncode == 0
    answers = []
    for client in (client_for(real_es), Elasticsearch(es.url)):
        client.bulk(operations=[{"index": {"_index": "build-2020.01.01", "_id": "a"}}, {"job": "mainline"}])
        settings = client.indices.get_settings(index="build-2020.01.01")["build-2020.01.01"]["settings"]["index"]
        health = client.cluster.health(wait_for_status="green", timeout="10s")
        answers.append((settings["number_of_replicas"], settings["auto_expand_replicas"], health["status"]))
    assert answers == [("0", "0-1", "green")] * 2


def test_setup_es_puts_back_a_template_edited_by_hand_on_a_real_node(real_es, tmp_path):
    """A template edited in place (Kibana's index management keeps its `_meta`, and with it the
    digest of kcing's body) is put back as the file says, and said `updated`, not `unchanged`."""
    from tests.test_setup_es import edited_as_by_hand

    env = admin_environ(real_es, tmp_path)
    assert kcing(["setup_es"], env, tmp_path).returncode == 0
    client = client_for(real_es)
    edited_as_by_hand(client, "kcing-build")
    again = kcing(["setup_es"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "index template kcing-build (build-*) updated" in again.stdout
    assert again.stdout.count("unchanged") == len(KINDS) - 1
    stored = client.indices.get_index_template(name="kcing-build")["index_templates"][0]["index_template"]
    assert stored == normalised(template_files()["kcing-build"])
    assert kcing(["setup_es"], env, tmp_path).stdout.count("unchanged") == len(KINDS)


def auto_create_answers(client: Elasticsearch) -> list:
    """What a write to a missing index answers: under a template forbidding auto-creation, under
    none, and under one allowing it."""
    client.indices.put_index_template(name="zz-forbids", index_patterns=["zz-*"], priority=5, allow_auto_create=False)
    client.indices.put_index_template(name="ww-allows", index_patterns=["ww-*"], priority=5, allow_auto_create=True)
    items = client.bulk(operations=[line for name in ("zz-2020.01.01", "yy-2020.01.01", "ww-2020.01.01")
                                    for line in ({"index": {"_index": name, "_id": "a"}}, {"job": "x"})])["items"]
    for name in ("yy-2020.01.01", "ww-2020.01.01"):
        client.options(ignore_status=404).indices.delete(index=name)
    client.indices.delete_index_template(name="zz-forbids,ww-allows")
    return [(item["index"]["status"], item["index"].get("error")) for item in items]


def test_index_auto_creation_is_refused_and_allowed_as_the_emulator_says(real_es):
    from tests.fakes.elastic_server import ElasticsearchEmulator

    client = client_for(real_es)
    node = {}
    for allowed in (True, False):
        client.cluster.put_settings(persistent={"action.auto_create_index": None if allowed else False})
        try:
            node[allowed] = auto_create_answers(client)
        finally:
            client.cluster.put_settings(persistent={"action.auto_create_index": None})
    assert node[True] != node[False]
    for allowed in (True, False):
        with ElasticsearchEmulator(auto_create_index=allowed) as emulator:
            assert auto_create_answers(Elasticsearch(emulator.url)) == node[allowed]


def shard_limit_answers(client: Elasticsearch) -> list:
    """What creating, auto-creating and opening indices answers on a cluster of at most 4 shards:
    every copy of an open index counts, assigned or not; a new index counts the replicas asked
    for, an auto-expanded one only those it got once made; a closed one counts nothing."""
    answers = []

    def answer(call):
        try:
            result = call()
        except ApiError as error:
            answers.append((error.meta.status, error.body["error"]["type"], error.body["error"]["reason"]))
        else:
            items = result.get("items")
            answers.append([(item["index"]["status"], item["index"].get("error")) for item in items]
                           if items else result.body)

    def create(name, **settings):
        answer(lambda: client.indices.create(index=name, settings=settings))

    def write(name):
        answer(lambda: client.bulk(operations=[{"index": {"_index": name, "_id": "a"}}, {"job": "x"}]))

    create("zz-a", number_of_replicas=0)
    create("zz-b", number_of_shards=2, number_of_replicas=1)
    create("zz-c", auto_expand_replicas="0-1")
    create("zz-d", auto_expand_replicas="0-1")
    create("zz-e", auto_expand_replicas="0-1")
    write("zz-f")
    answer(lambda: client.indices.close(index="zz-a"))
    write("zz-f")
    answer(lambda: client.indices.open(index="zz-a"))
    for name in ("zz-a", "zz-c", "zz-d", "zz-f"):
        client.options(ignore_status=404).indices.delete(index=name)
    return answers


def test_the_shard_limit_is_refused_as_the_emulator_says(real_es):
    """cluster.max_shards_per_node (1,000 by default) caps a single node at 1,000 open shards: at
    most 999 kcing indices (each asks for a replica it never gets), after which the node refuses
    every new day's index, and Logstash's documents for it. The emulator refuses the same."""
    from tests.fakes.elastic_server import ElasticsearchEmulator

    client = client_for(real_es)
    client.cluster.put_settings(persistent={"cluster.max_shards_per_node": 4})
    try:
        node = shard_limit_answers(client)
    finally:
        client.cluster.put_settings(persistent={"cluster.max_shards_per_node": None})
    assert node[1][:2] == (400, "validation_exception"), node
    with ElasticsearchEmulator(max_shards_per_node=4) as emulator:
        assert shard_limit_answers(Elasticsearch(emulator.url)) == node


def test_setup_es_with_ilm_on_a_node_without_ilm_is_a_clear_error(real_es, tmp_path):
    """The node has no x-pack, so no ILM: kcing must say so in one line, not crash."""
    done = kcing(["setup_es", "--ilm"], admin_environ(real_es, tmp_path, DRP_DAYS="10"), tmp_path)
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert "ILM" in done.stderr and "no handler found" in done.stderr


def test_setup_es_with_user_templates_in_the_way_on_a_real_node(real_es, tmp_path):
    """The node refuses kcing's template beside a user template of the same priority with
    overlapping patterns: setup_es installs the others and names it; a user template of a higher
    priority is installed beside kcing's, and setup_es warns that it takes precedence."""
    client = client_for(real_es)
    client.indices.put_index_template(name="user-build", index_patterns=["build-2*"], priority=200)
    client.indices.put_index_template(name="user-logs", index_patterns=["log-*"], priority=500)
    done = kcing(["setup_es"], admin_environ(real_es, tmp_path), tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("kcing setup_es: index template kcing-build (build-*) not installed: the index template "
                           "user-build (build-2*) has the same priority [200]"), last
    assert "index template user-logs (log-*; priority 500) takes precedence over kcing-log" in done.stderr
    installed = {item["name"] for item in client.indices.get_index_template(name="kcing-*")["index_templates"]}
    assert installed == {template_name(kind) for kind in KINDS} - {"kcing-build"}

    # What kcing predicts is what the node does: kcing's template is refused beside user-build.
    from elasticsearch import BadRequestError
    from kcing.admin.templates import templates_for
    with pytest.raises(BadRequestError) as refused:
        client.indices.put_index_template(name="kcing-build", body=templates_for(None)["kcing-build"])
    assert "same priority [200]" in str(refused.value.body)
    # And an index both log templates match gets the user's, not kcing's.
    client.indices.create(index="log-2020.03.01")
    assert client.indices.get_mapping(index="log-2020.03.01")["log-2020.03.01"]["mappings"] == {}


def test_setup_es_beside_a_legacy_template_says_so_in_one_log_line(real_es, tmp_path):
    """A legacy template of the same patterns (the tool kcing replaces installed `_template`s):
    the node installs kcing's composable template and answers with a `Warning` header. That is
    one log line, as kcing's own warnings are, not Python's two-line warning with kcing's source."""
    from tests.realnode import http_json
    status, _ = http_json("PUT", real_es.url + "/_template/kernelci-build", {"index_patterns": ["build-*"],
                                                                           "order": 0})
    assert status == 200
    done = kcing(["setup_es"], admin_environ(real_es, tmp_path), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ElasticsearchWarning" not in done.stderr and "put_index_template" not in done.stderr, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "kernelci-build" in line]
    assert " WARNING " in line and "index template [kcing-build] has index patterns [build-*] matching patterns " \
        "from existing older templates [kernelci-build]" in line, line


@needs_samples
def test_setup_es_names_an_index_logstash_created_before_the_templates(real_es, tmp_path):
    """Today's index created (by Logstash's _bulk) before setup_es ran got the types the node
    guessed: setup_es installs the templates and names that index and its fields in one line."""
    from datetime import datetime, timezone

    from kcing.documents import documents_for
    from tests.feedrun import sample_objects

    build = next(obj for obj in sample_objects() if obj.kind == "build")
    [document] = documents_for("build", build.path.read_bytes(), datetime.now(timezone.utc))
    client = client_for(real_es)
    assert not client.bulk(operations=[{"index": {"_index": document.index, "_id": document.doc_id}},
                                       dict(document.body)], refresh=True)["errors"]
    done = kcing(["setup_es"], admin_environ(real_es, tmp_path), tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    [line] = [line for line in done.stderr.splitlines() if "did not make" in line]
    assert " WARNING " in line and ("index %s has a mapping kcing's template kcing-build did not make" % document.index
                                    in line) and "arch is text, not keyword" in line, line
    # The node agrees that this index cannot serve the dashboards' aggregations.
    from elasticsearch import BadRequestError
    with pytest.raises(BadRequestError):
        client.search(index=document.index, size=0, aggs={"arch": {"terms": {"field": "arch"}}})
    # An index the template made is not named.
    client.indices.create(index="build-2020.01.01")
    again = kcing(["setup_es"], admin_environ(real_es, tmp_path), tmp_path)
    named = [other.split(" WARNING ", 1)[1] for other in again.stderr.splitlines() if "did not make" in other]
    assert named == [line.split(" WARNING ", 1)[1]]
    # One someone hid is named too (a GET by pattern leaves hidden indices out unless asked).
    client.indices.create(index="boot-2019.06.01", settings={"index.hidden": True},
                          mappings={"properties": {"board": {"type": "text"}}})
    hidden = kcing(["setup_es"], admin_environ(real_es, tmp_path), tmp_path)
    assert any("index boot-2019.06.01 has a mapping kcing's template kcing-boot did not make" in other
               and "board is text, not keyword" in other for other in hidden.stderr.splitlines()), hidden.stderr


@pytest.mark.parametrize("block", ["read_only", "read_only_allow_delete"])
def test_setup_es_on_a_read_only_cluster_names_the_block_not_the_users_privileges(real_es, tmp_path, block):
    """The node answers 403 cluster_block_exception to a template put while the cluster is
    read-only (by hand, or after the disk's flood stage): Elasticsearch refusing (exit 3), not a
    privilege the user lacks (exit 2)."""
    client = client_for(real_es)
    client.cluster.put_settings(persistent={"cluster.blocks.%s" % block: True})
    try:
        done = kcing(["setup_es"], admin_environ(real_es, tmp_path), tmp_path)
    finally:
        client.cluster.put_settings(persistent={"cluster.blocks.%s" % block: None})
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    [last] = done.stderr.strip().splitlines()[-1:]
    assert "(403 cluster_block_exception): blocked by: [FORBIDDEN/" in last and "denied" not in last, last


# -- the feed end to end ---------------------------------------------------------------------------

@pytest.fixture
def forwarding(real_es):
    cluster = LogstashCluster(forward_to=real_es.url)
    cluster.start()
    yield cluster
    cluster.stop()


def node_keys(client: Elasticsearch, indices) -> Set[DocKey]:
    client.indices.refresh(index=",".join(indices), ignore_unavailable=True)
    keys = set()
    for hit in helpers.scan(client, index=",".join(indices), query={"query": {"match_all": {}}}, _source=False,
                            ignore_unavailable=True):
        keys.add((hit["_index"], hit["_id"]))
    return keys


def total_count(client: Elasticsearch, indices) -> int:
    client.indices.refresh(index=",".join(indices), ignore_unavailable=True)
    return client.count(index=",".join(indices), ignore_unavailable=True)["count"]


@needs_samples
def test_logstash_creates_kcing_indices_on_a_node_that_turned_auto_creation_off(real_es, legacy_replica, forwarding,
                                                                                 tmp_path):
    """A cluster hardened with action.auto_create_index: false refused every document Logstash
    wrote to a kcing index not made yet (after Logstash had acknowledged it): the templates setup_es
    installs allow auto-creation for kcing's patterns, and for them only."""
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, forwarding, db, ES_HOST=real_es.url, DRP_DAYS=KEEP_EVERYTHING)
    client = client_for(real_es)
    client.cluster.put_settings(persistent={"action.auto_create_index": False})
    try:
        assert kcing(["setup_es"], env, tmp_path).returncode == 0
        fed = kcing(["feed_es"], env, tmp_path)
        assert fed.returncode == 0, fed.stdout + fed.stderr
        expected = set().union(*kept_ids(db).values())
        assert node_keys(client, sorted({index for index, _ in expected})) == expected
        checked = kcing(["reconcile"], env, tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        refused = client.bulk(operations=[{"index": {"_index": "other-2024.10.16", "_id": "a"}}, {"job": "x"}])
        assert refused["items"][0]["index"]["status"] == 404
    finally:
        client.cluster.put_settings(persistent={"action.auto_create_index": None})


@needs_samples
def test_feed_reconcile_delete_resend_on_a_real_node(real_es, legacy_replica, forwarding, tmp_path):
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, forwarding, db, ES_HOST=real_es.url, DRP_DAYS=KEEP_EVERYTHING)
    client = client_for(real_es)
    assert kcing(["setup_es"], env, tmp_path).returncode == 0

    fed = kcing(["feed_es"], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    kept = kept_ids(db)
    expected = set().union(*kept.values())
    indices = sorted({index for index, _ in expected})
    assert not forwarding.index_store.unrouted
    assert node_keys(client, indices) == expected
    assert total_count(client, indices) == len(expected)

    # Through Logstash (which adds @version) the applied mapping is still exactly the template's.
    applied = client.indices.get_mapping(index=",".join(indices))
    for index in indices:
        intended = json.loads((TEMPLATE_DIR / ("%s.json" % index.rsplit("-", 1)[0])).read_text())
        assert applied[index]["mappings"]["properties"] == intended["template"]["mappings"]["properties"], index

    clean = kcing(["reconcile"], env, tmp_path)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert " 0 missing" in clean.stdout

    # Delete one whole index and a sample of documents from the others.
    whole = next(index for index in indices if index.startswith("build-"))
    rng = random.Random(12)
    others = sorted(key for key in expected if key[0] != whole)
    sample = set(rng.sample(others, 7))
    client.indices.delete(index=whole)
    helpers.bulk(client, [{"_op_type": "delete", "_index": index, "_id": doc_id} for index, doc_id in sample],
                 refresh=True)
    gone = sample | {key for key in expected if key[0] == whole}
    hit = {obj for obj, keys in kept.items() if keys & gone}

    planned = kcing(["reconcile", "--dry-run"], env, tmp_path)
    assert planned.returncode == 1, planned.stdout + planned.stderr
    assert "%d objects have missing documents" % len(hit) in planned.stdout
    missing_total = sum(int(line.split("documents:")[1].split(",")[1].split()[0])
                        for line in planned.stdout.splitlines() if "documents:" in line)
    assert missing_total == len(gone)

    forwarding.clear()
    resent = kcing(["reconcile", "--resend"], env, tmp_path)
    assert resent.returncode == 1, resent.stdout + resent.stderr  # something was missing, then re-sent
    posted = {(event.metadata["index"], event.metadata["id"]) for emulator in forwarding.emulators.values()
              for event in emulator.events_received}
    assert posted == set().union(*(kept[obj] for obj in hit))  # exactly the hit objects, whole
    assert set(ledger_states(db).values()) == {DELIVERED}

    final = kcing(["reconcile"], env, tmp_path)
    assert final.returncode == 0, final.stdout + final.stderr
    assert node_keys(client, indices) == expected
    assert total_count(client, indices) == len(expected)  # no duplicates


def test_an_older_node_version_indexed_after_the_newer_is_refused_by_a_real_node(real_es, forwarding, tmp_path):
    """A test node's first version, held in a backlogged Logstash, is indexed after its next
    version, which another instance took later: the node keeps the newer (the pipeline's
    external_gte versioning), and the document's version is the node's `updated` time."""
    from datetime import datetime, timezone

    from tests.fakes.api_data import checkout_tree
    from tests.fakes.api_replica import ApiReplica
    from tests.feedrun import api_feed_environ

    client = client_for(real_es)
    with ApiReplica() as replica:
        checkout_tree(replica.corpus, replica.files_url, datetime.now(timezone.utc) - timedelta(days=1))
        env = api_feed_environ(replica, forwarding, tmp_path / "kcing.db", ES_HOST=real_es.url)
        assert kcing(["setup_es"], env, tmp_path).returncode == 0
        backlogged = LogstashEmulator(store=forwarding.index_store, name="backlogged-lava")
        with backlogged:
            backlogged.hold_queue()
            assert kcing(["feed_es"], dict(env, ES_LAVA=backlogged.url), tmp_path).returncode == 0
            node = next(node for node in replica.corpus.nodes() if node["kind"] == "test")
            newest = max(node["updated"] for node in replica.corpus.nodes())
            newer = replica.corpus.update(node["id"], when=datetime.fromisoformat(newest).replace(
                tzinfo=timezone.utc) + timedelta(minutes=1), result="fail" if node.get("result") != "fail" else "pass")
            assert kcing(["feed_es"], env, tmp_path).returncode == 0
            backlogged.release_queue()
    (index, doc_id), = [key for key, body in forwarding.index_store.documents.items()
                        if body["kernelci_api"]["node_id"] == node["id"]]
    stored = client.get(index=index, id=doc_id)
    assert stored["_source"]["result"] == newer["result"]
    updated = datetime.fromisoformat(newer["updated"]).replace(tzinfo=timezone.utc)
    assert stored["_version"] == (updated - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    assert [conflict.key for conflict in forwarding.index_store.conflicts] == [(index, doc_id)]


@needs_samples
def test_reconcile_marks_exactly_the_objects_whose_documents_were_deleted(real_es, legacy_replica, forwarding,
                                                                           tmp_path):
    db = tmp_path / "kcing.db"
    env = feed_environ(legacy_replica, forwarding, db, ES_HOST=real_es.url, DRP_DAYS=KEEP_EVERYTHING)
    assert kcing(["setup_es"], env, tmp_path).returncode == 0
    assert kcing(["feed_es"], env, tmp_path).returncode == 0
    kept = kept_ids(db)
    lava = sorted(obj for obj in kept if obj[0] == "lava")[0]
    one_document = sorted(kept[lava])[-1]
    client_for(real_es).delete(index=one_document[0], id=one_document[1], refresh=True)
    done = kcing(["reconcile"], env, tmp_path)
    assert done.returncode == 1
    assert "%s/%s" % one_document in done.stdout
    failed = {(row["kind"], row["upstream_id"]) for row in ledger_rows(db) if row["state"] == FAILED}
    assert failed == {lava}
    assert {row["last_error"] for row in ledger_rows(db) if row["state"] == FAILED} == {MISSING_IN_ELASTICSEARCH}


def test_reconcile_leaves_closed_aliased_and_blocked_indices_unchecked_on_a_real_node(real_es, tmp_path):
    """The node's answers for kcing index names it cannot read by id (closed, read block, an alias
    of several indices) or write to (a write block): reconcile says so and marks nothing wrongly.
    (A data stream: test_reconcile_names_a_data_stream_and_how_to_remove_it_on_a_real_node.)"""
    from datetime import datetime, timezone

    from kcing.ledger import docids
    from kcing.ledger.ledger import Ledger, Outcome
    from kcing.records import UpstreamObject
    from kcing.sinks import logstash_destination

    def day(kind: str, days_ago: int) -> str:
        return "%s-%s" % (kind, (date.today() - timedelta(days=days_ago)).strftime("%Y.%m.%d"))

    def doc(n: int) -> str:
        return "%040x" % n

    layout = {"present": (day("build", 0), [1]), "shut": (day("build", 1), [2]), "aliased": (day("boot", 1), [3]),
              "unreadable": (day("test", 1), [4]), "frozen": (day("test", 2), [5, 6])}
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(UpstreamObject("legacy", "build", name, "https://storage.example/%s" % name,
                                          datetime(2024, 10, 16, tzinfo=timezone.utc)), DELIVERED,
                           documents={index: docids.pack(doc(n) for n in numbers)})
                   for name, (index, numbers) in layout.items()],
                  lambda kind: logstash_destination(["http://localhost:8337"]))
    ledger.close()
    client = client_for(real_es)
    for index, doc_id in [(day("build", 0), 1), (day("build", 1), 2), ("kept-a", 3), ("kept-b", 9),
                          (day("test", 1), 4), (day("test", 2), 5)]:
        client.index(index=index, id=doc(doc_id), document={"job": "mainline"}, refresh=True)
    client.indices.close(index=day("build", 1))
    client.indices.update_aliases(actions=[{"add": {"index": "kept-a", "alias": day("boot", 1)}},
                                           {"add": {"index": "kept-b", "alias": day("boot", 1)}}])
    client.indices.add_block(index=day("test", 1), block="read")
    client.indices.add_block(index=day("test", 2), block="write")

    done = kcing(["reconcile"], admin_environ(real_es, tmp_path), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr  # one document is missing, from the write-blocked index
    assert "Traceback" not in done.stderr
    assert ("build    checked 2, present 1, missing 1, not checked (index closed or unreadable) 3; "
            "documents: 3 checked, 1 missing") in done.stdout
    assert "1 document of 1 object in closed indices (%s)" % day("build", 1) in done.stdout
    assert "in indices with a read block (%s)" % day("test", 1) in done.stdout
    assert "in %s, an alias of several indices (kept-a, kept-b)" % day("boot", 1) in done.stdout
    assert ("1 object with missing documents was not marked undelivered: Elasticsearch refuses writes to %s "
            "(index.blocks.write)" % day("test", 2)) in done.stdout
    assert set(ledger_states(db).values()) == {DELIVERED}
    client.indices.put_settings(index=day("test", 1), settings={"index.blocks.read": None})
    client.indices.put_settings(index=day("test", 2), settings={"index.blocks.write": None})


def test_reconcile_names_a_data_stream_and_how_to_remove_it_on_a_real_node(real_es, tmp_path):
    """A template of higher priority with `data_stream` makes a data stream of a kcing index name
    (Logstash's `index` action creates it, and is refused): its documents are not checked, and
    what reconcile says to do works on the node, in its order; the other order is refused."""
    from datetime import datetime, timezone

    from elasticsearch import BadRequestError
    from kcing.ledger import docids
    from kcing.ledger.ledger import Ledger, Outcome
    from kcing.records import UpstreamObject
    from kcing.sinks import logstash_destination

    stream = "log-%s" % (date.today() - timedelta(days=1)).strftime("%Y.%m.%d")
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(UpstreamObject("legacy", "lava", "lava-1", "https://storage.example/lava-1",
                                          datetime(2024, 10, 16, tzinfo=timezone.utc)), DELIVERED,
                           documents={stream: docids.pack(["%040x" % 1])})],
                  lambda kind: logstash_destination(["http://localhost:8337"]))
    ledger.close()
    client = client_for(real_es)
    client.indices.put_index_template(name="user-logs", index_patterns=[stream], priority=300, data_stream={})
    refused = client.bulk(operations=[{"index": {"_index": stream, "_id": "%040x" % 1}},
                                      {"@timestamp": "2024-10-16T07:00:00Z"}])
    assert refused["errors"]

    done = kcing(["reconcile"], admin_environ(real_es, tmp_path), tmp_path)
    assert done.returncode == 6, done.stdout + done.stderr  # nothing else to check
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stdout.splitlines() if "a data stream" in line]
    assert line.endswith("delete the data stream (DELETE /_data_stream/<name>), then the template that makes it "
                         "(`kcing setup_es` names it; Elasticsearch refuses to delete it first), then run reconcile "
                         "again"), line
    with pytest.raises(BadRequestError) as first:
        client.indices.delete_index_template(name="user-logs")
    assert "in use by a data streams [%s]" % stream in str(first.value.body)
    assert client.perform_request("DELETE", "/_data_stream/%s" % stream).body == {"acknowledged": True}
    assert client.indices.delete_index_template(name="user-logs").body == {"acknowledged": True}
    again = kcing(["reconcile"], admin_environ(real_es, tmp_path), tmp_path)
    assert again.returncode == 1, again.stdout + again.stderr  # the document is now missing, and marked
    assert "data stream" not in again.stdout
    assert set(ledger_states(db).values()) == {FAILED}


def test_reconcile_leaves_a_red_index_unchecked_and_checks_the_others_on_a_real_node(real_es, tmp_path):
    """A kcing index whose primary shard is not assigned (red: a node gone, a disk full) answers
    each document of an _mget with no_shard_available_action_exception: its documents cannot be
    checked now, which neither stops the check of the other indices nor marks anything."""
    from datetime import datetime, timezone

    from kcing.ledger import docids
    from kcing.ledger.ledger import Ledger, Outcome
    from kcing.records import UpstreamObject
    from kcing.sinks import logstash_destination

    today = date.today().strftime("%Y.%m.%d")
    layout = {"red": ("boot-" + today, 1), "present": ("build-" + today, 2), "lost": ("test-" + today, 3)}
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(UpstreamObject("legacy", "build", name, "https://storage.example/%s" % name,
                                          datetime(2024, 10, 16, tzinfo=timezone.utc)), DELIVERED,
                           documents={index: docids.pack(["%040x" % number])})
                   for name, (index, number) in layout.items()],
                  lambda kind: logstash_destination(["http://localhost:8337"]))
    ledger.close()
    client = client_for(real_es)
    client.indices.create(index="boot-" + today, wait_for_active_shards="0", settings={
        "index.routing.allocation.require._name": "no-such-node", "number_of_replicas": 0})
    client.index(index="build-" + today, id="%040x" % 2, document={"job": "mainline"}, refresh=True)
    client.indices.create(index="test-" + today)

    done = kcing(["reconcile"], admin_environ(real_es, tmp_path), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr  # the test document is missing
    assert "Traceback" not in done.stderr
    assert "checked 2, present 1, missing 1, not checked (index closed or unreadable) 1" in done.stdout
    assert ("1 document of 1 object in indices whose primary shards are not assigned (boot-%s)" % today
            in done.stdout)
    states = ledger_states(db)
    assert sorted(states.values()) == [DELIVERED, DELIVERED, FAILED]


def test_reconcile_reads_an_alias_of_one_blocked_index_as_that_index_on_a_real_node(real_es, tmp_path):
    """The node reads documents and settings through an alias of one index, and would refuse a
    resend's writes through it to an index with a write block: its objects are not marked."""
    from datetime import datetime, timezone

    from kcing.ledger import docids
    from kcing.ledger.ledger import Ledger, Outcome
    from kcing.records import UpstreamObject
    from kcing.sinks import logstash_destination

    alias = "boot-%s" % (date.today() - timedelta(days=1)).strftime("%Y.%m.%d")
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(UpstreamObject("legacy", "boot", "behind-alias", "https://storage.example/a",
                                          datetime(2024, 10, 16, tzinfo=timezone.utc)), DELIVERED,
                           documents={alias: docids.pack(["%040x" % 1, "%040x" % 2])})],
                  lambda kind: logstash_destination(["http://localhost:8007"]))
    ledger.close()
    client = client_for(real_es)
    client.index(index="kept-boot", id="%040x" % 1, document={"job": "mainline"}, refresh=True)
    client.indices.update_aliases(actions=[{"add": {"index": "kept-boot", "alias": alias}}])
    client.indices.add_block(index="kept-boot", block="write")
    try:
        refused = client.options(ignore_status=403).index(index=alias, id="%040x" % 2, document={"job": "x"})
        done = kcing(["reconcile"], admin_environ(real_es, tmp_path), tmp_path)
    finally:
        client.indices.put_settings(index="kept-boot", settings={"index.blocks.write": None})
    assert refused.meta.status == 403  # what a resend through the alias would meet
    assert done.returncode == 1, done.stdout + done.stderr
    assert "boot     checked 1, present 0, missing 1; documents: 2 checked, 1 missing" in done.stdout
    assert ("reconcile: 1 object with missing documents was not marked undelivered: Elasticsearch refuses writes "
            "to %s (index.blocks.write); remove the block and run reconcile again" % alias in done.stdout)
    assert set(ledger_states(db).values()) == {DELIVERED}


def test_reconcile_beside_an_index_with_a_metadata_block_still_tells_write_blocks_on_a_real_node(real_es, tmp_path):
    """The node refuses the settings of every index asked for when one has a metadata block:
    reconcile names that index instead of asking for a privilege, and still finds the write block
    of the other, whose object it leaves delivered."""
    from datetime import datetime, timezone

    from kcing.ledger import docids
    from kcing.ledger.ledger import Ledger, Outcome
    from kcing.records import UpstreamObject
    from kcing.sinks import logstash_destination

    described = "test-%s" % (date.today() - timedelta(days=1)).strftime("%Y.%m.%d")
    write_blocked = "test-%s" % (date.today() - timedelta(days=2)).strftime("%Y.%m.%d")
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(UpstreamObject("legacy", "lava", name, "https://storage.example/%s" % name,
                                          datetime(2024, 10, 16, tzinfo=timezone.utc)), DELIVERED,
                           documents={index: docids.pack("%040x" % n for n in numbers)})
                   for name, index, numbers in (("hidden", described, (1, 2)), ("frozen", write_blocked, (3, 4)))],
                  lambda kind: logstash_destination(["http://localhost:8337"]))
    ledger.close()
    client = client_for(real_es)
    for index, number in ((described, 1), (write_blocked, 3)):
        client.index(index=index, id="%040x" % number, document={"job": "mainline"}, refresh=True)
    client.indices.add_block(index=described, block="metadata")
    client.indices.add_block(index=write_blocked, block="write")
    try:
        done = kcing(["reconcile"], admin_environ(real_es, tmp_path), tmp_path)
    finally:
        # One at a time: the node refuses any other setting of an index with a metadata block.
        client.indices.put_settings(index=described, settings={"index.blocks.metadata": None})
        client.indices.put_settings(index=write_blocked, settings={"index.blocks.write": None})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "view_index_metadata" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "refuses to describe %s (FORBIDDEN/9/index metadata (api))" % described in done.stderr
    assert ("1 object with missing documents was not marked undelivered: Elasticsearch refuses writes to %s "
            "(index.blocks.write)" % write_blocked) in done.stdout
    assert {upstream_id: state for (_, upstream_id), state in ledger_states(db).items()} == {
        "hidden": FAILED, "frozen": DELIVERED}


def test_reconcile_finds_documents_missing_from_hundreds_of_indices_on_a_real_node(real_es, tmp_path):
    """Documents missing from 300 indices at once (a year's backfill Elasticsearch lost): the
    names reconcile asks about go a few per request, never in one URL the node refuses (a request
    line over 4096 bytes is a 400 too_long_http_line_exception)."""
    from datetime import datetime, timezone

    from kcing.ledger import docids
    from kcing.ledger.ledger import Ledger, Outcome
    from kcing.records import UpstreamObject
    from kcing.sinks import logstash_destination

    first = datetime(2020, 1, 1, tzinfo=timezone.utc)
    layout = [("build-%s" % (first + timedelta(days=n)).strftime("%Y.%m.%d"), "%040x" % n) for n in range(400)]
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(UpstreamObject("legacy", "build", "%024x" % n, "https://storage.example/%d" % n,
                                          first + timedelta(days=n)), DELIVERED,
                           documents={index: docids.pack([doc_id])})
                   for n, (index, doc_id) in enumerate(layout)],
                  lambda kind: logstash_destination(["http://localhost:8337"]))
    ledger.close()
    helpers.bulk(client_for(real_es), [{"_index": index, "_id": doc_id, "_source": {"job": "mainline"}}
                                       for n, (index, doc_id) in enumerate(layout) if n % 4 == 0], refresh=True)

    done = kcing(["reconcile"], admin_environ(real_es, tmp_path, DRP_DAYS=KEEP_EVERYTHING), tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "too_long_http_line" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert "build    checked 400, present 100, missing 300; documents: 400 checked, 300 missing" in done.stdout
    assert sorted(int(upstream_id, 16) for (_, upstream_id), state in ledger_states(db).items()
                  if state == FAILED) == [n for n in range(400) if n % 4]


def test_reconcile_reads_in_real_time_past_the_result_window_on_a_real_node(real_es, tmp_path):
    """12,000 documents of one object in one index (past index.max_result_window, which bounds a
    search, not an _mget) and 1,200 of another in as many days' indices, none of them searchable
    yet (refresh off): _mget reads in real time, so reconcile finds each one there, asked 1,000
    at a time, and exactly the three deleted since, unrefreshed too."""
    from datetime import datetime, timezone

    from kcing.ledger import docids
    from kcing.ledger.ledger import Ledger, Outcome
    from kcing.records import UpstreamObject
    from kcing.sinks import logstash_destination

    first = datetime(2020, 1, 1, tzinfo=timezone.utc)
    big = {"log-2020.02.01": ["%040x" % n for n in range(12_000)]}
    spread = {"test-%s" % (first + timedelta(days=n)).strftime("%Y.%m.%d"): ["%040x" % (100_000 + n)]
              for n in range(1_200)}
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(UpstreamObject("legacy", "lava", upstream_id, "https://storage.example/" + upstream_id,
                                          first), DELIVERED,
                           documents={index: docids.pack(ids) for index, ids in layout.items()})
                   for upstream_id, layout in (("big", big), ("spread", spread))],
                  lambda kind: logstash_destination(["http://localhost:8338"]))
    ledger.close()
    client = client_for(real_es)
    # Only a few of the days' indices: a single node opens 1,000 shards at most, and slowly.
    stored = dict(big, **{index: ids for index, ids in sorted(spread.items())[:20]})
    for index in stored:
        client.indices.create(index=index, settings={"number_of_replicas": 0, "refresh_interval": "-1"})
    helpers.bulk(client, ({"_index": index, "_id": doc_id, "_source": {"job": "mainline"}}
                          for index, ids in stored.items() for doc_id in ids), chunk_size=5000, refresh=False)
    assert client.count(index="log-2020.02.01")["count"] == 0  # nothing is searchable yet
    env = admin_environ(real_es, tmp_path, DRP_DAYS=KEEP_EVERYTHING)
    checked = kcing(["reconcile", "--since", "2020-01-01", "--dry-run"], env, tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "lava     checked 2, present 1, missing 1; documents: 13200 checked, 1180 missing" in checked.stdout

    deleted = ["%040x" % n for n in (0, 9_999, 11_999)]
    helpers.bulk(client, ({"_op_type": "delete", "_index": "log-2020.02.01", "_id": doc_id} for doc_id in deleted),
                 refresh=False)
    checked = kcing(["reconcile", "--since", "2020-01-01"], env, tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr
    assert "lava     checked 2, present 0, missing 2; documents: 13200 checked, 1183 missing" in checked.stdout
    assert "missing lava big: 3 of 12000 documents, e.g. log-2020.02.01/%s" % deleted[0] in checked.stdout
    assert set(ledger_states(db).values()) == {FAILED}


# -- drp -------------------------------------------------------------------------------------------

def test_drp_deletes_exactly_the_expired_kind_indices_by_name(real_es, tmp_path):
    client = client_for(real_es)
    today = date.today()
    old = (today - timedelta(days=30)).strftime("%Y.%m.%d")
    recent = (today - timedelta(days=1)).strftime("%Y.%m.%d")
    expired = ["%s-%s" % (kind, old) for kind in KINDS]
    kept = ["%s-%s" % (kind, recent) for kind in KINDS] + [
        "build-archive", "kcing-build-2020.01.01", "build-2020.01.01-restored", "boot-2020.01",
        # Named like a day that never was.
        "build-2019.02.29", "log-2019.13.01", "test-2019.04.31", "regression-0000.01.01"]
    for name in expired + kept:
        client.indices.create(index=name)
    client.indices.create(index=".kcing-system-build-2020.01.01", settings={"index.hidden": True})
    client.indices.create(index=".kcing-build-2020.01.01")
    # An alias with an expired kcing name: the index behind it is someone else's.
    client.indices.create(index="kept-behind-alias")
    client.indices.put_alias(index="kept-behind-alias", name="boot-%s" % (today - timedelta(days=40)).strftime("%Y.%m.%d"))
    kept.append("kept-behind-alias")
    # A real system index: the node stores the result of a task run in the background in `.tasks`.
    client.indices.forcemerge(index=expired[0], wait_for_completion=False)
    for _ in range(100):
        if client.indices.exists(index=".tasks", expand_wildcards="all"):
            break
        time.sleep(0.1)
    assert client.indices.exists(index=".tasks", expand_wildcards="all")

    env = admin_environ(real_es, tmp_path, DRP_DAYS="7", KCI_DAYS="2")
    dry = kcing(["drp", "--dry-run"], env, tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert set(client.indices.get(index="*", expand_wildcards="all")) >= set(expired)

    done = kcing(["drp"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    remaining = set(client.indices.get(index="*", expand_wildcards="all"))
    assert not remaining & set(expired)
    assert remaining >= set(kept) | {".kcing-system-build-2020.01.01", ".kcing-build-2020.01.01", ".tasks"}


def test_drp_deletes_expired_indices_that_are_hidden_or_closed(real_es, tmp_path):
    """A kcing index someone hid (`index.hidden`) or closed is still past the retention: drp
    deletes it by name, as any other, and keeps the recent ones hidden or closed alike."""
    client = client_for(real_es)
    today = date.today()
    old = (today - timedelta(days=30)).strftime("%Y.%m.%d")
    recent = (today - timedelta(days=1)).strftime("%Y.%m.%d")
    hidden = ["build-%s" % old, "log-%s" % recent]
    closed = ["boot-%s" % old, "test-%s" % recent]
    for name in hidden:
        client.indices.create(index=name, settings={"index.hidden": True})
    for name in closed:
        client.indices.create(index=name)
        client.indices.close(index=name)

    env = admin_environ(real_es, tmp_path, DRP_DAYS="7", KCI_DAYS="2")
    dry = kcing(["drp", "--dry-run"], env, tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "would delete index build-%s" % old in dry.stdout and "would delete index boot-%s" % old in dry.stdout
    done = kcing(["drp"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    remaining = set(client.indices.get(index="*", expand_wildcards="all"))
    assert not remaining & {"build-%s" % old, "boot-%s" % old}
    assert remaining >= {"log-%s" % recent, "test-%s" % recent}


def test_drp_leaves_a_blocked_expired_index_and_deletes_the_others_on_a_real_node(real_es, tmp_path):
    """The node refuses a whole DELETE naming a read-only (or metadata-blocked) index: drp names
    that index and exits 3, having deleted every other expired index."""
    client = client_for(real_es)
    today = date.today()
    old = [(today - timedelta(days=days)).strftime("%Y.%m.%d") for days in (30, 31)]
    expired = ["%s-%s" % (kind, day) for kind in KINDS for day in old]
    recent = "build-%s" % (today - timedelta(days=1)).strftime("%Y.%m.%d")
    for name in expired + [recent]:
        client.indices.create(index=name)
    read_only, metadata = "boot-%s" % old[0], "test-%s" % old[1]
    client.indices.create(index="archive-2019")  # not kcing's: its block must not matter to drp
    for name, block in ((read_only, "read_only"), (metadata, "metadata"), ("archive-2019", "metadata")):
        client.indices.add_block(index=name, block=block)
    try:
        dry = kcing(["drp", "--dry-run"], admin_environ(real_es, tmp_path, DRP_DAYS="7", KCI_DAYS="2"), tmp_path)
        done = kcing(["drp"], admin_environ(real_es, tmp_path, DRP_DAYS="7", KCI_DAYS="2"), tmp_path)
        remaining = [item["name"] for item in client.indices.resolve_index(name="*", expand_wildcards="all")["indices"]
                     if not item["name"].startswith(".")]
    finally:
        client.indices.put_settings(index="%s,%s,archive-2019" % (read_only, metadata),
                                    settings={"index.blocks.read_only": None, "index.blocks.metadata": None})
    # The dry run says what the run then did: the two blocked indices left, the others deleted.
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "drp: would not delete index %s: blocked by [FORBIDDEN/5/index read-only (api)]" % read_only in dry.stdout
    assert "drp: would not delete index %s: blocked by [FORBIDDEN/9/index metadata (api)]" % metadata in dry.stdout
    assert sorted(line.split()[-1] for line in dry.stdout.splitlines() if line.startswith("drp: would delete index ")) \
        == sorted(set(expired) - {read_only, metadata})
    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(remaining) == sorted([read_only, metadata, recent, "archive-2019"])
    assert "drp: not deleted index %s: blocked by [FORBIDDEN/5/index read-only (api)]" % read_only in done.stdout
    assert "drp: deleted %d indices" % (len(expired) - 2) in done.stdout
    [last] = done.stderr.strip().splitlines()[-1:]
    assert "refused to delete 2 expired indices because of a block" in last and metadata in last, last


def test_drp_on_a_read_only_cluster_names_the_cluster_setting_on_a_real_node(real_es, tmp_path):
    client = client_for(real_es)
    expired = "build-%s" % (date.today() - timedelta(days=30)).strftime("%Y.%m.%d")
    client.indices.create(index=expired)
    client.cluster.put_settings(persistent={"cluster.blocks.read_only": True})
    try:
        done = kcing(["drp"], admin_environ(real_es, tmp_path, DRP_DAYS="7", KCI_DAYS="2"), tmp_path)
    finally:
        client.cluster.put_settings(persistent={"cluster.blocks.read_only": None})
    assert done.returncode == 3, done.stdout + done.stderr
    [last] = done.stderr.strip().splitlines()[-1:]
    assert "%s [FORBIDDEN/6/cluster read-only (api)]" % expired in last and "PUT /_cluster/settings" in last, last
    assert client.indices.exists(index=expired)


# -- what the emulator's strictness is modelled on -------------------------------------------------

def test_field_names_are_refused_as_the_emulator_says(real_es):
    assert field_name_statuses(client_for(real_es)) == [status for _, status in FIELD_NAME_ANSWERS]


def test_aliases_cat_patterns_and_data_streams_are_answered_as_the_emulator_says(real_es):
    assert node_answers(real_es.url, ALIAS_REQUESTS) == NODE_ALIAS_ANSWERS
    assert node_answers(real_es.url, CAT_REQUESTS) == NODE_CAT_ANSWERS
    assert node_answers(real_es.url, STREAM_REQUESTS) == NODE_STREAM_ANSWERS
    assert node_answers(real_es.url, ROUTING_REQUESTS) == NODE_ROUTING_ANSWERS


def test_a_template_refused_beside_a_data_stream_leaves_the_others_installed(real_es, tmp_path):
    setup_es_beside_a_data_stream(real_es.url, tmp_path)


def test_cat_indices_leaves_hidden_indices_out_unless_asked(real_es):
    client = client_for(real_es)
    client.indices.create(index=".kcing-plain")
    client.indices.create(index=".kcing-secret", settings={"index.hidden": True})
    listed = {row["index"] for row in client.cat.indices(format="json", h="index")}
    assert ".kcing-plain" in listed and ".kcing-secret" not in listed
    every = {row["index"] for row in client.cat.indices(format="json", h="index", expand_wildcards="all")}
    assert ".kcing-secret" in every


# The same requests to the emulator and to the node: every status must agree, item by item.
ODD_SOURCES = [
    {"build_time": "abc"}, {"_id": "x"}, {"build_time": "12.5", "arch": 12, "vmlinux_file_size": "15"},
    {"unknown_field": {"a": 1}, "date_like": "2020-01-01"}, {"arch": ["a", "b"], "build_time": None},
    {"@timestamp": "2020-13-45"}, {"build_threads": 1.5}, {"build_threads": "1.5"}, {"arch": {"x": 1}},
    {"arch": True, "build_time": True}, {"build_threads": 2 ** 63}, {"errors": "1e3"}, {"build_time": "NaN"},
    {"arch": "x" * 40000}, {"git_describe": ""}, {"@timestamp": 1577836800000},
    {"@timestamp": "2020-01-01 10:00:00"}, {"@timestamp": "2020-01-01T10:00:00.123456789Z"},
    {"kernelci_api": "flat"}, {"kernelci_api": {"created": "nope"}}, {"a.b": 1, "a": {"c": 2}},
    {"build_threads": [1, "x"]}, {"@timestamp": "2020-01-01T10:00:00+0100"}, {"build_time": "1,5"},
    {"errors": 3.7}, {"x.": 1}, {"x..y": 1}, {".x": 1}, {"a": {"b.": 1}},
    # Numbers at the edges of their types, and numbers as text as Java reads it.
    {"build_time": 1e39}, {"build_time": "3.5e38"}, {"build_time": -3.5e38}, {"build_time": 3.4028235e38},
    {"build_time": "1_000"}, {"build_time": " 12 "}, {"build_time": "12f"}, {"build_time": ""},
    {"build_threads": "9223372036854775807"}, {"build_threads": "-9223372036854775808"},
    {"build_threads": "9223372036854775808"}, {"build_threads": "1e19"}, {"build_threads": 9.3e18},
    {"build_threads": " 12 "}, {"build_threads": "12 "}, {"build_threads": "1_000"}, {"build_threads": "+5"},
    {"build_threads": ""}, {"build_threads": [[1, [2]]]}, {"build_time": [[1.5]]},
    # Dates: epoch milliseconds as text and numbers, the years and offsets java.time reads.
    {"@timestamp": 1.5}, {"@timestamp": "1."}, {"@timestamp": "-1.5"}, {"@timestamp": 9.2e18},
    {"@timestamp": 2 ** 63}, {"@timestamp": -2 ** 63}, {"@timestamp": -2 ** 63 + 1}, {"@timestamp": "99999999999999999999"},
    {"@timestamp": "0000-01-01T00:00:00Z"}, {"@timestamp": "-0001-01-01T00:00:00Z"}, {"@timestamp": "2019-02-29"},
    {"@timestamp": "2020-06-01T00:00:00-23:59"}, {"@timestamp": "2020-06-01T00:00:00+18:01"},
    {"@timestamp": "2020-06-01T00:00:00-18:00"}, {"@timestamp": "2020-06-01T00:00:00+01:30:15"},
    {"@timestamp": "2020-06-01T00:00:00+18:00:01"}, {"@timestamp": "2020-06-01T00:00:00+0160"},
]


def answers(client: Elasticsearch) -> list:
    """Status codes of a fixed sequence of kcing-like calls, documents one by one."""
    from elasticsearch import ApiError
    from kcing.admin.templates import templates_for

    def status(call) -> int:
        try:
            return call().meta.status
        except ApiError as error:
            return error.meta.status

    # setup_es reads the kcing templates by pattern before any exists.
    seen = [status(lambda: client.indices.get_index_template(name="kcing-*")),
            status(lambda: client.indices.get_index_template(name="kcing-*,other")),
            status(lambda: client.indices.get_index_template(name="kcing-build"))]
    seen += [status(lambda: client.indices.put_index_template(name=name, body=body))
             for name, body in sorted(templates_for(None).items())]
    seen.append(status(lambda: client.indices.get_index_template(name="kcing-*")))
    seen.append(status(lambda: client.indices.put_index_template(
        name="clash", index_patterns=["build-x*"], priority=200)))
    # Overlapping patterns at another priority are accepted, and the higher one wins.
    seen.append(status(lambda: client.indices.put_index_template(
        name="over", index_patterns=["test-2*", "elsewhere-*"], priority=500)))
    seen.append(status(lambda: client.indices.put_index_template(
        name="under", index_patterns=["*-2020.*"], priority=1)))
    seen.append(status(lambda: client.indices.put_index_template(
        name="same-as-over", index_patterns=["test-*"], priority=500)))
    seen.append(status(lambda: client.indices.create(index="test-2020.04.01")))
    seen.append(client.indices.get(index="test-2020.04.01")["test-2020.04.01"]["mappings"])
    seen.append(sorted(item["name"] for item in client.indices.get_index_template()["index_templates"]
                       if item["name"] in ("over", "under", "same-as-over", "clash")))
    seen.append(status(lambda: client.indices.delete_index_template(name="over")))
    seen.append(status(lambda: client.indices.delete_index_template(name="under")))
    operations = []
    for number, source in enumerate(ODD_SOURCES):
        operations += [{"index": {"_index": "build-2020.01.02", "_id": str(number)}}, source]
    seen += [item["index"]["status"] for item in client.bulk(operations=operations)["items"]]
    seen.append(status(lambda: client.indices.create(index="build-2020.01.02")))
    seen.append(status(lambda: client.indices.delete(index="build-*")))
    seen.append(status(lambda: client.indices.delete(index="nope-2020.01.01")))
    docs = client.mget(docs=[{"_index": "nope-1", "_id": "a"}, {"_index": "build-2020.01.02", "_id": "2"},
                             {"_index": "build-2020.01.02", "_id": "missing"}])["docs"]
    seen += [("error" in doc, doc.get("found")) for doc in docs]
    # An empty id or index fails its own document; an unknown expand_wildcards value the request.
    docs = client.mget(docs=[{"_index": "build-2020.01.02", "_id": ""}, {"_index": "", "_id": "2"},
                             {"_index": "build-2020.01.02", "_id": 2}])["docs"]
    seen += [((doc.get("error") or {}).get("type"), doc.get("found")) for doc in docs]
    # Names no kcing index has (a ledger edited by hand): `_all` is every index, never one.
    docs = client.mget(docs=[{"_index": name, "_id": "a", "_source": False} for name in ("_all", "-x", "build*")],
                       filter_path="docs.error.type,docs.error.reason")["docs"]
    seen += [(doc["error"]["type"], doc["error"]["reason"]) for doc in docs]
    seen.append(status(lambda: client.indices.resolve_index(name="build-*", expand_wildcards="bogus")))
    client.indices.create(index=".kcing-plain")
    client.indices.create(index=".kcing-secret", settings={"index.hidden": True})
    seen.append(sorted(row["index"] for row in client.cat.indices(format="json", h="index")))
    seen.append(status(lambda: client.indices.delete(index="build-2020.01.02,nope-2020.01.01",
                                                     ignore_unavailable=True, expand_wildcards="none")))
    seen += template_body_answers(client)
    seen += red_index_answers(client)
    seen += index_state_answers(client)
    seen += legacy_template_answers(client)
    seen += delete_block_answers(client)
    seen += long_line_answers(client)
    return seen


def names_filling(length: int) -> str:
    """Comma-separated index names that match nothing, `length` characters in all (at least 8)."""
    count = -(-(length + 1) // 201)  # names of at most 200 characters, each but the last with its comma
    letters = length - (count - 1)
    sizes = [letters // count + (1 if n < letters % count else 0) for n in range(count)]
    return ",".join("nothing-" + "a" * (size - 8) for size in sizes)


def long_line_answers(client: Elasticsearch) -> list:
    """A node answers a request line (method, target, HTTP version) of up to 4096 bytes, and
    refuses a longer one before routing it: a request naming many indices in its URL."""
    from elasticsearch import ApiError

    fixed = len("GET /_resolve/index/") + len("?ignore_unavailable=true") + len(" HTTP/1.1")
    seen = []
    for line in (4095, 4096, 4097, 6000):
        names = names_filling(line - fixed)
        try:
            seen.append(client.indices.resolve_index(name=names, ignore_unavailable=True).body)
        except ApiError as error:
            seen.append((error.meta.status, error.body))
    return seen


# Index template bodies a node refuses or reads otherwise than they are written: names and
# patterns it forbids, values of a type a field does not take, numbers as text.
TEMPLATE_BODIES = [
    ("T-upper", {"index_patterns": ["tb1-*"]}), ("_under", {"index_patterns": ["tb2-*"]}),
    ("a b", {"index_patterns": ["tb3-*"]}), ("a*b", {"index_patterns": ["tb4-*"]}), ("a#b", {"index_patterns": ["tb5-*"]}),
    ("a?b", {"index_patterns": ["tb6-*"]}), ("tb7", {"index_patterns": ["tb 7-*"]}), ("tb8", {"index_patterns": ["tb#8"]}),
    ("tb9", {"index_patterns": ["tb:9"]}), ("tb10", {"index_patterns": ["_tb10"]}), ("tb11", {"index_patterns": ["tb?11"]}),
    ("tb12", {"index_patterns": ["tb/12", "x"]}), ("tb13", {"index_patterns": [""]}), ("tb14", {"index_patterns": []}),
    ("tb15", {"index_patterns": None}), ("tb16", {"index_patterns": [None]}), ("tb17", {"index_patterns": [["x"]]}),
    ("tb18", {"index_patterns": [18, True]}), ("tb19", {"index_patterns": {"a": 1}}),
    ("tb20", {"index_patterns": ["tb20-*"], "priority": "5.5", "version": "7"}),
    ("tb21", {"index_patterns": ["tb21-*"], "priority": 2.5, "version": 1e3}),
    ("tb22", {"index_patterns": ["tb22-*"], "priority": " 5"}), ("tb23", {"index_patterns": ["tb23-*"], "priority": ""}),
    ("tb24", {"index_patterns": ["tb24-*"], "priority": None}), ("tb25", {"index_patterns": ["tb25-*"], "priority": True}),
    ("tb26", {"index_patterns": ["tb26-*"], "priority": 1.5e30}), ("tb27", {"index_patterns": ["tb27-*"], "version": "x"}),
    ("tb28", {"index_patterns": ["tb28-*"], "version": None}), ("tb29", {"index_patterns": ["tb29-*"], "_meta": "x"}),
    ("tb30", {"index_patterns": ["tb30-*"], "_meta": None}), ("tb31", {"index_patterns": ["tb31-*"], "template": None}),
    ("tb32", {"index_patterns": ["tb32-*"], "template": []}), ("tb33", {"index_patterns": ["tb33-*"], "composed_of": None}),
    ("tb34", {"index_patterns": ["tb34-*"], "data_stream": None}),
    ("tb35", {"index_patterns": ["tb35-*"], "allow_auto_create": "yes"}),
    ("tb36", {"index_patterns": ["tb36-*"], "allow_auto_create": "true", "deprecated": "false"}),
    ("tb37", {"index_patterns": ["tb37-*"], "deprecated": 1}),
    ("tb38", {"index_patterns": ["tb38-*"], "template": {"settings": None}}),
    ("tb39", {"index_patterns": ["tb39-*"], "template": {"settings": {"refresh_interval": "1.5s"}}}),
    ("tb40", {"index_patterns": ["tb40-*"], "template": {"settings": {"refresh_interval": " 5S "}}}),
    ("tb41", {"index_patterns": ["tb41-*"], "data_stream": {"hidden": "x"}}),
]


def template_body_answers(client: Elasticsearch) -> list:
    """Status and error type of each of TEMPLATE_BODIES, the templates taken read back, and what
    deleting names and patterns that match none answers."""
    from elasticsearch import ApiError

    def put(name: str, body: dict):
        try:
            return client.indices.put_index_template(name=name, body=body).meta.status
        except ApiError as error:
            return error.meta.status, error.body["error"]["type"]

    def delete(names: str):
        try:
            return client.indices.delete_index_template(name=names).meta.status
        except ApiError as error:
            return error.meta.status, error.body["error"]["type"], error.body["error"]["reason"]

    seen = [put(name, body) for name, body in TEMPLATE_BODIES]
    taken = client.indices.get_index_template(name="tb*")["index_templates"]
    seen.append(sorted((item["name"], item["index_template"]) for item in taken))
    seen += [delete("tb20,nothing-here"), delete("tb20,nothing*"), delete("nothing*"), delete("tb*"),
             delete("nothing,tb*")]
    return seen


def red_index_answers(client: Elasticsearch) -> list:
    """An index whose primary shard must live on a node that is not there: the cluster is red,
    a health wait for yellow times out (408), and _mget fails each of its documents."""
    from elasticsearch import ApiError

    client.indices.create(index="build-2020.07.01", wait_for_active_shards="0", settings={
        "index.routing.allocation.require._name": "no-such-node", "number_of_replicas": 0})
    docs = client.mget(docs=[{"_index": "build-2020.07.01", "_id": "a", "_source": False}],
                       filter_path="docs._id,docs.found,docs.error.type")["docs"]
    try:
        health = client.cluster.health(wait_for_status="yellow", timeout="1ms").meta.status
    except ApiError as error:
        health = error.meta.status, error.body["status"], error.body["timed_out"]
    rows = client.cat.indices(index="build-2020.07.01", format="json", h="index,health,status")
    client.indices.delete(index="build-2020.07.01")
    return [docs, health, list(rows)]


def delete_block_answers(client: Elasticsearch) -> list:
    """A DELETE naming an index with a read-only or metadata block is refused whole (403), its
    reason naming each such index in the request's order; the other blocks do not stop a delete."""
    import re
    from elasticsearch import ApiError

    def delete(names: str):
        try:
            return client.indices.delete(index=names, ignore_unavailable=True, expand_wildcards="none").body
        except ApiError as error:
            return error.meta.status, error.body["error"]["type"], error.body["error"]["reason"]

    def listed() -> list:
        # By _resolve/index: a metadata block makes a node refuse GET /<index> and _cat/indices.
        return [item["name"] for item in client.indices.resolve_index(name="build-2020.05.*",
                                                                      expand_wildcards="all")["indices"]]

    names = ["build-2020.05.0%d" % day for day in range(1, 8)]
    for name in names:
        client.indices.create(index=name)
    client.indices.add_block(index=names[2], block="read_only")
    client.indices.add_block(index=names[1], block="metadata")
    client.indices.add_block(index=names[6], block="read_only")
    client.indices.add_block(index=names[6], block="metadata")
    seen = [delete(",".join([names[0], names[2], names[1]])), delete(names[6])]
    for name, block in zip(names[3:6], ("write", "read", "read_only_allow_delete")):
        client.indices.put_settings(index=name, settings={"index.blocks.%s" % block: True})
    seen.append(delete(",".join(names[3:6])))
    seen.append(listed())
    # A metadata block also makes the node refuse an _cat/indices listing that index, naming each
    # such index (in no particular order); one it does not list is no hindrance.
    client.indices.create(index="other-2020.05.01")
    client.indices.add_block(index="other-2020.05.01", block="metadata")
    for pattern in ("build-2020.05.*,boot-*", "other-*", "build-2020.05.01,build-2020.05.03,log-*"):
        try:
            rows = client.cat.indices(index=pattern, format="json", h="index", expand_wildcards="all").body
            seen.append(sorted(row["index"] for row in rows))
        except ApiError as error:
            seen.append((error.meta.status, error.body["error"]["type"],
                         sorted(re.findall(r"index \[([^\]]+)\] blocked by: \[FORBIDDEN/9/index metadata \(api\)\];",
                                           error.body["error"]["reason"]))))
    try:
        client.indices.get_settings(index="build-2020.05.03,other-2020.05.01", name="index.blocks.*", flat_settings=True,
                                    ignore_unavailable=True, expand_wildcards="all")
    except ApiError as error:
        seen.append((error.meta.status, error.body["error"]["type"], error.body["error"]["reason"]))
    seen.append(client.indices.resolve_index(name="other-2020.05.01", expand_wildcards="all").body)
    client.indices.put_settings(index="other-2020.05.01", settings={"index.blocks.metadata": None})
    client.indices.delete(index="other-2020.05.01")
    client.indices.put_settings(index=",".join([names[1], names[2], names[6]]),
                                settings={"index.blocks.metadata": None, "index.blocks.read_only": None})
    seen.append(delete(",".join([names[0], names[1], names[2], names[6]])))
    seen.append(listed())
    return seen


def legacy_template_answers(client: Elasticsearch) -> list:
    """A legacy `_template` beside kcing's composable ones: accepted, listed, and the Warning
    header each of the two puts gets when their patterns overlap."""
    import warnings
    from elasticsearch import BadRequestError, ElasticsearchWarning, NotFoundError
    from kcing.admin.templates import templates_for

    def warned(call) -> list:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
        return [str(item.message) for item in caught if issubclass(item.category, ElasticsearchWarning)]

    def refused(call):
        try:
            call()
        except BadRequestError as error:
            return error.meta.status, error.body["error"]["type"], error.body["error"]["reason"]

    # Beside kcing's composable template, a legacy one of overlapping patterns is refused.
    seen = [refused(lambda: client.indices.put_template(name="kernelci-boot", index_patterns=["boot-2*"]))]
    client.indices.delete_index_template(name="kcing-boot")
    # Before it, it is accepted, and kcing's is then installed with a warning.
    seen.append(warned(lambda: client.indices.put_template(name="kernelci-boot", index_patterns=["boot-*"], order=1)))
    seen.append(warned(lambda: client.indices.put_index_template(name="kcing-boot",
                                                                body=templates_for(None)["kcing-boot"])))
    seen.append(warned(lambda: client.indices.put_template(name="elsewhere", index_patterns=["other-*"])))
    seen.append(sorted(client.indices.get_template().body))
    seen.append(client.indices.get_template(name="kernelci-boot")["kernelci-boot"]["index_patterns"])
    seen.append(client.indices.delete_template(name="kernelci-boot").body)
    try:
        client.indices.delete_template(name="kernelci-boot")
    except NotFoundError as error:
        seen.append((error.meta.status, error.body["error"]["type"]))
    client.indices.delete_template(name="elsewhere")
    return seen


def index_state_answers(client: Elasticsearch) -> list:
    """What reconcile meets under kcing index names: closed indices, blocks, an alias of several
    indices, and how `_resolve/index` and `_settings` describe them (a data stream:
    data_stream_answers)."""
    from elasticsearch import ApiError

    def mget(*names: str) -> list:
        docs = client.mget(docs=[{"_index": name, "_id": "a", "_source": False} for name in names],
                           filter_path="docs._id,docs.found,docs.error.type,docs.error.reason")["docs"]
        return [(doc.get("found"), (doc.get("error") or {}).get("type"), (doc.get("error") or {}).get("reason"))
                for doc in docs]

    client.bulk(operations=[line for name in ("build-2020.02.01", "boot-2020.02.01", "test-2020.02.01",
                                              "test-2020.02.02", "kept-a", "kept-b")
                            for line in ({"index": {"_index": name, "_id": "a"}}, {"job": "x"})], refresh=True)
    seen = [client.indices.close(index="build-2020.02.01").body]
    seen.append(client.indices.add_block(index="test-2020.02.01", block="read").body)
    seen.append(client.indices.add_block(index="test-2020.02.02", block="write").body)
    seen.append(client.indices.update_aliases(actions=[{"add": {"index": "kept-a", "alias": "log-2020.02.01"}},
                                                       {"add": {"index": "kept-b", "alias": "log-2020.02.01"}},
                                                       {"add": {"index": "kept-a", "alias": "log-2020.02.02"}}]).body)
    seen.append(mget("build-2020.02.01", "test-2020.02.01", "test-2020.02.02", "log-2020.02.01", "log-2020.02.02",
                     "nope-2020.02.01", "boot-2020.02.01"))
    operations = []
    for name in ("build-2020.02.01", "test-2020.02.02", "log-2020.02.01", "log-2020.02.02"):
        operations += [{"index": {"_index": name, "_id": "b"}}, {"job": "y"}]
    seen.append([(item["index"]["_index"], item["index"]["status"], (item["index"].get("error") or {}).get("type"))
                 for item in client.bulk(operations=operations, refresh=True)["items"]])
    seen.append(client.indices.resolve_index(
        name="build-2020.02.01,test-2020.02.02,log-2020.02.01,log-2020.02.02,nope-2020.02.01",
        expand_wildcards="all", ignore_unavailable=True).body)
    seen.append(client.indices.get_settings(index="build-2020.02.01,test-2020.02.01,test-2020.02.02,boot-2020.02.01,"
                                                  "nope-2020.02.01", name="index.blocks.*", flat_settings=True,
                                            ignore_unavailable=True, expand_wildcards="all").body)
    seen.append(sorted((row["index"], row["status"], row["docs.count"])
                       for row in client.cat.indices(index="*-2020.02.*", format="json", h="index,status,docs.count")))
    client.indices.put_settings(index="test-2020.02.01,test-2020.02.02",
                                settings={"index.blocks.read": None, "index.blocks.write": None})
    client.indices.open(index="build-2020.02.01")
    seen.append(mget("build-2020.02.01", "test-2020.02.01"))
    # A hidden index, open and closed: how _resolve/index lists its attributes.
    client.indices.create(index="boot-2020.02.02", settings={"index.hidden": True})
    client.indices.create(index="boot-2020.02.03", settings={"index.hidden": True})
    client.indices.close(index="boot-2020.02.03")
    seen.append(client.indices.resolve_index(name="boot-2020.02.02,boot-2020.02.03", expand_wildcards="all").body)
    client.indices.delete(index="boot-2020.02.02,boot-2020.02.03")
    # A DELETE never goes through an alias: named, it is refused, or left alone when unavailable
    # names are ignored; the indices behind it stay.
    try:
        seen.append(client.indices.delete(index="log-2020.02.02").body)
    except ApiError as error:
        seen.append((error.meta.status, error.body["error"]["type"], error.body["error"]["reason"]))
    seen.append(client.indices.delete(index="log-2020.02.01,log-2020.02.02", ignore_unavailable=True,
                                      expand_wildcards="none").body)
    seen.append(sorted(item["name"] for item in client.indices.resolve_index(name="kept-*")["indices"]))
    return seen


def test_the_emulator_answers_as_the_node_does(real_es, es):
    assert answers(Elasticsearch(es.url)) == answers(client_for(real_es))


def resolve_answers(client: Elasticsearch) -> list:
    """What `_resolve/index` says of indices that aliases point at, open and closed, hidden or
    not: asked by kcing's patterns as drp asks (every state), by names as reconcile asks, and with
    the node's default (open indices only)."""
    for name, settings in (("build-2018.01.01", {}), ("build-2018.01.02", {}), ("boot-2018.01.03", {"index.hidden": True}),
                           ("kept-a", {}), ("kept-b", {})):
        client.indices.create(index=name, settings=settings)
    client.indices.close(index="build-2018.01.02")
    client.indices.update_aliases(actions=[{"add": {"index": "kept-a", "alias": "build-2018.02.01"}},
                                           {"add": {"index": "kept-a", "alias": "log-2018.02.01"}},
                                           {"add": {"index": "kept-b", "alias": "log-2018.02.01"}},
                                           {"add": {"index": "build-2018.01.02", "alias": "boot-2018.02.02"}}])
    names = "build-2018.01.01,build-2018.01.02,boot-2018.01.03,build-2018.02.01,log-2018.02.01,nope-2018.01.01,kept-a"
    return [client.indices.resolve_index(name=name, **options).body for name, options in (
        ("build-*,boot-*,log-*", {"expand_wildcards": "all"}), (names, {"expand_wildcards": "all",
                                                                      "ignore_unavailable": True}),
        ("build-*,boot-*,log-*", {}), ("build-*,boot-*,log-*", {"expand_wildcards": "closed"}),
        ("build-*,kept-*", {"expand_wildcards": "open,hidden"}))]


def health_answers(client: Elasticsearch) -> list:
    """The cluster's health as setup_es waits for it, with an index of one replica (which a single
    node leaves unassigned), then with one whose primary must live on a node that is not there.
    The shards counted as what these indices add: the node may hold system indices already (an
    earlier test's `.tasks`)."""
    from elasticsearch import ApiError

    counted = ("active_primary_shards", "active_shards", "unassigned_shards")

    def health() -> tuple:
        try:
            answer = client.cluster.health(wait_for_status="yellow", timeout="1ms")
            status, body = answer.meta.status, answer.body
        except ApiError as error:
            status, body = error.meta.status, error.body
        # The shard counts and the status; the pending tasks vary with the moment asked.
        return status, {key: body[key] for key in ("status", "timed_out") + counted}

    def added(answer: tuple) -> tuple:
        status, body = answer
        return status, {key: value - before[key] if key in counted else value for key, value in body.items()}

    _, before = health()
    client.indices.create(index="build-2018.03.01", settings={"number_of_replicas": 1})
    seen = [added(health())]
    client.indices.create(index="build-2018.03.02", wait_for_active_shards="0", settings={
        "index.routing.allocation.require._name": "no-such-node", "number_of_replicas": 1})
    seen.append(added(health()))
    return seen


# Bulk requests with external versions, as the pipeline's versioned output writes kcing's API
# documents (logstash/pipeline/kcing.conf), and the versions a node refuses.
VERSION_REQUESTS = [
    [("index", {"_id": "a", "version": 5, "version_type": "external_gte"})],
    [("index", {"_id": "a", "version": 3, "version_type": "external_gte"})],  # older: 409
    [("index", {"_id": "a", "version": 5, "version_type": "external_gte"})],  # the same again: taken
    [("index", {"_id": "a", "version": "7", "version_type": "external_gte"})],  # a text, as Logstash sends it
    [("index", {"_id": "a", "version": 7, "version_type": "external"}),
     ("index", {"_id": "a", "version": 8, "version_type": "external_gt"})],
    [("index", {"_id": "a"})],  # an internal write after external ones counts on from them
    [("delete", {"_id": "a"}), ("index", {"_id": "a", "version": 9, "version_type": "external_gte"}),
     ("index", {"_id": "a", "version": 10, "version_type": "external_gte"})],  # below the deleted version's
    [("index", {"_id": "b"}), ("index", {"_id": "b"}), ("delete", {"_id": "b"}), ("index", {"_id": "b"})],
    [("index", {"_id": "c", "version": "1.5", "version_type": "external_gte"}),
     ("index", {"_id": "c", "version": 2 ** 63 - 1, "version_type": "external_gte"}),
     ("index", {"_id": "c", "version": 0, "version_type": "external_gte"})],
    [("index", {"_id": "d", "version": 0, "version_type": "external_gte"}), ("create", {"_id": "d"}),
     ("index", {"_id": "d", "_index": ""})],
    # Refused whole: every item's problem numbered in one message, or the first line not parsed.
    [("index", {"_id": "e", "version": -1, "version_type": "external_gte"}), ("index", {"_id": "e", "_index": None}),
     ("create", {"_id": "e", "version": 3, "version_type": "external"}), ("index", {"_id": "e", "version": 3}),
     ("index", {"_id": "e", "version_type": "external"})],
    [("index", {"_id": "e", "version": "abc", "version_type": "external_gte"})],
    [("index", {"_id": "e", "version": 5, "version_type": "force"})],
    [("index", {"_id": "e", "version": 5, "version_type": "EXTERNAL_GTE"})],
    [("index", {"_id": "e", "version": 5, "version_type": 5})],
    [("index", {"_id": "e", "version": True, "version_type": "external_gte"})],
    [("index", {"_id": "e", "version": 2 ** 64, "version_type": "external_gte"})],
    # Texts as the node reads them: no spaces or underscores; a number too large for a long.
    *([("index", {"_id": "f", "version": text, "version_type": "external_gte"})]
      for text in (" 7", "7 ", "1_0", "+7", "1e3", "9223372036854775807.5", "9223372036854775808")),
    # JSON's null: as if not given.
    [("index", {"_id": "g", "version": None, "version_type": "external_gte"})],
    [("index", {"_id": "g", "version": 5, "version_type": None})],
    [("index", {"_id": "g", "version": None})],
]


def version_answers(client: Elasticsearch) -> list:
    """Each item's status, version, error type and reason (a refusal of the whole request: its
    status, type and, but for a parse error naming its place in the text, reason); then what
    the index holds."""
    from elasticsearch import ApiError

    seen = []
    for request in VERSION_REQUESTS:
        operations = []
        for op, meta in request:
            operations.append({op: {"_index": "build-2020.07.01", **meta}})
            if op != "delete":
                operations.append({"n": len(seen)})
        try:
            items = client.bulk(operations=operations)["items"]
            seen.append([(item[op]["status"], item[op].get("_version"), (item[op].get("error") or {}).get("type"),
                          (item[op].get("error") or {}).get("reason")) for item in items for op in item])
        except ApiError as error:
            cause = error.body["error"]
            parsed = cause["type"] != "x_content_parse_exception"
            seen.append((error.meta.status, cause["type"], cause["reason"] if parsed else None))
    docs = client.mget(index="build-2020.07.01", ids=list("abcde"))["docs"]
    seen.append([(doc["_id"], doc["found"], doc.get("_version"), doc.get("_source")) for doc in docs])
    return seen


def test_external_versions_answer_as_on_the_node(real_es, es):
    assert version_answers(Elasticsearch(es.url)) == version_answers(client_for(real_es))


def test_cluster_health_answers_as_the_node_does(real_es):
    from tests.fakes.elastic_server import ElasticsearchEmulator

    with ElasticsearchEmulator() as emulator:
        assert health_answers(Elasticsearch(emulator.url)) == health_answers(client_for(real_es))


def data_stream_answers(client: Elasticsearch) -> list:
    """A data stream under a kcing index name, made by a template of a higher priority than kcing's
    as Logstash's `index` action meets it: how the node writes to it, lists it (by kcing's patterns
    too, as drp and setup_es ask), describes it, deletes (or not) it and its template."""
    import re
    from elasticsearch import ApiError

    def status(call):
        try:
            answer = call()
            return answer.meta.status, answer.body
        except ApiError as error:
            return error.meta.status, error.body

    stream, patterns = "log-2018.04.01", "build-*,boot-*,test-*,log-*,regression-*"
    client.indices.put_index_template(name="user-logs", index_patterns=["log-2018.04.*"], priority=300, data_stream={})
    seen = [[(op, item[op]["status"], (item[op].get("error") or {}).get("type")) for item in client.bulk(
        operations=[{op: {"_index": stream, "_id": "a"}}, {"@timestamp": "2018-04-01T00:00:00Z"}],
        refresh=True)["items"] for op in item] for op in ("index", "create")]
    seen.append(client.indices.get_index_template(name="user-logs").body)
    seen.append(status(lambda: client.indices.delete_index_template(name="user-logs")))
    for call in (lambda: client.cat.indices(index=patterns, format="json", h="index", expand_wildcards="all"),
                 lambda: client.cat.indices(index=stream, format="json", h="index"),
                 lambda: client.indices.get(index=patterns, filter_path="*.settings.index.hidden",
                                            expand_wildcards="open,hidden"),
                 lambda: client.indices.get_settings(index=stream, name="index.hidden", flat_settings=True),
                 lambda: client.indices.resolve_index(name=stream, expand_wildcards="all", ignore_unavailable=True),
                 lambda: client.mget(docs=[{"_index": stream, "_id": "a", "_source": False}],
                                     filter_path="docs._id,docs.found,docs.error.type"),
                 lambda: client.indices.delete(index=stream, ignore_unavailable=True, expand_wildcards="none"),
                 lambda: client.indices.delete(index=stream),
                 lambda: client.indices.delete(index="nope-2018.04.01")):
        seen.append(status(call))
    # The backing index is named after the day it was made.
    return json.loads(re.sub(r"(\.ds-%s-)[0-9]{4}\.[0-9]{2}\.[0-9]{2}-" % re.escape(stream), r"\1DAY-",
                             json.dumps(seen)))


def test_data_streams_answer_as_on_the_node(real_es):
    from tests.fakes.elastic_server import ElasticsearchEmulator

    with ElasticsearchEmulator(builtin_templates=False) as emulator:
        assert data_stream_answers(Elasticsearch(emulator.url)) == data_stream_answers(client_for(real_es))


def template_listing_answers(client: Elasticsearch) -> list:
    """What listing templates answers (setup_es lists them all) with none, then with one of each
    kind: the list of all, a pattern and a name matching none or some."""
    lenient = client.options(ignore_status=404)

    def listings() -> list:
        answers = [lenient.indices.get_index_template()] + [lenient.indices.get_index_template(name=name)
                                                            for name in ("*", "kcing-*", "kcing-build")]
        answers += [lenient.indices.get_template()] + [lenient.indices.get_template(name=name)
                                                       for name in ("*", "kernelci-*", "kernelci-build")]
        return [(answer.meta.status, answer.body) for answer in answers]

    seen = listings()
    client.indices.put_index_template(name="kcing-build", index_patterns=["build-*"], priority=200)
    client.indices.put_template(name="kernelci-boot", index_patterns=["boot-*"])
    return seen + listings()


def test_template_listings_answer_as_on_the_node(real_es):
    from tests.fakes.elastic_server import ElasticsearchEmulator

    with ElasticsearchEmulator(builtin_templates=False) as emulator:
        assert template_listing_answers(Elasticsearch(emulator.url)) == template_listing_answers(client_for(real_es))


def test_requests_no_route_takes_are_refused_as_on_the_node(real_es):
    """What kcing prints when ES_HOST has a path (a proxy's prefix) that the node does not serve,
    or asks what the node has no handler for: the refusal names the request's URI as it was sent."""
    from tests.fakes.elastic_server import ElasticsearchEmulator
    from tests.realnode import http_json

    requests = [("GET", "/es/_cluster/health?wait_for_status=yellow&timeout=1000ms"),
                ("GET", "/es/_cat/indices/build-*,boot-*?format=json&h=index&expand_wildcards=all"),
                ("GET", "/es/_resolve/index/a%2Ab?expand_wildcards=all"), ("PUT", "/_nothing/x/y"),
                ("POST", "/_cat/indices?format=json"), ("POST", "/_cluster/health")]
    with ElasticsearchEmulator() as emulator:
        assert [http_json(method, emulator.url + path) for method, path in requests] == \
            [http_json(method, real_es.url + path) for method, path in requests]


def test_resolve_index_answers_as_the_node_does(real_es):
    from tests.fakes.elastic_server import ElasticsearchEmulator

    with ElasticsearchEmulator() as emulator:
        assert resolve_answers(Elasticsearch(emulator.url)) == resolve_answers(client_for(real_es))


def test_wipe_removes_what_a_failed_test_left_blocked_closed_or_hidden(real_node):
    """A test that fails between adding a block and removing it must not break the next ones; nor
    one that leaves a data stream, with the template it keeps in use, or a template whose name is
    no plain URL path (TEMPLATE_BODIES's `a?b`)."""
    client = client_for(real_node)
    client.indices.put_index_template(name="a?b", index_patterns=["wipe-*"], priority=1)
    client.indices.put_template(name="c?d", index_patterns=["legacy-wipe-*"])
    for name in ("build-2020.06.01", "boot-2020.06.01", "test-2020.06.01", "log-2020.06.01"):
        client.indices.create(index=name)
    client.indices.put_index_template(name="streams", index_patterns=["regression-2020.06.01"], priority=300,
                                      data_stream={})
    client.bulk(operations=[{"create": {"_index": "regression-2020.06.01"}}, {"@timestamp": "2020-06-01T00:00:00Z"}])
    client.indices.add_block(index="build-2020.06.01", block="metadata")
    client.indices.add_block(index="boot-2020.06.01", block="read_only")
    client.indices.add_block(index="boot-2020.06.01", block="metadata")
    client.indices.close(index="test-2020.06.01")
    client.indices.put_settings(index="log-2020.06.01", settings={"index.hidden": True})
    real_node.wipe()
    assert client.indices.resolve_index(name="*-2020.06.01", expand_wildcards="all").body == {
        "indices": [], "aliases": [], "data_streams": []}
    assert client.indices.get_index_template().body == {"index_templates": []}
    assert client.indices.get_template().body == {}
