"""The fields the shipped dashboards read are in the documents each source makes.

A visualization on a field no document holds shows nothing; test_kibana.py checks that each
field is in the catalogue (kcing/documents/fields.py), this checks the documents themselves: the
bundled samples and the real LAVA files (legacy), and a KernelCI API checkout tree with its logs
(`--with-logs`). What a source cannot give is listed in SOURCE_GAPS, and kibana/README.md says so.
"""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kcing.documents import documents_for
from kcing.records import JOB, KBUILD, LAVA, REGRESSION
from kcing.sources.api_related import RelatedNodes, related_node
from tests.fakes.api_corpus import ApiCorpus
from tests.fakes.api_data import LEGACY, checkout_tree
from tests.test_kibana import _fields_used, panels_and_kinds

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
LISTED = datetime(2020, 11, 19, tzinfo=timezone.utc)
RAW_CALLBACK = LEGACY / "lava-callback-raw-incomplete-qemu.json"

# (source, document kind) -> fields a dashboard reads that the source's documents cannot hold.
SOURCE_GAPS = {
    # build.json has no error or warning counts: the backend counted them in build logs, which
    # kcing does not fetch for legacy builds (upstream.md §1.7).
    ("legacy", "build"): {"errors", "warnings"},
    # A kbuild node has no build time (upstream.md §2.10).
    ("api", "build"): {"build_time"},
}


def _legacy_documents():
    manifest = json.loads((SAMPLES / "manifest.json").read_text(encoding="utf-8"))["objects"]
    for obj in manifest:
        created = datetime.fromisoformat(obj["date"].replace("Z", "+00:00"))
        yield from documents_for(obj["kind"], (SAMPLES / obj["path"]).read_bytes(), created)
    for path in sorted(LEGACY.glob("*.json")):
        yield from documents_for(LAVA, path.read_bytes(), LISTED, "lab-example")


def _api_documents():
    tree = checkout_tree(ApiCorpus(), "https://files.example", datetime(2024, 10, 16, tzinfo=timezone.utc))
    related = RelatedNodes(lambda node_id: next((node for node in tree.values() if node["id"] == node_id), None))
    callback = RAW_CALLBACK.read_text()
    for node in tree.values():
        envelope = {"node": node, **related.for_envelope(node["kind"], node)}
        if node["kind"] == KBUILD:
            envelope["build_log"] = "fs/x.c:1:2: warning: unused variable\narch/y.c:3:4: error: undeclared\n"
        if node["kind"] == JOB and node["data"].get("runtime", "").startswith("lava"):
            envelope["callback_data"] = callback
        if node["kind"] == REGRESSION:
            envelope["viewer_urls"] = {"fail_node": "https://api.example/viewer?node_id=1",
                                       "pass_node": "https://api.example/viewer?node_id=2"}
            envelope["pass_node"] = related_node(tree["case-1"])
        yield from documents_for(node["kind"], json.dumps(envelope).encode())


def _fields_by_kind(documents) -> dict:
    fields = defaultdict(set)
    for document in documents:
        fields[document.kind].update(name for name, value in document.body.items() if value is not None)
    return fields


@pytest.fixture(scope="module")
def documents():
    """{source: its documents}, made once for the module's tests."""
    if not RAW_CALLBACK.is_file():
        pytest.skip("real upstream files are absent (the shared/ folder sits beside the repository)")
    return {"legacy": list(_legacy_documents()), "api": list(_api_documents())}


@pytest.fixture(scope="module")
def produced(documents):
    return {source: _fields_by_kind(made) for source, made in documents.items()}


def _panels():
    for obj, kind in panels_and_kinds():
        yield obj["id"], kind, _fields_used(obj) - {"@timestamp"}


@pytest.mark.parametrize("source", ["legacy", "api"])
def test_every_field_a_dashboard_reads_is_in_the_documents_of_each_source_but_the_known_gaps(produced, source):
    checked = 0
    for panel, kind, used in _panels():
        if kind == "regression" and source == "legacy":
            continue  # the legacy source has no regression objects (README, Regressions)
        missing = used - produced[source][kind] - SOURCE_GAPS.get((source, kind), set())
        assert not missing, "%s reads %s, which no %s %s document holds" % (panel, sorted(missing), source, kind)
        checked += 1
    assert checked >= 14


def test_the_known_gaps_are_real_and_read_by_a_dashboard(produced):
    read = defaultdict(set)
    for _, kind, used in _panels():
        read[kind].update(used)
    for (source, kind), gaps in SOURCE_GAPS.items():
        assert gaps <= read[kind], "a gap no dashboard reads: drop it"
        assert not gaps & produced[source][kind], "%s %s documents hold %s now: drop the gap" % (source, kind, gaps)


def _query_terms(obj: dict) -> dict:
    """{field: values} a panel's KQL keeps: `field : value` or `field : (a or b ...)`."""
    source = json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    text = source.get("query", {}).get("query", "").strip()
    if not text:
        return {}
    field, value = [part.strip() for part in text.split(":", 1)]
    if value.startswith("(") and value.endswith(")"):
        return {field: [part.strip() for part in value[1:-1].split(" or ")]}
    return {field: [value]}


def _values_by_kind(documents) -> dict:
    values = defaultdict(lambda: defaultdict(set))
    for document in documents:
        for name, value in document.body.items():
            if isinstance(value, str):
                values[document.kind][name].add(value)
    return values


@pytest.fixture(scope="module")
def produced_values(documents):
    return {source: _values_by_kind(made) for source, made in documents.items()}


def test_every_value_a_panel_filters_on_is_one_the_documents_hold(produced_values):
    """KQL on a keyword matches the exact word: `result : FAIL` finds no test (verdicts are lower
    case but for build_result), `status : open` no regression. Each value a panel keeps must be
    one the documents hold, in that case, and each panel must keep some of each source's."""
    checked = 0
    for obj, kind in panels_and_kinds():
        for field, values in _query_terms(obj).items():
            sources = [source for source in ("legacy", "api") if not (kind == "regression" and source == "legacy")]
            held = set().union(*(produced_values[source][kind][field] for source in sources))
            missing = [value for value in values if value not in held]
            assert not missing, "%s keeps %s : %s, which no %s document holds (they hold %s)" % (
                obj["id"], field, missing, kind, sorted(held))
            for source in sources:
                assert set(values) & produced_values[source][kind][field], "%s keeps nothing of the %s %s documents" % (
                    obj["id"], source, kind)
            checked += 1
    assert checked >= 4
