"""The current KernelCI API ("Maestro", upstream.md §2): nodes by kind and update time, and artifacts.

The only module that knows the API's paths, filters and paging, and where artifacts live.

- Listing, one kind after another (checkout, kbuild, job, test, the generic `node` of older
  data, then regression: parents before children; not `process` nodes, NOT_LISTED):
  `GET <api>/nodes?kind=<kind>&updated__gte=<start>&limit=<page size>&offset=<n>`. Times in
  filters are naive UTC without a zone, as the API stores them. There is no sort: results come
  in natural (about insertion) order, and while we page the result set grows (an update keeps a
  node inside `updated__gte`; only the API deleting a node takes one out); a node seen twice is
  listed again only in a newer version. Paging by offset until `offset >= total` (or an empty
  page) can still skip a node: one that an update moves to the end of the natural order, or a
  deletion, brings those after it one place earlier. A kind whose listing saw fewer distinct
  nodes than its last `total`, or whose `total` went down from one page to the next (or grew by
  less than the nodes it saw created meanwhile), or one of whose pages, asked for one place early,
  did not start with the node the page before ended with, is listed again from offset 0
  (`api_passes.Passes`), until a pass finds no node it should have seen before and saw none of
  its own move; the versions already listed are not listed twice.
- One object per node version: its upstream id is `<node id>.<updated, ISO basic format>`, so
  a node changed since it was delivered is not skipped by the ledger, while its documents keep
  ids made from the node id alone.
- `fetch` needs no request: it wraps the listed node in the envelope documents/nodes.py reads.
  With `with_logs`, it adds a job's `callback_data` (the LAVA callback, gzip JSON) and a
  kbuild's `build_log`. Artifact URLs are made absolute against the storage base; the token is
  sent to the API only, never to the storage hosts. An artifact URL outside the upstream
  origins (the Requester's allow-list) is never fetched: its node version is rejected.
- A test's envelope also carries the job it ran in, and a regression's its failing and passing
  runs (sources/api_related.py), since the node alone does not say them.
- The watermark (kcing/watermark.py): the run asks the ledger which of the listed versions
  were delivered, and the newest time up to which all were becomes the next run's start. It
  never passes the listing's start, read from kcing's clock and lowered to the API's (its pages'
  `Date`) when that is behind: `updated` times are the API's.
- A routine run lists mostly versions delivered before. Given the ledger's `known` question,
  the listing reads only a version's id and time from each item (sources/heads.py: a page is
  decoded whole only when a node on it is wanted), checks them and makes their version ids a
  page at a time with string work done in C (a page with anything unusual goes item by item),
  asks about a page at a time, and makes objects (absolute artifact URLs, related-node memory)
  only for the rest; the versions found delivered are not asked about again for the watermark.
  A delivered job is kept as its head, made into the extract its tests use only if one is
  looked up.
"""
from __future__ import annotations

import json
import logging
import operator
import re
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from kcing.errors import (ConfigError, ObjectTooLarge, ObjectUndecodable, RejectedInput, UpstreamAnsweredError,
                          UpstreamError, shown)
from kcing.records import JOB, KBUILD, NODE_KINDS, REGRESSION, UpstreamObject, invalid_item_id
from kcing.sources import heads
from kcing.sources.api_passes import SAME_PLACE, SHIFTED, DeliveredTimes, Passes, overlap_verdict
from kcing.sources.api_related import RelatedNodes, node_from_answer
from kcing.sources.gzipped import GZIP_MAGIC, MAX_ARTIFACT_BYTES, GzipCutShort, InflatedTooLarge, gunzip
from kcing.collector import collector_paused
from kcing.documents.coerce import as_date, iso_time
from kcing.http import http_date, read_until_closed
from kcing.objectid import is_object_id, node_id as _node_id, object_id_time
from kcing.secrecy import masked
from kcing.shutdown import result_of
from kcing.sources.requester import Requester, json_of
from kcing.urls import redacted
from kcing.watermark import crawl_start, next_watermark

log = logging.getLogger(__name__)
# Said of a listing page answered 404 (or 405), or a first page answered 400, unanswered or that
# is no page: the KernelCI API answers `/nodes` under its base URL, with or without a version
# prefix, so KCI_API_URL names another server or path.
NOT_THE_API = " (is KCI_API_URL the KernelCI API's base URL, as https://api.kernelci.org/latest?)"

# Answers from a storage host that another try will not change (an expired SAS token, a file
# that was never uploaded): the node's documents are made without that log.
LOST_ARTIFACT_STATUSES = frozenset({401, 403, 404, 410})
# The start of a web page, which no artifact is (a build log may start with "<stdin>:12: warning"):
# a storage's or a proxy's page answered with 200 in place of the file, for a while. Comments may
# come first: one `<!--` to any `-->` takes in every comment between, so one optional comment
# matches what any number of them does, where `(<!--.*?-->\s*)*` tried every way of cutting
# the text into comments (`<!---->` 30 times: minutes, each one more doubling them).
_WEB_PAGE = re.compile(rb"\s*(?:<!--.*?-->\s*)?<(?:!doctype\s+html|html)[\s>]", re.IGNORECASE | re.DOTALL)
# The artifact each node kind needs for its documents with `with_logs`.
LOG_ARTIFACTS = {JOB: "callback_data", KBUILD: "build_log"}
# Envelope key <- artifact whose size in bytes a document reports (a build's `build_log_size`).
SIZED_ARTIFACTS = {"build_log": "build_log_bytes"}
# The forms the API writes `updated` in (naive UTC, with microseconds unless they are 0): a
# version id is then made from the text itself, with no datetime formatting (as `version_id`).
_CANONICAL_TIME = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?"
CANONICAL_TIME = re.compile(_CANONICAL_TIME)
# A page's ids and times, joined by newlines, checked by one match each (`_page_versions`).
_OBJECT_ID_LINES = re.compile(r"[0-9a-fA-F]{24}(?:\n[0-9a-fA-F]{24})*")
_CANONICAL_TIME_LINES = re.compile(r"%s(?:\n%s)*" % (_CANONICAL_TIME, _CANONICAL_TIME))
# A URL with a scheme ("https:", "file:") or a host ("//host/..."): anything else is a path.
_NOT_RELATIVE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|//)")
# The kinds of node no run lists, and why (said in each run's debug log; upstream.md §2.5).
NOT_LISTED = {"process": "their data is free-form: it names no kernel, board or test a document could be made of"}
# Nodes left out at most (`_around_failing_nodes`), of one page or in a row across pages with no
# node answered between them: beyond that, the API is failing, not a few nodes it cannot answer.
MAX_UNLISTABLE = 8


# A backfill with --with-logs meets many logs that will not be had (signed storage URLs expire a
# day or two after their job): of each kind of node, artifact and reason, the first few are
# named in the log, then one line says the others are not; their documents say it all the same
# (kernelci_api.artifact_errors).
NAMED_UNUSABLE_ARTIFACTS = 5


class _UnusableArtifacts:
    """Warns of the artifacts a run's nodes go without, NAMED_UNUSABLE_ARTIFACTS of a kind at
    most. Thread-safe: download threads fetch the nodes."""

    def __init__(self, named: int = NAMED_UNUSABLE_ARTIFACTS):
        self.named = named
        self._seen: Counter = Counter()
        self._lock = threading.Lock()

    def warn(self, obj: UpstreamObject, artifact: str, problem: str) -> None:
        key = (obj.kind, artifact, problem)
        with self._lock:
            self._seen[key] += 1
            seen = self._seen[key]
        if seen <= self.named:
            log.warning("%s %s: %s not usable (%s); its documents go without it", obj.kind, obj.upstream_id,
                        artifact, problem)
        elif seen == self.named + 1:  # said once there is another, not after the last one named
            log.warning("further %s nodes whose %s is not usable (%s) go unnamed in this run's log; their documents "
                        "say it (kernelci_api.artifact_errors)", obj.kind, artifact, problem)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class _Page:
    items: list  # decoded whole, or their heads (heads.NodeHead) when the page was read only that far
    total: int
    limit: int
    decode_whole: Optional[Callable[[], list]] = None  # with heads: decodes the items whole
    _whole: Optional[list] = None
    unlisted: int = 0  # nodes at the page's offsets the API failed to answer (left out)
    _dropped: int = 0  # items left out at the start, of those decode_whole answers

    def item(self, index: int):
        """Item `index` decoded whole (a page of heads is decoded whole on the first call)."""
        if self.decode_whole is None:
            return self.items[index]
        if self._whole is None:
            self._whole = self.decode_whole()[self._dropped:]
        return self._whole[index]

    def drop_first(self) -> None:
        """Leave out the first item (the page was asked for one place early, and it is the node
        the page before ended with)."""
        self.items = self.items[1:]
        if self.decode_whole is not None:
            if self._whole is not None:
                self._whole = self._whole[1:]
            else:
                self._dropped += 1


class KernelCIApi:
    """Lists node versions updated since the crawl start and wraps each in a document envelope."""

    name = "api"

    def __init__(self, requester: Requester, api_url: str, storage_url: str = "", token: str = "",
                 kinds: Sequence[str] = NODE_KINDS, since: Optional[datetime] = None, default_days: int = 2,
                 overlap: timedelta = timedelta(minutes=10), page_size: int = 500,
                 how_many: Optional[int] = None, with_logs: bool = False,
                 clock: Callable[[], datetime] = _utcnow):
        self.requester = requester
        self.api_url = api_url.rstrip("/")
        self.storage_url = storage_url.rstrip("/")
        self._headers = {"Authorization": "Bearer %s" % token} if token else {}
        self.kinds = tuple(kinds)
        self.overlap = overlap
        self.default_days = default_days
        self.page_size = page_size
        self.how_many = how_many
        self.with_logs = with_logs
        self.clock = clock
        self._since = since
        self.start = crawl_start(None, since, overlap, default_days, clock())
        self._stored: Optional[datetime] = None
        # Per kind, the listed versions the ledger did not say were delivered while listing, nor
        # recorded as settled since (`recorded`), with their `updated` times: the ledger is asked
        # about them after the run.
        self._listed: Dict[str, Dict[str, Optional[datetime]]] = {}
        # The times of the versions the ledger said were delivered while listing, or recorded as
        # delivered or rejected during the run: that is final, so only their times matter, kept
        # a minute at a time (`DeliveredTimes`).
        self._found_delivered = DeliveredTimes()
        self._listing_started: Optional[datetime] = None
        self._answered = False  # a listing page was answered: the API is there, whatever fails later
        self._complete = False
        self._unsure: Set[str] = set()  # kinds whose listing may have skipped nodes (`Passes`)
        self.left_out: List[str] = []  # why nodes were left out of the listing (the run fails them)
        self.related = RelatedNodes(self._get_node, extract_of_head=heads.job_extract)
        self._unusable_artifacts = _UnusableArtifacts()

    # Incremental crawling (called by the pipeline through kcing/watermark.py) ---------------

    def resume_from(self, watermark: Optional[datetime]) -> None:
        self._stored = watermark
        self.start = crawl_start(watermark, self._since, self.overlap, self.default_days, self.clock())

    def watermark_candidate(self, settled_ids: Callable[[str, List[str]], Set[str]]) -> Optional[datetime]:
        """Where the watermark may move after this run, or None to keep it.

        Nothing moves after an incomplete listing (an error, an interrupt, `how_many`, a kind
        whose passes kept finding skipped nodes): nodes not listed may carry any time. Nor when
        this run started later than the watermark (`--days`, `--since`): the time between was
        not crawled.
        """
        if not self._complete or self._unsure or (self._stored is not None and self.start > self._stored):
            return None
        # Delivered is final: what the listing found delivered needs no second question.
        settled, unsettled = self._found_delivered.newest_of_each_minute(), []  # `updated` times
        for kind, versions in self._listed.items():
            now_settled = settled_ids(kind, list(versions)) if versions else set()
            for upstream_id, updated in versions.items():
                (settled if upstream_id in now_settled else unsettled).append(updated)
        return next_watermark(settled, unsettled, self._listing_started)

    def recorded(self, settled: List[Tuple[str, str]]) -> None:
        """The ledger now holds these (kind, version id) as delivered or rejected: of those listed
        and handed on, only their time is kept from now on, as of those found delivered. A
        backfill hands on millions, which were otherwise each kept until the run ended."""
        for kind, upstream_id in settled:
            versions = self._listed.get(kind)
            updated = versions.get(upstream_id) if versions is not None else None
            if updated is not None:  # an unknown time stays: it holds the watermark
                del versions[upstream_id]
                self._found_delivered.add((updated,))

    def versions_held(self) -> int:
        """What the listing keeps in memory for the watermark until the run ends: one entry per
        version not found delivered while listing, and one per minute of those found delivered."""
        return sum(map(len, self._listed.values())) + len(self._found_delivered)

    # Listing -------------------------------------------------------------------------------

    # The pipeline may pass `known(kind, ids)`, which names the version ids the ledger holds as
    # delivered (and counts them as listed and skipped): no object is made for those.
    leaves_out_known = True

    def list_objects(self, known: Optional[Callable[[str, List[str]], Set[str]]] = None) -> Iterator[UpstreamObject]:
        self._listing_started = self.clock()
        self._complete = False
        self._listed = {}
        self._found_delivered = DeliveredTimes()
        self._unsure = set()
        self.left_out = []
        log.info("listing %s nodes updated since %s from %s", ", ".join(self.kinds), filter_time(self.start),
                 self.api_url)
        for kind, why in NOT_LISTED.items():
            log.debug("%s nodes are not listed: %s", kind, why)
        for kind in self.kinds:
            # With `how_many`, a page may hold more than is wanted: every item goes the long way.
            yield from self._list(kind) if known is None or self.how_many is not None else self._list_new(kind, known)
        self._complete = self.how_many is None

    def _passes(self) -> Passes:
        return Passes(lambda: self._listing_started - self.overlap)

    def _pages(self, kind: str, read_heads: bool = False, passes: Optional[Passes] = None) -> Iterator[_Page]:
        """The pages of one kind, each decoded when the caller asks for it (on the caller's
        thread, so that the caller decides whether the collector runs meanwhile); the next page
        is requested before this one is handed over, so the API's latency overlaps the work.
        With `read_heads`, items are read only as far as their heads where msgspec can (heads.py).
        With `passes` (which the caller keeps up to date with each page), each page after the
        first is asked for one place early, at the node the page before ended with, to see
        whether nodes before the offset left the listing meanwhile (`overlap_verdict`; that node
        itself is not handed over again), and the kind is paged again from offset 0 while
        `passes.again` asks for it."""
        # A page of one node cannot start one place early and still bring the next one.
        overlapping = passes is not None and self._limit() > 1
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="listing") as prefetch:
            offset = self._newest_offset(kind) if self.how_many is not None else 0
            asked = offset  # where the page upcoming starts
            upcoming = prefetch.submit(self._page, kind, asked)
            # The items of the page before, when the page upcoming starts at the last of them.
            before: Optional[list] = None
            left_in_a_row = 0  # nodes left out since the last one the API answered
            reported_before = len(self.left_out)  # this pass's reports of nodes left out come after
            try:
                while upcoming is not None:
                    again_at = 0  # items answered again at the page's start and not handed over
                    try:
                        fetched = result_of(upcoming)
                    except UpstreamAnsweredError as error:
                        if error.status != 500:
                            raise
                        # Read around the nodes failing: what it then starts with is not known to be
                        # the page before's last node, which, if it is, is a repeat like any other.
                        page = self._around_failing_nodes(kind, asked, error)
                        left_in_a_row = left_in_a_row + page.unlisted if not page.items else 0
                        if left_in_a_row > MAX_UNLISTABLE:
                            raise error
                        if passes is not None:
                            passes.left_out(page.unlisted)
                    else:
                        left_in_a_row = 0
                        page = self._decoded(kind, asked, *fetched, read_heads=read_heads)
                        if passes is not None:
                            passes.counted(page.total, http_date(fetched[1].headers.get("Date")))
                            if before is not None and page.items:
                                again_at = self._turned(kind, asked, before, page, passes)
                    offset = asked + again_at + len(page.items) + page.unlisted
                    # A page shorter than its `limit` is no end while `total` says more: a server
                    # that caps the page size may answer with the limit asked, not the one it used.
                    more = (page.items or page.unlisted) and offset < page.total
                    before = page.items if overlapping and page.items and _place(page.items[-1]) else None
                    asked = offset - 1 if before is not None else offset
                    upcoming = prefetch.submit(self._page, kind, asked) if more else None
                    total = page.total
                    empty_at = offset if not (page.items or page.unlisted) and offset < total else None
                    yield page
                    if upcoming is None and passes is not None:
                        if passes.again(kind, total, empty_at):
                            # The next pass asks for the nodes this one left out, and reports those
                            # it leaves out too: each is one node failed, not one a pass.
                            del self.left_out[reported_before:]
                            offset = asked = 0
                            before = None
                            upcoming = prefetch.submit(self._page, kind, asked)
                        elif passes.cut_short is not None:
                            self.left_out.append(passes.cut_short)
            finally:
                if upcoming is not None:  # the caller stopped early (how_many, an error, a signal)
                    upcoming.cancel()

    @staticmethod
    def _turned(kind: str, asked: int, before: list, page: _Page, passes: Passes) -> int:
        """A page asked for one place early, at the last node of the page `before`: tells `passes`
        when the turn of the page may have skipped a node (the kind is then listed again). Returns
        how many items at its start are not handed over: that node, found there as it was."""
        first = _place(page.items[0])
        verdict = overlap_verdict(_place(before[-1]), first, (_place(item) for item in before))
        if verdict == SAME_PLACE:
            page.drop_first()
            return 1
        if verdict == SHIFTED:
            log.debug("%s listing: the page at offset %d starts with %s, not with the node the page before ended "
                      "with: nodes before it left the listing while it was paged", kind, asked,
                      shown(first[0]) if first is not None else "an item naming no node")
            passes.shifted = True
        return 0

    def _list_new(self, kind: str, known: Callable[[str, List[str]], Set[str]]) -> Iterator[UpstreamObject]:
        """Page through one kind, making objects only for versions `known` does not name.

        Lists the same versions in the same order as `_list`, and records the same times for
        the watermark; a delivered job is still remembered for the tests listed after it.

        A page is decoded and sorted into delivered and not with the cyclic collector paused,
        and dropped before it runs again: otherwise the next collections would walk its
        hundred thousand objects, on a routine page only to free them afterwards.
        """
        listed = self._listed.setdefault(kind, {})
        found = self._found_delivered
        passes = self._passes()
        with closing(self._pages(kind, read_heads=True, passes=passes)) as pages:
            while True:
                with collector_paused():
                    page = next(pages, None)
                    if page is None:
                        if passes.unsure:
                            self._unsure.add(kind)
                        return
                    # The usual page (heads of nodes listed for the first time, in the API's own
                    # forms) a page at a time; any other item by item.
                    versions = _page_versions(page.items, kind) if page.decode_whole is not None else None
                    if versions is not None and passes.all_first(versions[0], versions[1]):
                        pending = self._new_on_page(kind, page, *versions, known, listed, found)
                    else:
                        pending = self._new_item_by_item(kind, page, known, passes, listed, found)
                    del page, versions
                for entry in pending:
                    yield entry if isinstance(entry, UpstreamObject) else self._object_from(kind, entry)
                del pending

    def _new_on_page(self, kind: str, page: _Page, node_ids: List[str], updated: List[datetime],
                     upstream_ids: List[str], known: Callable[[str, List[str]], Set[str]],
                     listed: Dict[str, Optional[datetime]], found: "DeliveredTimes") -> list:
        """The whole items of a page's versions `known` does not name, all of them listed (as
        `_page_versions` read them); the delivered jobs kept for their tests."""
        delivered = known(kind, upstream_ids)
        if len(delivered) == len(upstream_ids):  # the routine page: nothing new on it
            found.add(updated)
            if kind == JOB:  # their tests may not have been delivered
                self.related.keep_heads(zip(node_ids, page.items))
            return []
        pending, delivered_jobs = [], []
        for index, upstream_id in enumerate(upstream_ids):
            if upstream_id not in delivered:
                listed[upstream_id] = updated[index]
                pending.append(page.item(index))
                continue
            found.add((updated[index],))
            if kind == JOB:
                delivered_jobs.append((node_ids[index], page.items[index]))
        if delivered_jobs:
            self.related.keep_heads(delivered_jobs)
        return pending

    def _new_item_by_item(self, kind: str, page: _Page, known: Callable[[str, List[str]], Set[str]],
                          passes: Passes, listed: Dict[str, Optional[datetime]],
                          found: "DeliveredTimes") -> list:
        """`_new_on_page` for any page: the objects made the long way (an item not in the API's
        own forms) and the whole items of versions `known` does not name; a repeated node only
        when newer."""
        # First the versions of this page that will be listed, then one question to the ledger
        # about those it could hold.
        entries = []  # (node id, updated, version id, index on the page, or the object made the long way)
        for index, item in enumerate(page.items):
            version = _version_of(item if isinstance(item, heads.NodeHead) else _head_of(item), kind)
            if version is None:  # not in the API's own forms, or not of this kind: the long way
                obj = self._object_from(kind, page.item(index))
                entries.append((obj.facts.get("node_id"), obj.facts.get("updated"), obj.upstream_id, index, obj))
            else:
                entries.append((*version, index, None))
        fresh = [entry for entry in entries if passes.is_new(entry[0], entry[1])]
        del entries
        asked = [entry[2] for entry in fresh if entry[4] is None]
        delivered = known(kind, asked) if asked else set()
        pending = []  # objects made the long way, and the items of versions not delivered
        for node_id, updated, upstream_id, index, obj in fresh:
            if obj is None and upstream_id in delivered:
                found.add((updated,))
            else:
                listed[upstream_id] = updated
            if obj is not None:
                pending.append(obj)  # the listing's ledger question covers it (and rejects a problem)
            elif upstream_id in delivered:
                if kind == JOB:  # its tests may not have been delivered
                    item = page.items[index]
                    if isinstance(item, heads.JobHead):
                        self.related.keep_heads([(node_id, item)])
                    else:
                        self.related.remember(node_id, item)
            else:
                pending.append(page.item(index))
        return pending

    def _list(self, kind: str) -> Iterator[UpstreamObject]:
        """Page through one kind, an object for every item."""
        listed = self._listed.setdefault(kind, {})
        passes = self._passes()
        # With `how_many`, one pass: the listing is incomplete anyway.
        pages = self._pages(kind, passes=passes if self.how_many is None else None)
        for page in _decoded_with_collector_paused(pages):
            for item in page.items:
                obj = self._object_from(kind, item)
                updated = obj.facts.get("updated")
                if not passes.is_new(obj.facts.get("node_id"), updated):
                    continue
                listed[obj.upstream_id] = updated
                yield obj
                if self.how_many is not None and len(listed) >= self.how_many:
                    return
        if passes.unsure:
            self._unsure.add(kind)

    def _page(self, kind: str, offset: int, limit: Optional[int] = None, not_retried: Tuple[int, ...] = ()) -> tuple:
        """(URL, response) of one listing page, its body read but not decoded; a status in
        `not_retried` is not asked again."""
        url = self.api_url + "/nodes"
        params = [("kind", kind), ("updated__gte", filter_time(self.start)),
                  ("limit", limit or self._limit()), ("offset", offset)]
        first = offset == 0 and kind == self.kinds[0] and not self._answered
        try:
            response = self.requester.get(url, params=params, headers=self._headers, not_retried=not_retried)
        except UpstreamError as error:
            named = _naming_page(error, url, kind, offset)
            if first and not isinstance(error, UpstreamAnsweredError):
                # No answer at all to the run's first page: a KCI_API_URL mistyped (a host that
                # does not resolve, a port nothing listens on) as much as an API down.
                named.args = (named.args[0] + NOT_THE_API,)
            raise named from None
        except RejectedInput as refusal:
            # A page redirected off the upstream origins rejects no node: it ends the listing as a
            # failing page does, and the kinds listed before it are delivered.
            raise UpstreamError("%s (kind=%s, offset %d)" % (refusal, kind, offset)) from None
        self._check_access(url, response)
        if response.status_code == 200:
            self._answered = True
        else:
            fields, detail = refusal_detail(response)
            if response.status_code == 422 and "limit" in fields:
                # An API whose pages are capped (fastapi-pagination's own default allows 100).
                raise ConfigError("the KernelCI API at %s refused limit=%s (422: %s): set KCI_API_PAGE_SIZE to what "
                                  "it allows" % (url, dict(params)["limit"], detail))
            # A 400 to the run's first page is the API refusing the version in KCI_API_URL
            # (`Unsupported API version: v1`), or another server (Elasticsearch's port) refusing
            # the query; later in the run, the API refusing a page it answered before.
            not_the_api = response.status_code in (404, 405) or (response.status_code == 400 and first)
            raise UpstreamError("GET %s (kind=%s, offset %d) answered %d%s%s" % (
                url, kind, offset, response.status_code, ": %s" % detail if detail else "",
                NOT_THE_API if not_the_api else ""))
        # `updated` times are the API's clock, which may be behind ours: the listing's start, which
        # bounds the watermark, is the earlier of the two clocks' readings. Not a reading before
        # the window listed: nodes updated since then exist, so that clock (a proxy's) is wrong.
        answered = server_time_before(response.headers.get("Date"), getattr(response, "elapsed", None))
        if (answered is not None and self._listing_started is not None
                and self.start <= answered < self._listing_started):
            self._listing_started = answered
        return url, response

    def _newest_offset(self, kind: str) -> int:
        """Where the newest `how_many` nodes of `kind` begin. The API has no sort: its order is
        about insertion order, oldest first, so the newest are the last `how_many` of the
        listing, counted by a one-node page's `total`."""
        url, response = self._page(kind, 0, limit=1)
        total = self._decoded(kind, 0, url, response).total
        return max(0, total - self.how_many)

    def _around_failing_nodes(self, kind: str, offset: int, error: UpstreamAnsweredError) -> _Page:
        """The page at `offset`, which the API kept answering with 500, read in halves (each asked
        once for a 500) down to the nodes it fails to answer alone, which are left out.

        The API validates every node of a page as it answers it: one node stored in a form it no
        longer accepts fails every page that holds it, which would stop each run at that page for
        good. The nodes around it are listed; the kind's listing is then `unsure`, so the
        watermark stays before the nodes left out and each run asks for them again. More than
        MAX_UNLISTABLE of the page left out is the API failing, not nodes: `error` is raised."""
        items: list = []
        unlisted, total = 0, None
        limit = self._limit()
        pending = [(offset, limit)]
        while pending:
            start, size = pending.pop(0)
            try:
                # Each part asked once for a 500, which another try does not change; retried as any
                # page for a passing failure (a 429 of a rate limit the parts' burst of requests met).
                url, response = self._page(kind, start, size, not_retried=(500,))
            except UpstreamAnsweredError as failure:
                if failure.status != 500:
                    raise
                if size > 1:
                    pending[:0] = [(start, size // 2), (start + size // 2, size - size // 2)]
                    continue
                unlisted += 1
                if unlisted > MAX_UNLISTABLE:
                    raise error from None
                problem = ("%s listing: the API answers 500 for the node at offset %d alone (GET %s); it is left "
                           "out, and the watermark stays before it" % (kind, start, self.api_url + "/nodes"))
                log.warning(problem)
                self.left_out.append(problem)
                continue
            part = self._decoded(kind, start, url, response)
            items.extend(part.items)
            total = part.total
            answered = len(part.items)
            if answered < size:
                if not answered or start + answered >= part.total:
                    break  # the end of the listing, or an empty page short of it: paged on from here
                # A server that caps the page size answered the first part only: the rest is asked
                # for before the parts after it, which would otherwise be taken for its neighbours.
                pending.insert(0, (start + answered, size - answered))
        if total is None:  # no part of the page answered: the listing goes on past it, to see
            total = offset + unlisted + 1
        return _Page(items, total, limit, unlisted=unlisted)

    def _decoded(self, kind: str, offset: int, url: str, response, read_heads: bool = False) -> _Page:
        """The page's items, total and limit; with `read_heads`, the items' heads where msgspec reads
        the page, and the whole items when first asked for."""
        page = heads.node_heads(response, jobs=kind == JOB) if read_heads else None
        if page is not None:
            items, total, limit, answered = page.items, page.total, page.limit, page.offset
        else:
            items, total, limit, answered = self._envelope(response)
        if not isinstance(items, list) or not _is_count(total):
            # The run's first page so answered: most often another server at KCI_API_URL (a
            # Logstash input answers "ok" to any path), not a page of the API gone wrong.
            first = offset == 0 and kind == self.kinds[0]
            raise UpstreamError("GET %s (kind=%s, offset %d) answered a malformed page: no items list and total%s"
                                % (url, kind, offset, NOT_THE_API if first else ""))
        if _is_count(answered) and answered != offset:
            # A server (or a cache before it) that does not page as asked: its items are not
            # those at `offset`, and listing on would take repeats for the rest.
            raise UpstreamError("GET %s (kind=%s, offset %d) answered the page at offset %d instead"
                                % (url, kind, offset, answered))
        limit = limit if _is_count(limit) and limit > 0 else self._limit()
        if page is None:
            return _Page(items, total, limit)

        def whole() -> list:
            decoded = self._envelope(response)[0]
            if not isinstance(decoded, list) or len(decoded) != len(items):
                raise UpstreamError("GET %s (kind=%s, offset %d) answered a page that reads two ways"
                                    % (url, kind, offset))
            return decoded
        return _Page(items, total, limit, whole)

    @staticmethod
    def _envelope(response) -> tuple:
        """(items, total, limit, offset) of a page decoded whole; None for what it lacks."""
        try:
            envelope = json_of(response)
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict):
            return None, None, None, None
        return envelope.get("items"), envelope.get("total"), envelope.get("limit"), envelope.get("offset")

    def _limit(self) -> int:
        return self.page_size if self.how_many is None else max(1, min(self.page_size, self.how_many))

    def _check_access(self, url: str, response) -> None:
        if response.status_code not in (401, 403):
            return
        # As one short line: the message is the run's last line, and the API's text could be anything.
        _, detail = refusal_detail(response)
        reason = "(%d%s)" % (response.status_code, ": %s" % detail if detail else "")
        if self._headers:
            raise ConfigError("the KernelCI API at %s refused KCI_API_TOKEN %s: check the token, or leave "
                              "KCI_API_TOKEN empty (reading nodes needs none)" % (url, reason))
        raise ConfigError("the KernelCI API at %s asks for a token %s: set KCI_API_TOKEN" % (url, reason))

    def _object_from(self, kind: str, item) -> UpstreamObject:
        """The object for one listed node; an unusable item becomes an object with a problem."""
        node_id = _node_id(item) if isinstance(item, dict) else None
        updated = _time(item.get("updated")) if isinstance(item, dict) else None
        if node_id is None or updated is None:
            # An item whose id is unusable is named by its content: two such items are two rejections.
            return UpstreamObject(self.name, kind, node_id or invalid_item_id(item), "", facts={"updated": None},
                                  problem=unusable_item_reason(item, node_id))
        upstream_id = version_id(node_id, updated)
        url = "%s/node/%s" % (self.api_url, node_id)
        facts = {"node_id": node_id, "updated": updated, "node": _with_absolute_artifacts(item, self.storage_url)}
        problem = None if item.get("kind") == kind else "listed as kind=%s but is %s" % (kind, shown(item.get("kind")))
        # A node's date, which names its documents' index, must not change between versions: its
        # `created` time, else the time its id was made, never `updated`. A `created` no index can
        # be named after (year 1, year 9999) counts as none, as the node's documents read it.
        created = as_date(item.get("created")) or object_id_time(node_id) or updated
        if kind == JOB and problem is None:
            self.related.remember(node_id, item)  # its tests, listed next, need its LAVA job id
        return UpstreamObject(self.name, kind, upstream_id, url, created, facts, problem=problem)

    # Content -------------------------------------------------------------------------------

    def fetch(self, obj: UpstreamObject) -> bytes:
        """The envelope of the listed node, with its log artifact when `with_logs` asks for it."""
        node = obj.facts["node"]
        envelope = {"node": node, "viewer_url": self.viewer_url(obj.facts["node_id"])}
        envelope.update(self.related.for_envelope(obj.kind, node))
        if obj.kind == REGRESSION:
            data = node.get("data") if isinstance(node.get("data"), dict) else {}
            envelope["viewer_urls"] = {name: self.viewer_url(data[name]) for name in ("fail_node", "pass_node")
                                       if is_object_id(data.get(name))}
        artifact = LOG_ARTIFACTS.get(obj.kind) if self.with_logs else None
        artifacts = node.get("artifacts")
        url = artifacts.get(artifact) if artifact and isinstance(artifacts, dict) else None
        if isinstance(url, str) and url:
            try:
                text, problem, size = self._artifact_text(url)
            except RejectedInput as refusal:  # outside the upstream origins: the node is refused
                raise RejectedInput("%s: %s" % (artifact, refusal)) from None
            if problem is None:
                envelope[artifact] = text
                if artifact in SIZED_ARTIFACTS:
                    # The text is the file decoded, bytes that are not UTF-8 replaced: its size
                    # is the file's, counted here.
                    envelope[SIZED_ARTIFACTS[artifact]] = size
            else:
                self._unusable_artifacts.warn(obj, artifact, problem)
                envelope["artifact_errors"] = {artifact: problem}
        return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def viewer_url(self, node_id: str) -> str:
        """The API's HTML view of a node: what people open from a dashboard."""
        return "%s/viewer?node_id=%s" % (self.api_url, node_id)

    def _get_node(self, node_id: str):
        """`GET <api>/node/<id>`: the node, or None when the API does not know the id."""
        url = "%s/node/%s" % (self.api_url, node_id)
        try:
            response = self.requester.get(url, headers=self._headers)
        except RejectedInput as refusal:
            # The API redirecting off the upstream origins (a maintenance page elsewhere) says
            # nothing of the node asking: it fails, as a listing page so redirected does, and the
            # next run asks again; rejected, a test's new version was never sent.
            raise UpstreamError(str(refusal)) from None
        self._check_access(url, response)
        try:
            answer = json_of(response) if response.status_code == 200 else None
        except ValueError:
            raise UpstreamError("GET %s answered a body that is not JSON" % url) from None
        return node_from_answer(url, response.status_code, answer)

    def _artifact_text(self, url: str) -> tuple:
        """(text, None, its size in bytes), or (None, why, None) when the file will not be had;
        passing failures raise. The size is the file's own (decompressed when it was gzip), which
        the text, decoded with bytes that are not UTF-8 replaced, no longer tells."""
        # No Authorization header: artifacts live on other hosts, which must never see the token.
        try:
            response = self.requester.get(url)
        except (ObjectTooLarge, ObjectUndecodable) as error:
            # As a log inflating too far, or a broken one that its server labelled gzip: the node
            # goes without it.
            return None, str(error), None
        if response.status_code in LOST_ARTIFACT_STATUSES:
            return None, "HTTP %d" % response.status_code, None
        if response.status_code != 200:
            raise UpstreamError("GET %s answered %d" % (_without_query(url), response.status_code))
        content = response.content
        if content[:2] == GZIP_MAGIC:  # gzip file content: servers send it without Content-Encoding
            # Held to KCI_MAX_OBJECT_BYTES once decompressed, as a file its server labels gzip is:
            # the setting bounds what a log costs to build, however its storage serves it.
            limit = self.requester.reader.max_bytes
            try:
                content = gunzip(content, min(limit, MAX_ARTIFACT_BYTES))
            except ValueError as error:
                if isinstance(error, InflatedTooLarge) and limit < MAX_ARTIFACT_BYTES:
                    return None, "%s: raise KCI_MAX_OBJECT_BYTES to take it" % error, None
                if isinstance(error, GzipCutShort) and read_until_closed(response):
                    # Its end was the connection's, not the file's: a drop half-way, which the next
                    # try mends (the node fails, and is fetched again), as when its host labels the
                    # same bytes Content-Encoding: gzip. Framed whole, the file itself is cut short.
                    raise UpstreamError("GET %s: the connection closed before the end of its gzip file (sent "
                                        "without a Content-Length or chunks)" % _without_query(url)) from None
                return None, str(error), None
        if _WEB_PAGE.match(content[:4096]):
            # Counted as the log, its figures would be a page's, for good: the node is tried again.
            raise UpstreamError("GET %s answered a web page with 200, not the file (a storage's or a proxy's "
                                "page)" % _without_query(url))
        return content.decode("utf-8", "replace"), None, len(content)


def _naming_page(error: UpstreamError, url: str, kind: str, offset: int) -> UpstreamError:
    """`error`, its class and status kept, its text naming the listing page it happened on, as an
    error answer is named: the requester names the path alone, and the run's last line is to say
    which kind and offset failed."""
    text, asked = str(error), "GET %s " % redacted(url)
    page = "(kind=%s, offset %d)" % (kind, offset)
    error.args = (asked + page + " " + text[len(asked):] if text.startswith(asked) else "%s %s" % (text, page),)
    return error


def unusable_item_reason(item: Any, node_id: Optional[str]) -> str:
    """Why a listed item cannot be a node version, for one whose id or `updated` time is not
    usable (`node_id`: its id read, None when not an ObjectId): which of the two, with what the
    item held, and, when the id is the bad part, the node's name, so that it can be found."""
    if not isinstance(item, dict):
        return "listed item is not a node object but %s" % _json_type(item)
    if node_id is None:
        raw = item.get("id", item.get("_id"))
        named = " (named %s)" % shown(item["name"]) if isinstance(item.get("name"), str) else ""
        if raw is None:
            return "listed node has no id%s" % named
        return "listed node has no valid id: %s%s" % (shown(raw), named)
    if item.get("updated") is None:  # absent, or JSON's null
        return "listed node has no updated time"
    return "listed node's updated time is no date: %s" % shown(item["updated"])


def _json_type(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def version_id(node_id: str, updated: datetime) -> str:
    """The upstream id of one node version: `<node id>.<updated, ISO 8601 basic format>`.

    Only characters that are safe in file names (gen_samples names files after it).
    """
    stamp = updated.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")
    return "%s.%s" % (node_id, stamp.replace("-", "").replace(":", ""))


def refusal_detail(response) -> Tuple[Set[str], str]:
    """The query fields an error answer names and its `detail` as one line: FastAPI's
    `{"detail": "text"}`, or its validation list `{"detail": [{"loc": ["query", "limit"], "msg": ...}]}`;
    or the first line of a plain-text answer (the API's `Unsupported API version: v1`)."""
    try:
        detail = json_of(response).get("detail")
    except (ValueError, AttributeError):
        if not (response.headers.get("Content-Type") or "").startswith("text/plain"):
            return set(), ""  # HTML from a proxy says nothing one line could
        # Masked before the cut: a proxy's page echoing the request quotes the token.
        lines = masked(response.content[:4096].decode("utf-8", "replace")).strip().splitlines()
        return set(), " ".join(lines[0].split())[:300] if lines else ""
    if isinstance(detail, str):
        return set(), " ".join(masked(detail).split())[:300]
    if not isinstance(detail, list):
        return set(), ""
    fields, parts = set(), []
    for problem in detail:
        if not isinstance(problem, dict):
            continue
        loc = [str(part) for part in problem.get("loc") or () if part not in ("query", "body")]
        fields.update(loc[:1])
        parts.append("%s%s" % ("%s: " % ".".join(loc) if loc else "", " ".join(masked(str(problem.get("msg", ""))).split())))
    return fields, "; ".join(parts)[:300]


def server_time_before(date_header: Optional[str], elapsed: Optional[timedelta]) -> Optional[datetime]:
    """A time of the server's clock no later than when it was sent a request, from its answer's
    `Date` header (whole seconds, rounded down, stamped before the answer reached us) less the
    time the request took; None without a readable Date."""
    stamped = http_date(date_header)
    if stamped is None:
        return None
    took = elapsed if isinstance(elapsed, timedelta) and elapsed > timedelta(0) else timedelta(0)
    try:
        return stamped.astimezone(timezone.utc) - took
    except OverflowError:  # a date at the calendar's edge (`31 Dec 9999 23:59:59 -0100`): no reading
        return None


def filter_time(when: datetime) -> str:
    """A time as the API's filters take it: naive UTC, microseconds, no zone."""
    return when.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


def _place(item) -> Optional[tuple]:
    """(node id, `updated`) of a listed item as the API wrote them, where the next page, asked one
    place early, is to start (`overlap_verdict`); None for an item naming no node by text."""
    if isinstance(item, heads.NodeHead):
        node_id, updated = item.node_id, item.updated
    elif isinstance(item, dict):
        node_id, updated = item["id"] if "id" in item else item.get("_id"), item.get("updated")
    else:
        return None
    return (node_id, updated) if isinstance(node_id, str) and isinstance(updated, str) else None


def _version_of(head: heads.NodeHead, kind: str) -> Optional[tuple]:
    """(node id, updated, version id) of a listed item of `kind` whose id and time are in the
    API's own forms; None for anything else, which `_object_from` then reads the long way."""
    if head.kind != kind:
        return None
    node_id, text = head.node_id, head.updated
    if not (is_object_id(node_id) and isinstance(text, str) and CANONICAL_TIME.fullmatch(text)):
        return None
    try:
        updated = datetime.fromisoformat(text + "+00:00")
    except ValueError:  # not a date (month 13): the long way makes it a problem
        return None
    node_id = node_id.lower()
    stamp = text.replace("-", "").replace(":", "")
    return node_id, updated, "%s.%s" % (node_id, stamp if len(stamp) > 15 else stamp + ".000000")


def _page_versions(items: list, kind: str) -> Optional[tuple]:
    """For a page of heads: (node ids, updated times, version ids), three lists in page order,
    when every item is of `kind` with its id and time in the API's own forms; else None, and
    the page is read item by item (`_version_of`). The same values as `_version_of`, made a
    page at a time: a routine run does this for every node it lists."""
    if not items or [head.kind for head in items].count(kind) != len(items):
        return None
    try:
        texts = "\n".join([head.updated for head in items])
        try:
            ids = "\n".join([head.id for head in items])
        except TypeError:  # no `id`: an API from before 2023 names nodes by `_id`
            ids = "\n".join([head.node_id for head in items])
    except TypeError:  # an id or time that is not text
        return None
    # One newline per separator: no id or time holds one, so each line is one item's.
    lines = len(items) - 1
    if (ids.count("\n") != lines or texts.count("\n") != lines or not _OBJECT_ID_LINES.fullmatch(ids)
            or not _CANONICAL_TIME_LINES.fullmatch(texts)):
        return None
    try:
        updated = list(map(datetime.fromisoformat, (texts.replace("\n", "+00:00\n") + "+00:00").split("\n")))
    except ValueError:  # not a date (month 13): item by item, where the long way makes it a problem
        return None
    ids = ids.lower()
    stamps = texts.replace("-", "").replace(":", "").split("\n")
    if texts.count(".") != len(items):  # a time without microseconds (they were 0)
        stamps = [stamp if len(stamp) > 15 else stamp + ".000000" for stamp in stamps]
    # "<node id>." + stamp, joined by C-level built-ins alone
    upstream_ids = list(map(operator.add, (ids.replace("\n", ".\n") + ".").split("\n"), stamps))
    return ids.split("\n"), updated, upstream_ids


def _head_of(item) -> heads.NodeHead:
    """The head of an item decoded whole: what `_version_of` reads."""
    if not isinstance(item, dict):
        return heads.NodeHead()  # no kind: the long way
    return heads.NodeHead(id=item["id"] if "id" in item else heads.ABSENT,
                          object_id=item["_id"] if "_id" in item else heads.ABSENT,
                          kind=item.get("kind"), updated=item.get("updated"))


def _decoded_with_collector_paused(pages: Iterator[_Page]) -> Iterator[_Page]:
    """`pages`, each decoded with the cyclic collector paused (a page of nodes holds no cycles)."""
    with closing(pages):
        while True:
            with collector_paused():
                page = next(pages, None)
            if page is None:
                return
            yield page


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _time(value) -> Optional[datetime]:
    """An API time (naive UTC ISO 8601) as aware UTC, read as `created` is (`iso_time`); None
    when absent or unreadable."""
    return iso_time(value) if isinstance(value, str) else None


def _with_absolute_artifacts(node: dict, storage_url: str) -> dict:
    """The node with relative artifact paths joined to `storage_url`; absolute URLs kept whole."""
    artifacts = node.get("artifacts")
    if not isinstance(artifacts, dict) or not storage_url or not any(map(_is_relative, artifacts.values())):
        return node
    absolute = {name: storage_url + "/" + url.lstrip("/") if _is_relative(url) else url
                for name, url in artifacts.items()}
    return dict(node, artifacts=absolute)


def _is_relative(url) -> bool:
    # Absolute URLs are kept whole, SAS query strings and all: the whole URL is the address.
    return isinstance(url, str) and bool(url) and not _NOT_RELATIVE.match(url)


def _without_query(url: str) -> str:
    # Storage URLs may carry SAS signatures: keep them out of the ledger's error text.
    return url.split("?", 1)[0]
