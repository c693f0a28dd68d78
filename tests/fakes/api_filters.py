"""The KernelCI API's query filters for `/nodes` and `/count` (upstream.md §2.3): pure functions.

Every query parameter but `limit` and `offset` is a filter `field[__op]=value`: equality, or one
of lt, lte, gt, gte, ne, re, in, nin, or `int` (an exact integer match). A key is split at `__`
only when that gives two parts, as the API splits it: `a__b__gt` is a field of that whole name,
and an operator the API does not know matches nothing. Dotted fields reach into objects;
equality with a list field means "contains". `null` matches null or missing, `true`/`false`
(any case) are booleans, decimal strings given to an operator are numbers, the time fields are
parsed with `datetime.fromisoformat` and `parent` as an ObjectId, a bad one being a 400.
Repeated keys keep only the last value.

Stricter than the server on one point: a time with a zone (`Z`, `+00:00`) is refused too, since
the stored times are naive UTC and some server versions mis-compare such values.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple

TIME_FIELDS = frozenset(("created", "updated", "timeout", "holdoff"))
OBJECT_ID_FIELDS = frozenset(("parent",))
OPERATORS = frozenset(("lt", "lte", "gt", "gte", "ne", "re", "in", "nin", "int"))
_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")
PAGING = frozenset(("limit", "offset"))
_MISSING = object()


class BadFilter(ValueError):
    """The query cannot be run: the server answers 400 with this message as `detail`."""


@dataclass(frozen=True)
class Filter:
    field: str
    op: str  # "eq" or one of OPERATORS
    value: Any

    def matches(self, node: Mapping[str, Any]) -> bool:
        return _TESTS[self.op](lookup(node, self.field), self.value)


def parse(query: Sequence[Tuple[str, str]]) -> List[Filter]:
    """The filters of a query string's (key, value) pairs, in order, the last of a repeated key winning."""
    last: Dict[str, str] = {}
    for key, value in query:
        if key not in PAGING:
            last.pop(key, None)
            last[key] = value
    return [_filter(key, value) for key, value in last.items()]


def matches(node: Mapping[str, Any], filters: Sequence[Filter]) -> bool:
    return all(item.matches(node) for item in filters)


def lookup(node: Mapping[str, Any], dotted: str) -> Any:
    value: Any = node
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _filter(key: str, text: str) -> Filter:
    parts = key.split("__")
    if len(parts) != 2:  # no operator, or more than one `__`: the whole key names the field
        return Filter(key, "eq", _value(key, text, "eq"))
    field, op = parts
    if op not in OPERATORS:
        if field in TIME_FIELDS:
            _time(field, text)  # parsed before the operator is looked at: a bad time is a 400 still
        return Filter(field, "none", None)
    if op == "int":
        try:
            return Filter(field, "eq", int(text))
        except ValueError:
            raise BadFilter("invalid literal for int() with base 10: %r" % text) from None
    if op in ("in", "nin"):
        value: Any = [_value(field, item, op) for item in text.split(",")]
    elif op == "re":
        try:
            value = re.compile(text)
        except re.error as error:
            raise BadFilter("invalid regular expression %r: %s" % (text, error)) from None
    else:
        value = _value(field, text, op)
    return Filter(field, op, value)


def _value(field: str, text: str, op: str) -> Any:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text == "null":
        return None
    if field in TIME_FIELDS:
        return _time(field, text)
    if field in OBJECT_ID_FIELDS:
        if not _OBJECT_ID.match(text):
            raise BadFilter("'%s' is not a valid ObjectId, it must be a 12-byte input or a 24-character hex string"
                            % text)
        return text.lower()
    if field == "retry_counter" or (op != "eq" and text.isdigit()):
        return int(text)
    return text


def _time(field: str, text: str) -> str:
    """The stored form of a time (naive, microseconds), which sorts like the time itself."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter("Invalid isoformat string for %s: %r" % (field, text)) from None
    if parsed.tzinfo is not None:
        raise BadFilter("%s must be naive UTC, without a zone: %r" % (field, text))
    return parsed.isoformat(timespec="microseconds")


def _equal(stored: Any, wanted: Any) -> bool:
    if wanted is None:
        return stored is None or stored is _MISSING
    if isinstance(stored, list):
        return wanted in stored
    return stored == wanted


def _ordered(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def test(stored: Any, wanted: Any) -> bool:
        # Like MongoDB, values of different types never compare.
        if stored is _MISSING or stored is None or wanted is None:
            return False
        if isinstance(stored, bool) or isinstance(wanted, bool) or type(stored) is not type(wanted):
            return False
        return compare(stored, wanted)

    return test


def _search(stored: Any, pattern) -> bool:
    if isinstance(stored, list):
        return any(isinstance(item, str) and pattern.search(item) for item in stored)
    return isinstance(stored, str) and pattern.search(stored) is not None


_TESTS: Dict[str, Callable[[Any, Any], bool]] = {
    "eq": _equal,
    "none": lambda stored, wanted: False,  # an operator the API does not know
    "ne": lambda stored, wanted: not _equal(stored, wanted),
    "lt": _ordered(lambda stored, wanted: stored < wanted),
    "lte": _ordered(lambda stored, wanted: stored <= wanted),
    "gt": _ordered(lambda stored, wanted: stored > wanted),
    "gte": _ordered(lambda stored, wanted: stored >= wanted),
    "re": _search,
    "in": lambda stored, wanted: any(_equal(stored, item) for item in wanted),
    "nin": lambda stored, wanted: not any(_equal(stored, item) for item in wanted),
}
