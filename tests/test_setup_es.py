"""setup_es: templates made from the field catalogue, installed idempotently, clear failures."""
from __future__ import annotations

import json
import logging
import threading
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from elasticsearch import Elasticsearch, helpers

from kcing import settings as settings_module
from kcing.commands import setup_es
from kcing.admin.templates import (
    KEYWORD_LIMIT, KINDS, POLICY_NAME, PRIORITY, TEMPLATE_DIR, UNAGGREGATED_TEXT, mapping_misfits, misfit_warnings,
    as_read_back, retention_policy, same_template, template_body, template_files, templates_for, wait_until_ready,
)
from kcing.admin.retention import cutoff_day, expired_indices
from kcing.reconcile import expired_index
from kcing.admin.elastic import make_client
from kcing.documents import documents_for
from kcing.documents.fields import FIELDS, SUB_OBJECTS, TEXT
from kcing.errors import ConfigError, ElasticsearchError, RejectedInput
from tests.fakes.api_corpus import ApiCorpus
from tests.fakes.api_data import checkout_tree
from tests.fakes.elastic_server import ElasticsearchEmulator, EsError
from tests.fakes.rogue_http import RogueFront, answer, interim_then_forward
from tests.fakes.serving import refusing_port
from tests.faults.tls_front import TlsFront
from tests.feedrun import clean_environ, kcing

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SETUP_ARGS = {"--ilm": False, "--wait": None, "--drp-days": None}


def load_settings(tmp_path, **environ):
    values = {key: str(value) for key, value in environ.items()}
    return settings_module.load(environ=values, local_file=tmp_path / "none.py")


def run_setup(tmp_path, es_url, capsys=None, ilm=False, wait=None, **environ):
    settings = load_settings(tmp_path, ES_HOST=es_url, ES_READY_TIMEOUT=5, **environ)
    code = setup_es.run({**SETUP_ARGS, "--ilm": ilm, "--wait": wait}, settings)
    return code, (capsys.readouterr().out if capsys else "")


# -- the bodies (pure) ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_every_catalogue_field_is_mapped_with_its_type(kind):
    body = template_body(kind)
    assert body["index_patterns"] == ["%s-*" % kind] and body["priority"] == PRIORITY
    assert body["template"]["settings"] == {"number_of_shards": 1, "auto_expand_replicas": "0-1"}
    mappings = body["template"]["mappings"]
    assert mappings["dynamic"] is False  # uncatalogued fields stay in _source, unmapped
    properties = mappings["properties"]
    assert properties["@timestamp"] == {"type": "date"}
    for name, field_type in FIELDS[kind].items():
        assert properties[name]["type"] == field_type, name
    for obj, inner in SUB_OBJECTS.items():
        for name, field_type in inner.items():
            assert properties[obj]["properties"][name]["type"] == field_type, "%s.%s" % (obj, name)
    assert set(properties) == {"@timestamp", *FIELDS[kind], *SUB_OBJECTS}


def test_text_fields_get_a_keyword_copy_except_the_bulky_ones():
    texts = {name for fields in (*FIELDS.values(), *SUB_OBJECTS.values()) for name, t in fields.items() if t == TEXT}
    assert UNAGGREGATED_TEXT <= texts  # the list names real text fields
    log = template_body("log")["template"]["mappings"]["properties"]
    assert log["message"] == {"type": "text", "index_options": "offsets"}  # no keyword copy
    boot = template_body("boot")["template"]["mappings"]["properties"]
    assert boot["error_msg"]["fields"]["keyword"]["type"] == "keyword"
    assert boot["board"] == {"type": "keyword", "ignore_above": KEYWORD_LIMIT}


def test_ilm_variant_names_the_policy_and_dates_from_the_index_name():
    settings = template_body("build", policy=POLICY_NAME)["template"]["settings"]
    assert settings["index.lifecycle.name"] == POLICY_NAME
    assert settings["index.lifecycle.parse_origination_date"] is True


def test_mapping_template_files_match_the_catalogue():
    expected = template_files()
    found = {path.name: path.read_text(encoding="utf-8") for path in TEMPLATE_DIR.glob("*.json")}
    assert found == expected, "mapping_templates/ drifted from FIELDS: run python -m kcing.admin.templates"


# -- against the emulator ------------------------------------------------------------------------

def test_setup_es_installs_one_template_per_kind(tmp_path, es, capsys):
    code, out = run_setup(tmp_path, es.url, capsys)
    assert code == 0
    assert "Elasticsearch 8.15.3" in out
    for kind in KINDS:
        assert "index template kcing-%s (%s-*) created" % (kind, kind) in out
    client = Elasticsearch(es.url)
    for kind in KINDS:
        stored = client.indices.get_index_template(name="kcing-%s" % kind)["index_templates"][0]["index_template"]
        assert stored["index_patterns"] == ["%s-*" % kind] and stored["priority"] == 200
        properties = stored["template"]["mappings"]["properties"]
        assert {name: properties[name]["type"] for name in FIELDS[kind]} == FIELDS[kind]
    assert set(es.templates) >= {"logs", "metrics", "synthetics"}  # built-ins left alone


def test_a_second_run_changes_nothing(tmp_path, es, capsys):
    run_setup(tmp_path, es.url, capsys)
    es.requests.clear()
    code, out = run_setup(tmp_path, es.url, capsys)
    assert code == 0
    assert out.count(" unchanged") == len(KINDS)
    assert [r for r in es.requests if r.method in ("PUT", "POST", "DELETE")] == []


def test_a_changed_template_is_updated(tmp_path, es, capsys):
    run_setup(tmp_path, es.url, capsys)
    es.templates["kcing-log"]["_meta"]["digest"] = "0"
    _, out = run_setup(tmp_path, es.url, capsys)
    assert "kcing-log (log-*) updated" in out and "kcing-build (build-*) unchanged" in out


def edited_as_by_hand(client: Elasticsearch, name: str, ilm: bool = False) -> None:
    """Change kcing's template `name` as an edit in Kibana's index management does: the rest of
    the body as it was, its `_meta` (kcing's digest) included."""
    stored = client.indices.get_index_template(name=name)["index_templates"][0]["index_template"]
    stored["priority"] = 50
    stored["template"]["mappings"]["properties"]["arch"] = {"type": "text"}
    stored["template"]["settings"]["index"]["auto_expand_replicas"] = "false"
    stored["template"]["settings"]["index"]["number_of_replicas"] = "2"
    if ilm:
        del stored["template"]["settings"]["index"]["lifecycle"]
    client.indices.put_index_template(name=name, body=stored)


def test_a_template_is_the_same_as_kcings_whole_but_for_what_says_nothing_of_its_indices():
    body = templates_for(POLICY_NAME)["kcing-test"]
    stored = as_read_back(body)
    assert stored["template"]["settings"] == {"index": {"number_of_shards": "1", "auto_expand_replicas": "0-1", "lifecycle": {
        "name": POLICY_NAME, "parse_origination_date": "true"}}}
    assert same_template(stored, body)
    assert same_template(dict(stored, modified_date_millis=1733300000000), body)  # a date a node may keep
    for shaping in ({"data_stream": {}}, {"composed_of": ["someone-mappings"]}, {"priority": 201},
                    {"ignore_missing_component_templates": ["x"]}, {"_meta": dict(body["_meta"], digest="0")}):
        assert not same_template(dict(stored, **shaping), body), shaping
    without_replicas = json.loads(json.dumps(stored))
    del without_replicas["template"]["settings"]["index"]["auto_expand_replicas"]
    assert not same_template(without_replicas, body)


@pytest.mark.parametrize("ilm", [False, True])
def test_a_template_edited_by_hand_is_put_back_not_said_unchanged(tmp_path, es, capsys, ilm):
    # Its _meta still held the digest of kcing's body, which was all setup_es compared: it said
    # "unchanged" and left a kcing template that no longer was kcing's (another priority, a
    # field of another type, replicas a single node cannot hold, no retention policy).
    run_setup(tmp_path, es.url, capsys, ilm=ilm)
    client = Elasticsearch(es.url)
    edited_as_by_hand(client, "kcing-build", ilm)
    _, out = run_setup(tmp_path, es.url, capsys, ilm=ilm)
    assert "index template kcing-build (build-*) updated" in out
    assert "index template kcing-boot (boot-*) unchanged" in out
    stored = client.indices.get_index_template(name="kcing-build")["index_templates"][0]["index_template"]
    intended = templates_for(POLICY_NAME if ilm else None)["kcing-build"]
    assert stored["priority"] == intended["priority"]
    assert stored["template"]["mappings"] == intended["template"]["mappings"]
    assert stored["template"]["settings"]["index"]["auto_expand_replicas"] == "0-1"
    assert "number_of_replicas" not in stored["template"]["settings"]["index"]
    assert ("lifecycle" in stored["template"]["settings"]["index"]) is ilm
    _, again = run_setup(tmp_path, es.url, capsys, ilm=ilm)
    assert again.count(" unchanged") == len(KINDS) + (1 if ilm else 0)


def test_ilm_policy_and_templates_referencing_it(tmp_path, es, capsys):
    code, out = run_setup(tmp_path, es.url, capsys, ilm=True, DRP_DAYS=7)
    assert code == 0 and "ILM policy kcing-retention (delete indices 7 days after the day in their name, as drp) created" in out
    policy = es.policies[POLICY_NAME]["policy"]
    # The day after the seventh: an index goes when its last document is 7 days old, as drp deletes it.
    assert policy["phases"]["delete"] == {"min_age": "8d", "actions": {"delete": {}}}
    client = Elasticsearch(es.url)
    in_use = client.ilm.get_lifecycle(name=POLICY_NAME)[POLICY_NAME]["in_use_by"]["composable_templates"]
    assert in_use == sorted("kcing-%s" % kind for kind in KINDS)
    _, again = run_setup(tmp_path, es.url, capsys, ilm=True, DRP_DAYS=7)
    assert again.count(" unchanged") == len(KINDS) + 1
    _, longer = run_setup(tmp_path, es.url, capsys, ilm=True, DRP_DAYS=10)
    assert "kcing-retention (delete indices 10 days after the day in their name, as drp) updated" in longer
    # An index the pipeline creates gets the policy; one without a date would be refused by ES.
    helpers.bulk(client, [{"_index": "build-2019.05.31", "_id": "1", "_source": {"job": "mainline"}}])
    assert client.indices.get(index="build-2019.05.31")["build-2019.05.31"]["settings"]["index"]["lifecycle"][
        "name"] == POLICY_NAME



def test_leaving_ilm_warns_that_the_indices_made_meanwhile_keep_the_policy(tmp_path, es, capsys, caplog):
    """A setup_es without --ilm after one with it said only "no ILM policy in the templates; run
    kcing drp": each index keeps the settings it was made with, and ILM went on deleting the
    indices made meanwhile by the old policy, whatever DRP_DAYS drp was then given."""
    run_setup(tmp_path, es.url, capsys, ilm=True)
    helpers.bulk(Elasticsearch(es.url), [{"_index": "build-2019.05.31", "_id": "1", "_source": {"job": "mainline"}}])
    with caplog.at_level(logging.WARNING, logger="kcing.admin.templates"):
        code, _ = run_setup(tmp_path, es.url, capsys)
    assert code == 0
    assert caplog.messages == [
        "the index templates named the ILM policy kcing-retention until this run: the indices created meanwhile keep "
        "it, and ILM goes on deleting them by it whatever drp keeps; to keep them, take them out of it: "
        "POST /boot-*,build-*,log-*,regression-*,test-*/_ilm/remove"]
    assert es.indices["build-2019.05.31"].settings["index.lifecycle.name"] == POLICY_NAME
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kcing.admin.templates"):
        run_setup(tmp_path, es.url, capsys)
        run_setup(tmp_path, es.url, capsys, ilm=True)
    assert caplog.messages == []

def test_setup_es_ilm_run_again_keeps_the_policy_without_a_warning(tmp_path, es, capsys, caplog):
    # The templates Elasticsearch holds name the policy (nested, as it gives them back), and so do
    # the ones written again (flat, as kcing writes them): nothing is dropped, nothing to warn of.
    run_setup(tmp_path, es.url, capsys, ilm=True)
    with caplog.at_level(logging.WARNING, logger="kcing.admin.templates"):
        code, _ = run_setup(tmp_path, es.url, capsys, ilm=True)
    assert code == 0
    assert caplog.messages == []


def ilm_deletes(index: str, now: datetime, policy: dict) -> bool:
    """Whether ILM has reached the delete phase of `index` at `now`, as it reckons: the index's age
    counts from its origination date, with index.lifecycle.parse_origination_date the UTC midnight
    of the date in its name, and a phase starts once that age reaches its min_age."""
    min_age = policy["policy"]["phases"]["delete"]["min_age"]
    assert min_age.endswith("d")
    origination = datetime.strptime(index.rsplit("-", 1)[1], "%Y.%m.%d").replace(tzinfo=timezone.utc)
    return now - origination >= timedelta(days=int(min_age[:-1]))


@pytest.mark.parametrize("days", [1, 3, 30])
def test_the_ilm_policy_deletes_the_indices_drp_deletes_and_reconcile_leaves_unchecked(days):
    # The ILM policy deleted an index a day before drp would: the morning after, reconcile (which
    # checks what drp keeps) found its documents missing, marked their objects undelivered, and a
    # `reconcile --resend` wrote that index again, for ILM to delete once more.
    names = ["boot-%s" % (date(2024, 10, 1) + timedelta(days=n)).strftime("%Y.%m.%d") for n in range(60)]
    policy = retention_policy(days)
    for today in (date(2024, 10, 20), date(2024, 11, 15)):
        for seconds in (0, 1, 12 * 3600, 86399):  # into the day
            now = datetime(today.year, today.month, today.day, tzinfo=timezone.utc) + timedelta(seconds=seconds)
            by_ilm = sorted(name for name in names if ilm_deletes(name, now, policy))
            assert by_ilm == expired_indices(names, today, days), (today, seconds)
            assert by_ilm == [name for name in names if expired_index(name, cutoff_day(today, days))]


def test_ilm_with_a_retention_inside_the_crawl_window_warns(tmp_path, es, capsys, caplog):
    with caplog.at_level(logging.WARNING, logger="kcing.admin.retention"):
        run_setup(tmp_path, es.url, capsys, ilm=True, DRP_DAYS=2, KCI_DAYS=2)
    assert "DRP_DAYS=2 is not more than KCI_DAYS=2" in caplog.text


def test_real_documents_index_cleanly_through_the_templates(tmp_path, es, capsys):
    run_setup(tmp_path, es.url, capsys)
    documents = []
    for folder, kind in (("build", "build"), ("boot", "boot"), ("lava", "lava")):
        for path in sorted((SAMPLES / folder).glob("*.json")):
            try:
                documents.extend(documents_for(kind, path.read_bytes()))
            except RejectedInput:
                continue
    if not documents:
        pytest.skip("no samples to index")
    actions = ({"_op_type": "index", "_index": d.index, "_id": d.doc_id, "_source": json.loads(d.source_json())}
               for d in documents)
    client = Elasticsearch(es.url, request_timeout=60)
    failures = [item for ok, item in helpers.streaming_bulk(client, actions, raise_on_error=False) if not ok]
    assert failures == []
    assert {d.kind for d in documents} <= set(KINDS)


def test_api_node_documents_regressions_included_index_cleanly_through_the_templates(tmp_path, es, capsys):
    run_setup(tmp_path, es.url, capsys)
    tree = checkout_tree(ApiCorpus(), "https://files.example", datetime(2024, 10, 16, tzinfo=timezone.utc))
    documents = [document for node in tree.values()
                 for document in documents_for(node["kind"], json.dumps({"node": node}).encode())]
    assert {d.kind for d in documents} == {"build", "boot", "test", "regression"}
    actions = ({"_op_type": "index", "_index": d.index, "_id": d.doc_id, "_source": json.loads(d.source_json())}
               for d in documents)
    client = Elasticsearch(es.url, request_timeout=60)
    failures = [item for ok, item in helpers.streaming_bulk(client, actions, raise_on_error=False) if not ok]
    assert failures == []


def test_kcing_indices_are_created_on_a_cluster_that_turned_index_auto_creation_off(tmp_path, capsys):
    # action.auto_create_index: false is a common hardening of a cluster. Logstash creates kcing's
    # indices by writing to them, so the node refused every document (404 index_not_found), after
    # Logstash had acknowledged them: the templates now allow auto-creation for kcing's patterns.
    with ElasticsearchEmulator(auto_create_index=False) as es:
        run_setup(tmp_path, es.url, capsys)
        client = Elasticsearch(es.url)
        tree = checkout_tree(ApiCorpus(), "https://files.example", datetime(2024, 10, 16, tzinfo=timezone.utc))
        documents = [document for node in tree.values()
                     for document in documents_for(node["kind"], json.dumps({"node": node}).encode())]
        actions = [{"_index": d.index, "_id": d.doc_id, "_source": json.loads(d.source_json())} for d in documents]
        failures = [item for ok, item in helpers.streaming_bulk(client, actions, raise_on_error=False) if not ok]
        assert failures == []
        assert {index.rsplit("-", 1)[0] for index in es.index_names()} == {d.kind for d in documents}
        # Only kcing's: any other index still waits for someone to create it.
        refused = client.bulk(operations=[{"index": {"_index": "other-2024.10.16", "_id": "a"}}, {"job": "x"}])
        assert refused["items"][0]["index"]["status"] == 404


def test_a_conflicting_template_of_the_same_priority_is_a_clear_error(tmp_path, es):
    Elasticsearch(es.url).indices.put_index_template(name="someone", index_patterns=["b*"], priority=200)
    with pytest.raises(ElasticsearchError) as caught:
        run_setup(tmp_path, es.url)
    message = str(caught.value)
    assert "kcing-b" in message and "same priority [200]" in message and "\n" not in message


def setup_es_beside_a_data_stream(url: str, tmp_path: Path) -> None:
    """A template of the user's below kcing's priority makes data streams of build-*, and one was
    made (Logstash writing build-2024.01.01) before setup_es: Elasticsearch refuses kcing-build,
    which would leave that stream without a data-stream template. The other kinds' templates are
    installed all the same, and the one line says which stream and what to do."""
    requests.put(url + "/_index_template/user-streams", timeout=30,
                 json={"index_patterns": ["build-*"], "priority": 100, "data_stream": {}}).raise_for_status()
    requests.post(url + "/_bulk", data=b'{"create":{"_index":"build-2024.01.01"}}\n{"@timestamp":"2024-01-01T00:00:00Z"}\n',
                  headers={"Content-Type": "application/x-ndjson"}, timeout=30).raise_for_status()
    done = kcing(["setup_es"], clean_environ(ES_HOST=url, KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    installed = {item["name"] for item in requests.get(url + "/_index_template", timeout=30).json()["index_templates"]
                 if item["name"].startswith("kcing-")}
    assert installed == {"kcing-boot", "kcing-test", "kcing-log", "kcing-regression"}, done.stdout
    assert done.stderr.splitlines() == [
        "kcing setup_es: Elasticsearch refuses the index template kcing-build: the data stream build-2024.01.01, "
        "matched by build-*, would no longer match a data stream template (kcing's indices are not data streams); "
        "delete it (DELETE /_data_stream/build-2024.01.01, documents and all) or give the template that made it a "
        "priority above 200, then run setup_es again"], done.stderr


def test_a_template_refused_beside_a_data_stream_leaves_the_others_installed(tmp_path, es):
    setup_es_beside_a_data_stream(es.url, tmp_path)


def test_an_index_created_before_the_templates_is_named_with_the_types_it_got(tmp_path, es, caplog):
    """Logstash created today's index before setup_es ran: Elasticsearch guessed its types (text
    for every keyword) and a template shapes only indices created after it. setup_es says so, per
    index, in one line; an index made by kcing's template is not named."""
    es.seed_index("build-2019.06.01", docs={"1": {"arch": "arm", "build_time": 12, "build_threads": 4}})
    es.seed_index("build-latest", docs={"1": {"arch": "arm"}})  # not a dated kcing index
    with caplog.at_level(logging.WARNING):
        assert run_setup(tmp_path, es.url)[0] == 0
    [line] = [record.getMessage() for record in caplog.records if "did not make" in record.getMessage()]
    assert line.startswith("index build-2019.06.01 has a mapping kcing's template kcing-build did not make "
                           "(the index was created before the template, or by another one): arch is text, not "
                           "keyword; build_time is long, not float; it keeps those types"), line
    caplog.clear()
    es.seed_index("build-2019.06.02", docs={"1": {"arch": "arm", "build_time": 12}})
    with caplog.at_level(logging.WARNING):
        assert run_setup(tmp_path, es.url)[0] == 0
    assert [record.getMessage() for record in caplog.records if "did not make" in record.getMessage()] == [line]


def test_a_hidden_index_created_before_the_templates_is_named_too(tmp_path, es, caplog):
    """A kcing index someone hid (index.hidden) still takes Logstash's documents, and drp still
    deletes it when it expires: its guessed types were left unsaid, as a GET by pattern leaves
    hidden indices out unless asked for them."""
    es.seed_index("boot-2019.06.01", docs={"1": {"board": "beaglebone"}}, hidden=True)
    with caplog.at_level(logging.WARNING):
        assert run_setup(tmp_path, es.url)[0] == 0
    [line] = [record.getMessage() for record in caplog.records if "did not make" in record.getMessage()]
    assert line.startswith("index boot-2019.06.01 has a mapping kcing's template kcing-boot did not make"), line
    assert "board is text, not keyword" in line, line


def test_many_misfit_indices_are_named_in_a_few_lines():
    found = {"test-2019.06.%02d" % day: {"mappings": {"properties": {"lab_name": {"type": "text"}}}}
             for day in range(1, 31)}
    lines = misfit_warnings(mapping_misfits(templates_for(None), found))
    assert len(lines) == 6 and lines[-1].startswith("25 more indices have a mapping kcing's templates did not make: "
                                                    "test-2019.06.06, ")
    assert lines[-1].endswith(" ...")


def test_a_refused_mapping_check_is_a_warning_not_a_failure(tmp_path, es, caplog):
    es.seed_index("boot-2019.06.01", docs={"1": {"lab_name": "lab"}})
    Elasticsearch(es.url).indices.add_block(index="boot-2019.06.01", block="metadata")
    with caplog.at_level(logging.WARNING):
        assert run_setup(tmp_path, es.url)[0] == 0
    assert "could not check the mappings of the existing indices" in caplog.text
    assert "403 cluster_block_exception" in caplog.text


# -- failures ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backoff", ["1.0", "30"])
def test_a_cluster_that_never_becomes_ready_is_a_bounded_wait(tmp_path, es, backoff):
    # The health wait asks again in a loop of its own: no retry wait of ES_RETRY_BACKOFF's is added.
    es.not_ready("503")
    started = time.monotonic()
    with pytest.raises(ElasticsearchError) as caught:
        run_setup(tmp_path, es.url, wait="1", ES_RETRY_BACKOFF=backoff)
    assert time.monotonic() - started < 5
    assert "was not ready (yellow or green) within 1s" in str(caught.value)
    assert es.templates.keys() == {"logs", "metrics", "synthetics"}


def test_a_red_cluster_is_reported_with_its_status(tmp_path, es):
    es.set_health("red")
    with pytest.raises(ElasticsearchError) as caught:
        run_setup(tmp_path, es.url, wait="0.5")
    assert "cluster status still red" in str(caught.value)


def test_a_cluster_that_starts_during_the_wait_is_used(tmp_path, es, capsys):
    es.not_ready("refuse")
    threading.Timer(0.7, es.ready).start()
    code, out = run_setup(tmp_path, es.url, capsys, wait="10")
    assert code == 0 and "kcing-test (test-*) created" in out


@pytest.mark.parametrize("status, body", [(200, b'{"cluster_name": "kcing", "status": "gre'),
                                          (503, b"<html>starting</html>")], ids=["cut-short", "proxy-page"])
def test_a_health_answer_that_is_not_json_is_waited_out_then_an_elasticsearch_error(tmp_path, es, status, body):
    """A body cut short (a wrong Content-Length, a node that restarted mid-answer) or a proxy's
    page without a JSON body while the node behind it starts: not ready, not an internal error."""
    garbled = answer(status, (("X-Elastic-Product", "Elasticsearch"),), body)
    with RogueFront(es.url) as front:
        front.on("GET", "/_cluster/health", garbled, count=None)
        started = time.monotonic()
        with pytest.raises(ElasticsearchError) as caught:
            run_setup(tmp_path, front.url, wait="1")
    assert 1 <= time.monotonic() - started < 5
    assert "was not ready (yellow or green) within 1s" in str(caught.value)
    assert "sent an unreadable answer while checking cluster health" in str(caught.value)
    assert not any(name.startswith("kcing-") for name in es.templates)


def test_a_warning_header_from_elasticsearch_is_one_log_line(tmp_path, es):
    """Elasticsearch adds a `Warning` header to some answers (a legacy template matching the
    patterns of a template being installed, a deprecated parameter). The client turns it into a
    Python warning, which Python prints as two lines quoting kcing's source: kcing logs it."""
    text = ("index template [kcing-build] has index patterns [build-*] matching patterns from existing older "
            "templates [kernelci-build] with patterns (kernelci-build => [build-*]); this template [kcing-build] "
            "will take precedence during new index creation")
    warned = answer(200, (("X-Elastic-Product", "Elasticsearch"), ("Content-Type", "application/json"),
                          ("Warning", '299 Elasticsearch-8.15.3-0000000000000000000000000000000000000000 "%s"' % text)),
                    b'{"acknowledged":true}')
    with RogueFront(es.url) as front:
        front.on("PUT", "/_index_template/kcing-build", warned)
        done = kcing(["setup_es"], clean_environ(ES_HOST=front.url, ES_READY_TIMEOUT="5"), tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ElasticsearchWarning" not in done.stderr and "put_index_template" not in done.stderr, done.stderr
    [line] = [line for line in done.stderr.splitlines() if "kernelci-build" in line]
    assert line.endswith(" WARNING kcing.admin.elastic: Elasticsearch warns: " + text), line


def test_interim_answers_before_elasticsearch_s_own_are_passed_over(tmp_path, es):
    """A `103 Early Hints` (or `102 Processing`) before each answer, from a proxy in front of the
    node: it was taken for the answer ("refused a request ... (103 error)", exit 3)."""
    with RogueFront(es.url) as front:
        for method in ("GET", "PUT", "HEAD"):
            front.on(method, "/", interim_then_forward(), count=None)
        done = kcing(["setup_es"], clean_environ(ES_HOST=front.url, ES_READY_TIMEOUT="5"), tmp_path)
        assert done.returncode == 0, done.stderr
        assert front.answered_by("interim_first") > 0
    assert {name for name in es.templates if name.startswith("kcing-")} == {"kcing-%s" % kind for kind in KINDS}


def test_interim_answers_before_elasticsearch_s_own_are_passed_over_on_https_too(tmp_path, es, certificate):
    """The same through TLS: the client's connections for https are its own class (one that
    checks a certificate chain), which was left as it was and took the 103 for the answer
    ("refused a request while checking cluster health (103 error)", exit 3)."""
    with RogueFront(es.url) as front:
        for method in ("GET", "PUT", "HEAD"):
            front.on(method, "/", interim_then_forward(), count=None)
        tls = TlsFront(urlsplit(front.url).port, *certificate)
        tls.start()
        try:
            done = kcing(["setup_es"], clean_environ(ES_HOST=tls.url, ES_CA_BUNDLE=str(certificate[0]),
                                                     ES_READY_TIMEOUT="5"), tmp_path)
        finally:
            tls.stop()
        assert done.returncode == 0, done.stderr
        assert front.answered_by("interim_first") > 0
    assert {name for name in es.templates if name.startswith("kcing-")} == {"kcing-%s" % kind for kind in KINDS}


def test_wait_until_ready_uses_the_clock_it_is_given(es):
    es.not_ready("503")  # answered at once, so only the fake clock moves
    now = [0.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += 5

    with pytest.raises(ElasticsearchError):
        wait_until_ready(Elasticsearch(es.url), es.url, 12, clock=lambda: now[0], sleep=sleep)
    assert len(sleeps) == 3


def test_bad_credentials_are_a_config_error_without_the_password(tmp_path):
    with ElasticsearchEmulator(user="elastic", password="right-one") as secured:
        with pytest.raises(ConfigError) as caught:
            run_setup(tmp_path, secured.url, ES_USER="elastic", ES_PASSWORD="wrong-horse-battery")
        message = str(caught.value)
        assert "401" in message and "ES_USER/ES_PASSWORD or ES_API_KEY" in message
        assert "wrong-horse-battery" not in message and "right-one" not in message
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        code, _ = run_setup(tmp_path, secured.url, ES_USER="elastic", ES_PASSWORD="right-one")
        assert code == 0



@pytest.mark.parametrize("command, action", [
    (["setup_es"], "checking cluster health"),
    (["drp", "--dry-run"], "listing indices (build-*,boot-*,test-*,log-*,regression-*)")])
def test_no_credentials_for_a_secured_node_are_said_missing_not_refused(tmp_path, command, action):
    """Security is on by default since Elasticsearch 8: a first run with no ES_USER, ES_PASSWORD
    or ES_API_KEY set was told the node "refused the credentials" and to check them."""
    with ElasticsearchEmulator(user="elastic", password="right-one") as secured:
        done = kcing(command, clean_environ(ES_HOST=secured.url, ES_READY_TIMEOUT="5",
                                           KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == ["kcing %s: Elasticsearch at %s asks for credentials (401) while %s: set "
                                        "ES_USER and ES_PASSWORD, or ES_API_KEY" % (command[0], secured.url, action)]


def test_a_node_denying_anonymous_access_names_no_user_but_the_settings_to_set(tmp_path, es):
    """A node with anonymous access on (`xpack.security.authc.anonymous`) answers a request without
    credentials 403 for its `_anonymous` user: no user of kcing's was denied."""
    reason = ("action [cluster:monitor/health] is unauthorized for user [_anonymous] with effective roles [], this "
              "action is granted by the cluster privileges [monitor,manage,all]")
    es.fail_next(403, route="/_cluster/health", count=None, body=EsError(403, "security_exception", reason).envelope())
    env = clean_environ(ES_HOST=es.url, ES_READY_TIMEOUT="5", KCING_DB=str(tmp_path / "kcing.db"))
    done = kcing(["setup_es"], env, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.splitlines() == ["kcing setup_es: Elasticsearch at %s denied access (403) while checking "
                                        "cluster health: %s; no credentials are set (ES_USER and ES_PASSWORD, or "
                                        "ES_API_KEY)" % (es.url, reason)]


# What a real node answers a template put while the cluster is read-only (cluster.blocks.read_only).
CLUSTER_READ_ONLY = {"error": {"root_cause": [{"type": "cluster_block_exception",
                                              "reason": "blocked by: [FORBIDDEN/6/cluster read-only (api)];"}],
                               "type": "cluster_block_exception",
                               "reason": "blocked by: [FORBIDDEN/6/cluster read-only (api)];"}, "status": 403}


def test_a_read_only_cluster_is_elasticsearch_refusing_not_the_users_privileges(tmp_path, es):
    es.fail_next(403, route="/_index_template/kcing-", body=CLUSTER_READ_ONLY)
    with pytest.raises(ElasticsearchError) as caught:
        run_setup(tmp_path, es.url)
    assert not isinstance(caught.value, ConfigError) and caught.value.exit_code == 3
    assert str(caught.value) == ("Elasticsearch at %s refused a request while installing the index template "
                                 "kcing-build (403 cluster_block_exception): blocked by: [FORBIDDEN/6/cluster "
                                 "read-only (api)];" % es.url)


# What a node answers a template whose mapping it cannot read: the reason is two causes deep.
MAPPING_REFUSED = {"error": {
    "root_cause": [{"type": "mapper_parsing_exception",
                    "reason": "Failed to parse mapping: No handler for type [match_only_text] declared on field [message]"}],
    "type": "illegal_argument_exception", "reason": "composable template [kcing-build] template after composition is invalid",
    "caused_by": {"type": "illegal_argument_exception", "reason": "invalid composite mappings for [kcing-build]",
                  "caused_by": {"type": "mapper_parsing_exception", "reason": "Failed to parse mapping: No handler for "
                                "type [match_only_text] declared on field [message]"}}}, "status": 400}


def test_a_refused_template_is_reported_with_its_innermost_reason(tmp_path, es):
    es.fail_next(400, route="/_index_template/kcing-", body=MAPPING_REFUSED)
    with pytest.raises(ElasticsearchError) as caught:
        run_setup(tmp_path, es.url)
    assert str(caught.value).endswith("(400 illegal_argument_exception): Failed to parse mapping: No handler for type "
                                      "[match_only_text] declared on field [message]"), str(caught.value)


def test_an_api_key_is_used_when_set(tmp_path):
    with ElasticsearchEmulator(api_key="a2V5OnNlY3JldA==") as secured:
        assert run_setup(tmp_path, secured.url, ES_API_KEY="a2V5OnNlY3JldA==")[0] == 0
        assert secured.requests[0].headers["authorization"] == "ApiKey a2V5OnNlY3JldA=="
        with pytest.raises(ConfigError):
            run_setup(tmp_path, secured.url, ES_API_KEY="a2V5OnNlY3JldA==", ES_USER="u", ES_PASSWORD="p")


def test_tls_against_a_plain_http_port_is_a_config_error(tmp_path, es):
    https_url = es.url.replace("http://", "https://")
    with pytest.raises(ConfigError) as caught:
        run_setup(tmp_path, https_url, wait="2")
    assert "TLS to Elasticsearch at %s failed" % https_url in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        run_setup(tmp_path, https_url, wait="2", ES_CA_BUNDLE=str(tmp_path / "missing-ca.pem"))
    assert "ES_CA_BUNDLE" in str(caught.value) and "no such file" in str(caught.value)


def test_an_unreachable_host_is_reported_after_the_wait(tmp_path):
    with refusing_port() as port:
        url = "http://127.0.0.1:%d" % port
        started = time.monotonic()
        with pytest.raises(ElasticsearchError) as caught:
            run_setup(tmp_path, url, wait="1")
    assert time.monotonic() - started < 6
    assert "cannot reach Elasticsearch at %s" % url in str(caught.value)
    assert "connection refused" in str(caught.value) and "HTTPConnection" not in str(caught.value)


def test_a_9x_client_is_refused_with_a_version_message(tmp_path, es, monkeypatch):
    import elasticsearch._sync.client._base as base
    monkeypatch.setattr(base, "_COMPAT_MIMETYPE_SUB", r"application/vnd.elasticsearch+\g<1>; compatible-with=9")
    with pytest.raises(ConfigError) as caught:
        run_setup(tmp_path, es.url, wait="5")
    message = str(caught.value)
    assert "Accept version must be either version 8 or 7, but found 9" in message
    assert "8.x works with Elasticsearch 8 and 9" in message


def test_elasticsearch_9_is_supported_and_7_is_not(tmp_path, capsys):
    with ElasticsearchEmulator(version="9.1.2") as es9:
        code, out = run_setup(tmp_path, es9.url, capsys)
        assert code == 0 and "Elasticsearch 9.1.2" in out
    with ElasticsearchEmulator(version="7.17.9") as es7:
        with pytest.raises(ConfigError) as caught:
            run_setup(tmp_path, es7.url)
    # Not "use an elasticsearch-py whose major version the server accepts": kcing runs with 8.x
    # only, and no client reaches an Elasticsearch 7 through it.
    assert str(caught.value) == (
        "Elasticsearch at %s is version 7 (it refused kcing's requests: Accept version must be either version 7 "
        "or 6, but found 8. Accept=application/vnd.elasticsearch+json; compatible-with=8); kcing needs "
        "Elasticsearch 8 or 9" % es7.url)


def test_a_refused_media_type_that_names_no_accepted_versions_gets_the_client_advice():
    # A node refuses a header it cannot parse with the same error type ("Invalid media-type value
    # on headers [Accept]", a proxy rewriting it): no server version to name, and no crash.
    from kcing.admin.elastic import compatibility_refused
    reason = "Invalid media-type value on headers [Accept]"
    message = str(compatibility_refused("Elasticsearch at http://es:9200", reason))
    assert message.startswith("Elasticsearch at http://es:9200 refused elasticsearch-py ")
    assert message.endswith("(Invalid media-type value on headers [Accept]): use an elasticsearch-py whose major "
                            "version the server accepts (8.x works with Elasticsearch 8 and 9)")


def test_a_version_in_digits_other_than_0_9_is_refused_as_unsupported_not_an_internal_error(tmp_path):
    """int() refused the "²" that str.isdigit() let through: exit 70 instead of the version message."""
    with ElasticsearchEmulator() as odd:
        odd.version = "\u00b2.1.2"  # what GET / reports
        with pytest.raises(ConfigError) as caught:
            run_setup(tmp_path, odd.url)
    assert "is version \u00b2.1.2; kcing needs Elasticsearch 8 or 9" in str(caught.value)


def test_make_client_refuses_half_credentials(tmp_path):
    with pytest.raises(ConfigError):
        make_client(load_settings(tmp_path, ES_USER="elastic"))


# -- through the CLI, once it is wired -----------------------------------------------------------

def test_setup_es_through_the_cli(tmp_path, es, capsys, monkeypatch):
    from kcing import cli
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ES_HOST", es.url)
    monkeypatch.setenv("ES_READY_TIMEOUT", "5")
    assert cli.main(["setup_es", "--ilm"]) == 0
    assert "kcing-log (log-*) created" in capsys.readouterr().out
    assert POLICY_NAME in es.policies


@pytest.mark.parametrize("url, scheme, host, port, prefix", [
    ("http://es.example", "http", "es.example", 80, ""),
    ("https://es.example/", "https", "es.example", 443, ""),
    ("https://es.example/elastic", "https", "es.example", 443, "/elastic"),
    ("HTTPS://[::1]", "https", "::1", 443, ""),
    ("http://es.example:9200", "http", "es.example", 9200, ""),
])
def test_an_es_host_without_a_port_means_its_schemes_port(tmp_path, url, scheme, host, port, prefix):
    """The client refuses a URL without a port ("URL must include a 'scheme', 'host', and 'port'");
    an https URL behind a proxy on 443 is an ordinary ES_HOST."""
    (node,) = make_client(load_settings(tmp_path, ES_HOST=url)).transport.node_pool.all()
    assert (node.config.scheme, node.config.host, node.config.port, node.config.path_prefix) == (
        scheme, host, port, prefix)


def test_a_ca_bundle_applies_to_an_https_es_host_whatever_the_case_of_its_scheme(tmp_path, caplog):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    make_client(load_settings(tmp_path, ES_HOST="HTTPS://es.example:9200", ES_CA_BUNDLE=str(bundle)))
    assert "ES_CA_BUNDLE is ignored" not in caplog.text


def test_a_head_is_not_held_to_the_size_its_content_length_announces(tmp_path):
    """A HEAD's Content-Length is that of the body a GET would get, and none comes: the answer
    size limit applies to bodies, not to what a HEAD announces."""
    from tests.fakes.rogue_http import RogueFront

    def head(front, sock, request) -> bool:
        sock.sendall(b"HTTP/1.1 200 OK\r\nX-Elastic-Product: Elasticsearch\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000000000\r\n\r\n")
        return True

    with RogueFront(None) as front:
        front.on("HEAD", "", head, count=None)
        assert make_client(load_settings(tmp_path, ES_HOST=front.url)).indices.exists(index="build-2024.10.16")


@pytest.mark.parametrize("command, status, path, said", [
    (["drp", "--dry-run"], 500, "/_cat/indices",
     "refused a request while listing indices (build-*,boot-*,test-*,log-*,regression-*) (500 error): "),
    (["setup_es"], 503, "/_cluster/health", "was not ready (yellow or green) within 1s: 503 ")])
def test_an_error_answer_without_a_body_is_said_empty_not_none(tmp_path, es, command, status, path, said):
    """A proxy in front of the node answers its 5xx with an empty body: the message ended in
    the client's str() of no body, "None"."""
    empty = answer(status, (("X-Elastic-Product", "Elasticsearch"), ("Content-Type", "application/json")))
    with RogueFront(es.url) as front:
        front.on("GET", path, empty)
        done = kcing(command, clean_environ(ES_HOST=front.url, ES_READY_TIMEOUT="1", ES_RETRY_BACKOFF="0.01",
                                            KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == ("kcing %s: Elasticsearch at %s %sno reason given (an empty answer)"
                                            % (command[0], front.url, said))


def test_an_ilm_policy_edited_in_place_is_put_back_not_said_unchanged(tmp_path, es, capsys):
    # kcing's policy edited as a GET, edit, PUT in Dev Tools does: its phases changed, its `_meta`
    # (the digest of the body it was) kept. setup_es --ilm compared the digest alone, said the
    # policy unchanged and left it deleting indices six days before drp.
    run_setup(tmp_path, es.url, capsys, ilm=True, DRP_DAYS=7)
    client = Elasticsearch(es.url)
    stored = client.ilm.get_lifecycle(name=POLICY_NAME)[POLICY_NAME]["policy"]
    stored["phases"]["delete"]["min_age"] = "1d"
    client.ilm.put_lifecycle(name=POLICY_NAME, body={"policy": stored})
    _, out = run_setup(tmp_path, es.url, capsys, ilm=True, DRP_DAYS=7)
    assert "ILM policy kcing-retention (delete indices 7 days after the day in their name, as drp) updated" in out
    held = client.ilm.get_lifecycle(name=POLICY_NAME)[POLICY_NAME]["policy"]
    assert held["phases"]["delete"]["min_age"] == retention_policy(7)["policy"]["phases"]["delete"]["min_age"]
    # Read back with the options Elasticsearch adds to the delete action: still kcing's policy.
    held["phases"]["delete"]["actions"]["delete"]["delete_searchable_snapshot"] = True
    client.ilm.put_lifecycle(name=POLICY_NAME, body={"policy": held})
    _, out = run_setup(tmp_path, es.url, capsys, ilm=True, DRP_DAYS=7)
    assert "ILM policy kcing-retention (delete indices 7 days after the day in their name, as drp) unchanged" in out
