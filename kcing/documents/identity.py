"""Deterministic document ids, index names and timestamps: pure functions, no I/O."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import List


_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def document_id(kind: str, *identity) -> str:
    """Return a stable id for the document of `kind` identified by `identity`.

    The id is a hash of canonical JSON, so it depends only on what identifies the document
    upstream (a storage path, a LAVA job id, a line number), never on when or how often it is
    sent: a resend overwrites the same Elasticsearch document instead of adding a copy.
    """
    canonical = _CANONICAL.encode([kind, *identity])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40]


class IdPrefix:
    """`document_id(kind, *identity, *extra)` for many `extra` values, hashing the shared part once.

    Compact JSON of a list is "[" + its items' JSON joined by "," + "]", so the hash of the
    shared prefix can be copied and completed per document with the same result.
    """

    def __init__(self, kind: str, *identity):
        prefix = "[" + ",".join(_CANONICAL.encode(part) for part in (kind, *identity))
        self._prefix = hashlib.sha256(prefix.encode("utf-8"))

    def make(self, *extra) -> str:
        digest = self._prefix.copy()
        rest = "".join("," + _canonical(part) for part in extra) + "]"
        digest.update(rest.encode("utf-8"))
        return digest.hexdigest()[:40]

    def numbered(self, count: int) -> List[str]:
        """`make(n)` for n = 1 to `count` (a job's log line numbers), in order: the same ids in
        fewer steps, since a job has thousands of lines."""
        prefix = self._prefix
        ids = []
        for number in range(1, count + 1):
            digest = prefix.copy()
            digest.update(b",%d]" % number)
            ids.append(digest.hexdigest()[:40])
        return ids


def _canonical(part) -> str:
    if type(part) is int:  # line numbers and positions: by far the most common extra part
        return str(part)
    return _CANONICAL.encode(part)


# The year in four digits, by hand: strftime's %Y writes the years before 1000 without their
# leading zeros on glibc ("999-06-30"), which no ISO 8601 reader takes back, and with them elsewhere.
def index_name(kind: str, when: datetime) -> str:
    """Return `<kind>-YYYY.MM.DD` for the UTC calendar day of `when`."""
    utc = as_utc(when)
    return "%s-%04d.%02d.%02d" % (kind, utc.year, utc.month, utc.day)


def iso_timestamp(when: datetime) -> str:
    """Return ISO 8601 in UTC with millisecond precision and a `Z` zone (what Logstash expects)."""
    utc = as_utc(when)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second,
                                                   utc.microsecond // 1000)


def as_utc(when: datetime) -> datetime:
    """Treat a naive datetime as UTC (upstream times are UTC) and convert aware ones to UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
