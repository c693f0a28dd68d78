"""The legacy backend's list GET (`/build`, `/boot`) as pure functions over in-memory items.

Query parsing follows kernelci-backend `handlers/common/query.py` (upstream.md §1.4.2): the last
`skip`/`limit`/`sort_order`/`date_range` wins, `date_range` is `abs(int)` or 5, a non-integer
`skip`/`limit`/`sort_order` makes the backend fail (HTTP 500), `sort_order` other than 1/-1
becomes -1, `field` projections keep `_id`, a repeated filter key means "any of". The envelope's
`count` is the total matching the filter (pre-2019-11 semantics).
"""
from __future__ import annotations

import json
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

DEFAULT_DATE_RANGE = 5
_ALMOST_MIDNIGHT = time(23, 59, 59)

# Filter keys the backend accepts per resource; any other key is ignored, as upstream.
VALID_FILTER_KEYS = {
    "build": ("_id", "arch", "build_environment", "build_type", "defconfig", "defconfig_full",
              "errors", "git_branch", "git_commit", "git_describe", "job", "job_id", "kernel",
              "status", "warnings"),
    "boot": ("_id", "arch", "board", "board_instance", "build_environment", "build_id",
             "defconfig", "defconfig_full", "device_type", "endian", "git_branch", "git_commit",
             "job", "job_id", "kernel", "lab_name", "mach", "retries", "status", "warnings"),
}
_INT_KEYS = ("retries", "warnings")  # the backend converts these query values to int
_OBJECT_ID_KEYS = ("_id", "job_id", "build_id")  # compared as ObjectIds

Params = Sequence[Tuple[str, str]]


class BackendFailure(Exception):
    """A query the real backend would crash on (it answered HTTP 500)."""


@dataclass
class ListingItem:
    """One backend document with what listing needs precomputed (it is served many times)."""

    doc: Dict[str, Any]
    oid: str
    created_ms: Optional[int]
    json_text: str
    # Projected JSON per field list: a crawler asks for the same projection page after page.
    projections: Dict[Tuple[str, ...], str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_doc(cls, doc: Dict[str, Any]) -> "ListingItem":
        oid = doc.get("_id", {}).get("$oid") if isinstance(doc.get("_id"), dict) else None
        if not oid:
            raise ValueError("listing item has no _id {$oid}")
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        return cls(doc=doc, oid=oid, created_ms=bson_date_ms(doc.get("created_on")), json_text=text)


def bson_date_ms(value: Any) -> Optional[int]:
    """Epoch ms of an extended-JSON date: {"$date": ms | ISO string | {"$numberLong": "ms"}}."""
    if not isinstance(value, dict) or "$date" not in value:
        return None
    inner = value["$date"]
    if isinstance(inner, dict):
        inner = inner.get("$numberLong")
    if isinstance(inner, float) and not math.isfinite(inner):
        return None  # stored as it came (NaN, Infinity, which Python's JSON reads): listed, in no day's range
    if isinstance(inner, (int, float)) and not isinstance(inner, bool):
        return int(inner)
    if isinstance(inner, str):
        if re.fullmatch(r"-?[0-9]+", inner):
            try:
                return int(inner)
            except ValueError:  # more digits than int() reads: listed, in no day's range
                return None
        try:
            parsed = datetime.fromisoformat(inner.replace("Z", "+00:00"))
        except ValueError:  # stored as it came (`"²"`): listed, in no day's range
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return int(parsed.timestamp() * 1000)
    return None


def day_start_ms(day: date) -> int:
    return int(datetime.combine(day, time(), tzinfo=timezone.utc).timestamp() * 1000)


@dataclass(frozen=True)
class ListingQuery:
    filters: Dict[str, List[Any]] = field(default_factory=dict)  # field -> accepted values
    created_from_ms: Optional[int] = None
    created_before_ms: Optional[int] = None
    sort: Tuple[str, ...] = ()
    sort_order: int = -1
    fields: Optional[Tuple[str, ...]] = None
    nfields: Tuple[str, ...] = ()
    skip: int = 0
    limit: int = 0


def values_of(params: Params, key: str) -> List[str]:
    return [value for name, value in params if name == key]


def _last_int(params: Params, key: str, default: int) -> int:
    values = values_of(params, key)
    if not values or not values[-1]:
        return default
    try:
        return int(values[-1])
    except ValueError as error:
        raise BackendFailure("%s is not an integer" % key) from error


def parse_query(params: Params, collection: str, today: date) -> ListingQuery:
    """Turn the query string pairs into a ListingQuery, as kernelci-backend did."""
    created_from, created_before = _created_window(params, today)
    sort = tuple(values_of(params, "sort"))
    sort_order = _last_int(params, "sort_order", -1) if sort else -1
    field_values = values_of(params, "field")
    return ListingQuery(
        filters=_filters(params, VALID_FILTER_KEYS[collection]),
        created_from_ms=created_from,
        created_before_ms=created_before,
        sort=sort,
        sort_order=sort_order if sort_order in (1, -1) else -1,
        fields=tuple(field_values) if field_values else None,
        nfields=tuple(values_of(params, "nfield")),
        skip=_skip(params),
        limit=abs(_last_int(params, "limit", 0)),
    )


def _skip(params: Params) -> int:
    skip = _last_int(params, "skip", 0)
    if skip < 0:
        raise BackendFailure("skip must be non-negative")
    return skip


def _filters(params: Params, valid_keys: Iterable[str]) -> Dict[str, List[Any]]:
    filters: Dict[str, List[Any]] = {}
    for key in valid_keys:
        values = [value for value in values_of(params, key) if value != ""]
        if not values:
            continue
        if key in _INT_KEYS:
            try:
                values = [int(value) for value in values]
            except ValueError:
                continue  # the backend logs the error and drops this filter
        filters[key] = [None if value == "null" else value for value in values]
    return filters


def _created_window(params: Params, today: date) -> Tuple[Optional[int], Optional[int]]:
    """created_on=<day> selects a day; date_range=N covers that day (or today) and N days before."""
    day = _created_on_day(values_of(params, "created_on"))
    date_range = values_of(params, "date_range")
    if not date_range:
        if day is None:
            return None, None
        return day_start_ms(day), _almost_midnight_ms(day)
    end_day = day or today
    days = _date_range_days(date_range[-1])
    return day_start_ms(end_day) - days * 86_400_000, _almost_midnight_ms(end_day)


def _date_range_days(value: str) -> int:
    try:
        days = abs(int(value))
    except ValueError:
        return DEFAULT_DATE_RANGE
    return days if days <= timedelta.max.days else DEFAULT_DATE_RANGE


def _created_on_day(values: List[str]) -> Optional[date]:
    if not values:
        return None
    for layout in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(values[-1], layout).date()
        except ValueError:
            continue
    return None


def _almost_midnight_ms(day: date) -> int:
    return int(datetime.combine(day, _ALMOST_MIDNIGHT, tzinfo=timezone.utc).timestamp() * 1000)


def matches(item: ListingItem, query: ListingQuery) -> bool:
    if query.created_from_ms is not None:
        created = item.created_ms
        if created is None or not query.created_from_ms <= created < query.created_before_ms:
            return False
    for key, accepted in query.filters.items():
        if not _field_matches(item.doc.get(key), key, accepted):
            return False
    return True


def _field_matches(value: Any, key: str, accepted: List[Any]) -> bool:
    if key in _OBJECT_ID_KEYS and isinstance(value, dict):
        value = value.get("$oid")
    if isinstance(value, list):
        return any(element in accepted for element in value) or (not value and None in accepted)
    if isinstance(value, (bool, dict)):
        return False  # a query value is a string or int; `True in [1]` must not match
    return value in accepted


def sort_key(value: Any) -> Tuple:
    """Order values the way MongoDB compares BSON types: null, numbers, strings, objects, ..."""
    if value is None:
        return (1,)
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, (int, float)):
        return (2, value)
    if isinstance(value, str):
        return (3, value)
    if isinstance(value, dict):
        if "$date" in value:
            return (9, bson_date_ms(value) or 0)
        if "$oid" in value:
            return (7, str(value["$oid"]))
        return (4, json.dumps(value, sort_keys=True))
    if isinstance(value, list):
        return sort_key(value[0]) if value else (0,)
    return (5, str(value))


def order(items: List[ListingItem], query: ListingQuery) -> List[ListingItem]:
    """Sort stably (equal keys keep insertion order); no `sort` keeps natural order."""
    if not query.sort:
        return items
    if query.sort == ("created_on",):
        key = lambda item: (1,) if item.created_ms is None else (9, item.created_ms)  # noqa: E731
    else:
        key = lambda item: tuple(sort_key(item.doc.get(name)) for name in query.sort)  # noqa: E731
    return sorted(items, key=key, reverse=query.sort_order == -1)


def project(doc: Dict[str, Any], query: ListingQuery) -> Dict[str, Any]:
    if query.fields is not None:
        wanted = set(query.fields) | {"_id"}
        doc = {key: value for key, value in doc.items() if key in wanted}
    if query.nfields:
        doc = {key: value for key, value in doc.items() if key not in query.nfields}
    return doc


# A crawler asks for the same filtered, sorted list page after page; MongoDB answers from an
# index, so the replica keeps the last few results instead of filtering and sorting each time.
_MATCHING_CACHE: "OrderedDict[tuple, List[ListingItem]]" = OrderedDict()
_MATCHING_CACHE_SIZE = 8
_MATCHING_LOCK = threading.Lock()


def _matching(items: List[ListingItem], query: ListingQuery) -> List[ListingItem]:
    # LegacyCorpus.items() hands out one snapshot list until the collection gains an item (the
    # only way a collection changes), so the snapshot's identity and length make a safe key.
    key = (id(items), len(items), query.created_from_ms, query.created_before_ms,
           json.dumps(query.filters, sort_keys=True, default=str), query.sort, query.sort_order)
    with _MATCHING_LOCK:
        cached = _MATCHING_CACHE.get(key)
        if cached is not None:
            _MATCHING_CACHE.move_to_end(key)
            return cached
    matching = order([item for item in items if matches(item, query)], query)
    with _MATCHING_LOCK:
        _MATCHING_CACHE[key] = matching
        while len(_MATCHING_CACHE) > _MATCHING_CACHE_SIZE:
            _MATCHING_CACHE.popitem(last=False)
    return matching


def page(items: List[ListingItem], query: ListingQuery) -> Tuple[int, List[str]]:
    """Return (total matching, JSON texts of the page's items)."""
    matching = _matching(items, query)
    end = None if query.limit == 0 else query.skip + query.limit
    selected = matching[query.skip:end]
    if query.fields is None and not query.nfields:
        texts = [item.json_text for item in selected]
    else:
        texts = [_projected_text(item, query) for item in selected]
    return len(matching), texts


def _projected_text(item: ListingItem, query: ListingQuery) -> str:
    key = (query.fields or ()) + ("|",) + query.nfields
    text = item.projections.get(key)
    if text is None:
        text = item.projections[key] = json.dumps(project(item.doc, query), separators=(",", ":"),
                                                  ensure_ascii=False)
    return text


def envelope(total: int, query: ListingQuery, texts: List[str]) -> bytes:
    """The backend's compact list envelope, built from pre-serialised items."""
    return ('{"code":200,"count":%d,"limit":%d,"result":[%s],"skip":%d}'
            % (total, query.limit, ",".join(texts), query.skip)).encode("utf-8")
