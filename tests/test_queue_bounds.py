"""While the sink does not take batches (Logstash answering 429 or 503, or slow), the downloads
wait for it: the documents built and waiting stay within ES_QUEUE_MAX_BYTES, whatever the number
of download threads, instead of every object handed to a thread being downloaded and built."""
from __future__ import annotations

import threading

from kcing.building import Builder
from kcing.ledger.ledger import Ledger
from kcing.pending import PendingBytes
from kcing.pipeline import FeedOptions, feed
from kcing.records import LAVA, UpstreamObject
from tests.fakes.list_sink import ListSink
from tests.feedrun import SAMPLES

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


def test_a_run_ending_releases_the_downloads_waiting_for_room_without_downloading():
    pending = PendingBytes(1024)
    pending.built(10_000)
    answers = []
    waiting = threading.Thread(target=lambda: answers.append(pending.admit(3)))
    waiting.start()
    pending.close()
    waiting.join(5)
    assert answers == [False]
