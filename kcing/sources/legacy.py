"""Legacy KernelCI: the web `_ajax` listings (behind a CSRF token) and the storage files.

The only module that knows the legacy URLs and storage layout:

- builds:  <storage>/<file_server_resource>/build.json, or bmeta.json alone (from 2021-04)
- boots:   <storage>/<file_server_resource>/<lab>/lava-json-<board>.json  (LAVA labs)
           <storage>/<file_server_resource>/<lab>/boot-<board>.json       (labs without LAVA, and
           a LAVA lab's boot whose directory holds no lava-json file: one from before 2017-12-21)
"""
from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterator, List, Optional, Set, Tuple
from urllib.parse import quote, unquote, urlsplit

from kcing.digits import ascii_digits
from kcing.documents import page_instead
from kcing.documents.coerce import iso_time
from kcing.errors import RejectedInput, UpstreamAnsweredError, UpstreamError, shown
from kcing.http import http_date
from kcing.keptdays import cutoff_day, day_start
from kcing.records import BOOT, BUILD, LAVA, UpstreamObject, invalid_item_id
from kcing.collector import collector_paused
from kcing.objectid import is_object_id
from kcing.secrecy import masked
from kcing.shutdown import result_of
from kcing.sources import heads
from kcing.sources.gzipped import GZIP_MAGIC, gunzip, gzip_problem
from kcing.sources.listed import ListedIds
from kcing.sources.requester import Requester, json_of
from kcing.sources.storagepaths import SAFE_SEGMENT

log = logging.getLogger(__name__)

# The token is the first `content="..."` after the page's first "csrf-token" (`<meta
# name="csrf-token" content="...">`): what the original tool's `csrf-token.*?content="([^"]+)"`
# (DOTALL) finds, without trying that pattern again from every later "csrf-token" to the end of
# the page, which took minutes on a page of a megabyte naming it often and no content after.
_CSRF_NAME = "csrf-token"
_CSRF_CONTENT = re.compile(r'content="([^"]+)"')

# Ask only for what the crawl needs: build items carry megabytes of dtb lists otherwise.
LISTING_FIELDS = ("_id", "created_on", "file_server_resource", "lab_name", "board", "job", "git_branch",
                  "kernel", "arch", "defconfig_full", "build_environment")
BUILD_FILE = "build.json"  # until 2021-04
BMETA_FILE = "bmeta.json"  # from 2020-09; alone from 2021-04
# A LAVA lab's boot file: the callback, stored from 2017-12-21 on; before, and until 2020-07, every
# lab's boot had the boot report the backend wrote (upstream.md §1.2, §1.6).
LAVA_FILE_PREFIX = "lava-json-"
BOOT_FILE_PREFIX = "boot-"
RESOURCE_FALLBACK = ("job", "git_branch", "kernel", "arch", "defconfig_full", "build_environment")
# Storage had no build environment level before early 2019 (upstream.md §1.6): an item of then
# names none, and its directory ends with the defconfig.
OPTIONAL_RESOURCE_PARTS = ("build_environment",)
# Said of a home page without a token: the public legacy frontend is gone (upstream.md §0) and
# kernelci.org serves the project's site, while the default source is still the legacy one.
NOT_A_LEGACY_FRONTEND = (": is KCI_HOST a legacy KernelCI frontend? The public one (kernelci.org, later "
                         "linux.kernelci.org) was retired in 2024; --source api crawls the current KernelCI API")
# What a home page without a token answered when KCI_HOST names another server than a legacy
# frontend: a page of its own, or none at `/` (the KernelCI API's host answers 404 there).
NO_FRONTEND_THERE = (200, 404, 410)
# Said of a home page without a token once it gave one in the run: the host is a legacy frontend.
TOKEN_GONE_SINCE = (", which gave one earlier in this run (a frontend down for maintenance?); the next run "
                    "tries again")
# A listing that runs across UTC midnight is listed again (upstream.md §1.4.2, date_range); a
# third pass would need a listing longer than a day.
MAX_LISTING_PASSES = 3


class LegacyKernelCI:
    """Lists builds and boots of the last `days` (or the newest `how_many` of each) and downloads their files."""

    name = "legacy"
    kinds = (BUILD, LAVA, BOOT)

    def __init__(self, requester: Requester, frontend_url: str, storage_url: str, non_lava_labs=frozenset(),
                 days: int = 2, how_many: Optional[int] = None, page_size: int = 1000,
                 retention_days: Optional[int] = None):
        self.requester = requester
        self.frontend_url = frontend_url.rstrip("/")
        self.storage_url = storage_url.rstrip("/")
        self.non_lava_labs = frozenset(non_lava_labs)
        self.days = days
        self.how_many = how_many
        self.page_size = page_size
        self.retention_days = retention_days  # DRP_DAYS: drp deletes the indices of the days before
        self._token: Optional[str] = None
        # Whether the home page gave a token in this run: one that gives none later is a
        # legacy frontend all the same (down for maintenance, or answering an error page).
        self._had_token = False

    # The pipeline may pass `known(kind, ids)`, which names the ids the ledger already holds as
    # delivered (and counts them): no object is made for those. A routine run lists mostly
    # delivered items, and making an object costs as much as reading the item.
    leaves_out_known = True

    def list_objects(self, known: Optional[Callable[[str, List[str]], Set[str]]] = None) -> Iterator[UpstreamObject]:
        yield from self._list("build", known)
        yield from self._list("boot", known)

    def window_start(self, now: Optional[datetime] = None) -> Optional[datetime]:
        """The start of what the listing covers: midnight UTC `days` days before today (the
        backend's `date_range`), by this host's clock; None when it lists the newest `how_many`,
        whatever their day. An object dated before it that failed is no longer listed: the feed
        takes it from the ledger to try it again (kcing/listing.py)."""
        if self.how_many is not None:
            return None
        today = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()
        return day_start(cutoff_day(today, self.days))

    @property
    def recorded_with_run(self) -> dict:
        """What a feed run's row keeps of this source: the storage its URLs are built at, which
        `at_this_storage` reads back from the ledger."""
        return {"storage": self.storage_url}

    def at_this_storage(self, obj: UpstreamObject, storages: Set[str]) -> UpstreamObject:
        """An object taken from the ledger to be fetched again, asked for at this run's storage:
        its row holds the URL an earlier run built at its own (KCI_STORAGE_URL may name a mirror
        since, the old storage gone). The path after the longest of `storages` (those earlier
        runs recorded, and this one) that begins the URL is the file's place in storage; a URL
        that none begins (a row of a run that recorded none) is taken as built at its origin, as
        at the default `storage.<KCI_HOST>`. The path is checked segment by segment as a listed
        one is: the URL asked for is always under this run's storage, whatever the ledger held."""
        given = obj.url if isinstance(obj.url, str) else ""  # a row edited by hand may hold anything
        bases = sorted({base.rstrip("/") for base in storages} | {self.storage_url}, key=len, reverse=True)
        relative = next((given[len(base) + 1:] for base in bases if given.startswith(base + "/")), None)
        if relative is None:
            relative = _path_after_origin(given)
        try:
            if relative is None:
                raise ValueError("its URL is no storage URL")
            url = self._storage_url([unquote(segment) for segment in relative.split("/")])
        except ValueError as error:
            return replace(obj, problem="ledger URL %s cannot be asked for at %s: %s" % (
                shown(obj.url), self.storage_url, error))
        return obj if url == obj.url else replace(obj, url=url)

    def fetch(self, obj: UpstreamObject) -> bytes:
        """The object's file; for a build whose directory has no build.json, its bmeta.json; for a
        LAVA lab's boot whose directory has no lava-json file, its boot report."""
        return self.fetch_served(obj)[1]

    def fetch_served(self, obj: UpstreamObject) -> Tuple[str, bytes]:
        """(URL of the file that answered, the file), as `fetch`: gen_samples records where a
        file found by its fallback is."""
        response = self.requester.get(obj.url)
        served = obj.url
        # A file not there (404, or 410 from a storage or mirror that says so of what it removed).
        missing = response.status_code
        fallback = _fallback_url(obj) if missing in (404, 410) else None
        if fallback is not None:
            response, served = self.requester.get(fallback), fallback
            if response.status_code != 200:
                raise UpstreamError("GET %s answered %d, and %s answered %d" % (
                    obj.url, missing, fallback.rsplit("/", 1)[-1], response.status_code))
        if response.status_code != 200:
            raise UpstreamError("GET %s answered %d" % (obj.url, response.status_code))
        return served, self._decompressed(served, response.content)

    def _decompressed(self, url: str, content: bytes) -> bytes:
        """The file's content when it is stored gzip-compressed and served as such, without a
        `Content-Encoding` (a mirror or object store holding `build.json` compressed): as a local
        `.json.gz` is read. JSON never starts with gzip's magic bytes. A broken one is rejected."""
        if content[:2] != GZIP_MAGIC:
            return content
        try:
            return gunzip(content, self.requester.reader.max_bytes)
        except ValueError as error:
            raise RejectedInput(gzip_problem(url.rsplit("/", 1)[-1], error)) from None

    # Listing -------------------------------------------------------------------------------

    def _list(self, collection: str, known=None) -> Iterator[UpstreamObject]:
        """Page until an empty page (`count` changed meaning upstream in 2019; never trust it).

        The next page is requested while the current one is being processed, so upstream
        latency overlaps with the work of skipping and downloading.

        A page is decoded with the cyclic collector paused, and a page whose items were all
        delivered is dropped before the collector runs again: otherwise each page, a few
        thousand dicts, would be walked by the next collections, and now and then with
        everything else the process holds.
        """
        seen = ListedIds()
        wanted = self.how_many
        passes = 1
        days: Set[Tuple[str, date]] = set()  # the UTC days this pass of the listing ran in
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="listing") as prefetch:
            skip = 0
            upcoming = prefetch.submit(self._page, collection, skip, self._limit(0))
            while upcoming is not None:
                url, response = result_of(upcoming)
                days.update(_utc_days(response))
                if collection == "boot" and skip == 0 and response.status_code == 404:
                    # The backend removed /boot on 2020-07-27 (upstream.md §1.2): no boots to list,
                    # which must not cost the builds listed before.
                    log.warning("GET %s answered 404: this KernelCI lists no boots (its backend removed "
                                "/boot on 2020-07-27); builds only", url)
                    return
                with collector_paused():
                    # A routine page is all delivered: its items' ids and labs say so, and it
                    # is then decoded no further (sources/heads.py).
                    read = heads.legacy_heads(response) if known is not None and wanted is None \
                        and response.status_code == 200 else None
                    whole = read is None
                    if whole:
                        items = self._items(url, response, skip)
                        id_values, labs = _ids_and_labs(items)
                    else:
                        id_values, labs, answered_skip = read
                        _check_skip(url, answered_skip, skip)
                    if not id_values:
                        if wanted is None and _day_changed(days) and passes < MAX_LISTING_PASSES:
                            # UTC midnight passed: date_range's first day left the front of the
                            # ascending listing, and the pages read since started further on. List
                            # again from the start (what was listed is not listed twice).
                            log.info("UTC midnight passed while listing %s: listing it again from the start",
                                     url)
                            passes += 1
                            days = set(_utc_days(response))
                            skip = 0
                            upcoming = prefetch.submit(self._page, collection, skip, self._limit(0))
                            continue
                        return
                    skip += len(id_values)
                    remaining = None if wanted is None else wanted - len(seen) - len(id_values)
                    upcoming = None
                    if remaining is None or remaining > 0:
                        upcoming = prefetch.submit(self._page, collection, skip,
                                                   self._limit(len(seen) + len(id_values)))
                    kinds, ids = self._identities(collection, id_values, labs)
                    del id_values, labs, read
                    delivered = self._known_on_page(kinds, ids, seen, known) if known is not None else {}
                    if wanted is None and self._all_skipped(kinds, ids, delivered, seen):
                        del kinds, ids, delivered, response
                        items = None
                        continue
                    if not whole:  # some are not delivered: those need every field
                        items = self._items(url, response, skip - len(ids))
                    del response
                for item, kind, upstream_id in zip(items, kinds, ids):
                    if upstream_id is not None and upstream_id in delivered.get(kind, ()):
                        # Pages shift while new results arrive (ascending sort): an item may come twice.
                        if upstream_id in seen:
                            continue
                        seen.add(upstream_id)
                    else:
                        obj = self._object_from(collection, item)
                        if obj.upstream_id in seen:
                            continue
                        seen.add(obj.upstream_id)
                        yield obj
                    if wanted is not None and len(seen) >= wanted:
                        if upcoming is not None:
                            upcoming.cancel()
                        return
                if upcoming is None and wanted is not None:
                    # Items listed on an earlier page came again (newer results pushed them down):
                    # `how_many` is not reached yet.
                    upcoming = prefetch.submit(self._page, collection, skip, self._limit(len(seen)))

    @staticmethod
    def _all_skipped(kinds: list, ids: list, delivered: dict, seen: ListedIds) -> bool:
        """Whether every item of a page of one kind is delivered or listed already (a routine
        run's usual page), in set operations instead of a loop per item.

        `seen` takes the delivered ids either way, as the loop over the page would have: each
        is skipped wherever it comes on the page (items of one kind have one id each).
        """
        if not kinds or len(set(kinds)) != 1:
            return False
        page_delivered = delivered.get(kinds[0], set())
        seen.update(page_delivered)
        # Those the ledger did not name were taken before, or the page is not all skipped.
        return seen.holds_all(set(ids) - page_delivered)

    def _identities(self, collection: str, id_values: list, labs: list) -> tuple:
        """The kind and upstream id of every item of a page (id None: the item has no valid id),
        from each item's `_id` and `lab_name` values (`_ids_and_labs`, or `heads.legacy_heads`).

        Runs for every listed item of every run: one pass over the page per question.
        """
        if collection == "build":
            kinds = [BUILD] * len(id_values)
        else:
            # As `_kind`; the type is checked before the set lookup: a list is unhashable.
            non_lava = self.non_lava_labs
            kinds = [BOOT if isinstance(lab, str) and lab in non_lava else LAVA for lab in labs]
        return kinds, _object_ids(id_values)

    @staticmethod
    def _known_on_page(kinds: list, ids: list, seen: ListedIds, known) -> dict:
        """{kind: ids of this page the ledger holds as delivered}, asking once per kind."""
        if len(set(kinds)) == 1:  # a page of builds, or of boots from LAVA labs only
            by_kind = {kinds[0]: set(ids)}
        else:
            by_kind = {}
            for kind, upstream_id in zip(kinds, ids):
                by_kind.setdefault(kind, set()).add(upstream_id)
        found = {}
        for kind, wanted in by_kind.items():
            wanted.discard(None)
            wanted = seen.not_taken(wanted)
            if wanted:
                found[kind] = known(kind, sorted(wanted))
        return found

    def _kind(self, collection: str, item: dict) -> str:
        if collection == "build":
            return BUILD
        lab = item.get("lab_name")
        # Checked before the set lookup: a list or object where a name belongs is unhashable.
        return BOOT if isinstance(lab, str) and lab in self.non_lava_labs else LAVA

    def _limit(self, already: int) -> int:
        if self.how_many is None:
            return self.page_size
        return max(1, min(self.page_size, self.how_many - already))

    def _page(self, collection: str, skip: int, limit: int) -> tuple:
        """(URL, response) of one listing page, its body read but not decoded."""
        if self.how_many is None:
            # Oldest first: results that arrive while pages are read come after the last page.
            params = [("date_range", self.days), ("skip", skip), ("limit", limit),
                      ("sort", "created_on"), ("sort_order", 1)]
        else:
            # The newest `how_many`, whatever their day: newest first, no date_range.
            params = [("skip", skip), ("limit", limit), ("sort", "created_on"), ("sort_order", -1)]
        params += [("field", name) for name in LISTING_FIELDS]
        url = "%s/_ajax/%s" % (self.frontend_url, collection)
        refused = 0
        while True:
            fresh = self._token is None
            try:
                response = self.requester.get(url, params=params, headers={"X-CSRFToken": self._csrf_token()})
            except RejectedInput as refusal:
                # A page (or the home page) redirected off the upstream origins rejects no object:
                # it ends the listing as a failing page does, what was listed before it delivered.
                raise UpstreamError(str(refusal)) from None
            if response.status_code != 403:
                return url, response
            # The token expired (it lives 10 to 20 minutes) or the session cookie changed: get a
            # new pair. Only a token refused as soon as it was issued counts as a failed attempt.
            self._token = None
            if fresh:
                refused += 1
                if refused >= self.requester.policy.attempts:
                    raise UpstreamError("%s kept refusing fresh CSRF tokens (403%s)" % (url, _reason(response)))
            log.info("CSRF token refused by %s; fetching a new one", url)

    @staticmethod
    def _items(url: str, response, skip: int) -> list:
        """The items of the page asked for at `skip`."""
        if response.status_code != 200:
            raise UpstreamError("GET %s answered %d" % (url, response.status_code))
        try:
            envelope = json_of(response)
        except ValueError:
            # A proxy's or a sign-on's page answered with 200 is named, so that it is looked at.
            page = page_instead(response.content)
            raise UpstreamError("GET %s did not answer JSON%s" % (url, ": " + page if page else "")) from None
        items = envelope.get("result") if isinstance(envelope, dict) else None
        if not isinstance(items, list):
            raise UpstreamError("GET %s answered without a result list" % url)
        _check_skip(url, envelope.get("skip"), skip)
        return items

    def _csrf_token(self) -> str:
        if self._token is None:
            try:
                response = self.requester.get(self.frontend_url + "/")
            except UpstreamAnsweredError:
                raise
            except UpstreamError as error:
                if self._had_token:
                    raise
                # No answer at all to the run's first request (a KCI_HOST mistyped, a name that no
                # longer resolves, the retired public frontend): the same question as a page
                # that is not the frontend's.
                raise type(error)(str(error) + NOT_A_LEGACY_FRONTEND) from None
            token = csrf_token(response.text) if response.status_code == 200 else None
            if token is None:
                if self._had_token:
                    hint = TOKEN_GONE_SINCE
                else:
                    hint = NOT_A_LEGACY_FRONTEND if response.status_code in NO_FRONTEND_THERE else ""
                raise UpstreamError("no CSRF token on %s/ (HTTP %d)%s" % (
                    self.frontend_url, response.status_code, hint))
            self._token, self._had_token = token, True
        return self._token

    # Items -> objects ----------------------------------------------------------------------

    def _object_from(self, collection: str, item) -> UpstreamObject:
        """Map a listing item to an object identified by its id; `complete` adds the URL and date.

        Most listed items were delivered by an earlier run and are skipped on their id alone.
        """
        if not isinstance(item, dict):
            return UpstreamObject(self.name, BUILD if collection == "build" else LAVA,
                                  invalid_item_id(item), "", problem="listing item is not an object")
        kind = self._kind(collection, item)
        # The listing item itself travels along: `complete` reads it, gen_samples saves it.
        facts = {"listing": item}
        upstream_id = _object_id(item)
        if upstream_id is None:
            return UpstreamObject(self.name, kind, invalid_item_id(item), "", _created_on(item), facts,
                                  problem="listing item has no valid _id")
        return UpstreamObject(self.name, kind, upstream_id, "", None, facts)

    def complete(self, obj: UpstreamObject) -> UpstreamObject:
        """The storage URL and the date of a listed object; an unsafe or incomplete item gets a problem.
        An object taken from the ledger to be tried again has both already."""
        item = obj.facts.get("listing")
        if item is None:
            return obj
        created = _created_on(item)
        if obj.kind == BUILD:
            leaf = [BUILD_FILE]
        else:
            missing = _missing_names(item, ("lab_name", "board"))
            if missing:
                # Formatted as they are, the file would be `lava-json-None.json`, which no
                # storage ever held: asked for on every run, failing on every run.
                return replace(obj, created=created, problem="listing item has no %s" % " and no ".join(missing))
            leaf = [item["lab_name"], "%s-%s.json" % ("boot" if obj.kind == BOOT else "lava-json", item["board"])]
        try:
            url = self._storage_url(_resource_segments(item) + leaf)
        except ValueError as error:
            return replace(obj, created=created, problem=str(error))
        return replace(obj, url=url, created=created)

    def _storage_url(self, segments) -> str:
        for segment in segments:
            if not isinstance(segment, str):  # before the cache, which needs hashable keys
                raise ValueError("storage path segment is not a string: %s" % shown(segment))
        return self.storage_url + "/" + "/".join(_url_segment(segment) for segment in segments)


def csrf_token(page: str) -> Optional[str]:
    """The CSRF token of the front page's HTML, or None when it names none."""
    name = page.find(_CSRF_NAME)
    if name < 0:
        return None
    found = _CSRF_CONTENT.search(page, name + len(_CSRF_NAME))
    return found.group(1) if found else None


def _fallback_url(obj: UpstreamObject) -> Optional[str]:
    """Where else an object's file is when its URL answered 404 or 410: a build's bmeta.json (its
    directory held that alone from 2021-04), a LAVA lab's boot report (the backend stored LAVA
    callbacks from 2017-12-21 on; a boot from before has its boot-<board>.json alone). None for
    other objects."""
    directory, _, name = obj.url.rpartition("/")
    if obj.kind == BUILD and name == BUILD_FILE:
        return "%s/%s" % (directory, BMETA_FILE)
    if obj.kind == LAVA and name.startswith(LAVA_FILE_PREFIX):
        return "%s/%s%s" % (directory, BOOT_FILE_PREFIX, name[len(LAVA_FILE_PREFIX):])
    return None


def _path_after_origin(url: str) -> Optional[str]:
    """The path of an http(s) URL without its leading slash, or None for another URL or one
    with a query or fragment (no storage URL has either)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        return None
    return parts.path.lstrip("/") or None


# A listing's distinct segments (trees, branches, kernels, architectures, configurations, build
# environments, labs, boards) number hundreds in a day of upstream's results; a larger cache
# mostly keeps the names of builds' one-off directories, for the whole run.
@lru_cache(maxsize=2048)
def _url_segment(segment) -> str:
    """Validate and percent-encode one storage path segment (they repeat a lot: cache them)."""
    if not isinstance(segment, str) or not SAFE_SEGMENT.match(segment) or ".." in segment:
        raise ValueError("unsafe storage path segment %s" % shown(segment))
    return quote(segment, safe="+")


def _reason(response) -> str:
    """`: <reason>` of an answer in the backend's error form (`{"code": 403, "reason": ...}`,
    passed through by the frontend), else nothing."""
    try:
        reason = json_of(response).get("reason")
    except (ValueError, AttributeError):
        return ""
    return ": %s" % masked(reason)[:200] if isinstance(reason, str) and reason.strip() else ""


def _check_skip(url: str, answered, asked: int) -> None:
    """A page must be the one asked for. The backend says which in its `skip`; a cache or proxy
    keying pages without their query string answers the first for every one, and paging until
    an empty page would then never end."""
    if isinstance(answered, int) and not isinstance(answered, bool) and answered != asked:
        raise UpstreamError("GET %s answered the page at skip=%d when asked for skip=%d (a cache or proxy that "
                            "ignores the query string?)" % (url, answered, asked))


def _utc_days(response) -> Set[Tuple[str, date]]:
    """The UTC day here, and the UTC day of the answer's `Date` (the backend's today, whatever
    this host's clock says), each named by whose it is."""
    days = {("here", datetime.now(timezone.utc).date())}
    headers = getattr(response, "headers", None)
    served = http_date(headers.get("Date") if headers is not None else None)
    if served is not None:
        try:
            days.add(("upstream", served.astimezone(timezone.utc).date()))
        except OverflowError:  # a date at the calendar's edge, moved past it by its offset
            pass
    return days


def _day_changed(days: Set[Tuple[str, date]]) -> bool:
    """Whether a clock, here or upstream, showed two UTC days."""
    return len(days) > len({whose for whose, _ in days})


def _ids_and_labs(items: list) -> Tuple[list, list]:
    """Each item's `_id` and `lab_name` values (None where it has none or is not an object)."""
    return ([item.get("_id") if isinstance(item, dict) else None for item in items],
            [item.get("lab_name") if isinstance(item, dict) else None for item in items])


# The `$oid`s of a page in the backend's own form, joined by line breaks: 24 hex digits each.
_OBJECT_ID_LINES = re.compile(r"[0-9A-Fa-f]{24}(?:\n[0-9A-Fa-f]{24})*")


def _object_ids(id_values: list) -> List[Optional[str]]:
    """`_object_id_of` each `_id` value. A page in the backend's own form, every `_id` a
    `{"$oid": ...}` of 24 hex digits, is checked in one pass of a regular expression."""
    try:
        joined = "\n".join([value["$oid"] for value in id_values])
    except (TypeError, KeyError):  # an `_id` in another form, or an `$oid` that is no text
        joined = None
    # As many lines as values: no `$oid` held a line break of its own.
    if joined is not None and len(joined) == 25 * len(id_values) - 1 and _OBJECT_ID_LINES.fullmatch(joined):
        return joined.lower().split("\n")
    return [_object_id_of(value) for value in id_values]


def _object_id(item: dict) -> Optional[str]:
    return _object_id_of(item.get("_id"))


def _object_id_of(value) -> Optional[str]:
    """The lowercase ObjectId of an item's `_id`, plain or `{"$oid": ...}`; None when not one."""
    if isinstance(value, dict):
        value = value.get("$oid")
    return value.lower() if is_object_id(value) else None


def _created_on(item: dict) -> Optional[datetime]:
    """The item's `created_on` in any extended-JSON form: `{"$date": <epoch ms>}` (what the
    backend's pymongo 3 wrote), `{"$date": {"$numberLong": "<ms>"}}` (canonical) or
    `{"$date": "<ISO 8601>"}` (relaxed, pymongo 4), read by `iso_time`; text with anything
    around it is none of these."""
    value = item.get("created_on")
    if isinstance(value, dict):
        value = value.get("$date")
    if isinstance(value, dict):
        value = value.get("$numberLong")
    if isinstance(value, str):
        # One minus sign at most: lstrip("-") took "--5" for digits, which int() then refused.
        if ascii_digits(value[1:] if value.startswith("-") else value) and len(value) < 20:
            value = int(value)
        else:
            return iso_time(value)  # as every upstream time is read: a build's day is its documents' index
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            # Milliseconds counted exactly: seconds as a float (value / 1000) lose the last
            # millisecond from the 2240s on (2300-06-30T00:00:02.994 became .993).
            return _EPOCH + timedelta(milliseconds=value)
        except (OverflowError, ValueError):  # beyond the years a datetime holds; NaN
            return None
    return None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _missing_names(item: dict, names) -> List[str]:
    """The `names` whose value in `item` is no text to name a file by (absent, null, empty, a
    number or an object), each with what it is instead."""
    return ["%s (%s)" % (name, shown(item[name]) if name in item else "absent") for name in names
            if not (isinstance(item.get(name), str) and item[name])]


def _resource_segments(item: dict) -> list:
    """Split file_server_resource; when null, rebuild it the way the backend did, without the
    build environment level for an item that names none (one from before early 2019)."""
    resource = item.get("file_server_resource")
    if isinstance(resource, str) and resource.strip("/"):
        return resource.strip("/").split("/")
    parts = [item.get(name) for name in RESOURCE_FALLBACK
             if not (name in OPTIONAL_RESOURCE_PARTS and item.get(name) in (None, ""))]
    if not all(isinstance(part, str) and part for part in parts):
        raise ValueError("listing item has no file_server_resource and not enough fields to rebuild it")
    # The backend joined them as a path (os.path.join): a branch like `thermal/linux-next` is two
    # directories. Each piece is then validated like any other segment.
    return [segment for part in parts for segment in part.split("/")]
