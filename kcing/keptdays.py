"""The first day drp keeps, by DRP_DAYS and by the drp runs the ledger recorded: date arithmetic
alone, apart from kcing/admin/retention.py so that the feed reads it without importing the
Elasticsearch client (a quarter of a second of every cron run)."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Optional

# The fewest days drp keeps: DRP_DAYS and --drp-days are 1 at least (kcing/settings.py), so a drp
# run keeps yesterday whatever it is given.
FEWEST_DAYS_KEPT = 1


def cutoff_day(today: date, days: int) -> date:
    """The first day kept: indices dated before it are expired."""
    return today - timedelta(days=days)


def day_start(day: date) -> datetime:
    """Midnight UTC at the start of `day`."""
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def first_kept(today: date, days: Optional[int], deleted_before: Optional[date]) -> Optional[date]:
    """The first day whose indices are kept: `days` (DRP_DAYS) before `today`, or the later one a
    recorded drp run kept from (`Ledger.deleted_before`: a shorter --drp-days deleted more);
    None when neither is known."""
    kept = cutoff_day(today, days) if days is not None else None
    if deleted_before is not None and (kept is None or deleted_before > kept):
        return deleted_before
    return kept
