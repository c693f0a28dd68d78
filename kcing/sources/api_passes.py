"""Offset paging over the KernelCI API's listing, made safe: the passes over a kind's listing that
find the nodes one pass skipped, and the times of the versions found delivered, which the
watermark is made of.
"""
from __future__ import annotations

import logging
from bisect import bisect_left
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, Iterable, List, Optional, Set

from kcing.objectid import object_id_prefix
from kcing.plural import counted

# The passes' lines are the API listing's: logged under the API source's name, as its other lines are.
log = logging.getLogger("kcing.sources.api")

# Passes over one kind's listing at most (`Passes`): the first, one more when it saw fewer nodes
# than the API counts, and another while a pass still finds nodes the one before it skipped.
MAX_PASSES = 4
# A node counts as created while a pass paged when its id (a MongoDB ObjectId: the second it was
# made, by the API's clock) is this much later than the `Date` of the pass's first page, and at
# most this much later than the `Date` of the page it is on: a margin for a proxy before the API,
# which stamps its own `Date` by a clock that may be behind (and for uvicorn's, a second stale).
CREATED_MARGIN = timedelta(seconds=30)
ONE_MINUTE = timedelta(minutes=1)
# The minute no other follows (9999-12-31 23:59 UTC): the newest of its times is the newest of all.
LAST_MINUTE = datetime.max.replace(second=0, microsecond=0, tzinfo=timezone.utc)


class DeliveredTimes:
    """The `updated` times of the versions a listing found delivered, or that the run delivered or
    rejected, as the newest of each minute.

    The watermark needs of them only the newest time before the oldest version not delivered
    (`next_watermark`), and a backfill of weeks lists millions: each version kept by its id and
    time held about 200 bytes for the whole run. The newest of each minute answers the same,
    but in the minute of that oldest version not delivered, where it may stop the watermark up
    to a minute earlier (listed again by the next run, within its overlap, and skipped); the
    memory grows with the minutes listed, not with the versions.
    """

    def __init__(self):
        self._newest: Dict[datetime, datetime] = {}  # the minute -> the newest time in it

    def add(self, times) -> None:
        """Keep the newest of each minute of `times` (aware UTC, as the listing reads them).

        A page's thousand times fall in a few minutes: sorted, each minute's newest is found
        by bisecting for the next minute, one `replace` per minute instead of one per time.
        """
        newest = self._newest
        ordered = sorted(times)
        start, end = 0, len(ordered)
        while start < end:
            minute = ordered[start].replace(second=0, microsecond=0)
            last = end - 1 if minute >= LAST_MINUTE else bisect_left(ordered, minute + ONE_MINUTE, start, end) - 1
            when = ordered[last]
            kept = newest.get(minute)
            if kept is None or when > kept:
                newest[minute] = when
            start = last + 1

    def newest_of_each_minute(self) -> List[datetime]:
        return list(self._newest.values())

    def __len__(self) -> int:
        return len(self._newest)


class Passes:
    """The passes over one kind's listing, and the node versions they listed.

    Offset paging over nodes in natural order skips a node whenever an update moves a node
    before the offset to the end of that order. No node leaves an `updated__gte` listing, so
    a pass that saw fewer distinct nodes than the last page's `total` may have skipped some;
    the kind is then listed again. The nodes a later pass finds first are either skipped ones,
    or nodes that entered the listing meanwhile (a node updated, or created, while it was
    listed: `updated` at or after the listing started, less the overlap). Only skipped ones call
    for another pass: a pass that found none of them ends the listing, and a node that entered
    it unseen is listed by the next run, whose start the watermark keeps before the listing's.
    A listing still finding skipped nodes after MAX_PASSES is `unsure`: it holds the watermark.
    So is one whose later pass found no skipped node but ended with an empty page short of the
    API's `total`: the nodes past that offset were never listed, whatever their times.

    A node does leave the listing when the API deletes it (its maintenance purges the nodes
    created more than 180 days ago, which a wide `--since` lists, as do regressions kept up to
    date). The nodes after it then come one place earlier, and a pass can skip one while seeing
    as many nodes as the smaller `total` counts. A pass whose pages' `total` went down from one
    page to the next is therefore followed by another, as one that saw too few nodes.

    A node created meanwhile brings the `total` back up, though: a deletion and a creation between
    two pages leave it as it was. Each node a pass lists first whose id was made after its first
    page was answered (by that answer's `Date`, CREATED_MARGIN later; and not after the page it is
    on was, by its `Date` and the same margin) brought the count up by one, and only a deletion
    takes it down: a pass whose count grew by less than it saw nodes created is followed by
    another as well.

    A later pass can skip the very node the pass before it skipped: a node it listed moves to the
    end while it pages. It then finds no skipped node, though one is still missing. A later pass
    that saw one of its own nodes come again (it moved past the offset: an update in place leaves
    a node where the pass read it), in a newer version or as it was (re-inserted as a replica
    set's resync does), is therefore followed by another too.

    The counts cannot tell every such turn of a page, though: a node deleted while one enters the
    listing that no id says was created meanwhile (made within CREATED_MARGIN of the first page,
    or an old node updated into the window) leaves `total` as it was. So each page after a pass's
    first starts one place early, at the node the page before ended with (`overlap_verdict`): found
    there, or found an unchanged node of that page (nodes entered before the offset, which only
    repeat), nothing was skipped at that turn; any other node there means nodes before the offset
    left it (deleted, or moved to the end), and the pass is `shifted`: followed by another.
    """

    def __init__(self, entered_since: Callable[[], datetime], limit: int = MAX_PASSES):
        self.newest: Dict[str, datetime] = {}  # node id -> newest `updated` listed
        # A node updated since may have entered the listing (asked when needed: the start of the
        # listing is known in the API's clock once its first page answered).
        self.entered_since = entered_since
        self.limit = limit
        self.number = 1
        self.found_skipped = False  # this pass found a node first that was there before it began
        self.without_id = 0  # items of this pass without a node id (each counted as a node)
        self.unsure = False
        self.cut_short: Optional[str] = None  # why nodes past an empty page went unlisted
        self.last_total: Optional[int] = None  # of this pass's last page
        self.shrunk = False  # a page of this pass counted fewer nodes than the page before it
        self.shifted = False  # a page of this pass did not start at the node the page before ended with
        # A later pass's node ids (the first pass needs none: it is followed by another whenever
        # it saw too few nodes), and whether one came again in it: it moved past the offset.
        self.this_pass: Set[str] = set()
        self.moved = False
        # The count of this pass's first page, and the nodes it listed first whose id was made after
        # that page was answered (ids from `_made_after` to `_made_before`, ObjectId prefixes: the
        # first page's answer and the latest page's, each plus CREATED_MARGIN).
        self.first_total: Optional[int] = None
        self.created = 0
        self._made_after: Optional[str] = None
        self._made_before: Optional[str] = None

    def counted(self, total: int, answered: Optional[datetime] = None) -> None:
        """A page of this pass answered with `total` (at `answered`, its `Date`): fewer than the
        page before means nodes were deleted meanwhile, even when nodes created since bring the
        count back up (and when they bring it up as far, `again` tells by the nodes created)."""
        if self.last_total is None:  # the first page of this pass
            self.first_total = total
            self._made_after = object_id_prefix(answered, CREATED_MARGIN)
        elif total < self.last_total:
            self.shrunk = True
        self._made_before = object_id_prefix(answered, CREATED_MARGIN)
        self.last_total = total

    def _note_created(self, node_ids) -> None:
        """Count the nodes listed first whose id was made while this pass paged."""
        after, before = self._made_after, self._made_before
        if after is not None and before is not None and after <= before:
            self.created += sum(1 for node_id in node_ids if after <= node_id[:8] <= before)

    def listed_first(self, updated) -> None:
        if self.number > 1 and (updated is None or updated < self.entered_since()):
            self.found_skipped = True

    def is_new(self, node_id: Optional[str], updated) -> bool:
        """Whether a listed version is to be listed (`newer_than_listed`), noting what it says."""
        if node_id is None:
            self.without_id += 1
        elif node_id not in self.newest:
            self.listed_first(updated)
            self._note_created((node_id,))
        newer = newer_than_listed(self.newest, node_id, updated)
        if self.number > 1 and node_id is not None:
            if node_id in self.this_pass:  # newer or not: a node moved as it was skips one all the same
                self.moved = True
            self.this_pass.add(node_id)
        return newer

    def left_out(self, nodes: int) -> None:
        """`nodes` of this pass the API failed to answer: counted as listed, and holding the watermark."""
        if nodes:
            self.without_id += nodes
            self.unsure = True

    def all_first(self, node_ids: List[str], updated: List[datetime]) -> bool:
        """`all_first_listed`, noting what it says."""
        if not all_first_listed(self.newest, node_ids, updated):
            return False
        self._note_created(node_ids)
        if self.number > 1:
            for when in updated:
                self.listed_first(when)
            self.this_pass.update(node_ids)
        return True

    def again(self, kind: str, total: int, empty_at: Optional[int] = None) -> bool:
        """After a pass's last page (whose `total` is given): whether to list the kind again.
        `empty_at`: the offset of the pass's last page when it was empty short of `total`."""
        seen = len(self.newest) + self.without_id
        # Nodes deleted while this pass paged moved the nodes after them to offsets already read,
        # and so did a node of a later pass that moved past the offset.
        shrunk, self.shrunk, self.last_total = self.shrunk, False, None
        shifted, self.shifted = self.shifted, False
        moved, self.moved, self.this_pass = self.moved, False, set()
        # Nodes created meanwhile made up for nodes deleted: the count grew by less than they number.
        if self.first_total is not None and self.created > total - self.first_total:
            shrunk = True
        self.first_total, self.created, self._made_after, self._made_before = None, 0, None, None
        # A later pass's count of nodes seen takes in the nodes deleted since an earlier pass saw
        # them: it can reach `total` while the node a move made this pass skip is still missing.
        if seen >= total and not shrunk and not moved and not shifted:
            return False
        if self.number > 1 and not self.found_skipped and not shrunk and not moved and not shifted:
            if empty_at is not None:  # not nodes that entered: offsets the API never answered
                self.unsure = True
                self.cut_short = ("%s listing: the API answered an empty page at offset %d though it counts %s, "
                                  "in %d passes; the nodes past it were not listed, and the watermark stays "
                                  "before them" % (kind, empty_at, counted(total, "node"), self.number))
                log.warning(self.cut_short)
            return False
        if self.number >= self.limit:
            self.unsure = True
            log.warning("%s listing: pass %d still found nodes that offset paging skipped before, or nodes deleted "
                        "or moved while it paged (%d listed, the API counts %d); the watermark stays for the next run",
                        kind, self.number, seen, total)
            return False
        why = ("nodes were deleted while it was paged" if shrunk else
               "a page did not start at the node the page before ended with: nodes before it were deleted or "
               "moved while it was paged" if shifted else "nodes moved while it was paged"
               if empty_at is None else "its page at offset %d was empty" % empty_at)
        log.info("%s listing: %s listed, the API counts %d (%s): listing them again", kind, counted(seen, "node"),
                 total, why)
        self.number += 1
        self.found_skipped = False
        self.without_id = 0
        return True


# What `overlap_verdict` finds at a page's first place, asked one place early.
SAME_PLACE = "same place"  # the node the page before ended with, as it was: left out of this page
ENTERED_BEFORE = "entered before"  # an unchanged node of the page before: nodes entered before the offset
SHIFTED = "shifted"  # any other node: nodes before the offset left it, one may have been skipped


def overlap_verdict(last: tuple, first: Optional[tuple], before: Iterable[Optional[tuple]]) -> str:
    """What the first item of a page asked one place early says of the turn of the page.

    `last`: the (node id, `updated`) of the last item of the page before, as listed; `first`:
    those of this page's first item (None: it names no node); `before`: those of every item of
    the page before (read only when `first` is not `last`). Nodes keep their order in the listing
    but for those an update may move to its end, and they enter it only at their own place
    (created at the end, an old node updated into the window where it was inserted): the page's
    first place holds the last node of the page before while as many nodes entered before the
    offset as left it, an earlier node of that page while more entered, and a node that page did
    not reach while more left, which a page asked at the offset would have skipped. A node of
    that page found in a newer version may itself have moved there: SHIFTED, as an unknown (the
    newer version is listed, as any repeated node's)."""
    if first is None:
        return SHIFTED
    if first == last:
        return SAME_PLACE
    if first in before:
        return ENTERED_BEFORE
    return SHIFTED


def newer_than_listed(newest: Dict[str, datetime], node_id: Optional[str], updated) -> bool:
    """Whether a listed version is to be listed: not when this version of the node, or a newer
    one, was listed already (offset paging over a growing result set repeats items). Notes it
    in `newest` (node id -> newest `updated` listed). A version without a node id always is."""
    if node_id is None:
        return True
    seen = newest.get(node_id)
    if seen is not None and seen >= updated:
        return False
    newest[node_id] = updated
    return True


def all_first_listed(newest: Dict[str, datetime], node_ids: List[str], updated: List[datetime]) -> bool:
    """`newer_than_listed` for a whole page whose nodes are all listed for the first time
    (noted in `newest`); False, noting nothing, when one is repeated."""
    if len(set(node_ids)) != len(node_ids) or not newest.keys().isdisjoint(node_ids):
        return False
    newest.update(zip(node_ids, updated))
    return True
