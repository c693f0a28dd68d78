"""drp: delete kcing's date-suffixed indices older than the retention, and forget old ledger rows.

Selection is a pure function of the index names, a `today` and a number of days. Deletion is by
exact names only: Elasticsearch 8 refuses wildcards in DELETE (`action.destructive_requires_name`),
and a listing filtered by kcing's own strict pattern is the only way never to touch an index that
merely looks similar (`.kibana_1`, `logs-foo-2019.01.01`, `build-latest`, `kcing-unrouted-...`).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

from elasticsearch import Elasticsearch

from kcing.admin.elastic import elastic_errors
from kcing.records import DOCUMENT_KINDS

log = logging.getLogger(__name__)

# ASCII digits and the end of the name: `\d` would also take other scripts' digits (which int()
# reads as 0-9), and `$` a name that goes on with a newline.
KCING_INDEX = re.compile(r"(%s)-([0-9]{4})\.([0-9]{2})\.([0-9]{2})" % "|".join(DOCUMENT_KINDS))
# Names per DELETE: keeps the URL short whatever the index names are.
DELETE_CHUNK = 50


def index_day(name: str) -> Optional[date]:
    """The day in a kcing index name (`boot-2019.05.31`), or None for any other name."""
    match = KCING_INDEX.fullmatch(name)
    if not match:
        return None
    try:
        return date(int(match.group(2)), int(match.group(3)), int(match.group(4)))
    except ValueError:  # build-2019.13.45 is not ours to judge
        return None


def cutoff_day(today: date, days: int) -> date:
    """The first day kept: indices dated before it are expired."""
    return today - timedelta(days=days)


def expired_indices(names: Iterable[str], today: date, days: int) -> List[str]:
    """The kcing indices among `names` dated before `today - days`, sorted."""
    first_kept = cutoff_day(today, days)
    dated = ((name, index_day(name)) for name in set(names))
    return sorted(name for name, day in dated if day is not None and day < first_kept)


def ledger_cutoff(today: date, days: int) -> datetime:
    """Ledger rows first seen before this instant (UTC midnight of the first day kept) are forgotten."""
    return datetime.combine(cutoff_day(today, days), time(0), tzinfo=timezone.utc)


def chunks(names: Sequence[str], size: int = DELETE_CHUNK) -> Iterator[List[str]]:
    if size < 1:
        raise ValueError("size must be at least 1")
    for start in range(0, len(names), size):
        yield list(names[start:start + size])


def list_indices(client: Elasticsearch, host: str) -> List[str]:
    """Every index name the cluster has: open, closed and hidden (_cat leaves hidden ones out
    unless asked, and a kcing index someone hid still expires)."""
    with elastic_errors(host, "listing indices"):
        rows = client.cat.indices(format="json", h="index", expand_wildcards="all")
    return [row["index"] for row in rows.body if isinstance(row, dict) and row.get("index")]


def delete_indices(client: Elasticsearch, host: str, names: Sequence[str], size: int = DELETE_CHUNK) -> List[str]:
    """Delete `names` (exact names, never patterns) in chunks; return the names deleted."""
    deleted: List[str] = []
    for chunk in chunks(names, size):
        for name in chunk:
            if not KCING_INDEX.fullmatch(name):
                raise ValueError("refusing to delete %r: not a kcing index name" % name)
        with elastic_errors(host, "deleting %d indices (%s ... )" % (len(chunk), chunk[0])):
            # ILM (setup_es --ilm) may delete an index between our listing and this call; a
            # missing one must not fail the chunk, which ES would then not delete at all.
            client.indices.delete(index=chunk, ignore_unavailable=True, expand_wildcards="none")
        deleted.extend(chunk)
        log.info("deleted %d indices: %s", len(chunk), ",".join(chunk))
    return deleted


@dataclass(frozen=True)
class RetentionPlan:
    """What drp deletes: the expired indices and the ledger rows first seen before `ledger_cutoff`."""

    today: date
    days: int
    indices: Tuple[str, ...]
    ledger_cutoff: datetime
    ledger_rows: Optional[int]  # None when there is no ledger yet

    @property
    def first_kept(self) -> date:
        return cutoff_day(self.today, self.days)


def plan(client: Elasticsearch, host: str, ledger, today: date, days: int) -> RetentionPlan:
    """Look, change nothing: this is the whole of a dry run."""
    names = expired_indices(list_indices(client, host), today, days)
    cutoff = ledger_cutoff(today, days)
    rows = ledger.seen_before(cutoff) if ledger is not None else None
    return RetentionPlan(today, days, tuple(names), cutoff, rows)


def apply(client: Elasticsearch, host: str, ledger, chosen: RetentionPlan) -> Tuple[List[str], int]:
    """Delete the planned indices, then forget the ledger rows; return (indices deleted, rows forgotten)."""
    deleted = delete_indices(client, host, chosen.indices)
    forgotten = ledger.prune_older_than(chosen.ledger_cutoff) if ledger is not None else 0
    return deleted, forgotten


def warn_short_retention(settings) -> None:
    if settings.DRP_DAYS <= settings.KCI_DAYS:
        # feed_es lists the last KCI_DAYS days again on every run and skips what the ledger says
        # was delivered: forgetting those rows would download and send those objects again.
        log.warning("DRP_DAYS=%d is not more than KCI_DAYS=%d: ledger rows of objects the next crawl lists "
                    "again would be forgotten, and those objects downloaded and sent again",
                    settings.DRP_DAYS, settings.KCI_DAYS)
