"""Tolerant conversions from loosely typed upstream values to the types `fields.py` promises.

Upstream files carry numbers and booleans as strings ("4.30", "false"), Python's `None` as the
string "None", and YAML may hand back dates or integers where a string was meant. Each function
returns None when the value cannot be read as its type, so the field is left out (or set to
null) instead of being indexed with a type the index template does not expect.
"""
from __future__ import annotations

import base64
import json
import math
import re
from datetime import date, datetime, timedelta
from typing import Any, Optional

from kcing.documents.identity import as_utc

# Words upstream writes for "no value": LAVA templates render Python's None as "None".
NO_VALUE_WORDS = frozenset(("", "none", "null"))
TRUE_WORDS = frozenset(("true", "yes", "y", "on", "1"))
FALSE_WORDS = frozenset(("false", "no", "n", "off", "0"))
# Elasticsearch `long` range.
LONG_MIN, LONG_MAX = -(2 ** 63), 2 ** 63 - 1
# The largest magnitude of Elasticsearch's `float` (32 bits), which every FLOAT field is mapped as:
# the node reads a larger number as infinity and refuses the whole document.
FLOAT_MAX = 3.4028234663852886e38
# Dates outside this range are typos or garbage, and years below 1000 do not format as ISO 8601.
EARLIEST_YEAR, LATEST_YEAR = 1970, 9998


def as_keyword(value: Any) -> Optional[str]:
    """A short identifier-like string; numbers and booleans become their text, "None" is absent."""
    if isinstance(value, str):
        return None if _says_no_value(value) else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return None


def _says_no_value(text: str) -> bool:
    # The length test first: values can be megabytes long, the words are short.
    return len(text) <= 8 and text.strip().lower() in NO_VALUE_WORDS


def as_text(value: Any) -> Optional[str]:
    """Free text (messages, error descriptions): a string as it is, scalars as their text."""
    if isinstance(value, str):
        return value
    return as_keyword(value)


def as_verdict(value: Any) -> Optional[str]:
    """A result or status word as every source's verdict fields hold it: lowercase, without the
    spaces around it (" PASS\n" is "pass"), so that one filter finds it whatever wrote it."""
    keyword = as_keyword(value)
    verdict = keyword.strip().lower() if keyword is not None else None
    return verdict or None


def as_float(value: Any) -> Optional[float]:
    """A float that a `float` field holds, from a number or a decimal string ("4.2700000000",
    "0E-10"); "None", and a magnitude beyond a 32-bit float's (1e39), are absent."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if _says_no_value(value):
            return None
        try:
            number = float(value)
        except ValueError:
            return None
    elif isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            return None
    else:
        return None
    return number if -FLOAT_MAX <= number <= FLOAT_MAX else None  # NaN compares false


def as_int(value: Any) -> Optional[int]:
    """An integer in Elasticsearch's `long` range, from an int, an integral float or a string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        number = _int_from_text(value)
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        number = int(value)
    else:
        return None
    if number is None or not LONG_MIN <= number <= LONG_MAX:
        return None
    return number


def _int_from_text(text: str) -> Optional[int]:
    try:
        return int(text)
    except ValueError:
        pass
    number = as_float(text)
    if number is None or not number.is_integer():
        return None
    return int(number)


def as_bool(value: Any) -> Optional[bool]:
    """A boolean from a bool, 0/1 or a word ("false", "False", "yes")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    return None


def as_date(value: Any) -> Optional[datetime]:
    """A timezone-aware UTC datetime from an ISO 8601 string or a datetime; naive means UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        parsed = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        return _in_index_years(iso_time(value))
    else:
        return None
    try:
        return _in_index_years(as_utc(parsed))
    except (OverflowError, ValueError):
        return None


def _in_index_years(when: Optional[datetime]) -> Optional[datetime]:
    return when if when is not None and EARLIEST_YEAR <= when.year <= LATEST_YEAR else None


# The end of a day written as hour 24 ("2024-10-16T24:00:00", nothing after the hour but zeros
# and a zone): the next day's midnight in ISO 8601, in python-dateutil and in the fromisoformat
# of newer Pythons, which 3.11's refuses. Groups: the date and separator, what follows the hour.
_END_OF_DAY = re.compile(r"([0-9]{4}-?[0-9]{2}-?[0-9]{2}.)24((?::?00(?::?00(?:[.,]0+)?)?)?(?:Z|[+-].*)?)",
                         re.ASCII | re.DOTALL)


def iso_time(text: str) -> Optional[datetime]:
    """An upstream time (the KernelCI API's, a listing's `created_on`, LAVA's) as aware UTC, or
    None. One rule for every reader, so that no object is listed under one day and delivered
    under another: ISO 8601 as Python's `datetime.fromisoformat` reads it, hour 24 the next
    midnight whatever Python runs kcing, and nothing around the text (the KernelCI API's
    fromisoformat refuses spaces; nothing upstream writes has any). No zone means UTC."""
    try:
        return as_utc(_from_iso(text))
    except (ValueError, OverflowError):  # OverflowError: an offset moves year 1 or 9999 out of range
        return None


def _from_iso(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)  # first: what upstream writes, read at once
    except ValueError:
        if text.endswith("z"):  # RFC 3339 allows the zone letter in lower case; fromisoformat does not
            text = text[:-1] + "Z"
        end_of_day = _END_OF_DAY.fullmatch(text)
        if end_of_day is None:
            return datetime.fromisoformat(text)
        return datetime.fromisoformat(end_of_day.group(1) + "00" + end_of_day.group(2)) + timedelta(days=1)


def compact_json(value: Any) -> str:
    """One-line JSON text of a parsed YAML/JSON value (a log message that is not a string).

    Callers pass values from the guarded loaders in `yamlsafe`/`lava_log`, whose depth and
    alias expansion are bounded, so the recursion in `_plain` is bounded too.
    """
    return json.dumps(_plain(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _plain(value: Any) -> Any:
    """The same value made of JSON types only (YAML can also give dates, bytes, sets, NaN)."""
    if isinstance(value, str) or value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {_plain_key(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        # Sorted so that the same file always gives the same text, whatever the hash seed.
        return sorted((_plain(item) for item in value), key=repr)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def _plain_key(key: Any) -> str:
    if isinstance(key, str):
        return key
    plain = _plain(key)
    return plain if isinstance(plain, str) else json.dumps(plain, ensure_ascii=False, separators=(",", ":"))
