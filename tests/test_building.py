"""Document building in worker processes (kcing.building): same bytes, one object per fault, no orphans.

The worker processes are real (`python -c ...`); the payloads are the bundled samples and the
real upstream files in shared/data/upstream.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator, Tuple

import pytest

from kcing import building, cli, pipeline, wiring
from kcing.building import Builder, BuildAbandoned, WorkersKilled
from kcing.errors import RejectedInput, unexpected_failure
from kcing.ledger.ledger import Ledger
from kcing.records import BUILD, CHECKOUT, JOB, LAVA, UpstreamObject
from kcing.sinks.logstash import LogstashSink
from tests import building_targets
from tests.fakes.api_data import LEGACY, MAESTRO, REAL_CHECKOUT, REAL_JOB
from tests.fakes.legacy_data import boot_item, build_item, lava_json, synthetic_corpus
from tests.fakes.legacy_replica import LegacyReplica
from tests.fakes.list_sink import ListSink
from tests.feedrun import (SAMPLES, SETTING_PREFIXES, clean_environ, feed_environ, kcing, kcing_process, ledger_rows,
                           sample_objects)

UTC = timezone.utc
CREATED = datetime(2020, 11, 19, 7, 6, 18, tzinfo=UTC)
LAVA_FILES = sorted(LEGACY.glob("*.json"))
REAL_NODES = [(JOB, MAESTRO / REAL_JOB), (CHECKOUT, MAESTRO / REAL_CHECKOUT)]

needs_real_files = pytest.mark.skipif(not LAVA_FILES, reason="shared/data/upstream is absent")


class EagerBuilder(Builder):
    """Starts its workers at once and waits for them, so every object is built in one; remembered."""

    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        EagerBuilder.made.append(self)
        self.start(wait=True)


@pytest.fixture
def eager(monkeypatch):
    EagerBuilder.made = []
    monkeypatch.setattr(pipeline, "Builder", EagerBuilder)
    return EagerBuilder.made


@pytest.fixture
def spied(monkeypatch):
    """The feed's builders, kept for inspection (workers start as in production: lazily)."""
    made = []

    class Spied(Builder):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(pipeline, "Builder", Spied)
    return made


@pytest.fixture
def clean_settings(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith(SETTING_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def run_cli(*args) -> int:
    return cli.main(["feed_es", *args])


def ndjson_files(directory: Path) -> dict:
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.ndjson"))}


# Same bytes ---------------------------------------------------------------------------------

@needs_real_files
def test_workers_write_the_same_ndjson_as_building_in_the_feed_process(tmp_path, clean_settings, eager, monkeypatch):
    # With two posts in flight, two batches may reach a file in either order, with or without
    # workers; one at a time makes the files comparable byte for byte.
    monkeypatch.setenv("ES_PARALLEL_POSTS", "1")
    outputs = {}
    for workers in ("0", "2"):
        out = tmp_path / ("out-%s" % workers)
        db = str(tmp_path / ("kcing-%s.db" % workers))
        assert run_cli("--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(out), "--db", db,
                       "--workers", workers) in (0, 1)
        assert run_cli("--lavas", *map(str, LAVA_FILES), "--date", "2020-11-19", "--output", str(out),
                       "--db", db, "--workers", workers) in (0, 1)
        outputs[workers] = ndjson_files(out)
    assert outputs["2"] == outputs["0"]
    assert sum(len(body) for body in outputs["0"].values()) > 100_000
    # The comparison means something only if the second run built in workers.
    in_process, in_workers = eager[0], [builder for builder in eager if builder.workers == 2]
    assert in_process.workers == 0 and in_process.built_in_workers == 0
    assert len(in_workers) == 2
    assert in_workers[0].built_in_workers == len(sample_objects()) and in_workers[0].built_here == 0
    assert in_workers[1].built_in_workers == len(LAVA_FILES)


@needs_real_files
def test_real_nodes_and_lava_files_build_to_the_same_bytes_in_a_worker():
    cases = [(LAVA, path) for path in LAVA_FILES] + [(kind, path) for kind, path in REAL_NODES if path.exists()]
    here = Builder(0, LogstashSink.encode)
    with Builder(2, LogstashSink.encode) as workers:
        workers.start(wait=True)
        for kind, path in cases:
            for lab in (None, "lab-example"):
                expected = _outcome(here, kind, path.read_bytes(), lab)
                assert _outcome(workers, kind, path.read_bytes(), lab) == expected, path.name
        assert workers.built_in_workers == 2 * len(cases)


def _outcome(builder, kind, content, lab):
    try:
        built = builder.build(kind, content, CREATED, lab)
    except RejectedInput as error:
        return ("rejected", str(error))
    return (built.items, built.kept)


# One object per fault -----------------------------------------------------------------------

@needs_real_files
@pytest.mark.parametrize("signal_name, outcome", [("SIGSEGV", RejectedInput), ("SIGKILL", WorkersKilled)])
def test_a_file_that_kills_its_worker_is_refused_and_the_pool_recovers(monkeypatch, signal_name, outcome):
    """A fault (SIGSEGV) rejects the file; a kill (SIGKILL: the out-of-memory killer, an
    operator) leaves it to be built again by the next run."""
    content = LAVA_FILES[0].read_bytes()
    bad = content.replace(b"{", b"{ ", 1)
    monkeypatch.setenv(building_targets.CRASH_SHA256, hashlib.sha256(bad).hexdigest())
    monkeypatch.setenv(building_targets.CRASH_SIGNAL, signal_name)
    with Builder(2, LogstashSink.encode, target="tests.building_targets:crash_on_one_file") as builder:
        builder.start(wait=True)
        with pytest.raises(outcome) as refused:
            builder.build(LAVA, bad, CREATED, None)
        assert "twice" in str(refused.value) and signal_name in str(refused.value)
        builder.start(wait=True)  # the replacements
        good = builder.build(LAVA, content, CREATED, None)
        assert good.items == Builder(0, LogstashSink.encode).build(LAVA, content, CREATED, None).items
        assert builder.restarts == 2 and builder.built_in_workers == 1


@needs_real_files
def test_a_worker_killed_once_costs_nothing(tmp_path):
    content = LAVA_FILES[0].read_bytes()
    marker = tmp_path / "killed"
    with Builder(2, LogstashSink.encode, target="tests.building_targets:crash_once") as builder:
        builder.start(wait=True)
        built = builder.build(LAVA, content, CREATED, "crash-once:%s" % marker)
        assert marker.exists() and builder.restarts == 1
    assert built.items == Builder(0, LogstashSink.encode).build(LAVA, content, CREATED, None).items


@needs_real_files
def test_a_fault_in_one_object_rejects_it_with_the_reason_and_keeps_the_worker():
    content = LAVA_FILES[0].read_bytes()
    with Builder(2, LogstashSink.encode, target="tests.building_targets:fault_on_lab") as builder:
        builder.start(wait=True)
        pids = set()
        for lab in ("fault", "multiline", "pid", "pid", "pid", "pid"):
            with pytest.raises(RejectedInput) as rejected:
                builder.build(LAVA, content, CREATED, lab)
            reason = str(rejected.value)
            if lab == "fault":
                # The reason a fault in the feed's own process gives (pipeline.Feed._fetch).
                assert reason.startswith("documents could not be made: TypeError (unsupported operand in worker")
            elif lab == "multiline":
                assert reason == unexpected_failure("documents could not be made",
                                                    ValueError("first line\nsecond line " + "x" * 500))
                assert "\n" not in reason and len(reason) <= 160
            else:
                pids.add(reason.rsplit(" ", 1)[1])
        assert builder.restarts == 0 and len(pids) <= 2



def wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_a_stopping_run_kills_the_worker_stuck_building_and_leaves_its_object_to_the_next_run(tmp_path):
    """A stop (the first SIGINT or SIGTERM) waited for the object in a worker's hands to be built,
    however long that took: for ever when the worker hung, so that the run never ended."""
    content = (SAMPLES / "build" / "5fa2773359b5140d3b3a61d1.json").read_bytes()
    marker = tmp_path / "hanging"
    stop = threading.Event()
    outcome = {}

    def build():
        try:
            outcome["built"] = builder.build(BUILD, content, CREATED, "hang:%s" % marker)
        except Exception as error:  # noqa: BLE001 - the test looks at what it is
            outcome["error"] = error

    with Builder(2, LogstashSink.encode, target="tests.building_targets:hang_on_lab", abandon=stop.is_set) as builder:
        builder.start(wait=True)
        building_thread = threading.Thread(target=build)
        building_thread.start()
        wait_for(lambda: marker.exists() and marker.read_text(), "the worker never took the object")
        stop.set()
        building_thread.join(timeout=30)
        assert not building_thread.is_alive(), "the build still waits for the stuck worker"
        assert isinstance(outcome.get("error"), BuildAbandoned), outcome
        assert str(outcome["error"]) == "not built: the run is stopping"
        assert not Path("/proc/%s" % marker.read_text()).exists() and builder.restarts == 0
        # Nor is a build begun once the run stops: with no worker left, it would be made here.
        with pytest.raises(BuildAbandoned):
            builder.build(BUILD, content, CREATED, None)
        assert builder.built_here == 0


def test_a_worker_building_past_the_time_limit_is_killed_and_its_object_rejected(tmp_path):
    """A worker stuck in a parser held the run for ever, whatever the input (no signal came):
    now it is killed after the limit, its object rejected saying why, and the pool builds on."""
    content = (SAMPLES / "build" / "5fa2773359b5140d3b3a61d1.json").read_bytes()
    marker = tmp_path / "hanging"
    with Builder(2, LogstashSink.encode, target="tests.building_targets:hang_on_lab", timeout=0.5) as builder:
        builder.start(wait=True)
        with pytest.raises(RejectedInput) as refused:
            builder.build(BUILD, content, CREATED, "hang:%s" % marker, name="build stuck")
        assert str(refused.value) == ("building its documents took longer than KCING_BUILD_TIMEOUT (0.5 s): "
                                      "its worker process was killed")
        wait_for(lambda: not Path("/proc/%s" % marker.read_text()).exists(), "the stuck worker still runs")
        # Rejected at once, not handed to a second worker to hang there too.
        assert builder.restarts == 1
        assert len(builder.build(BUILD, content, CREATED, None).items) == 1


class OneStuckBuild:
    """A source of a build.json whose worker hangs, and another built as usual."""

    name = "samples"

    def __init__(self, marker: Path):
        self.objects = [UpstreamObject("samples", BUILD, "stuck", "stuck.json",
                                       facts={"listing": {"lab_name": "hang:%s" % marker}}),
                        UpstreamObject("samples", BUILD, "fine", "fine.json")]

    def list_objects(self):
        yield from self.objects

    def fetch(self, obj):
        return (SAMPLES / "build" / "5fa2773359b5140d3b3a61d1.json").read_bytes()


def test_a_feed_stopped_while_a_worker_hangs_ends_with_the_object_failed_not_rejected(tmp_path, monkeypatch):
    marker = tmp_path / "hanging"
    stop = threading.Event()
    monkeypatch.setattr(building, "TARGET", "tests.building_targets:hang_on_lab")
    monkeypatch.setattr(pipeline, "Builder", EagerBuilder)
    stopper = threading.Thread(target=lambda: (wait_for(marker.exists, "no worker took the object"), stop.set()))
    stopper.start()
    ledger = Ledger.open(str(tmp_path / "kcing.db"))
    ended = []
    feeding = threading.Thread(target=lambda: ended.append(pipeline.feed(
        OneStuckBuild(marker), ledger, ListSink(), pipeline.FeedOptions(threads=1, workers=2), stop=stop)), daemon=True)
    feeding.start()
    stopper.join()
    feeding.join(timeout=60)
    assert ended, "the stopped feed still waits for the stuck worker"
    summary = ended[0]
    assert summary.rejected == 0 and summary.failed == 1, summary.as_dict()
    assert "build stuck: not built: the run is stopping" in summary.problems


def test_a_feed_rejects_the_object_whose_build_outlasts_the_time_limit_and_delivers_the_rest(tmp_path, monkeypatch):
    marker = tmp_path / "hanging"
    monkeypatch.setattr(building, "TARGET", "tests.building_targets:hang_on_lab")
    monkeypatch.setattr(pipeline, "Builder", EagerBuilder)
    source = OneStuckBuild(marker)
    source.objects = [replace(obj, created=CREATED) for obj in source.objects]
    sink = ListSink()
    summary = pipeline.feed(source, Ledger.open(str(tmp_path / "kcing.db")), sink,
                            pipeline.FeedOptions(threads=2, workers=2, build_timeout=1))
    assert (summary.rejected, summary.delivered, summary.failed) == (1, 1, 0), summary.as_dict()
    assert ("build stuck: building its documents took longer than KCING_BUILD_TIMEOUT (1 s): its worker "
            "process was killed") in summary.problems
    assert sum(len(batch.items) for batch in sink.batches) == 1


def test_an_object_rejected_for_its_build_time_is_not_built_again_while_its_file_and_the_limit_stay(
        tmp_path, monkeypatch):
    # A legacy file rejected is listed again by every run within its days (fixed upstream, it is
    # delivered): one whose build outlasted KCING_BUILD_TIMEOUT would hold a worker as long in each.
    marker = tmp_path / "hanging"
    monkeypatch.setattr(building, "TARGET", "tests.building_targets:hang_on_lab")
    monkeypatch.setattr(pipeline, "Builder", EagerBuilder)
    ledger = Ledger.open(str(tmp_path / "kcing.db"))

    def run(timeout: float, source=None):
        source = source or OneStuckBuild(marker)
        source.objects = [replace(obj, created=CREATED) for obj in source.objects]
        return pipeline.feed(source, ledger, ListSink(), pipeline.FeedOptions(threads=2, workers=2,
                                                                               build_timeout=timeout))

    assert run(1).rejected == 1 and marker.exists()
    marker.unlink()
    again = run(1)
    assert (again.rejected, again.delivered) == (1, 0) and not marker.exists(), again.as_dict()
    assert ("build stuck: building its documents took longer than KCING_BUILD_TIMEOUT (1 s) in an earlier run, and "
            "the file is the same: not built again (raise KCING_BUILD_TIMEOUT above 1 s to build it)") in again.problems
    assert run(0.5).rejected == 1 and not marker.exists()  # a shorter limit: not built either
    # ... and still not by the run after that one: its reason still names the limit it outlasted.
    assert run(1).rejected == 1 and not marker.exists()

    # A limit raised builds it (which outlasts that one too), and so does a file changed upstream.
    assert run(1.5).rejected == 1 and marker.exists()
    marker.unlink()

    class Changed(OneStuckBuild):
        def fetch(self, obj):
            return super().fetch(obj) + b" "

    assert run(1.5, Changed(marker)).rejected == 1 and marker.exists()


def test_a_feed_rejects_the_object_whose_build_kills_workers_and_delivers_the_rest(
        tmp_path, clean_settings, eager, monkeypatch, capsys):
    victim = sample_objects()[3]
    monkeypatch.setenv(building_targets.CRASH_SHA256, hashlib.sha256(victim.path.read_bytes()).hexdigest())
    monkeypatch.setenv(building_targets.CRASH_SIGNAL, "SIGSEGV")
    monkeypatch.setattr(building, "TARGET", "tests.building_targets:crash_on_one_file")
    out = tmp_path / "out"
    code = run_cli("--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(out), "--db",
                   str(tmp_path / "kcing.db"), "--workers", "2")
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 1
    assert "problem: %s %s: building its documents ended the worker process twice" % (victim.kind, victim.upstream_id) \
        in printed
    # Each death is logged naming the object, not only its kind: a file that kills a worker once
    # (out of memory) and builds on the next must still be found.
    died = [line for line in captured.err.splitlines() if "a document-building worker died" in line]
    assert len(died) == 2 and all("building %s %s (" % (victim.kind, victim.upstream_id) in line for line in died), \
        captured.err
    assert "rejected 1" in printed and "delivered %d" % (len(sample_objects()) - 1) in printed
    assert eager[0].restarts == 2


def test_a_feed_leaves_the_object_whose_workers_were_killed_to_the_next_run(
        tmp_path, clean_settings, eager, monkeypatch, capsys):
    """Killed twice (SIGKILL, as the out-of-memory killer kills): failed, not rejected, so that
    it holds the API watermark like any failure; the next run delivers it."""
    victim = sample_objects()[3]
    monkeypatch.setenv(building_targets.CRASH_SHA256, hashlib.sha256(victim.path.read_bytes()).hexdigest())
    monkeypatch.setenv(building_targets.CRASH_SIGNAL, "SIGKILL")
    monkeypatch.setattr(building, "TARGET", "tests.building_targets:crash_on_one_file")
    db, out = tmp_path / "kcing.db", tmp_path / "out"
    arguments = ("--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(out), "--db", str(db),
                 "--workers", "2")
    assert run_cli(*arguments) == 1
    printed = capsys.readouterr().out
    assert "problem: %s %s: the worker process building its documents was killed twice" % (
        victim.kind, victim.upstream_id) in printed
    assert "rejected 0" in printed and "failed 1" in printed
    states = {(row["kind"], row["upstream_id"]): row["state"] for row in ledger_rows(db)}
    assert states.pop((victim.kind, victim.upstream_id)) == "failed"
    assert set(states.values()) == {"delivered"}
    monkeypatch.delenv(building_targets.CRASH_SHA256)
    assert run_cli(*arguments) == 0
    assert {row["state"] for row in ledger_rows(db)} == {"delivered"}


# Small runs and backlogs --------------------------------------------------------------------

def test_a_run_of_a_few_objects_starts_no_worker(tmp_path, clean_settings, spied):
    assert run_cli("--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out"),
                   "--db", str(tmp_path / "kcing.db"), "--workers", "2") in (0, 1)
    assert spied[0].workers == 2 and spied[0].built_here == len(sample_objects())
    assert spied[0].started == 0 and spied[0].built_in_workers == 0


def test_a_listed_backlog_starts_the_workers_before_building_here_took_its_share(tmp_path, clean_settings, spied,
                                                                                monkeypatch):
    # 40 small builds (a few documents each) never cost a quarter second of CPU here: the
    # listing's backlog alone starts the workers (which builds the rest depends on how soon
    # they are ready; these are done in a blink).
    today = datetime(2020, 11, 19).date()
    corpus = synthetic_corpus(today, builds=pipeline.BACKLOG_FOR_WORKERS + 8, lava_boots=0)
    with LegacyReplica(corpus, today=today) as replica:
        unused = SimpleNamespace(urls={route: "http://127.0.0.1:9" for route in ("build", "lava", "boot")})
        for name, value in feed_environ(replica, unused, tmp_path / "kcing.db", KCING_WORKERS="2").items():
            monkeypatch.setenv(name, value)
        assert run_cli("--output", str(tmp_path / "out")) == 0
    assert spied[0].started == 2 and spied[0]._spent_here < building.BUILD_SECONDS_BEFORE_WORKERS
    assert spied[0].built_here + spied[0].built_in_workers == corpus.count("build")


def large_lava_file() -> bytes:
    """A LAVA callback of IN_WORKER_BYTES or more: a sample's log made longer."""
    callback = json.loads(sorted((SAMPLES / "lava").glob("*.json"))[0].read_bytes())
    line = '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "[    1.234567] a kernel line"}\n'
    callback["log"] += line * (building.IN_WORKER_BYTES // len(line) + 1)
    return json.dumps(callback).encode()


def test_a_large_file_is_built_in_a_worker_even_before_any_backlog():
    """Building takes many times a file's size in memory: a large one never risks the feed's
    own process, where an out-of-memory kill would end the run."""
    content = large_lava_file()
    with Builder(2, LogstashSink.encode) as builder:
        built = builder.build(LAVA, content, CREATED, None)
        assert (builder.built_here, builder.built_in_workers, builder.started) == (0, 1, 2)
    assert built.items == Builder(0, LogstashSink.encode).build(LAVA, content, CREATED, None).items


def test_a_run_with_one_large_local_file_builds_it_in_a_worker(tmp_path, clean_settings, spied):
    big = tmp_path / "lava-json-large.json"
    big.write_bytes(large_lava_file())
    code = run_cli("--lavas", str(big), "--output", str(tmp_path / "out"), "--db", str(tmp_path / "kcing.db"),
                   "--workers", "2")
    assert code == 0
    assert (spied[0].built_here, spied[0].built_in_workers) == (0, 1)


def test_with_one_worker_a_large_file_is_built_in_it_and_the_others_here():
    """KCING_WORKERS=1 (auto's value on a machine with one usable core) builds in the feed's own
    process, but for a large file: an out-of-memory kill building one must end a worker, not the
    feed and its run. No backlog starts that worker, only a large file."""
    content = large_lava_file()
    small = sorted((SAMPLES / "lava").glob("*.json"))[0].read_bytes()
    with Builder(1, LogstashSink.encode) as builder:
        builder.start()
        assert builder.started == 0
        builder.build(LAVA, small, CREATED, None)
        assert (builder.built_here, builder.built_in_workers, builder.started) == (1, 0, 0)
        built = builder.build(LAVA, content, CREATED, None)
        builder.build(LAVA, small, CREATED, None)
        assert (builder.built_here, builder.built_in_workers, builder.started) == (2, 1, 1)
    assert built.items == Builder(0, LogstashSink.encode).build(LAVA, content, CREATED, None).items


def test_with_one_worker_a_file_of_exactly_in_worker_bytes_is_built_in_it(monkeypatch):
    # "IN_WORKER_BYTES or more": the bound itself is a large file.
    small = sorted((SAMPLES / "lava").glob("*.json"))[0].read_bytes()
    monkeypatch.setattr(building, "IN_WORKER_BYTES", len(small) + 1)
    with Builder(1, LogstashSink.encode) as builder:
        builder.build(LAVA, small, CREATED, None)
        assert (builder.built_here, builder.built_in_workers) == (1, 0)
        builder.build(LAVA, small + b" ", CREATED, None)
        assert (builder.built_here, builder.built_in_workers, builder.started) == (1, 1, 1)


def test_on_a_machine_with_one_usable_core_a_run_builds_a_large_local_file_in_a_worker(
        tmp_path, clean_settings, spied, monkeypatch):
    monkeypatch.setattr(wiring, "usable_cores", lambda: 1)  # what KCING_WORKERS=auto reads
    big = tmp_path / "lava-json-large.json"
    big.write_bytes(large_lava_file())
    assert run_cli("--lavas", str(big), "--output", str(tmp_path / "out"), "--db", str(tmp_path / "kcing.db")) == 0
    assert (spied[0].built_here, spied[0].built_in_workers, spied[0].started) == (0, 1, 1)
    assert run_cli("--lavas", str(big), "--output", str(tmp_path / "out-0"), "--db", str(tmp_path / "kcing-0.db"),
                   "--workers", "0") == 0
    assert (spied[1].built_here, spied[1].built_in_workers, spied[1].started) == (1, 0, 0)


@needs_real_files
def test_a_backlog_of_builds_starts_the_workers():
    content = max(LAVA_FILES, key=lambda path: path.stat().st_size).read_bytes()
    with Builder(2, LogstashSink.encode) as builder:
        threads = [threading.Thread(target=lambda: [builder.build(LAVA, content, CREATED, None) for _ in range(40)])
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert builder.built_here + builder.built_in_workers == 160
        assert builder.built_in_workers > 0
    assert _worker_pids(os.getpid()) == []


def _page_faults(pid: int) -> int:
    """Minor page faults of a process so far (field 10 of /proc/<pid>/stat)."""
    return int(Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[7])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc here")
def test_a_worker_keeps_the_memory_of_one_object_for_the_next():
    # A LAVA file of the real shapes with a 1,000-line log: with glibc's own malloc settings the
    # worker gave its memory back after each object and faulted it in again, ~480 pages an object.
    build = build_item("mainline", "v6.1", "arm64", "defconfig", CREATED)
    content = lava_json(boot_item(build, "lab-baylibre", "meson-gxbb-p200", CREATED), 400001, 1000, True)
    with Builder(2, LogstashSink.encode) as builder:
        builder.start(wait=True)
        for _ in range(10):  # the first objects grow the heap to what one takes
            builder.build(LAVA, content, CREATED, None)
        before = sum(_page_faults(process.pid) for process in builder._processes)
        for _ in range(30):
            builder.build(LAVA, content, CREATED, None)
        after = sum(_page_faults(process.pid) for process in builder._processes)
        assert builder.built_in_workers == 40
    assert (after - before) / 30 < 50


def test_a_users_own_malloc_setting_reaches_the_workers_unchanged(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    environment = building._worker_environment()
    assert environment["MALLOC_TRIM_THRESHOLD_"] == "131072" and "MALLOC_MMAP_THRESHOLD_" not in environment
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    environment = building._worker_environment()
    assert [environment[name] for name in building.WORKER_MALLOC_SETTINGS] == [str(building.WORKER_MALLOC_BYTES)] * 2


def test_the_readme_names_the_malloc_settings_workers_start_with():
    # An operator chasing a worker's memory finds them in its environment: the README says why.
    from tests.feedrun import REPO

    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert all("`%s`" % name in readme for name in building.WORKER_MALLOC_SETTINGS)
    assert "at %d MiB" % (building.WORKER_MALLOC_BYTES >> 20) in readme


def test_workers_setting_and_flag(tmp_path, clean_settings):
    from kcing import settings
    from kcing.wiring import feed_options
    assert feed_options(settings.load({}), False).workers == building.usable_cores()
    assert feed_options(settings.load({"KCING_WORKERS": "0"}), False).workers == 0
    assert feed_options(settings.load({}, overrides={"KCING_WORKERS": "3"}), False).workers == 3
    assert cli.main(["feed_es", "--workers", "-1", "--source", "samples"]) == 2


def test_the_build_time_limit_setting_reaches_the_feed(tmp_path, clean_settings, monkeypatch, capsys):
    from kcing import settings
    from kcing.wiring import feed_options
    assert feed_options(settings.load({}), False).build_timeout == 600
    assert feed_options(settings.load({"KCING_BUILD_TIMEOUT": "0"}), False).build_timeout == 0
    assert feed_options(settings.load({"KCING_BUILD_TIMEOUT": "2.5"}), False).build_timeout == 2.5
    monkeypatch.setenv("KCING_BUILD_TIMEOUT", "-1")
    assert cli.main(["feed_es", "--source", "samples"]) == 2
    assert "invalid KCING_BUILD_TIMEOUT='-1'" in capsys.readouterr().err


# No orphans ---------------------------------------------------------------------------------

def _worker_pids(parent: int) -> list:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and b"kcing.building" in cmdline and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture
def busy_run(tmp_path):
    """A `kcing feed_es` run in its own process over enough objects that its workers start."""
    corpus = synthetic_corpus(datetime(2020, 11, 19).date(), builds=200, lava_boots=1800, lava_log_lines=300)
    with LegacyReplica(corpus, today=datetime(2020, 11, 19).date()) as replica:
        unused = SimpleNamespace(urls={route: "http://127.0.0.1:9" for route in ("build", "lava", "boot")})
        env = feed_environ(replica, unused, tmp_path / "kcing.db", KCING_WORKERS="2")
        process = kcing_process(["feed_es", "--output", str(tmp_path / "out")], env, tmp_path)
        try:
            deadline = time.monotonic() + 60
            workers = []
            while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.05)
                workers = _worker_pids(process.pid)
            assert len(workers) == 2, "the run started no workers"
            yield process, workers
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_or_stopped_run_leaves_no_worker_behind(busy_run, signum):
    process, workers = busy_run
    time.sleep(0.3)
    os.kill(process.pid, signum)
    code = process.wait(timeout=30)
    if signum == signal.SIGTERM:
        assert code == 130
        # The run waited for its workers before it exited.
        assert not any(_alive(pid) for pid in workers)
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


def test_a_run_that_ends_leaves_no_worker_behind(busy_run):
    """The process ends without the interpreter's teardown (kcing/shutdown.py): its workers were
    waited for before, and its output is whole."""
    process, workers = busy_run
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert not any(_alive(pid) for pid in workers)
    assert stdout.rstrip().splitlines()[-1].startswith("feed_es: "), stdout
    assert "run finished: " in stderr, stderr


@needs_real_files
@pytest.mark.parametrize("executable", ["/nonexistent/python", "/bin/false"])
def test_workers_that_cannot_start_leave_the_building_to_the_feed_process(monkeypatch, executable):
    content = LAVA_FILES[0].read_bytes()
    monkeypatch.setattr(building.sys, "executable", executable)
    with Builder(2, LogstashSink.encode) as builder:
        builder.start(wait=True)
        built = builder.build(LAVA, content, CREATED, None)
        assert builder.built_here == 1 and builder.built_in_workers == 0
    assert built.items == Builder(0, LogstashSink.encode).build(LAVA, content, CREATED, None).items


def test_a_worker_that_could_not_start_is_reported_before_the_builder_is_closed(monkeypatch, caplog):
    """The warning of a worker that could not start came from a thread the builder did not wait
    for: a slow one came after the run's end, its summary printed. It comes before `close` returns."""
    death = building._Worker.death
    monkeypatch.setattr(building._Worker, "death", lambda worker: time.sleep(0.5) or death(worker))
    monkeypatch.setattr(building.sys, "executable", "/bin/false")
    with Builder(2, LogstashSink.encode) as builder:
        builder.start(wait=True)
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 2 and all(message.endswith("did not start (exited with status 1); building in the "
                                                       "feed's process") for message in warnings), warnings


# Workers that never get ready ---------------------------------------------------------------

@pytest.fixture
def unready_workers(tmp_path, monkeypatch) -> Iterator[Path]:
    """Worker processes whose start never ends, as with imports stuck on a hung file system: a
    sitecustomize on the PYTHONPATH they inherit sleeps in each interpreter started with -P, as
    workers are (this one was not). Returns the file each writes its pid to."""
    site = tmp_path / "site"
    site.mkdir()
    marker = tmp_path / "unready"
    (site / "sitecustomize.py").write_text(
        "import os, sys, time\n"
        "if sys.flags.safe_path:\n"
        "    with open(%r, 'a') as marker:\n"
        "        marker.write('%%d\\n' %% os.getpid())\n"
        "    while True:\n"
        "        time.sleep(60)\n" % str(marker))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    yield marker
    for pid in _unready_pids(marker):  # hung before they watch for their parent's end: none may outlive the test
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _unready_pids(marker: Path) -> list:
    return [int(line) for line in marker.read_text().split()] if marker.exists() else []


def _building(builder: Builder, content: bytes) -> Tuple[threading.Thread, dict]:
    """A thread building `content` as a LAVA file, and what it ends with ("built" or "error")."""
    outcome = {}

    def build():
        try:
            outcome["built"] = builder.build(LAVA, content, CREATED, None)
        except Exception as error:  # noqa: BLE001 - the test looks at what it is
            outcome["error"] = error

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    return thread, outcome


def test_a_large_file_waits_for_workers_that_never_get_ready_no_longer_than_the_time_limit(
        unready_workers, caplog, monkeypatch):
    """A large file waited for ever for a worker that started but never said it was ready,
    KCING_BUILD_TIMEOUT notwithstanding. Such a worker is killed at the limit, as one that hangs
    building is, and counted as one that did not start: the file is built in the feed's process."""
    monkeypatch.setattr(building, "WORKER_READY_MIN_SECONDS", 0.5)
    content = large_lava_file()
    with Builder(2, LogstashSink.encode, timeout=1) as builder:
        thread, outcome = _building(builder, content)
        thread.join(timeout=60)
        assert not thread.is_alive(), "the large file still waits for workers that never got ready"
        assert (builder.built_here, builder.built_in_workers) == (1, 0) and "built" in outcome, outcome
        pids = _unready_pids(unready_workers)
        assert len(pids) == 2 and not any(_alive(pid) for pid in pids)
    assert outcome["built"].items == Builder(0, LogstashSink.encode).build(LAVA, content, CREATED, None).items
    warnings = sorted(record.getMessage() for record in caplog.records if record.levelname == "WARNING")
    assert warnings == sorted("a document-building worker (process %d) did not start (not ready within 1 s "
                              "(KCING_BUILD_TIMEOUT, 0.5 s at least): killed); building in the feed's process" % pid
                              for pid in pids)


def test_workers_have_at_least_ten_seconds_to_get_ready_whatever_the_time_limit(unready_workers):
    """A build time limit of a second would kill workers still importing on a loaded machine, where
    several start at once: they have WORKER_READY_MIN_SECONDS to say they are ready."""
    with Builder(2, LogstashSink.encode, timeout=0.2) as builder:
        builder.start()
        wait_for(lambda: len(_unready_pids(unready_workers)) == 2, "the workers did not start")
        time.sleep(1)  # five times the build time limit: not yet killed
        assert all(_alive(pid) for pid in _unready_pids(unready_workers))


def test_a_stopping_run_does_not_wait_for_workers_that_never_get_ready(unready_workers):
    """With no time limit (KCING_BUILD_TIMEOUT=0), the first SIGINT or SIGTERM did not end a run
    whose large file waited for a worker that never got ready: only a second one did."""
    stop = threading.Event()
    with Builder(2, LogstashSink.encode, abandon=stop.is_set) as builder:
        thread, outcome = _building(builder, large_lava_file())
        wait_for(lambda: len(_unready_pids(unready_workers)) == 2, "the workers did not start")
        assert thread.is_alive()
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the stopping run still waits for workers that never got ready"
        assert isinstance(outcome.get("error"), BuildAbandoned), outcome
        assert builder.built_here == 0
        wait_for(lambda: not any(_alive(pid) for pid in _unready_pids(unready_workers)), "the workers still run")


def test_a_feed_whose_workers_never_get_ready_delivers_its_large_file(tmp_path, unready_workers):
    big = tmp_path / "lava-json-large.json"
    big.write_bytes(large_lava_file())
    done = kcing(["feed_es", "--lavas", str(big), "--output", str(tmp_path / "out"), "--db", str(tmp_path / "kcing.db"),
                  "--workers", "2"], clean_environ(KCING_BUILD_TIMEOUT="1"), tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "delivered 1, rejected 0, failed 0" in done.stdout, done.stdout
    assert done.stderr.count("did not start (not ready within 10 s (KCING_BUILD_TIMEOUT, 10 s at least): killed); "
                             "building in the feed's process") == 2, done.stderr


def test_a_worker_whose_feed_died_while_it_started_ends_without_a_traceback():
    # The feed killed (SIGKILL, the OOM killer) while its workers still imported: the "ready" a
    # worker then writes finds the pipe closed, which printed a traceback into the feed's log.
    worker = subprocess.Popen([sys.executable, *building._SAFE_PATH, "-c", building._WORKER_MAIN],
                              env=building._worker_environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    worker.stdout.close()  # the feed's end of the pipe, gone before the worker is ready
    _, stderr = worker.communicate(timeout=60)
    assert b"Traceback" not in stderr, stderr.decode()
    assert stderr == b""


def test_ctrl_c_while_the_workers_start_prints_no_traceback(tmp_path):
    """Ctrl-C sends SIGINT to the terminal's whole foreground group, the workers included: one
    caught while its interpreter started (before it ignores it) printed a KeyboardInterrupt
    traceback, and the feed said its worker did not start, where a stop says one line."""
    from tests.feedrun import REPO, reaped
    today = datetime(2020, 11, 19).date()
    corpus = synthetic_corpus(today, builds=100, lava_boots=100, lava_log_lines=100)
    unused = SimpleNamespace(urls={route: "http://127.0.0.1:9" for route in ("build", "lava", "boot")})
    with LegacyReplica(corpus, today=today) as replica:
        for attempt in range(2):
            env = feed_environ(replica, unused, tmp_path / ("kcing-%d.db" % attempt), KCING_WORKERS="2")
            process = subprocess.Popen(
                [sys.executable, str(REPO / "kcing.py"), "feed_es", "--output", str(tmp_path / ("out-%d" % attempt))],
                env=env, cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                start_new_session=True)  # its own process group, as a shell's foreground job
            with reaped(process):
                deadline = time.monotonic() + 60
                while process.poll() is None and not _worker_pids(process.pid):
                    assert time.monotonic() < deadline, "the run started no worker"
                time.sleep(0.02)
                os.killpg(process.pid, signal.SIGINT)
                _, stderr = process.communicate(timeout=60)
            assert process.returncode == 130, (process.returncode, stderr)
            assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
            assert "did not start" not in stderr, stderr
