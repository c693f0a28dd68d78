"""Read a flat upstream record into document fields of the types `fields.py` declares."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from kcing.documents.coerce import as_bool, as_date, as_float, as_int, as_keyword, as_text
from kcing.documents.fields import BOOLEAN, DATE, FLOAT, KEYWORD, KEYWORD_ARRAYS, LONG, NULLABLE, TEXT
from kcing.documents.identity import iso_timestamp
from kcing.errors import RejectedInput


def _as_iso_date(value: Any) -> Optional[str]:
    when = as_date(value)
    return iso_timestamp(when) if when is not None else None


READERS: Dict[str, Callable[[Any], Any]] = {
    KEYWORD: as_keyword,
    TEXT: as_text,
    LONG: as_int,
    FLOAT: as_float,
    BOOLEAN: as_bool,
    DATE: _as_iso_date,
}


def typed_fields(record: Mapping[str, Any], declared: Mapping[str, str],
                 names: Optional[Iterable[str]] = None) -> Dict[str, Any]:
    """`record`'s values for the `declared` fields (or only `names`), each read as its type.

    A value that cannot be read as its type becomes None; undeclared keys are ignored.
    """
    fields = {}
    for name in declared if names is None else names:
        if name in KEYWORD_ARRAYS:
            fields[name] = _keyword_list(record.get(name))
        else:
            fields[name] = READERS[declared[name]](record.get(name))
    return fields


def _keyword_list(value: Any) -> Optional[List[str]]:
    # Empty strings stay: in `build_platform` (platform.uname()) the position names the part.
    items = value if isinstance(value, list) else [value]
    keywords = [item if isinstance(item, str) else as_keyword(item) for item in items]
    return [keyword for keyword in keywords if keyword is not None] or None


def without_missing(body: Mapping[str, Any]) -> Dict[str, Any]:
    """Drop fields without a value, except those where null means "not measured"."""
    return {name: value for name, value in body.items() if value is not None or name in NULLABLE}


def listing_date(created: Optional[datetime], what: str) -> datetime:
    """The listing date of a file that carries no date of its own."""
    when = as_date(created) if created is not None else None
    if when is None:
        raise RejectedInput("no date: %s carries none, and no usable one was given (the listing's date, the "
                            "samples manifest's, or --date for local files)" % what)
    return when
