"""The benchmark harness keeps working: a tiny run prints every target, and its yardsticks measure what they say.

No timing is asserted here: figures depend on the machine. These check that `make bench` can
run, and that the measuring parts (whole-tree peak RSS, the wire loop, the parsing floor, the
corpus shapes) behave as documented.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

from kcing.documents import documents_for
from tests.fakes.legacy_data import synthetic_corpus
from tests.fakes.logstash_emulator import LogstashCluster

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from harness import CountingLogstash, parsing_floor, wire_yardstick  # noqa: E402  (bench/)
from targets import shape_problems  # noqa: E402
from wire_post import write_batches  # noqa: E402

TARGET_LINE = re.compile(r"^([1-6])  .*  (PASS|FAIL|n/a)$")


def test_a_tiny_bench_run_prints_a_verdict_for_every_target():
    done = subprocess.run([sys.executable, str(BENCH / "targets.py"), "--objects", "10", "--cores-objects", "10",
                           "--log-lines", "20",
                           "--rss-sizes", "5,10", "--rss-log-lines", "7", "--ledger-rows", "100"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.split("== targets", 1)[1]
    verdicts = [TARGET_LINE.match(line) for line in table.splitlines() if line.strip()]
    assert all(verdicts), table
    assert sorted({match.group(1) for match in verdicts}) == ["1", "2", "3", "4", "5", "6"]
    assert "backlog of 10, " in table and "small run (5 objects)" in table  # each row says what it measured
    assert "top functions by own CPU time" in done.stdout  # the re-run breakdown
    assert re.search(r"corpus: 10 objects, [\d.]+ documents per object", done.stdout)
    assert "fastest of 6 passes, two before each feed run and two after" in done.stdout
    # The memory target's corpora, both of their own log lines (not the backlog's 20).
    assert "5 objects of 7 log lines each: peak RSS" in done.stdout
    assert "10 objects of 7 log lines each: peak RSS" in done.stdout


def test_each_run_of_the_backlog_feed_delivers_the_whole_corpus_anew():
    # The fastest run counts: a later run over the first one's ledger would skip everything
    # and pass for a fast feed.
    from feed_throughput import measure_legacy

    once = measure_legacy(5, 20, 2, wire=False, again=False)
    twice = measure_legacy(5, 20, 2, wire=False, again=False, feed_runs=2)
    assert len(twice.runs) == 2 and twice.run in twice.runs
    assert once.documents > 0 and twice.documents == once.documents
    assert twice.posted_bytes == once.posted_bytes
    assert all("delivered 5," in run.stdout for run in twice.runs)


def peak_rss_figures(script) -> dict:
    """What bench/peak_rss.py says of running `script`, which must succeed."""
    done = subprocess.run([sys.executable, str(BENCH / "peak_rss.py"), sys.executable, str(script)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_peak_rss_counts_every_process_of_the_tree(tmp_path):
    # The parent holds ~60 MB and its child ~60 MB at the same time: only a sum sees ~120 MB.
    script = tmp_path / "tree.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "block = bytearray(60 * 2**20)\n"
        "child = 'block = bytearray(60 * 2**20); import time; time.sleep(1)'\n"
        "subprocess.run([sys.executable, '-c', child])\n")
    figures = peak_rss_figures(script)
    assert figures["processes"] >= 2
    assert figures["largest_process_rss_mb"] < 110
    assert figures["peak_rss_mb"] >= 120


def test_peak_rss_tells_the_commands_own_cpu_from_its_childrens(tmp_path):
    # The child spins about three times as long as the parent: the split must say so.
    script = tmp_path / "split.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "def spin(seconds):\n"
        "    end = time.process_time() + seconds\n"
        "    while time.process_time() < end: pass\n"
        "spin(0.3)\n"
        "subprocess.run([sys.executable, '-c', 'import time\\nend = time.process_time() + 0.9\\n"
        "while time.process_time() < end: pass'])\n")
    figures = peak_rss_figures(script)
    assert 0.25 <= figures["own_cpu_seconds"] <= 0.6
    assert figures["cpu_seconds"] - figures["own_cpu_seconds"] >= 0.85


def test_the_wire_loop_posts_every_batch_from_its_own_process():
    batches = [("lava", 2, b'[{"a":1,"@metadata":{"index":"log-2020.11.19","id":"x%d"}},'
                          b'{"a":2,"@metadata":{"index":"log-2020.11.19","id":"y%d"}}]' % (n, n)) for n in range(5)]
    with CountingLogstash() as logstash:
        wire = wire_yardstick(batches, logstash.urls, concurrency=2, repeats=2)
        assert (wire.documents, wire.batches) == (10, 5)
        assert logstash.accepted == 20  # both passes, each document routed
        assert len(logstash.lava.requests) == 10


def test_the_wire_loop_fails_on_a_refused_batch(tmp_path):
    # A refusal must not pass for a fast post: the yardstick would then overstate the limit.
    batches_file = tmp_path / "batches"
    write_batches(batches_file, [("lava", 1, b'[{"a":1}]')])
    with LogstashCluster() as logstash:
        logstash.lava.fail_next(503, count=None)
        done = subprocess.run([sys.executable, str(BENCH / "wire_post.py"), str(batches_file),
                               json.dumps(logstash.urls), "1"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "503" in done.stderr


def test_the_parsing_floor_decodes_and_encodes_the_whole_corpus(tmp_path):
    corpus = synthetic_corpus(date(2020, 11, 19), builds=1, lava_boots=2, lava_log_lines=100)
    created = datetime(2020, 11, 19, tzinfo=timezone.utc)
    manifest, expected = [], 0
    for number, path in enumerate(corpus.paths()):
        kind = "build" if path.endswith("build.json") else "lava"
        local = tmp_path / ("%d.json" % number)
        local.write_bytes(corpus.read(path))
        manifest.append({"kind": kind, "path": str(local), "created": created.isoformat()})
        expected += len(documents_for(kind, local.read_bytes(), created))
    floor = parsing_floor(manifest)
    assert (floor["objects"], floor["documents"]) == (3, expected)
    assert floor["decode_cpu_seconds"] > 0 and floor["encode_cpu_seconds"] > 0
    assert floor["yaml"] == "libyaml CSafeLoader"


def test_floor_passes_made_at_different_times_count_each_library_at_its_fastest():
    from floor import fastest_of

    def measured(decode, encode, whole_log):
        return {"objects": 3, "documents": 40, "decode_by_library": decode, "encode_by_library": encode,
                "whole_log_yaml_decode_ms_per_lava_file": whole_log, "passes": 2}

    floor = fastest_of([measured({"json": 5.0, "orjson": 3.0}, {"json": 9.0, "orjson": 4.0}, 120.0),
                        measured({"json": 2.5, "orjson": 3.5}, {"json": 8.0, "orjson": 6.0}, 100.0)])
    assert floor["decode_by_library"] == {"json": 2.5, "orjson": 3.0}
    assert floor["encode_by_library"] == {"json": 8.0, "orjson": 4.0}
    assert (floor["decoder"], floor["decode_cpu_seconds"]) == ("json", 2.5)
    assert (floor["encoder"], floor["encode_cpu_seconds"]) == ("orjson", 4.0)
    assert (floor["objects"], floor["documents"], floor["runs"], floor["passes"]) == (3, 40, 2, 4)
    assert floor["whole_log_yaml_decode_ms_per_lava_file"] == 100.0


def test_the_generated_lava_files_have_the_real_shapes():
    corpus = synthetic_corpus(date(2020, 11, 19), builds=1, lava_boots=1, lava_log_lines=200)
    lava = next(path for path in corpus.paths() if "/lava-json-" in path)
    content = corpus.read(lava)
    assert shape_problems(json.loads(content)) == []
    kinds = [document.kind for document in documents_for("lava", content, datetime(2020, 11, 19, tzinfo=timezone.utc))]
    assert (kinds.count("boot"), kinds.count("test"), kinds.count("log")) == (1, 23, 200)
