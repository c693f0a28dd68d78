"""The Elasticsearch emulator is as strict as Elasticsearch where kcing depends on it.

Most checks go through the real elasticsearch-py 8.19 client, so that a difference between the
emulator and what the client expects fails here first; raw `requests` calls pin the wire details.
"""
from __future__ import annotations

import json
import threading

import pytest
import requests
from elasticsearch import (
    ApiError, BadRequestError, ConnectionError as EsConnectionError, Elasticsearch, NotFoundError,
    AuthenticationException, helpers,
)

from tests.fakes.elastic_server import ElasticsearchEmulator, globs_overlap

JSON = "application/json"
COMPAT = "application/vnd.elasticsearch+json; compatible-with=%d"


@pytest.fixture
def client(es):
    return Elasticsearch(es.url, request_timeout=10, max_retries=0)


def raw(es, method, path, body=None, accept=JSON, content_type=JSON, **headers):
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    sent = {"Accept": accept, **headers}
    if data is not None:
        sent["Content-Type"] = content_type
    return requests.request(method, es.url + path, data=data, headers=sent, timeout=10)


# -- media types and the product check ---------------------------------------------------------

def test_every_answer_carries_the_product_header(es):
    answers = [raw(es, "GET", "/"), raw(es, "HEAD", "/"), raw(es, "GET", "/_index_template/nope"),
               raw(es, "DELETE", "/*"), raw(es, "GET", "/_nothing"), raw(es, "GET", "/", accept=COMPAT % 9)]
    assert [a.status_code for a in answers] == [200, 200, 404, 400, 400, 400]
    assert all(a.headers["X-Elastic-Product"] == "Elasticsearch" for a in answers)


def test_the_8x_client_passes_the_product_check_and_gets_compat_json(es, client):
    assert client.info()["version"]["number"] == "8.15.3"
    seen = es.requests[-1]
    assert seen.headers["accept"] == COMPAT % 8
    assert raw(es, "GET", "/", accept=COMPAT % 8).headers["Content-Type"] == "application/vnd.elasticsearch+json;compatible-with=8"


def test_an_8_server_refuses_compatible_with_9_like_elasticsearch(es):
    answer = raw(es, "GET", "/_cluster/health", accept=COMPAT % 9)
    assert answer.status_code == 400
    assert answer.json() == {
        "error": {"root_cause": [{"type": "media_type_header_exception",
                                  "reason": "Invalid media-type value on headers [Accept, Content-Type]"}],
                  "type": "media_type_header_exception",
                  "reason": "Invalid media-type value on headers [Accept, Content-Type]",
                  "caused_by": {"type": "status_exception",
                                "reason": "Accept version must be either version 8 or 7, but found 9. "
                                          "Accept=application/vnd.elasticsearch+json; compatible-with=9"}},
        "status": 400}
    assert raw(es, "GET", "/", accept=COMPAT % 7).status_code == 200


def test_a_9x_client_fails_against_the_8_server(es, monkeypatch):
    import elasticsearch._sync.client._base as base
    # What elasticsearch-py 9 sends instead of compatible-with=8.
    monkeypatch.setattr(base, "_COMPAT_MIMETYPE_SUB", r"application/vnd.elasticsearch+\g<1>; compatible-with=9")
    with pytest.raises(BadRequestError) as caught:
        Elasticsearch(es.url, max_retries=0).info()
    assert caught.value.message == "media_type_header_exception"
    assert "Accept version must be either version 8 or 7, but found 9" in str(caught.value)


def test_a_9_server_accepts_8_and_9_but_not_7():
    with ElasticsearchEmulator(version="9.1.2") as es9:
        assert Elasticsearch(es9.url, max_retries=0).info()["version"]["number"] == "9.1.2"
        assert raw(es9, "GET", "/", accept=COMPAT % 9).status_code == 200
        refused = raw(es9, "GET", "/", accept=COMPAT % 7)
        assert refused.status_code == 400
        assert "must be either version 9 or 8, but found 7" in refused.json()["error"]["caused_by"]["reason"]


def test_versioned_accept_needs_a_versioned_content_type(es):
    answer = raw(es, "PUT", "/_index_template/t", {"index_patterns": ["t-*"]}, accept=COMPAT % 8)
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "media_type_header_exception"
    mismatch = raw(es, "PUT", "/_index_template/t", {"index_patterns": ["t-*"]}, accept=COMPAT % 8,
                   content_type=COMPAT % 7)
    assert "versions must match" in mismatch.json()["error"]["caused_by"]["reason"]


def test_an_unsupported_content_type_is_406(es):
    answer = raw(es, "PUT", "/_index_template/t", b'{"index_patterns":["t-*"]}', content_type="text/plain")
    assert answer.status_code == 406
    assert answer.json() == {"error": "Content-Type header [text/plain] is not supported", "status": 406}


def test_unknown_parameters_and_routes_are_refused(es):
    answer = raw(es, "GET", "/_cat/indices?format=json&colour=red")
    assert answer.status_code == 400
    assert answer.json()["error"]["reason"] == "request [/_cat/indices] contains unrecognized parameter: [colour]"
    assert raw(es, "GET", "/_bulk").status_code == 405
    assert raw(es, "GET", "/_nothing").json()["error"] == "no handler found for uri [/_nothing] and method [GET]"


# -- security ------------------------------------------------------------------------------------

def test_security_answers_401_in_the_es_envelope():
    with ElasticsearchEmulator(user="elastic", password="s3cret", api_key="a2V5") as es:
        missing = raw(es, "GET", "/")
        assert missing.status_code == 401
        body = missing.json()
        assert body["status"] == 401 and body["error"]["type"] == "security_exception"
        assert body["error"]["root_cause"][0]["type"] == "security_exception"
        assert "missing authentication credentials" in body["error"]["reason"]
        assert body["error"]["header"]["WWW-Authenticate"] == ['Basic realm="security" charset="UTF-8"', "ApiKey"]
        with pytest.raises(AuthenticationException):
            Elasticsearch(es.url, basic_auth=("elastic", "wrong"), max_retries=0).info()
        assert Elasticsearch(es.url, basic_auth=("elastic", "s3cret")).info()["tagline"]
        assert Elasticsearch(es.url, api_key="a2V5").info()["tagline"]


# -- health and readiness ------------------------------------------------------------------------

def test_legacy_templates_are_kept_and_overlaps_warned_or_refused_as_a_node_does(es):
    # The node's answers, read with a real 8.15.3 node (tests/test_real_engine.py compares them).
    put = requests.put(es.url + "/_template/kernelci-build", json={"index_patterns": ["build-*"]}, timeout=5)
    assert put.status_code == 200 and "Warning" not in put.headers
    mine = requests.put(es.url + "/_index_template/mine", json={"index_patterns": ["build-2*"], "priority": 1},
                        timeout=5)
    assert mine.status_code == 200
    assert mine.headers["Warning"].startswith('299 Elasticsearch-8.15.3-')
    assert ('"index template [mine] has index patterns [build-2*] matching patterns from existing older templates '
            '[kernelci-build] with patterns (kernelci-build => [build-*]); this template [mine] will take precedence '
            'during new index creation"') in mine.headers["Warning"]
    refused = requests.put(es.url + "/_template/late", json={"index_patterns": ["build-20*"]}, timeout=5)
    assert refused.status_code == 400 and refused.json()["error"]["reason"].endswith(
        "use composable templates (/_index_template) instead")
    assert sorted(requests.get(es.url + "/_template", timeout=5).json()) == ["kernelci-build"]
    assert requests.delete(es.url + "/_template/kernelci-build", timeout=5).status_code == 200
    assert requests.delete(es.url + "/_template/kernelci-build", timeout=5).status_code == 404


def test_health_is_green_without_replicas_and_yellow_with(es, client):
    assert client.cluster.health()["status"] == "green"
    es.seed_index("plain")  # no template: one replica, unassigned on one node
    health = client.cluster.health()
    assert health["status"] == "yellow" and health["unassigned_shards"] == 1


def test_a_single_node_opens_1000_shards_at_most_as_a_node_does(es, client):
    """cluster.max_shards_per_node: 500 indices of one primary and its unassigned replica fill
    the node; the next is refused, a write's auto-create too, until one is closed."""
    for number in range(500):
        es.seed_index("plain-%03d" % number)
    with pytest.raises(BadRequestError) as refused:
        client.indices.create(index="one-more", settings={"number_of_replicas": 0})
    assert refused.value.body["error"]["reason"] == ("Validation Failed: 1: this action would add [1] shards, but "
                                                     "this cluster currently has [1000]/[1000] maximum normal shards open;")
    [item] = client.bulk(operations=[{"index": {"_index": "auto-made", "_id": "a"}}, {"job": "x"}])["items"]
    assert (item["index"]["status"], item["index"]["error"]["type"]) == (400, "validation_exception")
    client.indices.close(index="plain-000")
    assert client.indices.create(index="one-more", settings={"number_of_replicas": 0})["acknowledged"]
    with pytest.raises(BadRequestError):
        client.indices.open(index="plain-000")


def test_health_wait_times_out_with_408(es, client):
    es.set_health("red")
    with pytest.raises(ApiError) as caught:
        client.cluster.health(wait_for_status="yellow", timeout="200ms")
    assert caught.value.meta.status == 408
    assert caught.value.body["timed_out"] is True and caught.value.body["status"] == "red"


def test_health_wait_returns_when_the_status_arrives(es, client):
    es.set_health("red")
    threading.Timer(0.2, es.set_health, args=("green",)).start()
    assert client.cluster.health(wait_for_status="yellow", timeout="5s")["status"] == "green"


def test_not_ready_503_and_refused_connections(es, client):
    es.not_ready("503")
    with pytest.raises(ApiError) as caught:
        client.cluster.health()
    assert caught.value.meta.status == 503
    assert caught.value.body["error"]["type"] == "master_not_discovered_exception"
    assert client.info()["cluster_uuid"] == "_na_"
    es.not_ready("refuse")
    with pytest.raises(EsConnectionError):
        client.info()
    es.ready()
    assert client.cluster.health()["status"] == "green"


def test_fail_next_and_the_request_log(es, client):
    es.fail_next(503, route="/_cluster/health")
    with pytest.raises(ApiError):
        client.cluster.health()
    assert client.cluster.health()["status"] == "green"
    assert [(r.method, r.route, r.status) for r in es.requests] == [
        ("GET", "/_cluster/health", 503), ("GET", "/_cluster/health", 200)]


# -- templates and ILM ---------------------------------------------------------------------------

def test_template_names_patterns_and_field_types_are_refused_as_a_node_does(es, client):
    # Answers of a real 8.15 node (test_real_engine's TEMPLATE_BODIES compares them all).
    def refused(name, **body):
        with pytest.raises(ApiError) as caught:
            client.indices.put_index_template(name=name, body=body)
        return caught.value.meta.status, caught.value.body["error"]["type"]

    invalid = (400, "invalid_index_template_exception")
    assert refused("Upper", index_patterns=["u-*"]) == invalid
    assert refused("_under", index_patterns=["u-*"]) == invalid
    assert refused("t", index_patterns=["u:1"]) == invalid
    assert refused("t", index_patterns=["u?"]) == invalid
    unreadable = (400, "x_content_parse_exception")
    assert refused("t", index_patterns=["u-*"], version="x") == unreadable
    assert refused("t", index_patterns=["u-*"], _meta=None) == unreadable
    assert refused("t", index_patterns=["u-*"], template=[]) == unreadable
    assert refused("t", index_patterns=["u-*"], allow_auto_create="yes") == unreadable
    # Numbers as text, and fractions, are read as a node reads them.
    client.indices.put_index_template(name="a?b", index_patterns=["u-*"], priority="5.5", version=7.9)
    taken = client.indices.get_index_template(name="a?b")["index_templates"][0]["index_template"]
    assert (taken["priority"], taken["version"]) == (5, 7)
    # `?` is no wildcard, and a pattern that matches no template is missing.
    with pytest.raises(NotFoundError):
        client.indices.delete_index_template(name="a?c")
    with pytest.raises(NotFoundError):
        client.indices.delete_index_template(name="a?b,nothing*")
    client.indices.delete_index_template(name="a?b")
    with pytest.raises(BadRequestError) as caught:
        client.cluster.health(timeout="1.5s")
    assert caught.value.body["error"]["reason"] == "failed to parse [1.5s], fractional time values are not supported"


def test_an_empty_id_fails_its_document_and_expand_wildcards_takes_known_values(es, client):
    # A real 8.15 node's answers.
    client.bulk(operations=[{"index": {"_index": "build-2020.01.02", "_id": "2"}}, {"x": 1}])
    docs = client.mget(docs=[{"_index": "build-2020.01.02", "_id": ""}, {"_index": "build-2020.01.02", "_id": 2}])["docs"]
    assert docs[0]["error"]["reason"] == "Ids can't be empty" and docs[1]["found"] is True
    with pytest.raises(BadRequestError) as caught:
        client.indices.resolve_index(name="build-*", expand_wildcards="bogus")
    assert caught.value.body["error"]["reason"] == "No valid expand wildcard value [bogus]"


def test_templates_need_patterns_and_known_fields(es, client):
    with pytest.raises(BadRequestError) as caught:
        client.indices.put_index_template(name="t", body={"priority": 5})
    # What a real 8.15 node answers.
    assert (caught.value.body["error"]["type"], caught.value.body["error"]["reason"]) == (
        "illegal_argument_exception", "Required [index_patterns]")
    with pytest.raises(BadRequestError) as caught:
        client.indices.put_index_template(name="t", body={"index_patterns": ["t-*"], "colour": 1})
    assert "unknown field [colour]" in caught.value.body["error"]["reason"]
    with pytest.raises(BadRequestError) as caught:
        client.indices.put_index_template(name="t", index_patterns=["t-*"], template={"settings": {"shards": 1}})
    assert "unknown setting [index.shards]" in caught.value.body["error"]["reason"]
    with pytest.raises(BadRequestError) as caught:
        client.indices.put_index_template(name="t", index_patterns=["t-*"], template={
            "mappings": {"properties": {"m": {"type": "text", "ignore_above": 10}}}})
    # A node reads the mappings as those of the template once composed, and says so.
    assert caught.value.body["error"]["reason"] == "composable template [t] template after composition is invalid"
    assert caught.value.body["error"]["caused_by"]["caused_by"]["reason"] == (
        "unknown parameter [ignore_above] on mapper [m] of type [text]")
    with pytest.raises(BadRequestError):
        client.indices.put_index_template(name="t", index_patterns=["t-*"], template={
            "mappings": {"properties": {"m": {"type": "strng"}}}})
    # A pattern that matches nothing is a 404 with the empty list, as from a real node.
    nothing = client.options(ignore_status=404).indices.get_index_template(name="t*")
    assert nothing.meta.status == 404 and nothing["index_templates"] == []


def test_overlapping_templates_of_equal_priority_are_refused(es, client):
    client.indices.put_index_template(name="a", index_patterns=["build-*"], priority=200)
    client.indices.put_index_template(name="a", index_patterns=["build-*"], priority=200)  # replacing itself
    with pytest.raises(BadRequestError) as caught:
        client.indices.put_index_template(name="b", index_patterns=["bu*"], priority=200)
    assert "same priority [200]" in caught.value.body["error"]["reason"]
    client.indices.put_index_template(name="b", index_patterns=["bu*"], priority=201)
    # The built-in logs-*-* template sits at 100: log-* never overlaps it, logs-* does.
    client.indices.put_index_template(name="mine", index_patterns=["log-*"], priority=100)
    with pytest.raises(BadRequestError):
        client.indices.put_index_template(name="theirs", index_patterns=["logs-*"], priority=100)


def test_glob_overlap():
    assert globs_overlap("log-*", "log-2019*")
    assert globs_overlap("*", "anything")
    assert globs_overlap("b*d", "*u*")
    assert not globs_overlap("log-*", "logs-*-*")
    assert not globs_overlap("build-*", "boot-*")
    assert not globs_overlap("abc", "abd")


def test_a_template_applies_to_new_indices_only(es, client):
    client.indices.put_index_template(name="t", index_patterns=["t-*"], priority=200, template={
        "settings": {"number_of_replicas": 0},
        "mappings": {"properties": {"n": {"type": "long"}}}})
    helpers.bulk(client, [{"_index": "t-1", "_id": "1", "_source": {"n": 5, "other": "x"}}])
    index = client.indices.get(index="t-1")["t-1"]
    assert index["settings"]["index"]["number_of_replicas"] == "0"
    assert index["mappings"]["properties"]["n"] == {"type": "long"}
    assert index["mappings"]["properties"]["other"]["type"] == "text"  # dynamic
    assert client.indices.get_index_template(name="t")["index_templates"][0]["index_template"]["template"][
        "settings"] == {"index": {"number_of_replicas": "0"}}


def test_parse_origination_date_refuses_undated_names(es, client):
    client.indices.put_index_template(name="t", index_patterns=["t-*"], priority=200, template={
        "settings": {"index.lifecycle.name": "p", "index.lifecycle.parse_origination_date": True}})
    client.indices.create(index="t-2019.01.01")
    with pytest.raises(BadRequestError) as caught:
        client.indices.create(index="t-latest")
    assert caught.value.body["error"]["reason"] == (
        "index name [t-latest] does not match pattern '^.*-(\\d{4}.\\d{2}.\\d{2})(-[\\d]+)?$'")
    # ILM reads the day between the last dash but a number's and the end, strictly as uuuu.MM.dd:
    # a name its pattern matches may still hold no date, and is refused too.
    for name in ("t-2020.02.29", "t-2019.01.02-000001", "t-other-2019.01.03", "t-0000.02.29"):
        client.indices.create(index=name)
    for name, day in (("t-2019.13.01", "2019.13.01"), ("t-2019-01-04", "2019-01-04"), ("t-2019.02.29", "2019.02.29"),
                      ("t-2100.02.29-1", "2100.02.29")):
        with pytest.raises(BadRequestError) as caught:
            client.indices.create(index=name)
        assert caught.value.body["error"]["reason"] == (
            "index name [%s] contains date [%s] which couldn't be parsed using the 'yyyy.MM.dd' format" % (name, day))


def test_ilm_policies(es, client):
    client.ilm.put_lifecycle(name="p", policy={"phases": {"delete": {"min_age": "3d", "actions": {"delete": {}}}}})
    got = client.ilm.get_lifecycle(name="p")["p"]
    assert got["version"] == 1 and got["policy"]["phases"]["delete"]["min_age"] == "3d"
    with pytest.raises(BadRequestError) as caught:
        client.ilm.put_lifecycle(name="q", policy={"phases": {"later": {"actions": {}}}})
    assert "does not support phase [later]" in caught.value.body["error"]["reason"]
    with pytest.raises(BadRequestError):
        client.ilm.put_lifecycle(name="q", policy={"phases": {"delete": {"min_age": "3 days", "actions": {}}}})
    with pytest.raises(NotFoundError):
        client.ilm.get_lifecycle(name="nope")


# -- listing and deleting indices ----------------------------------------------------------------

def test_cat_indices_lists_hidden_indices_only_when_asked_with_string_values(es, client):
    es.seed_index(".kibana_1", docs={"a": {"x": 1}})
    es.seed_index("build-2019.01.01", docs={"a": {"x": 1}, "b": {"x": 2}})
    rows = client.cat.indices(format="json", h="index,docs.count,pri", s="index", expand_wildcards="all").body
    assert rows == [{"index": ".kibana_1", "docs.count": "1", "pri": "1"},
                    {"index": "build-2019.01.01", "docs.count": "2", "pri": "1"}]
    full = client.cat.indices(format="json").body[0]
    assert set(full) >= {"health", "status", "index", "uuid", "pri", "rep", "docs.count", "store.size"}
    assert all(isinstance(value, str) for value in full.values())
    for expand in (None, "open"):  # a real node leaves hidden indices out by default
        assert [r["index"] for r in client.cat.indices(format="json", h="index", expand_wildcards=expand)] == [
            "build-2019.01.01"]
    with pytest.raises(NotFoundError):
        client.cat.indices(index="nope", format="json")


def test_a_dot_prefixed_index_made_through_the_api_is_not_hidden(es, client):
    client.indices.create(index=".plain")
    client.indices.create(index=".secret", settings={"index.hidden": True})
    assert [r["index"] for r in client.cat.indices(format="json", h="index")] == [".plain"]


def test_delete_refuses_wildcards_and_missing_names(es, client):
    es.seed_index("build-2019.01.01")
    for expression in ("*", "_all", "build-*"):
        with pytest.raises(BadRequestError) as caught:
            client.indices.delete(index=expression)
        assert caught.value.body["error"]["reason"] == "Wildcard expressions or all indices are not allowed"
    with pytest.raises(NotFoundError) as caught:
        client.indices.delete(index=["build-2019.01.01", "build-2019.01.02"])
    assert caught.value.body["error"]["type"] == "index_not_found_exception"
    assert es.index_names() == ["build-2019.01.01"]  # nothing deleted on a 404
    client.indices.delete(index=["build-2019.01.01", "build-2019.01.02"], ignore_unavailable=True)
    assert es.index_names() == []


def test_delete_never_goes_through_an_alias_as_a_node_does(es, client):
    """A node deletes indices only by their own names: an alias named is refused (400), or with
    ignore_unavailable left alone, and a pattern matches no alias; the index behind it stays."""
    es.seed_index("kept-a")
    es.seed_index("build-2019.01.01")
    client.indices.update_aliases(actions=[{"add": {"index": "kept-a", "alias": "build-2019.01.02"}}])
    with pytest.raises(BadRequestError) as caught:
        client.indices.delete(index="build-2019.01.02")
    assert caught.value.body["error"] == {
        "root_cause": [caught.value.body["error"]["root_cause"][0]], "type": "illegal_argument_exception",
        "reason": "The provided expression [build-2019.01.02] matches an alias, specify the corresponding "
                  "concrete indices instead."}
    client.indices.delete(index="build-2019.01.02,build-2019.01.01", ignore_unavailable=True, expand_wildcards="none")
    assert es.index_names() == ["kept-a"]
    with ElasticsearchEmulator(destructive_requires_name=False) as open_es:
        open_es.seed_index("kept-b")
        open_client = Elasticsearch(open_es.url)
        open_client.indices.update_aliases(actions=[{"add": {"index": "kept-b", "alias": "build-2019.01.03"}}])
        open_client.indices.delete(index="build-*")
        assert open_es.index_names() == ["kept-b"]


def test_a_request_line_over_4096_bytes_is_refused_before_routing_as_a_node_refuses_it(es):
    line = lambda path: len("GET %s HTTP/1.1" % path)  # noqa: E731
    at_limit = "/_resolve/index/" + "a" * (4096 - line("/_resolve/index/"))
    assert line(at_limit) == 4096
    assert raw(es, "GET", at_limit).status_code == 404  # routed: no such index
    refused = raw(es, "GET", at_limit + "a")
    assert refused.status_code == 400
    assert refused.headers["X-Elastic-Product"] == "Elasticsearch"
    assert refused.json()["error"]["type"] == "too_long_http_line_exception"
    assert refused.json()["error"]["reason"] == "An HTTP line is larger than 4096 bytes."
    assert refused.headers.get("Connection") == "close"


def test_wildcard_delete_when_destructive_requires_name_is_off():
    with ElasticsearchEmulator(destructive_requires_name=False) as es:
        es.seed_index(".kibana_1")
        es.seed_index("build-2019.01.01")
        Elasticsearch(es.url).indices.delete(index="*")
        assert es.index_names() == [".kibana_1"]  # hidden indices are not matched by *


# -- documents -----------------------------------------------------------------------------------

def test_bulk_needs_the_trailing_newline(es):
    body = b'{"index":{"_index":"a","_id":"1"}}\n{"x":1}'
    answer = raw(es, "POST", "/_bulk", body, content_type="application/x-ndjson")
    assert answer.status_code == 400
    assert answer.json()["error"]["reason"] == "The bulk request must be terminated by a newline [\\n]"
    unknown = raw(es, "POST", "/_bulk", b'{"upsert":{"_index":"a"}}\n{}\n', content_type="application/x-ndjson")
    assert "expected one of [create, delete, index, update]" in unknown.json()["error"]["reason"]


def test_bulk_index_create_delete_and_conflicts(es, client):
    actions = [{"_op_type": "create", "_index": "b-1", "_id": "1", "_source": {"x": 1}},
               {"_op_type": "create", "_index": "b-1", "_id": "1", "_source": {"x": 2}},
               {"_op_type": "index", "_index": "b-1", "_id": "2", "_source": {"x": 3}},
               {"_op_type": "index", "_index": "b-1", "_id": "2", "_source": {"x": 4}},
               {"_op_type": "delete", "_index": "b-1", "_id": "1"},
               {"_op_type": "delete", "_index": "b-1", "_id": "9"}]
    results = list(helpers.streaming_bulk(client, actions, raise_on_error=False))
    statuses = [(ok, next(iter(item.values()))["status"]) for ok, item in results]
    assert statuses == [(True, 201), (False, 409), (True, 201), (True, 200), (True, 200), (False, 404)]
    conflict = next(iter(results[1][1].values()))["error"]
    assert conflict["type"] == "version_conflict_engine_exception"
    assert "document already exists (current version [1])" in conflict["reason"]
    assert es.documents("b-1") == {"2": {"x": 4}}
    with pytest.raises(helpers.BulkIndexError):
        helpers.bulk(client, [{"_op_type": "create", "_index": "b-1", "_id": "2", "_source": {}}])


def test_bulk_items_are_checked_against_the_mapping(es, client):
    client.indices.put_index_template(name="t", index_patterns=["t-*"], priority=200, template={
        "mappings": {"properties": {"n": {"type": "long"}, "when": {"type": "date"}, "ok": {"type": "boolean"}}}})
    docs = [{"n": "12"}, {"n": "twelve"}, {"when": "2019-05-31T10:00:00.123Z"}, {"when": "yesterday"},
            {"ok": "yes"}, {"_id": "x"}]
    results = list(helpers.streaming_bulk(client, ({"_index": "t-1", "_source": d} for d in docs),
                                          raise_on_error=False))
    assert [ok for ok, _ in results] == [True, False, True, False, False, False]
    error = results[1][1]["index"]["error"]
    assert error["type"] == "document_parsing_exception"
    assert error["reason"].startswith("failed to parse field [n] of type [long]")


# (source, accepted) as the real node answers them (tests/test_real_engine.py replays them there too).
NUMBER_AND_DATE_ANSWERS = [
    ({"f": 1e39}, False), ({"f": "3.5e38"}, False), ({"f": 3.4028235e38}, True), ({"f": " 12 "}, True),
    ({"f": "1_000"}, False), ({"f": ""}, True), ({"f": [[1.5]]}, True), ({"h": 65520}, False),
    ({"n": "9223372036854775807"}, True), ({"n": "9223372036854775808"}, False), ({"n": 9.3e18}, False),
    ({"n": " 12"}, False), ({"n": [[1, [2]]]}, True), ({"when": 1.5}, True), ({"when": 9.2e18}, False),
    ({"when": -2 ** 63}, False), ({"when": "0000-01-01"}, True), ({"when": "2020-06-01T00:00:00+18:01"}, False),
    ({"when": "2020-06-01T00:00:00+01:30:15"}, True),
]


def test_numbers_and_dates_beyond_their_types_are_refused_as_a_real_node_refuses_them(es, client):
    client.indices.put_index_template(name="t", index_patterns=["t-*"], priority=200, template={
        "mappings": {"properties": {"n": {"type": "long"}, "f": {"type": "float"}, "h": {"type": "half_float"},
                                    "when": {"type": "date"}}}})
    results = list(helpers.streaming_bulk(client, ({"_index": "t-1", "_source": d} for d, _ in NUMBER_AND_DATE_ANSWERS),
                                          raise_on_error=False))
    assert [ok for ok, _ in results] == [accepted for _, accepted in NUMBER_AND_DATE_ANSWERS]


def test_item_level_429_and_request_level_faults(es, client):
    es.reject_bulk_items(1)
    results = list(helpers.streaming_bulk(client, [{"_index": "a", "_id": "1", "x": 1}], raise_on_error=False))
    assert results[0][1]["index"]["status"] == 429
    es.fail_next(429, route="/_bulk")
    with pytest.raises(ApiError) as caught:
        client.bulk(operations=[{"index": {"_index": "a", "_id": "1"}}, {"x": 1}])
    assert caught.value.meta.status == 429


def test_mget_and_count(es, client):
    es.seed_index("build-2019.01.01", docs={"a": {"job": "mainline", "n": 1}, "b": {"job": "next", "n": 2}})
    docs = client.mget(docs=[{"_index": "build-2019.01.01", "_id": "a"}, {"_index": "build-2019.01.01", "_id": "z"},
                             {"_index": "nope", "_id": "a"}])["docs"]
    assert docs[0]["found"] is True and docs[0]["_source"] == {"job": "mainline", "n": 1}
    assert docs[1] == {"_index": "build-2019.01.01", "_id": "z", "found": False}
    assert docs[2]["error"]["type"] == "index_not_found_exception" and "found" not in docs[2]
    assert client.count(index="build-*")["count"] == 2
    assert client.count(index="build-2019.01.01", query={"term": {"job": "next"}})["count"] == 1
    assert client.count(query={"bool": {"must_not": [{"ids": {"values": ["a"]}}]}})["count"] == 1
    with pytest.raises(NotFoundError):
        client.count(index="nope")
    with pytest.raises(BadRequestError):
        client.count(query={"fuzzy_thing": {}})


def test_mget_without_source_and_what_it_refuses(es, client):
    es.seed_index("build-2019.01.01", docs={"a": {"job": "mainline"}})
    docs = client.mget(docs=[{"_index": "build-2019.01.01", "_id": "a", "_source": False},
                             {"_index": "build-2019.01.01", "_id": "z", "_source": False}],
                       filter_path="docs._id,docs.found")["docs"]
    assert docs == [{"_id": "a", "found": True}, {"_id": "z", "found": False}]
    assert "_source" not in client.mget(index="build-2019.01.01", ids=["a"], source=False)["docs"][0]
    for body, kind, reason in (
            ({"docs": []}, "action_request_validation_exception", "Validation Failed: 1: no documents to get;"),
            ({"docs": [{"_index": "x", "_id": "a", "_type": "_doc"}]}, "parse_exception",
             "failed to parse multi get request. unknown field [_type]"),
            ({"docs": ["a"]}, "illegal_argument_exception", "docs array element should include an object"),
            ({"docs": [{"_index": "x", "_id": "a", "_source": 1}]}, "parse_exception",
             "illegal type for _source: [VALUE_NUMBER]")):
        answer = raw(es, "POST", "/_mget", body)
        assert answer.status_code == 400 and answer.headers["X-Elastic-Product"] == "Elasticsearch"
        assert (answer.json()["error"]["type"], answer.json()["error"]["reason"]) == (kind, reason)


# Field names as a real Elasticsearch 8.15 node answered them (tests/test_real_engine.py checks the
# same table against the node): a trailing dot is dropped, other empty segments are refused.
FIELD_NAME_ANSWERS = [
    ({"x.": 1}, 201), ({"a": {"b.": 1}}, 201), ({"a.": {"b": 1}}, 201), ({"a": [{"b.": 1}]}, 201),
    ({".x": 1}, 400), ({"x..y": 1}, 400), ({".": 1}, 400), ({"..": 1}, 400), ({" ": 1}, 400),
    ({"a": {"": 1}}, 400), ({"a": {".b": 1}}, 400),
]


def test_mget_of_names_that_name_no_single_index_is_answered_per_document_as_a_node_does(es, client):
    es.seed_index("build-2019.01.01")
    docs = client.mget(docs=[{"_index": name, "_id": "a"} for name in ("_all", "-x")])["docs"]
    assert [(doc["error"]["type"], doc["error"]["reason"]) for doc in docs] == [
        ("illegal_argument_exception", "unable to return a single index as the index and options provided got "
                                       "resolved to multiple indices"),
        ("index_not_found_exception", "no such index [-x] and if you intended to exclude this index, ensure that you "
                                      "use wildcards that include it before explicitly excluding it")]


def field_name_statuses(client) -> list:
    operations = []
    for number, (source, _) in enumerate(FIELD_NAME_ANSWERS):
        operations += [{"index": {"_index": "probe-%d" % number, "_id": "1"}}, source]
    return [item["index"]["status"] for item in client.bulk(operations=operations)["items"]]


def test_field_names_are_refused_exactly_as_a_real_node_refuses_them(es, client):
    assert field_name_statuses(client) == [status for _, status in FIELD_NAME_ANSWERS]


# Requests and what a real Elasticsearch 8.15 node answered to each, as (status, error type or
# body); tests/test_real_engine.py asks the node the same. Aliases given where an index is made:
ALIAS_REQUESTS = [
    ("PUT", "/_index_template/user-aliased", {"index_patterns": ["qq-*"], "priority": 7,
                                              "template": {"aliases": {"qq-all": {}}}}),
    ("PUT", "/qq-1", None),
    ("PUT", "/rr-1", {"aliases": {"rr-alias": {}}}),
    ("GET", "/_cat/indices/qq-all,rr-alias?format=json&h=index", None),
    ("DELETE", "/qq-all", None),
    ("DELETE", "/rr-alias", None),
]
NODE_ALIAS_ANSWERS = [
    (200, {"acknowledged": True}),
    (200, {"acknowledged": True, "shards_acknowledged": True, "index": "qq-1"}),
    (200, {"acknowledged": True, "shards_acknowledged": True, "index": "rr-1"}),
    (200, [{"index": "qq-1"}, {"index": "rr-1"}]),
    (400, "The provided expression [qq-all] matches an alias, specify the corresponding concrete indices instead."),
    (400, "The provided expression [rr-alias] matches an alias, specify the corresponding concrete indices instead."),
]
# Patterns of `_cat/indices` and the states they expand to:
CAT_REQUESTS = [
    ("PUT", "/build-2019.01.01", None),
    ("PUT", "/build-2019.01.02", {"settings": {"index.hidden": True}}),
    ("GET", "/_cat/indices/build-*?format=json&h=index&expand_wildcards=none", None),
    ("GET", "/_cat/indices/build-*?format=json&h=index&expand_wildcards=open,none", None),
    ("GET", "/_cat/indices/build-*?format=json&h=index&expand_wildcards=hidden", None),
    ("GET", "/_cat/indices/build-*,-build-2019.01.01?format=json&h=index&expand_wildcards=all", None),
]
NODE_CAT_ANSWERS = [
    (200, {"acknowledged": True, "shards_acknowledged": True, "index": "build-2019.01.01"}),
    (200, {"acknowledged": True, "shards_acknowledged": True, "index": "build-2019.01.02"}),
    (404, "index_not_found_exception"),  # a pattern not expanded is a name: no such index [build-*]
    (404, "index_not_found_exception"),  # `none` anywhere in the list expands nothing
    (404, "index_not_found_exception"),  # neither does `hidden` alone
    (200, [{"index": "build-2019.01.02"}]),  # an exclusion after a pattern that matches it
]
# A template that would take a data stream from the data-stream template that matches it:
STREAM = "build-2024.01.01"
STREAM_REQUESTS = [
    ("PUT", "/_index_template/user-streams", {"index_patterns": ["build-*"], "priority": 100, "data_stream": {}}),
    ("POST", "/_bulk", b'{"create":{"_index":"%s"}}\n{"@timestamp":"2024-01-01T00:00:00Z"}\n' % STREAM.encode()),
    ("PUT", "/_index_template/plain-build", {"index_patterns": ["build-*"], "priority": 200}),
    ("PUT", "/_index_template/plain-build-two", {"index_patterns": ["build-2*"], "priority": 50}),
    ("PUT", "/_index_template/streaming-build", {"index_patterns": ["build-*"], "priority": 200, "data_stream": {}}),
]
NODE_STREAM_ANSWERS = [
    (200, {"acknowledged": True}), (200, [201]),
    (400, "composable template [plain-build] with index patterns [build-*], priority [200] and no data stream "
          "configuration would cause data streams [%s] to no longer match a data stream template" % STREAM),
    (200, {"acknowledged": True}), (200, {"acknowledged": True})]


# An index whose mapping requires a routing (a template of a user's): writes and gets without one.
ROUTED_ID = "%040x" % 1
ROUTING_REQUESTS = [
    ("PUT", "/_index_template/user-routed", {"index_patterns": ["build-2024.03.*"], "priority": 300,
                                             "template": {"mappings": {"_routing": {"required": True}}}}),
    ("POST", "/_bulk", b'{"index":{"_index":"build-2024.03.01","_id":"%s"}}\n{"job":"x"}\n' % ROUTED_ID.encode()),
    ("POST", "/_bulk?refresh=true",
     b'{"index":{"_index":"build-2024.03.01","_id":"%s","routing":"r"}}\n{"job":"x"}\n' % ROUTED_ID.encode()),
    ("POST", "/_mget?filter_path=docs._id,docs.found,docs.error.type",
     {"docs": [{"_index": "build-2024.03.01", "_id": ROUTED_ID, "_source": False}]}),
]
NODE_ROUTING_ANSWERS = [
    (200, {"acknowledged": True}), (200, [400]), (200, [201]),
    (200, {"docs": [{"_id": ROUTED_ID, "error": {"type": "routing_missing_exception"}}]}),
]


def node_answers(url: str, requests_: list) -> list:
    """(status, error type (the reason of an illegal_argument_exception), or each item's status of
    a _bulk, or the body) of each request, in order."""
    answers = []
    for method, path, body in requests_:
        if isinstance(body, bytes):
            answered = requests.request(method, url + path, data=body, timeout=30,
                                        headers={"Content-Type": "application/x-ndjson"})
        else:
            answered = requests.request(method, url + path, json=body, timeout=30)
        parsed = answered.json() if answered.content.strip() else None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
            parsed = error["reason"] if error["type"] == "illegal_argument_exception" else error["type"]
        elif isinstance(parsed, dict) and "items" in parsed:
            parsed = [next(iter(item.values()))["status"] for item in parsed["items"]]
        answers.append((answered.status_code, parsed))
    return answers


def test_aliases_given_where_an_index_is_made_are_made_with_it(es):
    assert node_answers(es.url, ALIAS_REQUESTS) == NODE_ALIAS_ANSWERS


def test_cat_indices_patterns_expand_to_the_states_asked_as_a_node_expands_them(es):
    assert node_answers(es.url, CAT_REQUESTS) == NODE_CAT_ANSWERS


def test_a_template_that_would_leave_a_data_stream_without_a_data_stream_template_is_refused(es):
    assert node_answers(es.url, STREAM_REQUESTS) == NODE_STREAM_ANSWERS


def test_an_index_whose_mapping_requires_a_routing_refuses_writes_and_gets_without_one(es):
    assert node_answers(es.url, ROUTING_REQUESTS) == NODE_ROUTING_ANSWERS
