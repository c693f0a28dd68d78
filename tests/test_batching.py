"""Batches are bounded by document count and by bytes, and keep track of whose documents they carry."""
import gc
import json
import random
import tracemalloc

import pytest

from kcing.sinks.batching import Batcher, Encoded
from kcing.sinks.throttle import RateLimiter


def fill(batcher, items):
    full = []
    for number, item in enumerate(items):
        batch = batcher.add(item, ("src", "kind", str(number)))
        if batch is not None:
            full.append(batch)
    last = batcher.flush()
    return full + ([last] if last else [])


def test_count_limit():
    batches = fill(Batcher("lava", max_docs=3, max_bytes=10**6), [b'{"a":1}'] * 7)
    assert [len(batch) for batch in batches] == [3, 3, 1]


def test_byte_limit_counts_the_json_array_exactly():
    item = b'{"x":"' + b"y" * 90 + b'"}'  # 98 bytes
    batches = fill(Batcher("build", max_docs=100, max_bytes=2 + 98 * 3 + 2), [item] * 7)
    assert [len(batch) for batch in batches] == [3, 3, 1]
    for batch in batches:
        assert len(batch.body()) == batch.size <= 2 + 98 * 3 + 2
        assert len(json.loads(batch.body())) == len(batch)


def test_an_oversized_item_travels_alone():
    batches = fill(Batcher("build", max_docs=100, max_bytes=50), [b'{"a":1}', b'{"b":"' + b"z" * 100 + b'"}', b'{"c":1}'])
    assert [len(batch) for batch in batches] == [1, 1, 1]


def test_owners_follow_items_and_split_keeps_them_aligned():
    (batch,) = fill(Batcher("lava", max_docs=10, max_bytes=10**6), [b'{"n":%d}' % n for n in range(5)])
    left, right = batch.split()
    assert left.items + right.items == batch.items
    assert left.owners + right.owners == batch.owners
    assert left.size == len(left.body()) and right.size == len(right.body())


def reference_batches(objects, max_docs, max_bytes):
    """Batches cut one document at a time: full when the next document would pass a bound."""
    batches, items, owners, size = [], [], [], 2
    for owner, documents in objects:
        for item in documents:
            added = len(item) + (1 if items else 0)
            if items and (len(items) >= max_docs or size + added > max_bytes):
                batches.append((items, owners, size))
                items, owners, size, added = [], [], 2, len(item)
            items.append(item)
            owners.append(owner)
            size += added
    if items:
        batches.append((items, owners, size))
    return batches


@pytest.mark.parametrize("separator", [b",", b""])
@pytest.mark.parametrize("seed", range(12))
def test_whole_objects_are_cut_at_the_same_documents_as_one_by_one(seed, separator):
    rng = random.Random(seed)
    objects = [(("src", "lava", str(number)),
                [b'{"n":"%s"}' % (b"x" * rng.choice([0, 3, 40, 400, 5000])) for _ in range(rng.choice([0, 1, 2, 7, 300]))])
               for number in range(rng.randint(1, 12))]
    max_docs, max_bytes = rng.choice([1, 2, 5, 500]), rng.choice([30, 600, 5000, 10**6])
    batcher = Batcher("lava", max_docs, max_bytes)
    batches = []
    for owner, documents in objects:
        batches += batcher.add_encoded(Encoded.of(documents, separator), owner)
    last = batcher.flush()
    batches += [last] if last else []
    expected = reference_batches(objects, max_docs, max_bytes)
    assert [(batch.items, batch.owners, batch.size) for batch in batches] == expected
    for batch, (items, _, _) in zip(batches, expected):
        assert batch.body() == b"[" + b",".join(items) + b"]"
        assert batch.joined() == separator.join(items)
        assert sum(count for _, count in batch.owner_counts()) == len(batch) == len(items)
        left, right = batch.split()
        assert (left.items + right.items, left.owners + right.owners) == (items, batch.owners)
        assert left.body() == b"[" + b",".join(items[:len(items) // 2]) + b"]"


def test_a_body_is_the_batch_copied_once():
    """A batch's body takes about its own size in new memory while it is made: each further copy
    of a batch of hundreds of kilobytes is CPU of the feed's own process, once per post."""
    import tracemalloc
    documents = [b'{"n":"%s"}' % (b"x" * 700) for _ in range(1000)]
    batcher = Batcher("lava", 500, 10**7)
    (batch,) = batcher.add_encoded(Encoded.of(documents[:600]), ("src", "lava", "1"))
    batcher.add_encoded(Encoded.of(documents[600:]), ("src", "lava", "2"))
    assert len(batch) == 500
    tracemalloc.start()
    try:
        body = batch.body()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert body == b"[" + b",".join(documents[:500]) + b"]"
    assert peak < 1.2 * len(body)


def test_flush_on_empty_batcher_gives_nothing():
    assert Batcher("boot", 10, 1000).flush() is None


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_load_interval_spaces_batches():
    time = FakeTime()
    limiter = RateLimiter(interval=2.0, clock=time.clock, sleep=time.sleep)
    limiter.wait_for(10)
    time.now += 0.5
    limiter.wait_for(10)
    assert time.slept == [1.5]


def test_documents_per_second_cap():
    time = FakeTime()
    limiter = RateLimiter(docs_per_second=100, clock=time.clock, sleep=time.sleep)
    for _ in range(3):
        limiter.wait_for(50)
    assert time.slept == [0.5, 0.5]


def test_with_both_an_interval_and_a_cap_the_longer_pause_is_kept():
    """ES_LOAD_INTERVAL is the least pause between batches, whatever ES_MAX_DOCS_PER_SECOND
    allows; a batch the cap spaces further waits that longer."""
    time = FakeTime()
    limiter = RateLimiter(interval=2.0, docs_per_second=100, clock=time.clock, sleep=time.sleep)
    for documents in (50, 50, 500, 50):
        limiter.wait_for(documents)
    assert time.slept == [2.0, 2.0, 5.0]


def test_no_throttle_by_default():
    time = FakeTime()
    limiter = RateLimiter(clock=time.clock, sleep=time.sleep)
    for _ in range(5):
        limiter.wait_for(500)
    assert time.slept == []


# The settings, through the real program ------------------------------------------------------

def test_ls_batch_max_bytes_and_the_batch_size_bound_every_post_the_feed_makes(logstash, tmp_path):
    """LS_BATCH_MAX_BYTES and LS_PIPELINE_BATCH_SIZE (`--batch-size`) reach the Logstash posts:
    no body over the bytes, no batch over the count, and every document still delivered."""
    from tests.feedrun import SAMPLES, clean_environ, kcing
    env = clean_environ(ES_BUILD=logstash.urls["build"], ES_LAVA=logstash.urls["lava"],
                        ES_BOOT=logstash.urls["boot"], ES_REGRESSION=logstash.urls["regression"],
                        KCING_DB=str(tmp_path / "kcing.db"), LS_BATCH_MAX_BYTES="20000")
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--batch-size", "40"], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    posts = [record for emulator in logstash.emulators.values() for record in emulator.requests]
    assert sum(record.events for record in posts) == len(logstash.store) == 2462
    assert max(record.body_bytes for record in posts) <= 20000
    assert max(record.events for record in posts) <= 40
    assert len(posts) > 2462 * 820 // 20000  # the 2 MB of documents went in posts of 20 kB at most


def test_a_document_larger_than_ls_batch_max_bytes_is_posted_alone_and_the_settings_table_says_so(logstash, tmp_path):
    """LS_BATCH_MAX_BYTES bounds every POST of two documents or more; a single document larger
    than it is not held back (Logstash's max_content_length, 100 MB by default, may well take it)
    but posted alone, and the README's settings table must say so rather than "at most"."""
    from kcing.settings import SPECS
    from tests.feedrun import SAMPLES, clean_environ, kcing
    env = clean_environ(ES_BUILD=logstash.urls["build"], ES_LAVA=logstash.urls["lava"],
                        ES_BOOT=logstash.urls["boot"], ES_REGRESSION=logstash.urls["regression"],
                        KCING_DB=str(tmp_path / "kcing.db"), LS_BATCH_MAX_BYTES="1024")
    fed = kcing(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES)], env, tmp_path)
    assert fed.returncode == 0, fed.stderr
    posts = [record for emulator in logstash.emulators.values() for record in emulator.requests]
    assert sum(record.events for record in posts) == len(logstash.store) == 2462
    larger = [record for record in posts if record.body_bytes > 1024]
    assert larger and all(record.events == 1 for record in larger)  # the samples have such documents
    assert "posted alone" in SPECS["LS_BATCH_MAX_BYTES"].help


def test_the_batch_being_filled_keeps_only_its_own_documents_in_memory():
    """Besides ES_QUEUE_MAX_BYTES, the feed holds the batches being posted and filled, each of
    LS_BATCH_MAX_BYTES at most. Once an object's full batches are posted, its bytes leave the
    budget; the few documents of its last batch, still being filled, kept the whole object's
    documents alive (10 MB here) until that route's batch filled, maybe at the end of the run."""
    max_bytes = 5_000
    batcher = Batcher("lava", max_docs=500, max_bytes=max_bytes)

    def take_one_object():
        document = b'{"line":"' + b"x" * 988 + b'"}'  # 1000 bytes
        encoded = Encoded.of([document] * 10_001)  # 10 MB of documents: 2500 batches of 4, and one
        full = batcher.add_encoded(encoded, ("legacy", "lava", "job-1"))
        assert len(full) == 2500 and batcher.current.count == 1
        del full  # posted and acknowledged

    gc.collect()
    tracemalloc.start()
    try:
        take_one_object()
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # One document of 1000 bytes waits in the open batch: what it holds should be about that.
    assert held < 10 * max_bytes, "the open batch of 1 document keeps %d bytes alive" % held
