"""Memory and disk stay bounded.

While the sink does not take batches (Logstash answering 429 or 503, or slow), the downloads
wait for it: the documents built and waiting stay within ES_QUEUE_MAX_BYTES, whatever the number
of download threads, instead of every object handed to a thread being downloaded and built.
An `--output` file stays under what Elasticsearch takes in one `_bulk` request."""
from __future__ import annotations

import json
from array import array
import sys
import threading
import tracemalloc
from pathlib import Path

from kcing import building
from kcing import pipeline
from kcing.building import Builder
from kcing.commands._shared import print_summary
from kcing.errors import ConfigError, UpstreamError
from kcing.ledger.ledger import Ledger
from kcing.pending import PendingBytes
from kcing.pipeline import FeedOptions, feed
from kcing.records import LAVA, UpstreamObject
from kcing.sinks.batching import Batcher
from tests.fakes.list_sink import ListSink
from kcing.sinks.ndjson import is_action_line
from tests.feedrun import SAMPLES, clean_environ, kcing

OBJECTS = 40
THREADS = 6


class ManyLavaFiles:
    """A source of OBJECTS LAVA files, counting the downloads."""

    name = "samples"

    def __init__(self, content: bytes):
        self.content = content
        self.objects = [UpstreamObject("samples", LAVA, "lava-%d" % number, "lava-%d.json" % number)
                        for number in range(OBJECTS)]
        self.fetched = 0
        self._lock = threading.Lock()

    def list_objects(self):
        yield from self.objects

    def fetch(self, obj):
        with self._lock:
            self.fetched += 1
        return self.content


class StalledSink(ListSink):
    """A sink whose first batch is not taken until `release` (a Logstash answering 429 meanwhile);
    it notes how many objects were downloaded by then."""

    def __init__(self, source: ManyLavaFiles, enough: int):
        super().__init__()
        self.source = source
        self.enough = enough
        self.fetched_while_stalled = None
        self._first = threading.Lock()

    def send(self, batch):
        if self._first.acquire(blocking=False):
            # Wait as a stalled Logstash makes the feed wait: until more downloads than the bound
            # went on meanwhile (the bound is broken), or long enough for them to have.
            waited = 0.0
            while self.source.fetched < self.enough and waited < 3.0:
                threading.Event().wait(0.05)
                waited += 0.05
            self.fetched_while_stalled = self.source.fetched
        super().send(batch)


def lava_sample() -> bytes:
    return sorted((SAMPLES / "lava").glob("*.json"))[0].read_bytes()


def test_downloads_wait_while_the_sink_holds_back_the_documents_already_built():
    source = ManyLavaFiles(lava_sample())
    # Room for no object's documents beyond the one being sent: each thread downloads at most the
    # object it had started when the sink stalled; before the bound every object handed to a
    # thread (twice the threads, and one) was downloaded and its documents waited in memory.
    bound = THREADS + 1
    sink = StalledSink(source, enough=bound + 1)
    summary = feed(source, Ledger.open(":memory:"), sink,
                   FeedOptions(threads=THREADS, posts_in_flight=1, max_docs=1, queue_max_bytes=1024))
    assert sink.fetched_while_stalled is not None and sink.fetched_while_stalled <= bound, sink.fetched_while_stalled
    assert (summary.delivered, summary.exit_code) == (OBJECTS, 0)  # and then everything went on


def test_the_budget_lets_documents_wait_up_to_it_then_holds_the_downloads():
    source = ManyLavaFiles(lava_sample())
    sink = StalledSink(source, enough=OBJECTS)
    options = FeedOptions(threads=2, posts_in_flight=1, max_docs=1)
    # The bytes one object's documents take, as the feed counts them.
    with Builder(0, ListSink.encode, separator=ListSink.separator) as builder:
        one = len(builder.build(LAVA, source.content, None, None).encoded.data)
    options.queue_max_bytes = 3 * one + 1  # room for four objects' documents, not five
    summary = feed(source, Ledger.open(":memory:"), sink, options)
    # The object being sent, four waiting, and one more per thread started before the last was built.
    assert sink.fetched_while_stalled <= 1 + 4 + 2, sink.fetched_while_stalled
    assert sink.fetched_while_stalled >= 4  # the budget is used, not only the object sent next
    assert (summary.delivered, summary.exit_code) == (OBJECTS, 0)


def test_es_queue_max_bytes_is_the_budget_the_feed_runs_with():
    from kcing import settings
    from kcing.wiring import feed_options
    assert feed_options(settings.load({"ES_QUEUE_MAX_BYTES": "5000"}), False).queue_max_bytes == 5000
    assert feed_options(settings.load({}), False).queue_max_bytes == settings.SPECS["ES_QUEUE_MAX_BYTES"].default


def test_the_progress_eta_counts_the_documents_still_to_send_not_only_the_downloads():
    """Downloads run ahead of the posts by up to ES_QUEUE_MAX_BYTES (200 MB): a run throttled by
    ES_MAX_DOCS_PER_SECOND, or held back by a slow Logstash, had every object downloaded within
    seconds, and its progress said `ETA 0s` with nothing sent, then no ETA at all for the rest of
    the run. The ETA is now the later of the downloads' end and the built documents' end."""
    now = [0.0]
    run = pipeline.Feed(ManyLavaFiles(b""), Ledger.open(":memory:"), ListSink(), FeedOptions(),
                        clock=lambda: now[0])
    run.listing = type("FinishedListing", (), {"finished": True})()
    s = run.summary
    s.listed, s.downloaded, run.documents_built, now[0] = OBJECTS, OBJECTS - 1, 2000, 10.0
    assert "ETA" not in run._progress_text()  # 2000 documents built, none sent yet: no pace to go by
    s.downloaded, s.documents, now[0] = OBJECTS, 500, 20.0
    assert run._progress_text().endswith(", ETA 1m00s")  # 1500 more documents at 25/s
    s.downloaded, run.documents_built = OBJECTS // 4, 500
    assert run._progress_text().endswith(", ETA 1m00s")  # every document sent; 30 more downloads at 0.5/s
    # Slow downloads of one document each: none sent yet, as the first batch still fills.
    s.documents, run.documents_built = 0, OBJECTS // 4
    run.batchers["build"] = Batcher("build", 500, 5_000_000)
    run.batchers["build"].current.count = OBJECTS // 4
    assert run._progress_text().endswith(", ETA 1m00s")


class RefusingSink(ListSink):
    """A sink that refuses for good (a wrong URL, credentials), once the downloads had time to
    fill the budget and wait for room; it notes how many objects were downloaded by then."""

    def __init__(self, source: ManyLavaFiles):
        super().__init__()
        self.source = source
        self.fetched_when_refused = None

    def send(self, batch):
        threading.Event().wait(0.5)
        self.fetched_when_refused = self.source.fetched
        raise ConfigError("the sink refused the batch")


def test_a_run_ending_while_downloads_wait_for_room_ends_at_once():
    """The downloads waiting for room when the run stops are let go, without downloading: the
    run waits for the downloads under way before it ends, and those would wait for room no
    batch frees."""
    source = ManyLavaFiles(lava_sample())
    sink = RefusingSink(source)
    summary = []
    running = threading.Thread(target=lambda: summary.append(feed(
        source, Ledger.open(":memory:"), sink,
        FeedOptions(threads=THREADS, posts_in_flight=1, max_docs=1, queue_max_bytes=1024))), daemon=True)
    running.start()
    running.join(30)
    assert not running.is_alive(), "the run waited for downloads waiting for room"
    assert isinstance(summary[0].stopped_by, ConfigError)
    # Those let go downloaded nothing more (one admitted just before the refusal may still have).
    assert source.fetched <= sink.fetched_when_refused + 1, (source.fetched, sink.fetched_when_refused)


def test_the_next_object_to_be_taken_never_waits_for_room():
    """An object larger than the budget, next to be sent: it is downloaded (else the feed, waiting
    for it, and its download, waiting for the feed, would wait for each other for good)."""
    pending = PendingBytes(1024)
    pending.built(10_000)
    assert pending.admit(0)  # the one the feed takes next
    waiting = threading.Thread(target=pending.admit, args=(1,))
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive()  # object 1 waits while object 0's documents fill the budget
    pending.taken(10_000)
    waiting.join(5)
    assert not waiting.is_alive()


def test_room_the_feed_frees_lets_any_object_be_downloaded_again():
    """The budget is a ceiling on the bytes waiting, not a count of bytes ever built: once the
    feed has taken an object, its bytes are room again for every download thread, not only for
    the one whose object the feed takes next (downloads would otherwise go one at a time for the
    rest of the run after the budget was first reached)."""
    pending = PendingBytes(1024)
    pending.built(1024)  # exactly the budget: no room left
    waiting = threading.Thread(target=pending.admit, args=(3,), daemon=True)  # a failure leaves it waiting
    waiting.start()
    waiting.join(0.2)
    assert waiting.is_alive()  # object 3 waits: the documents waiting hold the whole budget
    pending.taken(1024)
    waiting.join(5)
    assert not waiting.is_alive()  # object 3 goes on, though the feed takes object 1 next
    assert pending.held == 0


def test_a_run_ending_releases_the_downloads_waiting_for_room_without_downloading():
    pending = PendingBytes(1024)
    pending.built(10_000)
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(pending.admit(3)))
    waiting.start()
    pending.close()
    waiting.join(5)
    assert answers == [False]


# --output files -----------------------------------------------------------------------------------

def output_run(tmp_path, out: Path, files, **settings):
    env = clean_environ(KCING_DB=str(tmp_path / ("%s.db" % out.name)), **settings)
    return kcing(["feed_es", "--lavas", *map(str, files), "--output", str(out), "--batch-size", "50"], env, tmp_path)


def parts(directory: Path, route: str) -> list:
    """The route's files in the order they were written: `<route>.ndjson`, then by number."""
    names = sorted(path.name for path in directory.glob("%s.*ndjson" % route))
    return ["%s.ndjson" % route] + [name for name in names if name != "%s.ndjson" % route]


def records(directory: Path, route: str) -> list:
    """The route's records, file after file in the order they were written."""
    return [line for name in parts(directory, route) for line in (directory / name).read_bytes().splitlines()]


def test_an_output_file_stays_under_the_limit_and_the_route_goes_on_in_its_next_files(tmp_path):
    """Elasticsearch refuses a request over its http.max_content_length (100 MB; 413): one file
    taking every run's documents could no longer be posted to `_bulk` as the README says."""
    lava = sorted((SAMPLES / "lava").glob("*.json"))
    limit = 200_000
    whole = output_run(tmp_path, tmp_path / "whole", lava)
    assert whole.returncode == 0, whole.stderr
    assert (tmp_path / "whole" / "lava.ndjson").stat().st_size > 3 * limit  # what the limit must cut
    cut = output_run(tmp_path, tmp_path / "cut", lava, KCING_OUTPUT_MAX_BYTES=str(limit))
    assert cut.returncode == 0, cut.stderr
    parts = sorted((tmp_path / "cut").glob("lava*.ndjson"))
    assert len(parts) > 3
    assert all(0 < part.stat().st_size <= limit for part in parts)
    assert {part.name for part in parts} >= {"lava.ndjson", "lava.part000002.ndjson", "lava.part000003.ndjson"}
    # The same records in the same order, each file whole `_bulk` input (an action, then its document).
    assert records(tmp_path / "cut", "lava") == records(tmp_path / "whole", "lava")
    for part in parts:
        lines = part.read_bytes().splitlines()
        assert len(lines) % 2 == 0 and all(is_action_line(line) for line in lines[::2])


def test_a_batch_larger_than_the_output_limit_goes_alone_into_a_file_of_its_own(tmp_path):
    """No file can hold a batch larger than KCING_OUTPUT_MAX_BYTES within the limit: it is written
    whole into a new file, never cut, never dropped, and no empty file is left for it to fit."""
    lava = sorted((SAMPLES / "lava").glob("*.json"))[:1]
    limit = 1024  # the smallest the setting takes: every batch of this file is larger
    whole = output_run(tmp_path, tmp_path / "whole", lava)
    assert whole.returncode == 0, whole.stderr
    env = clean_environ(KCING_DB=str(tmp_path / "cut.db"), KCING_OUTPUT_MAX_BYTES=str(limit))
    cut = kcing(["feed_es", "--lavas", *map(str, lava), "--output", str(tmp_path / "cut"), "--batch-size", "50"],
                env, tmp_path, timeout=60)
    assert cut.returncode == 0, cut.stderr
    parts = list((tmp_path / "cut").glob("lava*.ndjson"))
    assert len(parts) > 1 and all(part.stat().st_size > limit for part in parts)
    assert records(tmp_path / "cut", "lava") == records(tmp_path / "whole", "lava")


def test_a_later_run_appends_to_the_newest_output_file(tmp_path):
    first, second = sorted((SAMPLES / "lava").glob("*.json"))
    out = tmp_path / "out"
    assert output_run(tmp_path, out, [first], KCING_OUTPUT_MAX_BYTES="200000").returncode == 0
    written = records(out, "lava")
    before = {path.name: path.read_bytes() for path in out.glob("lava*.ndjson")}
    newest = parts(out, "lava")[-1]
    assert output_run(tmp_path, out, [second], KCING_OUTPUT_MAX_BYTES="200000").returncode == 0
    after = {path.name: path.read_bytes() for path in out.glob("lava*.ndjson")}
    # The full files are left as they were; the newest takes what fits, then come the next ones.
    assert all(after[name] == data for name, data in before.items() if name != newest)
    assert after[newest].startswith(before[newest])
    assert len(after) > len(before) and all(len(data) <= 200000 for data in after.values())
    assert newest != "lava.ndjson"  # the first run went on past its first file
    # Nothing repeated or lost: the first run's records, then the second's.
    alone = tmp_path / "alone"
    assert output_run(tmp_path, alone, [second]).returncode == 0
    assert records(out, "lava") == written + records(alone, "lava")


# Documents built by a worker process ---------------------------------------------------------------

def test_documents_built_by_a_worker_are_held_once_in_the_feeds_process():
    """The feed's process holds a large file's documents once: taken from the worker as they are,
    not inside a pickle (its bytes, then the documents unpickled from them: twice, 1.6 GB for a
    LAVA log of a million short lines), and the file goes to the worker without a pickled copy."""
    callback = json.loads(lava_sample())
    line = '- {"dt": "2020-11-19T07:03:25.393174", "lvl": "target", "msg": "[    1.234567] a kernel line"}\n'
    callback["log"] += line * (building.IN_WORKER_BYTES // len(line) + 1)
    content = json.dumps(callback).encode()
    with Builder(2, ListSink.encode, separator=ListSink.separator) as builder:
        builder.start(wait=True)
        tracemalloc.start()
        try:
            built = builder.build(LAVA, content, None, None)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert builder.built_in_workers == 1
    documents = len(built.encoded.data)
    assert documents > 5 * len(content)  # what a copy too many would show
    # The documents, their sizes and ids (a few bytes per document), and nothing of the size of
    # the documents or the file besides.
    assert peak < documents + len(content) // 2 + 200 * len(built.encoded), (peak, documents, len(content))


# Outcomes waiting for the ledger -------------------------------------------------------------------

class StorageDown(ManyLavaFiles):
    def fetch(self, obj):
        raise UpstreamError("GET %s failed (last: connection refused)" % obj.url)


class CountingLedger(Ledger):
    """The ledger, noting how many outcomes each write took."""

    writes: list

    def record(self, outcomes, destination=lambda kind: ""):
        self.writes.append(len(outcomes))
        return super().record(outcomes, destination)


def test_outcomes_are_written_as_they_come_when_no_batch_is_acknowledged(monkeypatch):
    """Storage down: every download fails, no batch is ever acknowledged, and the outcomes (each
    with its object and listing item, kilobytes) waited for the run's end: 300 MB for a listing
    of 100,000 builds. They go to the ledger a thousand at a time instead."""
    monkeypatch.setattr(sys.modules[__name__], "OBJECTS", 2500)
    ledger = CountingLedger.open(":memory:")
    ledger.writes = []
    summary = feed(StorageDown(b""), ledger, ListSink(), FeedOptions(threads=2))
    assert (summary.failed, summary.exit_code) == (2500, 1)
    assert sum(ledger.writes) == 2500 and max(ledger.writes) <= pipeline.OUTCOMES_PER_WRITE, ledger.writes
    assert len(ledger.writes) >= 3, ledger.writes  # as they come, not all at the run's end
    assert ledger.row("samples", LAVA, "lava-2499").state == "failed"


def test_a_run_of_many_failures_keeps_a_few_problems_to_print_and_counts_them_all(monkeypatch, capsys):
    """Each problem is logged as it happens and the summary prints 20: keeping a line for each of
    a listing of hundreds of thousands held them all in memory to the end."""
    monkeypatch.setattr(sys.modules[__name__], "OBJECTS", 2500)
    summary = feed(StorageDown(b""), Ledger.open(":memory:"), ListSink(), FeedOptions(threads=2))
    assert summary.problem_count == 2500 and len(summary.problems) <= min(pipeline.PROBLEMS_KEPT, 100)
    assert summary.problems[0].startswith("lava lava-0: GET lava-0.json failed")
    print_summary(summary, "Logstash", dry_run=False)
    printed = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("  problem: ") for line in printed) == 20
    assert printed[-1] == "  ... and 2480 more problems (see the log)"


def test_what_a_run_delivered_is_handed_on_as_ledger_row_ids_for_verify(monkeypatch):
    """`feed_es --verify` checks the objects the run delivered: it kept each one's key (source,
    kind, version id, destination: a quarter of a kilobyte) to the end, gigabytes for a backfill
    of millions. The feed hands on the ledger row ids of what each write marked delivered
    instead, which it keeps in an array of 8 bytes each, and the check reads the rows by them."""
    monkeypatch.setattr(sys.modules[__name__], "OBJECTS", 300)
    source = ManyLavaFiles(lava_sample())
    source.objects[7] = UpstreamObject("samples", LAVA, "broken", "broken.json")
    source.fetch = lambda obj: b"{" if obj.upstream_id == "broken" else source.content
    ledger = Ledger.open(":memory:")
    kept = array("q")
    summary = feed(source, ledger, ListSink(), FeedOptions(threads=2), on_recorded=kept.extend)
    assert (summary.delivered, summary.rejected) == (299, 1)
    delivered = [row[0] for row in ledger.db.execute_sql("SELECT id FROM upstream_file WHERE state = 'delivered'")]
    assert sorted(kept) == sorted(delivered) and len(kept) == 299
    assert kept.itemsize * len(kept) == 8 * 299
    rows = [row for chunk in ledger.delivered_rows_with_ids(kept, chunk=100) for row in chunk]
    assert sorted(row.upstream_id for row in rows) == sorted("lava-%d" % n for n in range(300) if n != 7)


class SomeUnlistable(ManyLavaFiles):
    """A source that could not list some objects: it knows no more of them than a problem each."""

    left_out = ["lava listing: page %d could not be listed" % number for number in range(25)]


def test_objects_a_source_could_not_list_count_among_the_problems():
    summary = feed(SomeUnlistable(lava_sample()), Ledger.open(":memory:"), ListSink(), FeedOptions(threads=2))
    assert (summary.failed, summary.problem_count, summary.exit_code) == (25, 25, 1)
    assert summary.problems[0] == "lava listing: page 0 could not be listed"


def test_a_routes_files_sort_in_the_order_they_were_written(tmp_path):
    """`for f in out/lava*.ndjson; do curl ... _bulk; done` posts the files in the order the shell
    sorts their names; a document delivered again (its file changed upstream) is in a later file
    than its first version, and the last one posted is what Elasticsearch keeps: the route's
    first file sorted after its next ones, and a replay brought back the old version."""
    job = tmp_path / "job.json"
    callback = json.loads((sorted((SAMPLES / "lava").glob("*.json"))[0]).read_bytes())
    job.write_text(json.dumps(callback))
    out = tmp_path / "out"
    assert output_run(tmp_path, out, [job], KCING_OUTPUT_MAX_BYTES="200000").returncode == 0
    callback["boot_log_html"] = "changed-upstream.html"
    job.write_text(json.dumps(callback))
    assert output_run(tmp_path, out, [job], KCING_OUTPUT_MAX_BYTES="200000").returncode == 0
    globbed = sorted(path.name for path in out.glob("lava*.ndjson"))  # C order, as `ls` and bash with LC_ALL=C
    assert len(globbed) > 2 and globbed[0] == "lava.ndjson"
    kept = {}
    for name in globbed:
        lines = (out / name).read_bytes().splitlines()
        for action, document in zip(lines[::2], lines[1::2]):
            kept[json.loads(action)["index"]["_id"]] = document
    changed = [document for document in kept.values() if b"changed-upstream.html" in document]
    assert changed and not [document for document in kept.values() if b'"ltp-ipc-jetson-tk1.html"' in document]
