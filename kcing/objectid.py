"""MongoDB ObjectIds, the ids of upstream's results in both KernelCI systems."""
from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Optional


def is_object_id(value) -> bool:
    """A MongoDB ObjectId as text: 24 hexadecimal digits and nothing more. No regular expression
    (`$` would let a line end through), as it runs for every listed item."""
    return isinstance(value, str) and len(value) == 24 and not value.strip(string.hexdigits)


def node_id(node: Mapping[str, Any]) -> Optional[str]:
    """A KernelCI API node's id, lowercase; `_id` (plain or `{"$oid": ...}`) as servers sent it
    before 2023. None when it is not an ObjectId."""
    value = node.get("id", node.get("_id"))
    if isinstance(value, dict):
        value = value.get("$oid")
    return value.lower() if is_object_id(value) else None


def object_id_time(value: Any) -> Optional[datetime]:
    """The time an ObjectId was made (its first four bytes: seconds since 1970, UTC), None when
    `value` is no ObjectId."""
    if not is_object_id(value):
        return None
    return datetime.fromtimestamp(int(value[:8], 16), tz=timezone.utc)


def object_id_prefix(when: Optional[datetime], later: timedelta) -> Optional[str]:
    """The first 8 hex digits of the ObjectIds made in the second `later` after `when` falls in
    (whole seconds since 1970, as ObjectIds hold them); None without `when`, or outside the range
    they hold (a `Date` at the calendar's edge)."""
    if when is None:
        return None
    try:
        seconds = int((when + later).timestamp())
    except OverflowError:
        return None
    return "%08x" % seconds if 0 <= seconds <= 0xFFFFFFFF else None
