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
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, Iterable, List, Optional

from kcing import watermark
from kcing.building import Builder, BuildAbandoned, WorkersKilled, not_built_again
from kcing.errors import (BatchTooLarge, ConfigError, Interrupted, KcingError, ObjectTooLarge, RejectedInput,
                          RunFailing, SinkUnavailable, UpstreamError, unexpected_failure)
from kcing.ledger.ledger import Ledger, Outcome
from kcing.ledger.models import DELIVERED, DOWNLOADED, FAILED, REJECTED, TOO_LARGE
from kcing.listing import Listing
from kcing.pending import PendingBytes
from kcing.plural import counted
from kcing.progress import Progress, eta_of, seconds_left
from kcing.records import UpstreamObject
from kcing.shutdown import result_of, wait_all
from kcing.sources import listed_lab
from kcing.sinks.batching import Batch, Batcher, Encoded
from kcing.sinks.throttle import RateLimiter

log = logging.getLogger(__name__)

# A run that delivered what it could but had documents Logstash refused as too large: the
# exit status of a sink refusing (as SinkRejected), since the fix is on the Logstash side.
SINK_REFUSED_EXIT = 3
# Objects listed and waiting to be downloaded from which a run starts its document workers at
# once (kcing/building.py starts them anyway once building here has taken a quarter second):
# more than a cron run of a few objects lists, whose documents are built here sooner than a
# worker starts.
BACKLOG_FOR_WORKERS = 32
# Outcomes waiting for the ledger that are written without waiting for the next acknowledged
# batch: a run whose downloads all fail (the storage down) acknowledges none, and each outcome
# holds its object and listing item (kilobytes): a listing of 400,000 would have held them all.
OUTCOMES_PER_WRITE = 1000
# Problems a run's summary keeps to print (it prints 20): a run of 400,000 failing objects kept
# a line for each. The log has every one.
PROBLEMS_KEPT = 100


@dataclass
class FeedOptions:
    threads: int = 4
    # Processes building documents (kcing.building); 0 or 1 builds them in the download threads.
    workers: int = 0
    # Seconds a worker may build one object before it is killed and the object rejected; 0: no limit.
    build_timeout: float = 0.0
    # Two POSTs in flight keep Logstash busy while the next batch is prepared (and let batches
    # spread over several inputs); acknowledgements are still taken in order.
    posts_in_flight: int = 2
    max_docs: int = 500
    max_bytes: int = 5_000_000
    # Bytes of built documents that may wait for the sink before downloads pause (ES_QUEUE_MAX_BYTES).
    queue_max_bytes: int = 200_000_000
    dry_run: bool = False
    progress_every: float = 10.0


@dataclass
class RunSummary:
    """Counts of one run; `exit_code` is what cron sees."""

    listed: int = 0  # what upstream listed (a source's own count)
    # Objects an earlier run did not deliver that the listing no longer lists, taken from the
    # ledger and tried again (kcing/listing.py): not in `listed`.
    retried: int = 0
    skipped: int = 0
    downloaded: int = 0
    delivered: int = 0
    rejected: int = 0
    failed: int = 0
    too_large: int = 0  # objects with a document Logstash refused as too large (413)
    documents: int = 0
    batches: int = 0
    bytes_sent: int = 0
    elapsed: float = 0.0
    # The first PROBLEMS_KEPT problems (each is logged as it happens); `problem_count` counts them all.
    problems: List[str] = field(default_factory=list)
    problem_count: int = 0
    stopped_by: Optional[KcingError] = None
    # The run's row in the ledger's runs table (None for a dry run): `feed_es --verify` records
    # there what its check found.
    run_id: Optional[int] = None

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < PROBLEMS_KEPT:
            self.problems.append(text)

    @property
    def exit_code(self) -> int:
        if self.stopped_by is not None:
            return self.stopped_by.exit_code
        if self.too_large:
            return SINK_REFUSED_EXIT
        return 1 if (self.rejected or self.failed) else 0

    def as_dict(self) -> dict:
        counts = {name: getattr(self, name) for name in
                  ("listed", "skipped", "downloaded", "delivered", "rejected", "failed", "too_large", "documents",
                   "batches", "bytes_sent", "retried")}
        counts["elapsed"] = round(self.elapsed, 3)
        return counts


@dataclass
class Fetched:
    """What a download worker hands back: encoded documents, or why there are none."""

    obj: UpstreamObject
    sha256: Optional[str] = None
    encoded: Optional[Encoded] = None
    rejected: Optional[str] = None
    failed: Optional[str] = None
    # {index: packed ids} of the documents, kept by the ledger with the delivery (reconcile).
    kept: Optional[Dict[str, bytes]] = None
    held: int = 0  # bytes of documents counted in the feed's PendingBytes until it takes them


class Feed:
    """One run of the feed; build it with its collaborators and call `run()`."""

    def __init__(self, source, ledger: Ledger, sink, options: FeedOptions,
                 limiter: Optional[RateLimiter] = None, clock: Callable[[], float] = time.monotonic,
                 on_planned: Callable[[UpstreamObject], None] = lambda obj: None,
                 stop: Optional[threading.Event] = None,
                 on_delivered: Callable[[UpstreamObject], None] = lambda obj: None,
                 progress: Optional[Progress] = None,
                 on_recorded: Callable[[List[int]], None] = lambda row_ids: None):
        self.source = source
        self.on_recorded = on_recorded
        self.stop = stop or threading.Event()
        self.on_planned = on_planned
        self.on_delivered = on_delivered
        self.ledger = ledger
        self.sink = sink
        # "Delivered" means delivered to this run's destination; a sink that names none delivers
        # to the unnamed one (""), as tests' sinks do.
        self.destination: Callable[[str], str] = getattr(sink, "destination", lambda kind: "")
        self.destinations_key: str = getattr(sink, "destinations_key", lambda: "")()
        # Said by a run stopped by a signal: an --output run posts nothing to Logstash.
        self.kept_on_stop: str = getattr(sink, "kept_on_stop", "what the sink acknowledged")
        # Bytes a batch took: the body posted to Logstash, or what an NDJSON file was given.
        self.sent_size: Callable[[Batch], int] = getattr(sink, "sent_size", lambda batch: batch.size)
        # A sink that appends batches in the order it is handed them (NDJSON files) takes one
        # at a time: two in flight would land in whichever order their threads got to the file,
        # and the same input would not give the same file twice.
        most = getattr(sink, "posts_in_flight", None)
        self.options = replace(options, posts_in_flight=most) if most and most < options.posts_in_flight else options
        self.limiter = limiter or RateLimiter()
        self.clock = clock
        self.summary = RunSummary()
        self.batchers: Dict[str, Batcher] = {}
        self.unsent: Dict[tuple, int] = {}  # object key -> documents not yet acknowledged
        self.documents_built = 0  # queued to be sent, for the progress's ETA
        self.owners: Dict[tuple, Fetched] = {}
        self.poisoned: set = set()
        self.outcomes: List[Outcome] = []
        # (batch, future, (lineage, version) of its objects) in the order they were sent
        self.posting: deque = deque()
        self.post_pool: Optional[ThreadPoolExecutor] = None
        # The first error that ends the run (a post's, not a batch too large, or the main
        # thread's own) unless a signal stopped it first: the run ends with it, whichever wait it
        # cut the main thread met first.
        self.failure: Optional[Exception] = None
        self._failure_lock = threading.Lock()
        self._started = clock()
        self.progress = progress or Progress("feed_es", live=False, every=options.progress_every, clock=clock)
        self.listing: Optional[Listing] = None
        self.pending = PendingBytes(self.options.queue_max_bytes)

    # Top level -----------------------------------------------------------------------------

    def run(self) -> RunSummary:
        try:
            with self.progress.kept_up(self._progress_text):
                watermark.resume(self.source, self.ledger, self.destinations_key)
                self.listing = Listing(self.source, self.ledger, self.destination, self.summary, self._reject,
                                       self._progress)
                candidates = self.listing.candidates()
                if self.options.dry_run:
                    self._plan(candidates)
                else:
                    self._deliver(candidates)
                if self.listing.failure is not None:
                    raise self.listing.failure
                # Nodes the source could not list (it knows no more of them than where they were).
                for problem in getattr(self.source, "left_out", ()):
                    self.summary.failed += 1
                    self.summary.problem(problem)
        except KcingError as error:
            if self.stop.is_set() and not isinstance(error, (Interrupted, ConfigError)):
                # Retries cut short by the stop end in the error of the last attempt; the
                # user asked for the stop, and that is what the exit status says.
                log.warning("while stopping: %s", error)
                error = self._interrupted()
            self.summary.stopped_by = error
            log.error("run stopped: %s", error)
        except KeyboardInterrupt:  # a second SIGINT/SIGTERM (see shutdown.py)
            self.summary.stopped_by = Interrupted("stopped at once by a second signal; %s is recorded, the rest is "
                                                  "sent by the next run" % self.kept_on_stop)
            log.error("run stopped: %s", self.summary.stopped_by)
        finally:
            try:
                self._write_outcomes()
                if not self.options.dry_run:
                    # After the outcomes: the watermark moves only over what the ledger shows delivered.
                    watermark.advance(self.source, self.ledger, self.destinations_key, self.destination)
            except KcingError as error:
                # The ledger cannot be written (locked, disk full): its last transaction was
                # rolled back whole, so what it lacks is simply sent again by the next run.
                self.summary.delivered -= sum(1 for outcome in self.outcomes if outcome.state == DELIVERED)
                self.outcomes = []
                if self.summary.stopped_by is None or str(self.summary.stopped_by) != str(error):
                    log.error("run stopped: %s", error)
                self.summary.stopped_by = error
            self.summary.elapsed = self.clock() - self._started
            self.progress.finish(self._progress_text)
        # A warning when the run did not deliver everything: with --quiet it is the line that
        # closes a failing run's stderr, saying what happened, as the README promises.
        log.log(logging.INFO if self.summary.exit_code == 0 else logging.WARNING, "run finished: %s",
                ", ".join("%s %s" % item for item in self.summary.as_dict().items()))
        return self.summary

    def _plan(self, candidates: Iterable[UpstreamObject]) -> None:
        """Dry run: say what would be fetched and where it would go; download and write nothing."""
        for obj in candidates:
            self.on_planned(obj)

    def _deliver(self, candidates: Iterable[UpstreamObject]) -> None:
        # The builder is closed last: after the download threads that use it are done.
        with Builder(self.options.workers, self.sink.encode, separator=self.sink.separator,
                     abandon=self.stop.is_set, timeout=self.options.build_timeout) as self.builder:
            self._deliver_with_threads(candidates)

    def _deliver_with_threads(self, candidates: Iterable[UpstreamObject]) -> None:
        pool = ThreadPoolExecutor(max_workers=self.options.threads, thread_name_prefix="fetch")
        posts = ThreadPoolExecutor(max_workers=self.options.posts_in_flight, thread_name_prefix="post")
        self.post_pool = posts
        in_flight: deque = deque()
        try:
            for number, obj in enumerate(candidates):
                in_flight.append(pool.submit(self._fetch, obj, number))
                if self.listing.waiting >= BACKLOG_FOR_WORKERS:
                    # A backlog: the workers start now, while the first files download, rather
                    # than once building here has taken its share.
                    self.builder.start()
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
                self._collect(*self.posting.popleft()[:2])
            if self.stop.is_set():
                # The batch in flight was the run's last, and is recorded: the run still ends as
                # one stopped (README: Signals), not as one that was never asked to stop.
                raise self._interrupted()
        except RunFailing:
            # A wait the failure of a post cut (a retry's, a download's, ES_LOAD_INTERVAL's):
            # the run ends with that failure.
            raise self.failure from None
        except Exception as error:
            # An error of this thread's (the ledger locked or full) ends the run as a post's does:
            # the posts waiting to be retried are not waited for below.
            self._fail(error)
            raise
        finally:
            self.pending.close()  # a download thread waiting for room fetches nothing more
            for future in in_flight:
                future.cancel()
            try:
                # After a second signal nothing is waited for: transfers in progress are being cut
                # (see BodyReader), and only posts already answered are recorded.
                self._salvage_posts(wait=not self._urgent())
            finally:
                # The second signal may also land while the posts are salvaged: then the posts
                # still queued are dropped rather than sent at exit (the next run sends them).
                urgent = self._urgent()
                if not urgent:  # the downloads under way end first (their threads then do)
                    wait_all(in_flight)
                pool.shutdown(wait=not urgent, cancel_futures=True)
                posts.shutdown(wait=not urgent, cancel_futures=True)

    def _urgent(self) -> bool:
        return bool(getattr(self.stop, "urgent", False))

    # Download and documents (worker threads) -----------------------------------------------

    def _fetch(self, obj: UpstreamObject, number: int) -> Fetched:
        """Download one object and turn it into encoded documents. Runs in a worker thread.

        `number` is its place in the order the feed takes objects back: it waits for room while
        the documents built before it and not yet taken hold ES_QUEUE_MAX_BYTES."""
        if not self.pending.admit(number):
            return Fetched(obj, failed="not downloaded: the run is ending")
        try:
            content = self.source.fetch(obj)
        except ObjectTooLarge as error:  # our size limit: the same every time it is fetched
            return Fetched(obj, rejected=str(error))
        except UpstreamError as error:
            return Fetched(obj, failed=str(error))
        except RejectedInput as error:  # e.g. a URL or redirect outside the upstream origins
            return Fetched(obj, rejected=str(error))
        except KcingError:
            raise  # a configuration error (an untrusted certificate) stops the run
        except Exception as error:  # noqa: BLE001 - see unexpected_failure
            log.debug("%s: fetch failed", obj.label, exc_info=True)
            return Fetched(obj, rejected=unexpected_failure("could not be fetched", error))
        digest = hashlib.sha256(content).hexdigest()
        too_long = not_built_again(obj, digest, self.options.build_timeout)
        if too_long is not None:
            return Fetched(obj, sha256=digest, rejected=too_long)
        try:
            built = self.builder.build(obj.kind, content, obj.created, listed_lab(obj),
                                       name=obj.label)
        except RejectedInput as error:
            return Fetched(obj, sha256=digest, rejected=str(error))
        except (WorkersKilled, BuildAbandoned) as error:  # the machine's doing, or the stop's: tried again
            return Fetched(obj, sha256=digest, failed=str(error))
        except Exception as error:  # noqa: BLE001 - see unexpected_failure
            log.debug("%s: documents failed", obj.label, exc_info=True)
            return Fetched(obj, sha256=digest, rejected=unexpected_failure("documents could not be made", error))
        held = len(built.encoded.data)
        self.pending.built(held)
        return Fetched(obj, sha256=digest, encoded=built.encoded, kept=built.kept, held=held)

    # Main thread: batching, sending, acknowledging -----------------------------------------

    def _take(self, future: Future) -> None:
        fetched: Fetched = result_of(future)
        try:
            self._take_fetched(fetched)
        finally:
            # Its full batches are posted (or the run is ending): the next downloads may go on.
            self.pending.taken(fetched.held)

    def _take_fetched(self, fetched: Fetched) -> None:
        obj = fetched.obj
        if fetched.failed:
            self.summary.failed += 1
            self.summary.problem("%s: %s" % (obj.label, fetched.failed))
            self.outcomes.append(Outcome(obj, FAILED, error=fetched.failed))
            log.warning("failed %s: %s", obj.label, fetched.failed)
        elif fetched.rejected:
            self._reject(obj, fetched.sha256, fetched.rejected)
        else:
            self.summary.downloaded += 1
            self._queue(fetched)
        self._write_outcomes_if_many()
        self._progress()

    def _queue(self, fetched: Fetched) -> None:
        obj = fetched.obj
        encoded = fetched.encoded
        self.outcomes.append(Outcome(obj, DOWNLOADED, sha256=fetched.sha256, document_count=len(encoded)))
        if not len(encoded):
            self._acknowledge(fetched)
            return
        self.unsent[obj.key] = len(encoded)
        self.documents_built += len(encoded)
        self.owners[obj.key] = fetched
        batcher = self.batchers.get(obj.kind)
        if batcher is None:
            batcher = self.batchers[obj.kind] = Batcher(obj.kind, self.options.max_docs, self.options.max_bytes)
        fetched.encoded = None  # the batches hold the documents now; they go with the last one
        for full in batcher.add_encoded(encoded, obj.key):
            self._send(full)

    def _flush_route(self, route: str) -> None:
        batch = self.batchers[route].flush()
        if batch is not None:
            self._send(batch)

    def _send(self, batch: Batch) -> None:
        """Post `batch` in the background; first take the answers of older posts beyond the limit,
        and of those holding another version of one of its objects.

        Two versions of a node listed in one run (a node changed while offset paging repeated
        it) make documents with the same ids, and the last to arrive is what Elasticsearch
        keeps: the newer waits until the post of the older was answered, which may come only
        after its retries."""
        if self.stop.is_set():
            raise self._interrupted()
        versions = {(fetched.obj.lineage, fetched.obj.upstream_id)
                    for fetched in map(self.owners.get, batch.owner_keys()) if fetched is not None}
        while self.posting and (len(self.posting) >= self.options.posts_in_flight
                                or any(_another_version(versions, sent[2]) for sent in self.posting)):
            self._collect(*self.posting.popleft()[:2])
        self.limiter.wait_for(len(batch))
        if self.stop.is_set():  # the pause ends at a stop: the batch stays unsent, its objects undelivered
            raise self._interrupted()
        if self.failure is not None:  # and at a post's failure, with which the run ends
            raise self.failure
        self.posting.append((batch, self.post_pool.submit(self._post, batch), versions))

    def _post(self, batch: Batch) -> None:
        """Post `batch` (in a post thread). Any error but a batch too large ends the run (`_fail`)."""
        try:
            self.sink.send(batch)
        except BatchTooLarge:
            raise
        except Exception as error:
            self._fail(error)
            raise

    def _fail(self, error: Exception) -> None:
        """The run ends with `error`, unless it is stopping or another error came first: the posts'
        retry waits, the downloads' and the pause before the next batch end now, and no retry
        starts (Stop.fail). What they had not sent stays undelivered, as at a stop: a cron run that
        failed exits at once, not after a Retry-After or a backoff of minutes."""
        if self.stop.is_set():
            return  # its waits end already, and it ends as stopped by a signal
        with self._failure_lock:
            if self.failure is None:
                self.failure = error
        fail = getattr(self.stop, "fail", None)  # a threading.Event given as the stop has none
        if fail is not None:
            fail()

    def _collect(self, batch: Batch, future: Future) -> None:
        """Wait for one post; acknowledge its documents, or split it if it was too large."""
        try:
            result_of(future)
        except BatchTooLarge as refused:
            self._split_and_send(batch, refused)
            return
        except Exception:
            # The first post to fail is what the run ends with: this one may have failed only
            # for it (no retry started, its wait cut), though its turn to be taken came first.
            if self.failure is not None:
                raise self.failure from None
            raise
        self._acknowledge_batch(batch)

    def _salvage_posts(self, wait: bool = True) -> None:
        """After a stop or an error: record the posts still in flight that did succeed (without
        `wait`, only those already answered)."""
        while self.posting:
            batch, future, _ = self.posting.popleft()
            if not wait and not future.done():
                future.cancel()
                continue
            try:
                result_of(future)
            except SinkUnavailable as error:
                # Said whatever the run is stopping for: a batch cut at the end of a signal's grace
                # period failed here when the main thread was not waiting on it.
                log.warning("%s", error)
                continue
            except Exception:  # the run is already stopping for a reported reason
                continue
            self._acknowledge_batch(batch)

    def _acknowledge_batch(self, batch: Batch) -> None:
        self.summary.batches += 1
        self.summary.documents += len(batch)
        self.summary.bytes_sent += self.sent_size(batch)
        for owner, count in batch.owner_counts():
            self._settle(owner, count)
        self._write_outcomes()

    def _settle(self, owner: tuple, count: int = 1) -> None:
        """Count `count` documents of `owner` as done; acknowledge the object when none is left."""
        self.unsent[owner] -= count
        if self.unsent[owner] == 0:
            del self.unsent[owner]
            self._acknowledge(self.owners.pop(owner))

    def _interrupted(self) -> Interrupted:
        # Documents waiting in unsent batches stay unacknowledged: their objects remain
        # undelivered and the next run sends them whole.
        return Interrupted("stopped by a signal; %s is recorded, the rest is sent by the next run" % self.kept_on_stop)

    def _split_and_send(self, batch: Batch, refused: BatchTooLarge) -> None:
        if len(batch) == 1:
            owner = batch.parts[0].owner
            fetched = self.owners.get(owner)
            if owner not in self.poisoned and fetched is not None:
                self.poisoned.add(owner)
                self._hold_too_large(fetched, refused)
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

    def _hold_too_large(self, fetched: Fetched, refused: BatchTooLarge) -> None:
        """Keep an object Logstash cannot take yet: undelivered, sent again by every next run."""
        obj = fetched.obj
        reason = ("a document of %d bytes is larger than Logstash at %s accepts (413): raise max_content_length "
                  "of that http input (or the body limit of a proxy in front of it); sent again by the next run"
                  % (refused.size, refused.url))
        self.summary.too_large += 1
        self.summary.problem("%s: %s" % (obj.label, reason))
        self.outcomes.append(Outcome(obj, TOO_LARGE, sha256=fetched.sha256, error=reason))
        log.warning("too large for Logstash: %s: %s", obj.label, reason)

    def _reject(self, obj: UpstreamObject, sha256: Optional[str], reason: str) -> None:
        self.summary.rejected += 1
        self.summary.problem("%s: %s" % (obj.label, reason))
        self.outcomes.append(Outcome(obj, REJECTED, sha256=sha256, error=reason))
        log.warning("rejected %s: %s", obj.label, reason)
        self._write_outcomes_if_many()

    def _write_outcomes_if_many(self) -> None:
        if len(self.outcomes) >= OUTCOMES_PER_WRITE:
            self._write_outcomes()

    def _write_outcomes(self) -> None:
        if self.outcomes and not self.options.dry_run:
            self.on_recorded(self.ledger.record(self.outcomes, self.destination))
            watermark.recorded(self.source, self.outcomes)
        self.outcomes = []

    def _progress(self) -> None:
        self.progress.update(self._progress_text)

    def _progress_text(self) -> str:
        s = self.summary
        elapsed = max(self.clock() - self._started, 1e-9)
        # The total is known once the listing is complete: what was listed or retried and not skipped.
        total = s.listed + s.retried - s.skipped if self.listing is not None and self.listing.finished else None
        # The earlier failures are said as the closing line says them: without them, what was
        # downloaded could pass what was listed and not skipped.
        retried = "retried %s, " % counted(s.retried, "earlier failure") if s.retried else ""
        return ("listed %d, skipped %d, downloaded %d, delivered %d, rejected %d, failed %d, %s"
                "documents sent %d (%.0f/s)%s" % (s.listed, s.skipped, s.downloaded, s.delivered, s.rejected,
                                                  s.failed, retried, s.documents, s.documents / elapsed,
                                                  self._eta(total, elapsed)))

    def _eta(self, total: Optional[int], elapsed: float) -> str:
        """The later of the downloads' end and the documents' end. Downloads run ahead of the
        posts by up to ES_QUEUE_MAX_BYTES, so the documents built and not yet sent can take a
        throttled or slow Logstash long after the last download; while full batches wait and none
        was acknowledged yet, their pace is unknown, and so is the ETA. Documents in a batch still
        filling go with the next documents, or the run's last batch."""
        s = self.summary
        if total is None:
            return ""
        downloading = seconds_left(s.downloaded + s.failed + s.rejected, total, elapsed)
        sending = seconds_left(s.documents, self.documents_built, elapsed)
        filling = sum(batcher.current.count for batcher in list(self.batchers.values()))
        if sending is None and self.documents_built - s.documents - filling > 0:
            return ""
        known = [seconds for seconds in (downloading, sending) if seconds is not None]
        return eta_of(max(known)) if known else ""


def feed(source, ledger: Ledger, sink, options: FeedOptions, limiter: Optional[RateLimiter] = None,
         on_planned: Callable[[UpstreamObject], None] = lambda obj: None,
         stop: Optional[threading.Event] = None,
         on_delivered: Callable[[UpstreamObject], None] = lambda obj: None,
         progress: Optional[Progress] = None,
         on_recorded: Callable[[List[int]], None] = lambda row_ids: None) -> RunSummary:
    """Run the feed once and return its summary. `on_delivered` hears of each object as it is
    acknowledged (its ledger write follows with the batch's outcomes); `on_recorded`, after each
    ledger write, of the row ids of the objects it marked delivered."""
    return Feed(source, ledger, sink, options, limiter, on_planned=on_planned, stop=stop,
                on_delivered=on_delivered, progress=progress, on_recorded=on_recorded).run()


def _another_version(versions: set, sent: set) -> bool:
    """Whether `sent` holds another version of something `versions` holds. The batches of one
    version (a LAVA job's thousands of log lines) go out side by side."""
    lineages = {lineage for lineage, _ in versions}
    return any(lineage in lineages and (lineage, version) not in versions for lineage, version in sent)
