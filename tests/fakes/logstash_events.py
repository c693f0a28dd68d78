"""How a Logstash `http` input turns a request body into events: pure functions, no I/O.

This follows elk.md §1.3-1.4 (logstash-input-http with the default codec map, Logstash core's
`Event(Map)` constructor and its lenient ISO-8601 `@timestamp` parser), for a pipeline with ECS
compatibility disabled: the json codec adds no `[event][original]`.
"""
from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Tuple

JSON_PARSE_FAILURE = "_jsonparsefailure"
TIMESTAMP_PARSE_FAILURE = "_timestampparsefailure"
TAGS_PARSE_FAILURE = "_tagsparsefailure"

JSON_MIME_TYPE = "application/json"


@dataclass
class Event:
    """One Logstash event: what outputs see as fields, plus its `@metadata` (never indexed).

    `zoneless_timestamp` is true when the posted `@timestamp` had no zone, so Logstash read it
    in its host's zone (this emulator's host zone is UTC): a client bug worth asserting on.
    """

    fields: Dict[str, Any]
    metadata: Dict[str, Any] = field(default_factory=dict)
    zoneless_timestamp: bool = False

    @property
    def tags(self) -> List[str]:
        tags = self.fields.get("tags")
        if tags is None:
            return []
        return [tags] if isinstance(tags, str) else list(tags)


class _NotAnEvent(Exception):
    """The decoded JSON cannot become events (the codec then falls back to one failure event)."""


def mime_type(content_type: Optional[str]) -> str:
    """Return the MIME type with parameters stripped, case kept (Netty's `getMimeType`)."""
    return (content_type or "").split(";", 1)[0].strip()


def charset(content_type: Optional[str]) -> str:
    """Return the `charset` parameter if Python knows it, else UTF-8 (the input's default)."""
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            value = value.strip().strip('"')
            try:
                return codecs.lookup(value).name
            except LookupError:
                break
    return "utf-8"


def decode_body(body: bytes, content_type: Optional[str], now: datetime) -> List[Event]:
    """Return the events the input pushes for one request body.

    `application/json` (exactly; parameters ignored) selects the json codec; any other or no
    Content-Type selects the plain codec, which makes the whole body one `message` event.
    """
    text = body.decode(charset(content_type), errors="replace")
    if mime_type(content_type) == JSON_MIME_TYPE:
        return json_codec(text, now)
    return [new_event({"message": text}, now)]


def json_codec(text: str, now: datetime) -> List[Event]:
    """Object -> 1 event, array -> 1 per element, blank or `[]` -> none; else one failure event."""
    if not text.strip():
        return []
    try:
        decoded = json.loads(text, parse_constant=_reject_constant)
        return _events_from_json(decoded, now)
    except (ValueError, _NotAnEvent):
        # The codec swallows the error: one tagged event carrying the raw body, and a 200.
        return [new_event({"message": text, "tags": [JSON_PARSE_FAILURE]}, now)]


def _reject_constant(name: str):
    # Jackson, as Logstash configures it, rejects NaN and Infinity; Python would accept them.
    raise ValueError("non-standard JSON constant %s" % name)


def _events_from_json(decoded: Any, now: datetime) -> List[Event]:
    if isinstance(decoded, dict):
        return [_event_or_raise(decoded, now)]
    if isinstance(decoded, list):
        return [_event_or_raise(element, now) for element in decoded]
    raise _NotAnEvent("only JSON objects and arrays become events")


def _event_or_raise(data: Any, now: datetime) -> Event:
    if not isinstance(data, dict):
        raise _NotAnEvent("an array element is not an object")
    if "@metadata" in data and not isinstance(data["@metadata"], dict):
        raise _NotAnEvent("@metadata is not an object")
    return new_event(data, now)


def new_event(data: Dict[str, Any], now: datetime) -> Event:
    """Build an event the way Logstash core's `Event(Map)` does; `data` is taken over, not copied."""
    metadata = data.pop("@metadata", None) or {}
    data.setdefault("@version", "1")
    _guard_tags(data)
    provided = data.get("@timestamp")
    zoneless = False
    if provided is None:
        data["@timestamp"] = format_timestamp(now)
    else:
        try:
            instant, nanos, zoneless = parse_timestamp(provided)
            data["@timestamp"] = format_timestamp(instant, nanos)
        except ValueError:
            data["@timestamp"] = format_timestamp(now)
            add_tag(data, TIMESTAMP_PARSE_FAILURE)
            data["_@timestamp"] = provided
    return Event(fields=data, metadata=metadata, zoneless_timestamp=zoneless)


def _guard_tags(data: Dict[str, Any]) -> None:
    # Only a string or a list of strings may be `tags`; anything else moves to `_tags`.
    tags = data.get("tags")
    if tags is None or isinstance(tags, str):
        return
    if isinstance(tags, list) and all(isinstance(tag, str) for tag in tags):
        return
    data["_tags"] = data.pop("tags")
    data["tags"] = [TAGS_PARSE_FAILURE]


def add_tag(data: Dict[str, Any], tag: str) -> None:
    tags = data.get("tags")
    if tags is None:
        data["tags"] = [tag]
    elif isinstance(tags, str):
        data["tags"] = [tags] if tags == tag else [tags, tag]
    elif tag not in tags:
        tags.append(tag)


# yyyy-MM-dd, then optionally 'T'HH:mm[:ss[.fraction]], then optionally a zone or offset.
_LENIENT_ISO = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[Tt](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{0,9}))?)?)?"
    r"(?P<zone>[Zz]|[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?|UTC|GMT|[A-Za-z_]+/[A-Za-z_/+-]+)?")


def parse_timestamp(value: Any) -> Tuple[datetime, int, bool]:
    """Return (UTC instant truncated to microseconds, nanoseconds of the second, zone was missing).

    Only strings are accepted, as in Logstash: an epoch number is a parse failure.
    """
    if not isinstance(value, str):
        raise ValueError("@timestamp must be a string")
    return _parse_timestamp_text(value)


@lru_cache(maxsize=65536)
def _parse_timestamp_text(value: str) -> Tuple[datetime, int, bool]:
    # Cached: a batch often repeats timestamps, and parsing is most of the per-event cost.
    match = _LENIENT_ISO.fullmatch(value)
    if not match:
        raise ValueError("invalid ISO8601 input %r" % value)
    year, month, day = (int(part) for part in match.group("date").split("-"))
    fraction = (match.group("fraction") or "").ljust(9, "0")
    nanos = int(fraction)
    local = datetime(year, month, day, int(match.group("hour") or 0), int(match.group("minute") or 0),
                     int(match.group("second") or 0), nanos // 1000)
    zone = match.group("zone")
    instant = local.replace(tzinfo=_zone(zone) if zone else timezone.utc).astimezone(timezone.utc)
    return instant, nanos, zone is None


def _zone(text: str):
    if text in ("Z", "z", "UTC", "GMT"):
        return timezone.utc
    if text[0] in "+-":
        digits = text[1:].replace(":", "")
        hours, minutes, seconds = int(digits[0:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
        offset = timedelta(hours=hours, minutes=minutes, seconds=seconds)
        return timezone(-offset if text[0] == "-" else offset)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
    try:
        return ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError("unknown zone %r" % text) from error


def format_timestamp(instant: datetime, nanos: Optional[int] = None) -> str:
    """Format like Logstash's Timestamp.toString: UTC, `Z`, 3, 6 or 9 fraction digits."""
    utc = instant.astimezone(timezone.utc)
    if nanos is None:
        nanos = utc.microsecond * 1000
    digits = "%09d" % nanos
    if nanos % 1_000_000 == 0:
        digits = digits[:3]
    elif nanos % 1000 == 0:
        digits = digits[:6]
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + digits + "Z"
