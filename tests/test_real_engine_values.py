"""Upstream values at the edges of what Elasticsearch takes, through the real program into a real node.

Each case writes real upstream files (the bundled samples and real payloads, with one value
changed the way upstream data varies), runs `kcing feed_es --output` on them as a user would,
and replays the `_bulk` files it wrote into indices made by `setup_es`'s templates: every
record must be indexed, since a document the node refuses is one Logstash would drop.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Tuple

import pytest
import requests
import yaml
from elasticsearch import Elasticsearch

from kcing.admin.templates import install, templates_for
from kcing.documents import documents_for
from kcing.errors import RejectedInput
from kcing.sinks.encoding import ndjson_record
from kcing.sinks.ndjson import OUTPUT_MAX_BYTES
from tests.fakes.api_data import sample_envelopes
from tests.feedrun import SAMPLES, clean_environ, kcing, ledger_rows
from tests.realcorpus import split_records
from tests.test_real_engine_corpus import kuery_filter, saved_objects, to_aggregation

pytestmark = pytest.mark.realengine

needs_samples = pytest.mark.skipif(not (SAMPLES / "manifest.json").is_file(), reason="samples/ has no manifest")

# Values a `float` field (Elasticsearch's 32-bit float) cannot hold, though JSON and Python can.
BEYOND_FLOAT = [1e39, "1e300", -3.5e38, "3.5e38"]


def sample(kind: str) -> Tuple[dict, str]:
    """(the first sample file of `kind` as JSON, its day from the manifest)."""
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    entry = next(item for item in manifest["objects"] if item["kind"] == kind)
    return json.loads((SAMPLES / entry["path"]).read_text()), entry["date"][:10]


def fed_records(tmp_path: Path, option: str, files: List[Path], day: str) -> List[Tuple[dict, dict]]:
    """The (action, document) records `kcing feed_es --output` wrote for `files`."""
    out = tmp_path / "out"
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    done = kcing(["feed_es", "--output", str(out), "--date", day, option, *map(str, files)], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    records = [record for path in sorted(out.glob("*.ndjson")) for record in split_records(path.read_text("utf-8"))]
    assert records
    return records


def item_errors(node, records: List[Tuple[dict, dict]]) -> List[str]:
    """Replay `records` into the node, as `curl --data-binary @file _bulk` would: the item errors."""
    client = Elasticsearch(node.url, request_timeout=120)
    install(client, node.url, templates_for(None), None)
    operations = [part for record in records for part in record]
    answer = client.bulk(operations=operations)
    return ["%s: %s" % (item["index"]["_id"], item["index"]["error"]) for item in answer["items"]
            if item["index"].get("error")]


def write(path: Path, record: dict) -> Path:
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


@needs_samples
@pytest.mark.parametrize("value", BEYOND_FLOAT, ids=repr)
def test_a_build_time_beyond_a_float_is_left_out_not_refused_by_the_node(real_es, tmp_path, value):
    build, day = sample("build")
    build["build_time"] = value
    records = fed_records(tmp_path, "--builds", [write(tmp_path / "build.json", build)], day)
    assert item_errors(real_es, records) == []
    assert "build_time" not in records[0][1]


@needs_samples
@pytest.mark.parametrize("value", BEYOND_FLOAT, ids=repr)
def test_a_boot_time_beyond_a_float_is_null_not_refused_by_the_node(real_es, tmp_path, value):
    boot, day = sample("boot")
    boot["boot_time"] = value
    records = fed_records(tmp_path, "--boots", [write(tmp_path / "boot-board.json", boot)], day)
    assert item_errors(real_es, records) == []
    assert records[0][1]["boot_time"] is None  # "not measured", as a boot_time that is not a number


@needs_samples
@pytest.mark.parametrize("value", BEYOND_FLOAT, ids=repr)
def test_a_test_measurement_beyond_a_float_is_null_not_refused_by_the_node(real_es, tmp_path, value):
    lava, day = sample("lava")
    suite = next(name for name in lava["results"] if name != "lava")
    cases = yaml.safe_load(lava["results"][suite])
    cases[0]["measurement"] = value
    lava["results"][suite] = yaml.safe_dump(cases)
    records = fed_records(tmp_path, "--lavas", [write(tmp_path / "lava-json-board.json", lava)], day)
    assert item_errors(real_es, records) == []
    measured = [source for _, source in records if source.get("name") == cases[0]["name"]
                and source.get("suite") == suite]
    assert measured and all(source["measurement"] is None for source in measured)


def transitions(client: Elasticsearch) -> set:
    """The rows of *Boot results kernel after kernel* (the regressions dashboard's table for legacy
    boots) that read as the dashboard's help says a pass-to-fail transition reads: the newest
    kernel of a row shows `fail`, the kernel before it `pass`. A row is named by its keys above
    the kernel, its board first."""
    vis = saved_objects()["kcing-legacy-transitions"]
    search = json.loads(vis["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    aggregation, buckets = to_aggregation(json.loads(vis["attributes"]["visState"])["aggs"])
    answer = client.search(index="boot-*", query=kuery_filter(search.get("query")), aggs=aggregation, size=0)
    fields = [agg["params"]["field"] for agg in buckets]
    assert fields[-2:] == ["kernel", "boot_result"]
    found = set()

    def rows(level: dict, depth: int, keys: tuple) -> None:
        agg = buckets[depth]
        if fields[depth] == "kernel":  # newest first: the results of each kernel of this row
            results = [{result["key"] for result in kernel["b" + buckets[depth + 1]["id"]]["buckets"]}
                       for kernel in level["b" + agg["id"]]["buckets"]]
            if len(results) >= 2 and "fail" in results[0] and "pass" in results[1]:
                found.add(keys)
            return
        for bucket in level["b" + agg["id"]]["buckets"]:
            rows(bucket, depth + 1, keys + (bucket["key"],))

    rows(answer["aggregations"], 0, ())
    return found


@needs_samples
def test_boot_results_kernel_after_kernel_show_a_transition_only_where_one_configuration_in_one_lab_regressed(
        real_es, tmp_path):
    """A board boots many configurations, in more than one lab: a kernel that failed only with a
    configuration booted for the first time, or only in another lab, is no regression of the
    board's, and a table that mixed them read as one."""
    boot, _ = sample("boot")
    # (board, defconfig_full, lab, kernel, result); the kernels are a day apart, the newer listed first
    boots = [
        ("regressed", "defconfig", "lab-a", "v1", "PASS"), ("regressed", "defconfig", "lab-a", "v2", "FAIL"),
        ("steady", "defconfig", "lab-a", "v1", "PASS"), ("steady", "defconfig", "lab-a", "v2", "PASS"),
        ("steady", "defconfig+kselftest", "lab-a", "v2", "FAIL"),  # a configuration new in v2
        ("steady", "defconfig", "lab-b", "v2", "FAIL"),  # a lab that booted v2 alone
        ("offline", "defconfig", "lab-a", "v1", "PASS"), ("offline", "defconfig", "lab-a", "v2", "OFFLINE"),
        ("failing", "defconfig", "lab-a", "v1", "FAIL"), ("failing", "defconfig", "lab-a", "v2", "FAIL"),
    ]
    records = []
    for kernel, day in (("v2", "2020-11-20"), ("v1", "2020-11-19")):
        directory = tmp_path / kernel
        directory.mkdir()
        files = []
        for number, (board, config, lab, _, result) in enumerate(row for row in boots if row[3] == kernel):
            report = dict(boot, board=board, defconfig_full=config, lab_name=lab, kernel=kernel, git_describe=kernel,
                          boot_result=result,
                          file_server_resource="next/master/%s/arm64/%s/gcc-8" % (kernel, config))
            files.append(write(directory / ("boot-%d.json" % number), report))
        records += fed_records(directory, "--boots", files, day)
    assert item_errors(real_es, records) == []
    client = Elasticsearch(real_es.url, request_timeout=120)
    client.indices.refresh(index="boot-*")
    assert {keys[0] for keys in transitions(client)} == {"regressed"}


# -- every way a real value varies, through the real program into the node -----------------------

# How upstream values vary (upstream.md §1.2, the pitfalls of §1.11 and §2.12, and what the
# models allow): missing or null, numbers as strings and strings that look like numbers or dates,
# integers beyond 64 bits, exponents, booleans as words, empty values, objects where scalars are
# usual and the reverse, keywords beyond the 32766 bytes of a term, control and non-ASCII
# characters, dates at the edges, and keys Elasticsearch or Logstash hold for themselves.
DELETED = object()
VARIED = [
    DELETED, None, "", [], {}, "None", 0, -1, 2 ** 63, -(2 ** 63) - 1, 10 ** 30, str(2 ** 64), 1.5e300, 1e-300,
    "1e5", "3.5e38", "NaN", -0.0, True, "False", "yes", "12345", "4.30", "2020-11-19", "1970-01-01T00:00:00Z",
    "2100-01-01T00:00:00+05:30", "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z", "2020-11-19T07:06:00.123456789",
    "2020-11-19 07:06:00.5-03:00", 1605769560000,
    {"_id": "x", "_index": "i", "@timestamp": "y", "@metadata": {"id": "z"}, "a.b": 1, "tags": "t", "type": 3, "host": "h"},
    [1, "a", None, True], [{"a": 1}], "x" * 40000, "\U0001F600" * 9000, "a\x00b\x1f\u2028\x85\x1cc\u202e", "\ud800x",
]


def varied(record: dict, path: Tuple) -> List[dict]:
    """`record` with the value at `path` (keys and list positions) replaced by each of VARIED."""
    copies = []
    for value in VARIED:
        copy = json.loads(json.dumps(record))
        parent = copy
        for step in path[:-1]:
            parent = parent[step]
        if value is DELETED:
            if path[-1] not in parent:
                continue
            del parent[path[-1]]
        else:
            parent[path[-1]] = value
        copies.append(copy)
    return copies


def lava_parts(lava: dict) -> dict:
    """A LAVA callback's YAML texts as what they hold: its definition's metadata, its `lava`
    suite's first cases, and a few log lines (one of them a results line, whose msg is a mapping)."""
    parts = dict(lava)
    parts["definition"] = {"metadata": yaml.safe_load(lava["definition"])["metadata"]}
    cases = yaml.safe_load(lava["results"]["lava"])
    parts["results"] = {"lava": [case for case in cases if case["name"] in ("job", "auto-login-action")]}
    log = lava["log"].splitlines()
    parts["log"] = [json.loads(line[2:]) for line in log[:2]] + [{"dt": "2020-11-04T16:46:24.659917", "lvl": "results",
                                                                "msg": {"case": "job", "result": "pass"}}]
    return parts


def lava_file(parts: dict) -> dict:
    """The callback `lava_parts` read, written back as LAVA writes it: one JSON mapping a log line."""
    lava = dict(parts)
    if isinstance(parts["definition"], dict):
        lava["definition"] = yaml.safe_dump(parts["definition"], allow_unicode=True)
    if isinstance(parts["results"], dict):
        lava["results"] = {suite: yaml.safe_dump(cases, allow_unicode=True) for suite, cases in parts["results"].items()}
    if isinstance(parts["log"], list):
        lava["log"] = "".join("- %s\n" % json.dumps(item) for item in parts["log"])
    return lava


VARIED_PATHS = {
    # Every mapped type: keywords (identity and not), long, float, boolean, date, text, a keyword list.
    "build": [("arch",), ("git_describe",), ("build_platform",), ("build_platform", 1), ("build_threads",),
              ("build_time",), ("build_result",), ("kconfig_fragments",), ("vmlinux_file_size",), ("dtb_dir",)],
    "boot": [("board",), ("lab_name",), ("boot_time",), ("boot_warnings",), ("boot_retries",), ("dtb_append",),
             ("fastboot",), ("boot_result",), ("boot_result_description",), ("dtb_addr",)],
    "lava": [("id",), ("end_time",), ("priority",), ("status",), ("actual_device_id",), ("metadata",),
             ("definition", "metadata", "device.type"), ("definition", "metadata", "platform.mach"),
             ("results", "lava", 1, "measurement"), ("results", "lava", 1, "logged"), ("results", "lava", 1, "level"),
             ("results", "lava", 1, "log_start_line"), ("results", "lava", 1, "metadata"), ("log", 0, "dt"),
             ("log", 0, "lvl"), ("log", 0, "msg"), ("log", 2, "msg")],
}
OPTIONS = {"build": "--builds", "boot": "--boots", "lava": "--lavas"}
FILE_NAMES = {"build": "build.json", "boot": "boot-board.json", "lava": "lava-json-board.json"}


@needs_samples
@pytest.mark.parametrize("kind", sorted(VARIED_PATHS))
def test_a_real_file_with_any_value_varied_is_stored_by_the_node_or_refused_by_name(real_es, tmp_path, kind):
    """Through Logstash a document the node refuses is acknowledged, then dropped: each varied
    file must give documents the node stores whole, or be rejected with its reason."""
    record, day = sample(kind)
    base = lava_parts(record) if kind == "lava" else record
    files = []
    for path in VARIED_PATHS[kind]:
        for number, copy in enumerate(varied(base, path)):
            directory = tmp_path / "in" / ("%s-%d" % ("-".join(map(str, path)), number))
            directory.mkdir(parents=True)
            files.append(write(directory / FILE_NAMES[kind], lava_file(copy) if kind == "lava" else copy))
    out = tmp_path / "out"
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"))
    done = kcing(["feed_es", "-q", "--output", str(out), "--date", day, OPTIONS[kind], *map(str, files)], env, tmp_path,
                 timeout=600)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    rows = {row["sha256"]: row for row in ledger_rows(tmp_path / "kcing.db")}
    # A variation that changed nothing is the same file again, one row.
    assert set(rows) == {hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    refused = [row for row in rows.values() if row["state"] != "delivered"]
    assert all(row["state"] == "rejected" and row["last_error"] for row in refused)
    assert "rejected %d," % len(refused) in done.stdout  # counted in the run's summary, each with its reason
    records = [record for path in sorted(out.glob("*.ndjson")) for record in split_records(path.read_text("utf-8"))]
    assert len(records) == sum(row["document_count"] for row in rows.values() if row["state"] == "delivered")
    assert len(refused) < len(files) / 2  # most variations are data, not reasons to refuse a file
    assert item_errors(real_es, records) == []


# A KernelCI API node's members as upstream.md §2.5 models them: each varied in the nodes of
# every kind (a path a node lacks is added), the documents made in one process as the feed makes
# them, then replayed into the node as an `--output` file would be.
NODE_PATHS = [("name",), ("group",), ("path",), ("path", 0), ("result",), ("state",), ("created",), ("updated",),
              ("parent",), ("artifacts",), ("owner",), ("data",), ("data", "kernel_revision"),
              ("data", "kernel_revision", "describe"), ("data", "kernel_revision", "version"),
              ("data", "kernel_revision", "commit"), ("data", "arch"), ("data", "defconfig"),
              ("data", "config_full"), ("data", "compiler"), ("data", "platform"), ("data", "runtime"),
              ("data", "job_id"), ("data", "error_code"), ("data", "error_msg"), ("data", "misc"),
              ("data", "misc", "measurement")]


def node_varied(envelope: dict, path: Tuple) -> List[dict]:
    """The envelope with its node's value at `path` replaced by each of VARIED (the mappings on
    the way made when missing), or none where the way passes through a value that is no mapping."""
    parent = envelope["node"]
    for step in path[:-1]:
        if isinstance(parent, dict) and not isinstance(parent.get(step), (dict, list)):
            parent[step] = {}
        if isinstance(parent, list) and not parent:
            return []
        parent = parent[step]
    if not isinstance(parent, (dict, list)):
        return []
    return [dict(envelope, node=node) for node in varied(envelope["node"], path)]


def test_an_api_node_with_any_value_varied_gives_documents_the_node_stores_or_a_reason(real_es):
    envelopes = {}
    for kind, envelope in sample_envelopes(datetime(2024, 10, 16, tzinfo=timezone.utc)):
        if kind != "checkout":  # a checkout makes no document
            envelopes.setdefault(kind, envelope)  # one node of each kind: kbuild, job, test, regression
    records, refused, made, numbers = [], [], 0, itertools.count(1)
    for kind, envelope in sorted(envelopes.items()):
        for path in NODE_PATHS:
            for changed in node_varied(json.loads(json.dumps(envelope)), path):
                # Each variation a node of its own: one node's versions would replace each other.
                changed["node"]["id"] = "%024x" % next(numbers)
                try:
                    documents = documents_for(kind, json.dumps(changed).encode("utf-8"))
                except RejectedInput as refusal:
                    refused.append("%s %s: %s" % (kind, path, refusal))
                    continue
                made += bool(documents)
                records += [tuple(json.loads(line) for line in ndjson_record(document).split(b"\n")[:2])
                            for document in documents]
    assert made > 4 * len(refused), refused  # most variations are data, not reasons to refuse a node
    assert len(records) > 2000
    print("%d variations made documents, %d refused, %d documents" % (made, len(refused), len(records)))
    assert item_errors(real_es, records) == []


# -- what a user does with the --output files, and reads of them in Discover ----------------------

def post_whole(url: str, path: Path) -> Tuple[int, dict]:
    """`curl -H 'Content-Type: application/x-ndjson' --data-binary @FILE URL/_bulk`: (status, answer)."""
    answered = requests.post(url + "/_bulk", data=path.read_bytes(), timeout=300,
                             headers={"Content-Type": "application/x-ndjson"})
    return answered.status_code, answered.json()


@needs_samples
def test_an_output_file_of_the_default_size_is_taken_whole_by_bulk(real_es, tmp_path):
    """The README's replay, `curl --data-binary @lava.ndjson .../_bulk`, of a file as large as
    kcing makes them by default. Past http.max_content_length, a node refuses (429) a request
    whose documents need more than a tenth of its heap: a 100 MB file was refused by a node of
    1 GB of heap (docker-compose.yml's) and by this one (512 MB)."""
    lava, day = sample("lava")
    inputs = tmp_path / "in"
    inputs.mkdir()
    # The sample LAVA job makes 1.2 MB of documents: enough jobs for more than one file.
    files = [write(inputs / ("lava-json-board-%d.json" % number), dict(lava, id=lava["id"] + 1 + number))
             for number in range(OUTPUT_MAX_BYTES // 1_000_000 + 2)]
    out = tmp_path / "out"
    done = kcing(["feed_es", "-q", "--output", str(out), "--date", day, "--lavas", *map(str, files)],
                 clean_environ(KCING_DB=str(tmp_path / "kcing.db")), tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    first = out / "lava.ndjson"
    assert first.stat().st_size > OUTPUT_MAX_BYTES * 0.8 and (out / "lava.part000002.ndjson").is_file()
    install(Elasticsearch(real_es.url, request_timeout=300), real_es.url, templates_for(None), None)
    status, answer = post_whole(real_es.url, first)
    assert status == 200, "the node refused the whole file: %d %s" % (status, json.dumps(answer)[:400])
    assert answer["errors"] is False


# What Kibana's Discover adds to every search while `doc_table:highlight` is on, its default
# (Kibana 8.15, src/plugins/field_formats/common/utils/highlight/highlight_request.ts).
DISCOVER_HIGHLIGHT = {"pre_tags": ["@kibana-highlighted-field@"], "post_tags": ["@/kibana-highlighted-field@"],
                      "fields": {"*": {}}, "fragment_size": 2 ** 31 - 1}
# A console line without a line break for more than a million characters: a progress bar drawn
# with carriage returns only, a base64 dump, a runaway loop printing on one line.
LONG_LINE = "Kernel panic - not syncing: " + "progress 42% \r" * 80_000


@needs_samples
def test_a_search_of_the_log_lines_answers_when_one_line_is_longer_than_a_million_characters(real_es, tmp_path):
    """Highlighting a text field analyses it again unless its offsets are indexed, which a node
    refuses past index.highlight.max_analyzed_offset (1,000,000 characters) with an error for the
    whole search: every Discover search of log-* whose hits held such a line showed no line at all."""
    lava, day = sample("lava")
    log = lava["log"].splitlines(keepends=True)
    dt = json.loads(log[-1][2:])["dt"]
    for message in (LONG_LINE, "Kernel panic - short line"):
        log.append("- %s\n" % json.dumps({"dt": dt, "lvl": "target", "msg": message}))
    records = fed_records(tmp_path, "--lavas", [write(tmp_path / "lava-json-board.json", dict(lava, log="".join(log)))],
                          day)
    assert any(source.get("message") == LONG_LINE for _, source in records)
    assert item_errors(real_es, records) == []
    client = Elasticsearch(real_es.url, request_timeout=120)
    client.indices.refresh(index="log-*")
    # KQL `panic` (free text, as typed in Discover's search bar) and `message : panic`.
    for query in ({"multi_match": {"query": "panic", "type": "best_fields", "lenient": True}},
                  {"match": {"message": "panic"}}):
        found = client.search(index="log-*", query=query, highlight=DISCOVER_HIGHLIGHT, size=500)
        messages = [hit["_source"]["message"] for hit in found["hits"]["hits"]]
        assert "Kernel panic - short line" in messages and LONG_LINE in messages
