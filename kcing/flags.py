"""Command-line flags that are not settings: parsed here, with errors naming the flag."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from kcing.errors import ConfigError


def positive_int(args: dict, flag: str) -> Optional[int]:
    """A whole number of at least 1, or None when the flag was not given."""
    value = args.get(flag)
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        raise ConfigError("%s expects a whole number, not %r" % (flag, value)) from None
    if number < 1:
        raise ConfigError("%s must be at least 1" % flag)
    return number


def seconds(args: dict, flag: str, default: float) -> float:
    """A duration of 0 or more seconds, or the default when the flag was not given."""
    value = args.get(flag)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError("%s expects seconds, not %r" % (flag, value)) from None
    if not 0 <= number < float("inf"):
        raise ConfigError("%s must be 0 or more seconds" % flag)
    return number


def a_date(args: dict, flag: str) -> Optional[datetime]:
    """A date or time (anything python-dateutil reads; UTC unless it names a zone), or None."""
    value = args.get(flag)
    if value is None:
        return None
    try:
        return utc_date(value)
    except (ValueError, OverflowError):
        raise ConfigError("%s expects a date such as 2020-11-04 or '2020-11-04 09:41', not %r"
                          % (flag, value)) from None


def utc_date(text: str) -> datetime:
    """`text` read by python-dateutil as aware UTC (no zone means UTC). Raises ValueError or
    OverflowError for what is not a date."""
    from dateutil import parser as dateparser  # here: most runs never read a date, and it takes a while to import

    parsed = dateparser.parse(text)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
