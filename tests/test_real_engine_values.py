"""Upstream values at the edges of what Elasticsearch takes, through the real program into a real node.

Each case writes real upstream files (the bundled samples and real payloads, with one value
changed the way upstream data varies), runs `kcing feed_es --output` on them as a user would,
and replays the `_bulk` files it wrote into indices made by `setup_es`'s templates: every
record must be indexed, since a document the node refuses is one Logstash would drop.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Tuple

import pytest
import yaml
from elasticsearch import Elasticsearch

from kcing.admin.templates import install, templates_for
from tests.feedrun import SAMPLES, clean_environ, kcing
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
    records = []
    for path in sorted(out.glob("*.ndjson")):
        lines = path.read_text(encoding="utf-8").splitlines()
        records += [(json.loads(action), json.loads(source)) for action, source in zip(lines[0::2], lines[1::2])]
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
