"""Incremental crawling: where a run starts, and how far the watermark may move after it.

A source's watermark is the newest `updated` time up to which every object it listed was
delivered; the ledger keeps it (`Ledger.watermark`). A run lists what changed since the
watermark minus an overlap, because an update in flight when the last run listed may carry an
earlier time than the newest one that run saw (and clocks differ). `--days` and `--since`
choose the start instead.

Sources that crawl this way offer two calls, which only the pipeline makes, through `resume`
and `advance` below:

- `resume_from(watermark)` before listing;
- `recorded(settled)` each time the ledger has recorded outcomes of objects it listed
  (`settled`: the (kind, upstream id) of those delivered or rejected), so that a source need
  not keep each of them in memory until the run ends;
- `watermark_candidate(settled_ids)` after the run: the new position, or None to keep it
  (`settled_ids(kind, ids)` names those delivered or rejected).

The decisions are pure functions of plain values; nothing here sleeps or reads a clock.
"""
from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta, timezone
from typing import List, Optional

from kcing.errors import ConfigError
from kcing.ledger.models import DELIVERED, REJECTED
from kcing.flags import (AmbiguousDate, IncompleteDate, MisplacedOffset, OutOfRange, SignedZoneName, UnknownZone,
                         WrongWeekday, ambiguous_message, misplaced_message, utc_date, utc_text, weekday_message)

log = logging.getLogger(__name__)


def parse_since(text: str) -> datetime:
    """A `--since` date (anything python-dateutil reads) as aware UTC; no zone means UTC."""
    try:
        return utc_date(text)
    except AmbiguousDate as ambiguous:
        raise ConfigError(ambiguous_message("--since", text, ambiguous)) from None
    except SignedZoneName as signed:
        raise ConfigError("--since %r gives its offset after %s, which POSIX reads west of Greenwich and ISO 8601 "
                          "east: give the offset alone (try '2024-10-16 08:00 +03:00')" % (text, signed.name)) from None
    except UnknownZone:
        raise ConfigError("--since %r names its time zone by an abbreviation: give a UTC offset (try "
                          "'2024-10-16 08:00 +01:00' or '2024-10-16 08:00 UTC')" % text) from None
    except IncompleteDate:
        raise ConfigError("--since %r does not name a whole day: give its year, month and day (try 2024-10-16 or "
                          "'2024-10-16 08:00')" % text) from None
    except WrongWeekday as wrong:
        raise ConfigError(weekday_message("--since", text, wrong)) from None
    except MisplacedOffset as misplaced:
        raise ConfigError(misplaced_message("--since", text, misplaced)) from None
    except OutOfRange:
        raise ConfigError("--since %r is outside the years 1 to 9999 in UTC (try 2024-10-16 or '2024-10-16 08:00')"
                          % text) from None
    except (ValueError, OverflowError):
        raise ConfigError("--since %r is not a date (try 2024-10-16 or '2024-10-16 08:00')" % text) from None


def warn_if_future(since: datetime, now: datetime, consequence: str) -> None:
    """Say so when `--since` lies after this host's clock: nothing can have changed since a
    time to come, so the run would find nothing and say only that (a mistyped year, 2062 for
    2026). A warning, not a refusal: upstream's clock may be ahead of this host's."""
    if since > now:
        log.warning("--since %s is after this host's clock (%s): %s", utc_text(since, seconds=True),
                    utc_text(now, seconds=True), consequence)


def crawl_start(watermark: Optional[datetime], since: Optional[datetime], overlap: timedelta,
                default_days: int, now: datetime) -> datetime:
    """Where a run's listing starts: `since` if given, else the watermark minus the overlap,
    else (a first run) `default_days` before `now`."""
    if since is not None:
        return since
    if watermark is not None:
        # A watermark within the overlap of year 1 (a ledger edited by hand) lists from year 1:
        # a datetime cannot go further back.
        earliest = datetime.min.replace(tzinfo=watermark.tzinfo)
        return watermark - overlap if watermark - earliest >= overlap else earliest
    return now - timedelta(days=default_days)


def next_watermark(settled: List[Optional[datetime]], unsettled: List[Optional[datetime]],
                   listing_started: datetime) -> Optional[datetime]:
    """The newest `updated` time up to which every listed object was settled (delivered or
    rejected), or None.

    `settled` and `unsettled` hold the `updated` times of a complete listing's objects, those
    settled and the others. An unknown time (None) of one not settled blocks any move: it may
    lie anywhere. One settled (a version rejected for its unreadable `updated`) blocks nothing:
    it is never needed again, and a change to its node comes as a new version with a time of its
    own; holding the watermark for it would re-list the same days, and more, on every run for
    good. The result never passes `listing_started`: a change made after its kind was listed may
    carry any later time, and the next run must still see it. (A routine run lists a hundred
    thousand times here, read by C-level built-ins only.)
    """
    if None in unsettled:
        return None
    if None in settled:
        settled = [updated for updated in settled if updated is not None]
    if unsettled:
        oldest_unsettled = min(unsettled)
        settled = [updated for updated in settled if updated < oldest_unsettled]
    if not settled:
        return None
    return min(max(settled), listing_started)


# Called by the pipeline ------------------------------------------------------------------------

def resume(source, ledger, destinations: str = "") -> None:
    """Tell an incremental source where the ledger says its last runs to `destinations` got to."""
    resume_from = getattr(source, "resume_from", None)
    if resume_from is not None:
        resume_from(past_retention(ledger.watermark(source.name, destinations), ledger.deleted_before()))


def past_retention(watermark: Optional[datetime], first_kept: Optional[date]) -> Optional[datetime]:
    """The watermark, or the start of the first day a drp run kept when the watermark lies before it.

    A watermark a failing node holds stays where it is while days pass, and drp forgets the rows
    of what was delivered after it: listing from it would fetch and send those objects again,
    every run, into indices drp deletes (an object updated before that day is dated before it).
    """
    if watermark is None or first_kept is None:
        return watermark
    return max(watermark, datetime.combine(first_kept, time(0), tzinfo=timezone.utc))


def recorded(source, outcomes) -> None:
    """Tell an incremental source which of its objects the ledger has just recorded as delivered or
    rejected (`outcomes`: ledger.Outcome): settled, whatever comes later in the run."""
    note = getattr(source, "recorded", None)
    if note is not None:
        note([(outcome.obj.kind, outcome.obj.upstream_id) for outcome in outcomes
              if outcome.state in (DELIVERED, REJECTED)])


def advance(source, ledger, destinations: str = "", destination=lambda kind: "") -> Optional[datetime]:
    """Move an incremental source's watermark as far as the ledger shows everything delivered."""
    candidate = getattr(source, "watermark_candidate", None)
    if candidate is None:
        return None
    # A rejected object version holds nothing back: fetching it again gives the same refusal,
    # and a changed node is listed again under a new version. Failures do hold the watermark.
    when = candidate(lambda kind, ids: ledger.settled_ids(source.name, kind, ids, destination(kind)))
    if when is None:
        kept = ledger.watermark(source.name, destinations)
        if kept:
            log.info("watermark of the %s source kept at %s", source.name, utc_text(kept, seconds=True))
        else:
            # Not "nothing delivered": a run may deliver and still leave it unset (--how-many, a
            # listing that failed part-way, a node that holds it).
            log.info("watermark of the %s source not set yet: the next run lists as a first run does", source.name)
        return None
    moved = ledger.advance_watermark(source.name, when, destinations)
    log.info("watermark of the %s source now %s", source.name, utc_text(moved, seconds=True))
    return moved
