"""Listing and skipping: the objects a source lists, less those the ledger holds as delivered.

The first half of a feed run (kcing/pipeline.py does delivery and acknowledgement): it counts
what was listed and skipped into the run's summary and hands unusable items to `reject`.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timezone
from itertools import islice
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

from kcing import keptdays
from kcing.building import BUILT_TOO_LONG, too_long_before
from kcing.errors import UpstreamError

from kcing.ledger.ledger import Ledger
from kcing.plural import counted, verb
from kcing.records import BOOT, BUILD, UpstreamObject
from kcing.sources import completed
from kcing.sources.localfiles import LOCAL_SOURCES

log = logging.getLogger(__name__)

LOOKUP_CHUNK = 500
# The sources whose objects may be versions of a KernelCI API node (`<node id>.<updated>`).
NODE_VERSION_SOURCES = ("samples", "api")
# The kinds whose files carry no date of their own: the listing's date names their index.
LISTING_DATED_KINDS = (BUILD, BOOT)


class Listing:
    """The objects of one run that still need delivering, listed lazily, a chunk at a time."""

    def __init__(self, source, ledger: Ledger, destination: Callable[[str], str], summary,
                 reject: Callable[[UpstreamObject, Optional[str], str], None], progress: Callable[[], None]):
        self.source = source
        self.ledger = ledger
        self.destination = destination  # kind -> where this run delivers it
        self.summary = summary
        self.reject = reject
        self.progress = progress
        self.finished = False  # every object listed (the run's total is known)
        # Why the listing ended early (a page still refused after its retries): the objects
        # listed before it are handed on all the same, and the run stops with it once they are
        # delivered.
        self.failure: Optional[UpstreamError] = None
        self.waiting = 0  # objects listed, not delivered before, and not handed on yet
        # The keys of the objects an earlier run did not deliver that the ledger adds to the
        # listing (`_with_earlier_failures`): the summary counts them apart from what upstream
        # listed, which a user compares with upstream's own count.
        self.retrying: Set[tuple] = set()

    def candidates(self) -> Iterator[UpstreamObject]:
        return self._undelivered(self._listing())

    def _listing(self) -> Iterator[UpstreamObject]:
        if getattr(self.source, "leaves_out_known", False):
            listed = self.source.list_objects(known=self._known_delivered)
        else:
            listed = self.source.list_objects()
        window_start = getattr(self.source, "window_start", None)
        start = window_start() if window_start is not None else None
        if start is None:
            return listed
        # Midnight UTC of the first day whose indices drp keeps, as reconcile reads it.
        kept = keptdays.first_kept(datetime.now(timezone.utc).date(), getattr(self.source, "retention_days", None),
                                   self.ledger.deleted_before())
        return self._with_earlier_failures(listed, start, keptdays.day_start(kept) if kept is not None else None)

    def _with_earlier_failures(self, listed: Iterator[UpstreamObject], start: datetime,
                               kept_from: Optional[datetime]) -> Iterator[UpstreamObject]:
        """The listing, then the objects it no longer lists: those dated before `start`, where a
        source that lists a window of days (the legacy one) begins by this host's clock, that an
        earlier run did not deliver here (failed, too large for Logstash, or in hand when a run
        stopped). The next run was to try them again; out of the window, only the ledger still
        names them. Those dated before `kept_from` (the first day drp keeps) are left: their
        index is one drp deletes or deleted, and a delivery would make it again. They are read
        from the ledger before the listing (the failures of this run are not among them), and those the
        listing gives after all (upstream's day begins before this host's) are left to it: no
        object is taken twice. A listing that fails part way ends with its error after them: they
        do not depend on it, and the objects it listed before the error are delivered too."""
        earlier = {obj.key: obj for kind in getattr(self.source, "kinds", ())
                   for obj in self.ledger.undelivered_before(self.source.name, kind, self.destination(kind), start,
                                                             kept_from)}
        failure: Optional[UpstreamError] = None
        try:
            for obj in listed:
                earlier.pop(obj.key, None)
                yield obj
        except UpstreamError as error:
            failure = error
        if earlier:
            log.info("%s dated before %s %s not delivered by an earlier run, and the listing no longer "
                     "lists %s: trying %s again", counted(len(earlier), "object"), start.strftime("%Y-%m-%d %H:%M UTC"),
                     verb(len(earlier), "was", "were"), verb(len(earlier), "it", "them"),
                     verb(len(earlier), "it", "them"))
            earlier = self._at_this_storage(earlier)
        self.retrying = set(earlier)
        yield from earlier.values()
        if failure is not None:
            raise failure

    def _at_this_storage(self, earlier: dict) -> dict:
        """The earlier failures, each asked for where this run's source keeps its files now: a
        row holds the URL an earlier run built, at a storage KCI_STORAGE_URL may no longer name."""
        relocate = getattr(self.source, "at_this_storage", None)
        if relocate is None:
            return earlier
        storages = self.ledger.storages_recorded(self.source.name)
        return {key: relocate(obj, storages) for key, obj in earlier.items()}

    def _known_delivered(self, kind: str, upstream_ids: List[str]) -> Set[str]:
        """For sources that leave out what was delivered while listing: which ids those are."""
        found = self.ledger.delivered_ids(self.source.name, kind, upstream_ids, self.destination(kind))
        self.summary.listed += len(found)
        self.summary.skipped += len(found)
        self.progress()
        return found

    def _undelivered(self, objects: Iterator[UpstreamObject]) -> Iterator[UpstreamObject]:
        """Yield listed objects the ledger has not seen delivered; record unusable items as rejected.

        When the listing fails, the objects listed before the failing page are yielded, then
        the listing ends with its error in `failure`."""
        while True:
            chunk, failure = _next_chunk(objects)
            if not chunk:
                self._end(failure)
                return
            retried = sum(1 for obj in chunk if obj.key in self.retrying)
            self.summary.listed += len(chunk) - retried
            self.summary.retried += retried
            usable = []
            for obj in chunk:
                if obj.problem:
                    self.reject(obj, None, obj.problem)
                else:
                    usable.append(obj)
            delivered = set()
            for kind in {obj.kind for obj in usable}:
                ids = [obj.upstream_id for obj in usable if obj.kind == kind]
                delivered |= {(kind, upstream_id) for upstream_id in self.ledger.delivered_ids(self.source.name, kind, ids,
                                                                                               self.destination(kind))}
            delivered -= self._changed_since_delivered(usable, delivered)
            self._warn_of_other_dates(usable, delivered)
            undelivered = self._with_builds_too_long(self._newer_than_delivered(
                [obj for obj in usable if (obj.kind, obj.upstream_id) not in delivered]))
            self.summary.skipped += len(usable) - len(undelivered)
            self.waiting = len(undelivered)
            del usable
            for obj in undelivered:
                self.waiting -= 1
                obj = completed(self.source, obj)
                if obj.problem:
                    self.reject(obj, None, obj.problem)
                else:
                    yield obj
            self.progress()
            if failure is not None:
                self._end(failure)
                return

    def _changed_since_delivered(self, objects: List[UpstreamObject], delivered: Set[tuple]) -> Set[tuple]:
        """The (kind, upstream id) of those delivered `objects` whose content is known before it
        is read (`content_sha256`: a sample's manifest entry) and is not the content delivered.

        An edited sample, or one saved again (with its log by `gen_samples --with-logs`), is not
        what the destination holds: it is delivered again, as a local file with other content is."""
        known = [obj for obj in objects if "content_sha256" in obj.facts and (obj.kind, obj.upstream_id) in delivered]
        changed: Set[tuple] = set()
        for obj, was in self._recorded(known, self.ledger.delivered_hashes):
            if was and was != obj.facts["content_sha256"]:
                log.info("%s %s changed since it was delivered (sha256 %s, now %s): it is delivered again",
                         obj.kind, obj.upstream_id, was[:12], obj.facts["content_sha256"][:12])
                changed.add((obj.kind, obj.upstream_id))
        return changed

    def _with_builds_too_long(self, objects: List[UpstreamObject]) -> List[UpstreamObject]:
        """`objects`, those an earlier run rejected because building their documents took longer
        than KCING_BUILD_TIMEOUT marked with that content's hash and that limit (BUILT_TOO_LONG):
        the feed does not build the same content again under a limit no longer (kcing/building.py).
        A rejected legacy file is listed again by every run that lists it (fixed upstream, it is
        delivered), and such a file would hold a worker as long every time."""
        marked = {}
        for obj, rejected in self._recorded(objects, self.ledger.rejections):
            sha256, reason = rejected or (None, None)
            limit = too_long_before(reason)
            if sha256 and limit is not None:
                marked[obj.key] = replace(obj, facts={**obj.facts, BUILT_TOO_LONG: (sha256, limit)})
        return [marked.get(obj.key, obj) for obj in objects] if marked else objects

    def _recorded(self, objects: List[UpstreamObject],
                  lookup: Callable[..., Dict[str, Any]]) -> Iterator[Tuple[UpstreamObject, Any]]:
        """Each of `objects` with what `lookup` (a Ledger method taking source, kind, upstream ids
        and destination: what was delivered, or rejected) says was recorded of it, None where
        nothing was."""
        for kind in sorted({obj.kind for obj in objects}):
            of_kind = [obj for obj in objects if obj.kind == kind]
            recorded = lookup(self.source.name, kind, [obj.upstream_id for obj in of_kind], self.destination(kind))
            for obj in of_kind:
                yield obj, recorded.get(obj.upstream_id)

    def _warn_of_other_dates(self, objects: List[UpstreamObject], delivered: Set[tuple]) -> None:
        """Say so of those delivered `objects` dated now by another day than they were delivered
        with: a file given again with another `--date`, a sample whose manifest date was edited.
        The day names the index of a build or boot report, whose file carries no date of its
        own; skipped as delivered, it stays in the index it went to, and the run must not let a
        user take the new date as applied. Only for local files and samples: a crawled object's
        listing date is upstream's, the same at every listing."""
        if self.source.name not in LOCAL_SOURCES:
            return
        dated = [obj for obj in objects if obj.kind in LISTING_DATED_KINDS and obj.created is not None
                 and (obj.kind, obj.upstream_id) in delivered]
        for obj, was in self._recorded(dated, self.ledger.delivered_dates):
            now = obj.created.astimezone(timezone.utc).date()
            if was is not None and was.date() != now:
                log.warning("%s was delivered dated %s, not %s: skipped as delivered, its documents stay in "
                            "the indices of %s", obj.label, was.date(), now, was.date())

    def _newer_than_delivered(self, objects: List[UpstreamObject]) -> List[UpstreamObject]:
        """`objects` but the versions of a KernelCI API node older than one delivered already to
        this run's destination, by a replay or by the API's feed: their documents have the same
        ids, and delivered after it, the older would replace the newer in Elasticsearch. Only
        samples may list one (a manifest merged from two directories, edited by hand, or saved
        before the feed delivered a newer version): the API lists a node's current version."""
        if self.source.name != "samples":
            return objects
        newer = []
        for obj in objects:
            node = obj.facts.get("node_id")
            newest = (self.ledger.newest_delivered_version(NODE_VERSION_SOURCES, obj.kind, node,
                                                           self.destination(obj.kind))
                      if isinstance(node, str) and node else None)
            if newest is not None and newest > obj.upstream_id:
                log.warning("%s is older than version %s of its node, delivered already: skipped, so that "
                            "Elasticsearch keeps the newer", obj.label, newest)
            else:
                newer.append(obj)
        return newer

    def _end(self, failure: Optional[UpstreamError]) -> None:
        if failure is None:
            self.finished = True
            return
        log.error("listing failed: %s; delivering what was listed before it", failure)
        self.failure = failure


def _next_chunk(objects: Iterator[UpstreamObject]) -> Tuple[List[UpstreamObject], Optional[UpstreamError]]:
    """Up to LOOKUP_CHUNK listed objects, and the listing's error when it failed after them."""
    chunk: List[UpstreamObject] = []
    try:
        for obj in islice(objects, LOOKUP_CHUNK):
            chunk.append(obj)
    except UpstreamError as error:
        return chunk, error
    return chunk, None
