"""Deterministic document ids, index names and timestamps: pure functions, no I/O."""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone


def document_id(kind: str, *identity) -> str:
    """Return a stable id for the document of `kind` identified by `identity`.

    The id is a hash of canonical JSON, so it depends only on what identifies the document
    upstream (a storage path, a LAVA job id, a line number), never on when or how often it is
    sent: a resend overwrites the same Elasticsearch document instead of adding a copy.
    """
    canonical = json.dumps([kind, *identity], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:40]


def index_name(kind: str, when: datetime) -> str:
    """Return `<kind>-YYYY.MM.DD` for the UTC calendar day of `when`."""
    return "%s-%s" % (kind, as_utc(when).strftime("%Y.%m.%d"))


def iso_timestamp(when: datetime) -> str:
    """Return ISO 8601 in UTC with millisecond precision and a `Z` zone (what Logstash expects)."""
    utc = as_utc(when)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (utc.microsecond // 1000)


def as_utc(when: datetime) -> datetime:
    """Treat a naive datetime as UTC (upstream times are UTC) and convert aware ones to UTC."""
    if when.tzinfo is None:
        return when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc)
