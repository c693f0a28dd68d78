"""The feed: list -> skip delivered -> fetch -> documents -> batch -> send -> acknowledge in the ledger.

The only module that knows sources, the ledger, documents and sinks. An object is recorded as
delivered only after the sink acknowledged every document made from it; anything else stays
undelivered and is picked up by the next run.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional

from kcing import watermark
from kcing.documents import documents_for
from kcing.errors import Interrupted, KcingError, RejectedInput, UpstreamError
from kcing.ledger import docids
from kcing.ledger.ledger import Ledger, Outcome
from kcing.listing import Listing
from kcing.progress import Progress, eta_text
from kcing.ledger.models import DELIVERED, DOWNLOADED, FAILED, REJECTED
from kcing.records import UpstreamObject
from kcing.sinks.batching import Batch, Batcher
from kcing.sinks.logstash import BatchTooLarge
from kcing.sinks.throttle import RateLimiter

log = logging.getLogger(__name__)


@dataclass
class FeedOptions:
    threads: int = 4
    # Two POSTs in flight keep Logstash busy while the next batch is prepared (and let batches
    # spread over several inputs); acknowledgements are still taken in order.
    posts_in_flight: int = 2
    max_docs: int = 500
    max_bytes: int = 5_000_000
    dry_run: bool = False
    progress_every: float = 10.0


@dataclass
class RunSummary:
    """Counts of one run; `exit_code` is what cron sees."""

    listed: int = 0
    skipped: int = 0
    downloaded: int = 0
    delivered: int = 0
    rejected: int = 0
    failed: int = 0
    documents: int = 0
    batches: int = 0
    bytes_sent: int = 0
    elapsed: float = 0.0
    problems: List[str] = field(default_factory=list)
    stopped_by: Optional[KcingError] = None

    @property
    def exit_code(self) -> int:
        if self.stopped_by is not None:
            return self.stopped_by.exit_code
        return 1 if (self.rejected or self.failed) else 0

    def as_dict(self) -> dict:
        counts = {name: getattr(self, name) for name in
                  ("listed", "skipped", "downloaded", "delivered", "rejected", "failed", "documents", "batches",
                   "bytes_sent")}
        counts["elapsed"] = round(self.elapsed, 3)
        return counts


@dataclass
class Fetched:
    """What a download worker hands back: encoded documents, or why there are none."""

    obj: UpstreamObject
    sha256: Optional[str] = None
    items: Optional[List[bytes]] = None
    rejected: Optional[str] = None
    failed: Optional[str] = None
    # {index: packed ids} of the documents, kept by the ledger with the delivery (reconcile).
    kept: Optional[Dict[str, bytes]] = None


class Feed:
    """One run of the feed; build it with its collaborators and call `run()`."""

    def __init__(self, source, ledger: Ledger, sink, options: FeedOptions,
                 limiter: Optional[RateLimiter] = None, clock: Callable[[], float] = time.monotonic,
                 on_planned: Callable[[UpstreamObject], None] = lambda obj: None,
                 stop: Optional[threading.Event] = None,
                 on_delivered: Callable[[UpstreamObject], None] = lambda obj: None,
                 progress: Optional[Progress] = None):
        self.source = source
        self.stop = stop or threading.Event()
        self.on_planned = on_planned
        self.on_delivered = on_delivered
        self.ledger = ledger
        self.sink = sink
        # "Delivered" means delivered to this run's destination; a sink that names none delivers
        # to the unnamed one (""), as tests' sinks do.
        self.destination: Callable[[str], str] = getattr(sink, "destination", lambda kind: "")
        self.destinations_key: str = getattr(sink, "destinations_key", lambda: "")()
        self.options = options
        self.limiter = limiter or RateLimiter()
        self.clock = clock
        self.summary = RunSummary()
        self.batchers: Dict[str, Batcher] = {}
        self.unsent: Dict[tuple, int] = {}  # object key -> documents not yet acknowledged
        self.owners: Dict[tuple, Fetched] = {}
        self.poisoned: set = set()
        self.outcomes: List[Outcome] = []
        self.posting: deque = deque()  # (batch, future) in the order they were sent
        self.post_pool: Optional[ThreadPoolExecutor] = None
        self._started = clock()
        self.progress = progress or Progress("feed_es", live=False, every=options.progress_every, clock=clock)
        self.listing: Optional[Listing] = None

    # Top level -----------------------------------------------------------------------------

    def run(self) -> RunSummary:
        try:
            watermark.resume(self.source, self.ledger, self.destinations_key)
            self.listing = Listing(self.source, self.ledger, self.destination, self.summary, self._reject,
                                   self._progress)
            candidates = self.listing.candidates()
            if self.options.dry_run:
                self._plan(candidates)
            else:
                self._deliver(candidates)
        except KcingError as error:
            self.summary.stopped_by = error
            log.error("run stopped: %s", error)
        finally:
            self._write_outcomes()
            if not self.options.dry_run:
                # After the outcomes: the watermark moves only over what the ledger shows delivered.
                watermark.advance(self.source, self.ledger, self.destinations_key, self.destination)
            self.summary.elapsed = self.clock() - self._started
            self.progress.finish(self._progress_text)
        log.info("run finished: %s", ", ".join("%s %s" % item for item in self.summary.as_dict().items()))
        return self.summary

    def _plan(self, candidates: Iterable[UpstreamObject]) -> None:
        """Dry run: say what would be fetched and where it would go; download and write nothing."""
        for obj in candidates:
            self.on_planned(obj)

    def _deliver(self, candidates: Iterable[UpstreamObject]) -> None:
        with ThreadPoolExecutor(max_workers=self.options.threads, thread_name_prefix="fetch") as pool, \
                ThreadPoolExecutor(max_workers=self.options.posts_in_flight, thread_name_prefix="post") as posts:
            self.post_pool = posts
            in_flight: deque = deque()
            try:
                for obj in candidates:
                    in_flight.append(pool.submit(self._fetch, obj))
                    while len(in_flight) > self.options.threads * 2 and not self.stop.is_set():
                        self._take(in_flight.popleft())
                    if self.stop.is_set():
                        break
                while in_flight and not self.stop.is_set():
                    self._take(in_flight.popleft())
                if self.stop.is_set():
                    raise self._interrupted()
                for route in list(self.batchers):
                    self._flush_route(route)
                while self.posting:
                    self._collect(*self.posting.popleft())
            finally:
                for future in in_flight:
                    future.cancel()
                self._salvage_posts()

    # Download and documents (worker threads) -----------------------------------------------

    def _fetch(self, obj: UpstreamObject) -> Fetched:
        """Download one object and turn it into encoded documents. Runs in a worker thread."""
        try:
            content = self.source.fetch(obj)
        except UpstreamError as error:
            return Fetched(obj, failed=str(error))
        digest = hashlib.sha256(content).hexdigest()
        try:
            documents = documents_for(obj.kind, content, obj.created)
        except RejectedInput as error:
            return Fetched(obj, sha256=digest, rejected=str(error))
        return Fetched(obj, sha256=digest, items=[self.sink.encode(document) for document in documents],
                       kept=docids.by_index(documents))

    # Main thread: batching, sending, acknowledging -----------------------------------------

    def _take(self, future: Future) -> None:
        fetched: Fetched = future.result()
        obj = fetched.obj
        if fetched.failed:
            self.summary.failed += 1
            self.summary.problems.append("%s %s: %s" % (obj.kind, obj.upstream_id, fetched.failed))
            self.outcomes.append(Outcome(obj, FAILED, error=fetched.failed))
            log.warning("failed %s %s: %s", obj.kind, obj.upstream_id, fetched.failed)
        elif fetched.rejected:
            self._reject(obj, fetched.sha256, fetched.rejected)
        else:
            self.summary.downloaded += 1
            self._queue(fetched)
        self._progress()

    def _queue(self, fetched: Fetched) -> None:
        obj = fetched.obj
        self.outcomes.append(Outcome(obj, DOWNLOADED, sha256=fetched.sha256, document_count=len(fetched.items)))
        if not fetched.items:
            self._acknowledge(fetched)
            return
        self.unsent[obj.key] = len(fetched.items)
        self.owners[obj.key] = fetched
        batcher = self.batchers.get(obj.kind)
        if batcher is None:
            batcher = self.batchers[obj.kind] = Batcher(obj.kind, self.options.max_docs, self.options.max_bytes)
        items, fetched.items = fetched.items, None  # the batcher holds them now; free the copy
        for item in items:
            full = batcher.add(item, obj.key)
            if full is not None:
                self._send(full)

    def _flush_route(self, route: str) -> None:
        batch = self.batchers[route].flush()
        if batch is not None:
            self._send(batch)

    def _send(self, batch: Batch) -> None:
        """Post `batch` in the background; first take the answers of older posts beyond the limit."""
        if self.stop.is_set():
            raise self._interrupted()
        while len(self.posting) >= self.options.posts_in_flight:
            self._collect(*self.posting.popleft())
        self.limiter.wait_for(len(batch))
        self.posting.append((batch, self.post_pool.submit(self.sink.send, batch)))

    def _collect(self, batch: Batch, future: Future) -> None:
        """Wait for one post; acknowledge its documents, or split it if it was too large."""
        try:
            future.result()
        except BatchTooLarge:
            self._split_and_send(batch)
            return
        self._acknowledge_batch(batch)

    def _salvage_posts(self) -> None:
        """After a stop or an error: record the posts still in flight that did succeed."""
        while self.posting:
            batch, future = self.posting.popleft()
            try:
                future.result()
            except Exception:  # the run is already stopping for a reported reason
                continue
            self._acknowledge_batch(batch)

    def _acknowledge_batch(self, batch: Batch) -> None:
        self.summary.batches += 1
        self.summary.documents += len(batch)
        self.summary.bytes_sent += batch.size
        for owner in batch.owners:
            self._settle(owner)
        self._write_outcomes()

    def _settle(self, owner: tuple) -> None:
        """Count one document of `owner` as done; acknowledge the object when none is left."""
        self.unsent[owner] -= 1
        if self.unsent[owner] == 0:
            del self.unsent[owner]
            self._acknowledge(self.owners.pop(owner))

    @staticmethod
    def _interrupted() -> Interrupted:
        # Documents waiting in unsent batches stay unacknowledged: their objects remain
        # undelivered and the next run sends them whole.
        return Interrupted("stopped by a signal; what Logstash acknowledged is recorded, "
                           "the rest is sent by the next run")

    def _split_and_send(self, batch: Batch) -> None:
        if len(batch) == 1:
            owner = batch.owners[0]
            fetched = self.owners.get(owner)
            if owner not in self.poisoned and fetched is not None:
                self.poisoned.add(owner)
                self._reject(fetched.obj, fetched.sha256, "a document is larger than Logstash accepts (413)")
            self._settle(owner)
            return
        for half in batch.split():
            self._send(half)

    def _acknowledge(self, fetched: Fetched) -> None:
        if fetched.obj.key in self.poisoned:
            return
        self.summary.delivered += 1
        self.outcomes.append(Outcome(fetched.obj, DELIVERED, sha256=fetched.sha256, documents=fetched.kept))
        self.on_delivered(fetched.obj)

    def _reject(self, obj: UpstreamObject, sha256: Optional[str], reason: str) -> None:
        self.summary.rejected += 1
        self.summary.problems.append("%s %s: %s" % (obj.kind, obj.upstream_id, reason))
        self.outcomes.append(Outcome(obj, REJECTED, sha256=sha256, error=reason))
        log.warning("rejected %s %s: %s", obj.kind, obj.upstream_id, reason)

    def _write_outcomes(self) -> None:
        if self.outcomes and not self.options.dry_run:
            self.ledger.record(self.outcomes, self.destination)
        self.outcomes = []

    def _progress(self) -> None:
        self.progress.update(self._progress_text)

    def _progress_text(self) -> str:
        s = self.summary
        elapsed = max(self.clock() - self._started, 1e-9)
        # The total is known once the listing is complete: what was listed and not skipped.
        total = s.listed - s.skipped if self.listing is not None and self.listing.finished else None
        return ("listed %d, skipped %d, downloaded %d, delivered %d, rejected %d, failed %d, "
                "documents sent %d (%.0f/s)%s" % (s.listed, s.skipped, s.downloaded, s.delivered, s.rejected,
                                                  s.failed, s.documents, s.documents / elapsed,
                                                  eta_text(s.downloaded + s.failed + s.rejected, total, elapsed)))


def feed(source, ledger: Ledger, sink, options: FeedOptions, limiter: Optional[RateLimiter] = None,
         on_planned: Callable[[UpstreamObject], None] = lambda obj: None,
         stop: Optional[threading.Event] = None,
         on_delivered: Callable[[UpstreamObject], None] = lambda obj: None,
         progress: Optional[Progress] = None) -> RunSummary:
    """Run the feed once and return its summary. `on_delivered` hears of each object as it is
    acknowledged (its ledger write follows with the batch's outcomes)."""
    return Feed(source, ledger, sink, options, limiter, on_planned=on_planned, stop=stop,
                on_delivered=on_delivered, progress=progress).run()
