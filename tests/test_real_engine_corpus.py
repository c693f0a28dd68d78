"""Every document kind kcing makes, indexed into a real Elasticsearch through the templates.

One corpus (tests/realcorpus.py) is indexed once for this module: `_bulk` must report zero item
errors, the mapping Elasticsearch applied must be, field by field, the one `mapping_templates/`
intends, and each Kibana visualisation's aggregation must answer what the corpus says.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from datetime import datetime, timezone
from typing import Dict, List, Optional, Tuple

import pytest
from elasticsearch import Elasticsearch

from kcing.admin.templates import TEMPLATE_DIR, install, templates_for
from kcing.records import DOCUMENT_KINDS
from tests.realcorpus import LONG_TEST_NAME, NON_ASCII_LINE, SHARED_UPSTREAM, Key, build_corpus, bulk_operations

pytestmark = pytest.mark.realengine

KIBANA_OBJECTS = Path(__file__).resolve().parents[1] / "kibana" / "saved_objects.ndjson"


@pytest.fixture(scope="module")
def indexed(real_node, tmp_path_factory):
    """(client, {(index, id): document}, bulk answers) once the whole corpus is indexed."""
    real_node.wipe()
    client = Elasticsearch(real_node.url, request_timeout=120)
    install(client, real_node.url, templates_for(None), None)
    origins = build_corpus(tmp_path_factory.mktemp("corpus"))
    documents: Dict[Key, dict] = {}
    for found in origins.values():
        documents.update(found)
    answers = [client.bulk(operations=chunk) for chunk in bulk_operations(documents)]
    client.indices.refresh(index=",".join(sorted({index for index, _ in documents})))
    yield client, documents, answers, origins
    real_node.wipe()


def template_mappings(kind: str) -> dict:
    return json.loads((TEMPLATE_DIR / ("%s.json" % kind)).read_text())["template"]["mappings"]


def kind_of(index: str) -> str:
    return index.rsplit("-", 1)[0]


def test_every_origin_gives_every_kind_it_should(indexed):
    _, _, _, origins = indexed
    kinds = {origin: {kind_of(index) for index, _ in found} for origin, found in origins.items()}
    for origin in ("samples", "legacy replica", "odd shapes"):
        assert kinds[origin] == {"build", "boot", "test", "log"}, origin
    # Only the current KernelCI API has regression objects.
    assert kinds["api replica"] == set(DOCUMENT_KINDS)
    if SHARED_UPSTREAM.is_dir():  # the real payloads beside the repository, when they are there
        assert {"boot", "test", "log"} <= kinds["shared upstream"]


def test_bulk_indexes_every_document_with_zero_item_errors(indexed):
    client, documents, answers, _ = indexed
    errors = [item for answer in answers for item in answer["items"] if item["index"].get("error")]
    assert errors == []
    assert not any(answer["errors"] for answer in answers)
    per_index = Counter(index for index, _ in documents)
    for index, expected in per_index.items():
        assert client.count(index=index)["count"] == expected, index


def test_the_applied_mapping_is_the_one_the_templates_intend(indexed):
    """Field by field: no dynamic additions, no type changed, nothing the template maps is lost."""
    client, documents, _, _ = indexed
    indices = sorted({index for index, _ in documents})
    applied = client.indices.get_mapping(index=",".join(indices))
    differences: List[Tuple[str, str, object, object]] = []
    for index in indices:
        intended = template_mappings(kind_of(index))
        mapping = applied[index]["mappings"]
        for name in sorted(set(mapping["properties"]) | set(intended["properties"])):
            got, want = mapping["properties"].get(name), intended["properties"].get(name)
            if got != want:
                differences.append((index, name, got, want))
        for setting in ("dynamic", "date_detection"):
            if str(mapping.get(setting)).lower() != str(intended[setting]).lower():
                differences.append((index, setting, mapping.get(setting), intended[setting]))
    assert differences == []


def test_odd_values_are_stored_whole_and_searchable_where_mapped(indexed):
    client, _, _, _ = indexed
    found = client.search(index="log-*", query={"match_phrase": {"message": NON_ASCII_LINE}})
    assert found["hits"]["total"]["value"] == 1
    assert found["hits"]["hits"][0]["_source"]["message"] == NON_ASCII_LINE
    # A test path past the keyword limit stays in _source (unsearchable), its document indexed.
    long_cases = client.search(index="test-*", query={"match_all": {}}, size=1000)["hits"]["hits"]
    assert [hit for hit in long_cases if LONG_TEST_NAME in json.dumps(hit["_source"])]


def test_no_field_has_two_types_across_the_indices_of_a_kibana_index_pattern(indexed):
    """Kibana marks a field its index pattern's indices map with different types a `conflict`,
    which no visualisation can use; each pattern's days must agree, and a number format must sit
    on a number."""
    client, documents, _, _ = indexed
    numbers = {"long", "float"}
    days = Counter(kind_of(index) for index in {index for index, _ in documents})
    assert all(days[kind] > 1 for kind in ("build", "boot", "test", "log")), days  # days to disagree
    for item in saved_objects().values():
        if item["type"] != "index-pattern":
            continue
        pattern = item["attributes"]["title"]
        fields = client.field_caps(index=pattern, fields="*")["fields"]
        assert {name: sorted(types) for name, types in fields.items() if len(types) > 1} == {}, pattern
        formats = json.loads(item["attributes"]["fieldFormatMap"])
        for name, form in formats.items():
            (field_type,) = fields[name]
            assert field_type in numbers if form["id"] == "number" else field_type not in numbers, (pattern, name)


# -- the Kibana visualisations ------------------------------------------------------------------

def saved_objects() -> Dict[str, dict]:
    objects = {}
    for line in KIBANA_OBJECTS.read_text(encoding="utf-8").splitlines():
        if line.strip():
            item = json.loads(line)
            objects[item["id"]] = item
    return objects


def visualisations() -> List[dict]:
    found = []
    for item in saved_objects().values():
        if item["type"] != "visualization":
            continue
        state = json.loads(item["attributes"]["visState"])
        if any(agg["schema"] != "metric" for agg in state.get("aggs", [])):
            found.append(item)
    return found


def kuery_filter(query: dict) -> dict:
    """The KQL of these objects is empty, `field : value` or `field : (a or b ...)`; anything else is a
    test to extend."""
    text = (query or {}).get("query", "").strip()
    if not text:
        return {"match_all": {}}
    field, value = [part.strip() for part in text.split(":", 1)]
    if value.startswith("(") and value.endswith(")"):
        values = [part.strip() for part in value[1:-1].split(" or ")]
        assert all(v and " " not in v for v in values), "KQL %r needs a richer translation" % text
        return {"terms": {field: values}}
    assert " " not in value and " " not in field, "KQL %r needs a richer translation" % text
    return {"match": {field: value}}


def to_aggregation(aggs: List[dict]) -> Tuple[dict, List[dict]]:
    """The Elasticsearch aggregation a Kibana agg-based visualisation sends (buckets nested in order,
    metrics in every bucket level so orderings and checks can use them); also the bucket aggs."""
    metrics = {}
    for agg in aggs:
        if agg["schema"] == "metric" and agg["type"] != "count":
            metrics[agg["id"]] = {agg["type"]: {"field": agg["params"]["field"]}}
    count_ids = {agg["id"] for agg in aggs if agg["type"] == "count"}
    buckets = [agg for agg in aggs if agg["schema"] != "metric" and agg.get("enabled", True)]
    inner: dict = dict(metrics)
    for agg in reversed(buckets):
        params = agg["params"]
        if agg["type"] == "terms":
            order_by = params.get("orderBy", "_count")
            key = "_key" if order_by == "_key" else ("_count" if order_by in count_ids else order_by)
            body = {"terms": {"field": params["field"], "size": params["size"], "order": {key: params["order"]}}}
        elif agg["type"] == "date_histogram":
            # "auto" is resolved by Kibana from the time range; a day is what it picks for a week.
            body = {"date_histogram": {"field": params["field"], "fixed_interval": "1d",
                                       "min_doc_count": params.get("min_doc_count", 1)}}
        else:
            raise AssertionError("bucket aggregation %s needs a translation" % agg["type"])
        if inner:
            body["aggs"] = inner
        inner = dict(metrics)
        inner["b" + agg["id"]] = body
    return inner, buckets


def matching(documents: Dict[Key, dict], pattern: str, query: dict) -> List[dict]:
    prefix = pattern.rstrip("*")
    selected = [doc for (index, _), doc in documents.items() if index.startswith(prefix)]
    match = query.get("match")
    if match:
        (field, value), = match.items()
        selected = [doc for doc in selected if str(doc.get(field)) == value]
    terms = query.get("terms")
    if terms:
        (field, values), = terms.items()
        selected = [doc for doc in selected if str(doc.get(field)) in values]
    return selected


def metric_value(value) -> Optional[float]:
    """What a `max` aggregation reads of a source value: a number, or a date as epoch milliseconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        # Elasticsearch reads a date without a zone as UTC.
        return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp() * 1000.0
    return None


@pytest.mark.parametrize("vis", visualisations(), ids=lambda vis: vis["id"])
def test_each_visualisation_aggregation_answers_what_the_corpus_says(indexed, vis):
    client, documents, _, _ = indexed
    objects = saved_objects()
    state = json.loads(vis["attributes"]["visState"])
    search = json.loads(vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    pattern_id = next(ref["id"] for ref in vis["references"] if ref["type"] == "index-pattern")
    pattern = objects[pattern_id]["attributes"]["title"]
    query = kuery_filter(search.get("query"))
    aggregation, buckets = to_aggregation(state["aggs"])
    answer = client.search(index=pattern, query=query, aggs=aggregation, size=0)

    docs = matching(documents, pattern, query)
    assert docs, "the corpus has nothing for %s" % vis["id"]
    outer = buckets[0]
    got = answer["aggregations"]["b" + outer["id"]]["buckets"]
    assert got, "%s: no buckets" % vis["id"]
    field = outer["params"]["field"]
    if outer["type"] == "terms":
        counts = Counter(str(doc[field]).lower() if isinstance(doc.get(field), bool) else str(doc[field])
                         for doc in docs if doc.get(field) is not None)
        for bucket in got:
            key = bucket.get("key_as_string", bucket["key"])
            assert bucket["doc_count"] == counts[str(key)], (vis["id"], key)
        size = outer["params"]["size"]
        assert len(got) == min(size, len(counts))
    else:
        assert sum(bucket["doc_count"] for bucket in got) == len([doc for doc in docs if doc.get(field)])
    for metric in state["aggs"]:
        if metric["schema"] == "metric" and metric["type"] == "max":
            name = metric["params"]["field"]
            values = [metric_value(doc.get(name)) for doc in docs]
            values = [value for value in values if value is not None]
            top = answer["aggregations"][metric["id"]]["value"]
            assert top == pytest.approx(max(values)) if values else top is None, (vis["id"], name)


def bucket_counts(answer: dict, buckets: List[dict]) -> List[int]:
    """How many buckets each level of a nested aggregation answered, over all its parents."""
    counts = [0] * len(buckets)
    level = [answer]
    for depth, agg in enumerate(buckets):
        level = [bucket for parent in level for bucket in parent["b" + agg["id"]]["buckets"]]
        counts[depth] = len(level)
    return counts


@pytest.mark.parametrize("origin", ["samples", "shared upstream", "api replica"])
def test_every_panel_shows_the_documents_of_each_real_origin_at_every_level(indexed, origin):
    """The corpus as a whole can fill a panel that one origin leaves empty: each origin of real
    data (the bundled samples, the real LAVA files, the KernelCI API with logs) alone must give
    every visualisation of its kinds buckets at every level, and every saved search hits."""
    client, _, _, origins = indexed
    found = origins[origin]
    if not found:
        pytest.skip("the real upstream files are absent (the shared/ folder sits beside the repository)")
    objects = saved_objects()
    checked = 0
    for item in objects.values():
        if item["type"] not in ("visualization", "search"):
            continue
        pattern_ids = [ref["id"] for ref in item["references"] if ref["type"] == "index-pattern"]
        if not pattern_ids:
            continue
        pattern = objects[pattern_ids[0]]["attributes"]["title"]
        ids = [doc_id for index, doc_id in found if kind_of(index) == pattern.rstrip("-*")]
        if not ids:
            continue  # a kind the origin has not (README: the legacy source has no regressions)
        search = json.loads(item["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        query = {"bool": {"filter": [kuery_filter(search.get("query")), {"ids": {"values": ids}}]}}
        if item["type"] == "search":
            sort = [{field: order} for field, order in item["attributes"]["sort"]]
            answer = client.search(index=pattern, query=query, sort=sort, size=1)
            assert answer["hits"]["hits"], "%s: nothing of %s" % (item["id"], origin)
        else:
            aggregation, buckets = to_aggregation(json.loads(item["attributes"]["visState"])["aggs"])
            answer = client.search(index=pattern, query=query, aggs=aggregation, size=0)
            counts = bucket_counts(answer["aggregations"], buckets)
            assert 0 not in counts, "%s: buckets per level %s for %s" % (item["id"], counts, origin)
        checked += 1
    assert checked >= (22 if origin == "api replica" else 14)
