"""What the kcing pipeline's `elasticsearch` output leaves in Elasticsearch, as plain dicts.

The pipeline (logstash/ conf) writes each event with `action => index`,
`index => "%{[@metadata][index]}"` and `document_id => "%{[@metadata][id]}"`; an event with a
`[@metadata][version]` with that version too, `version_type => external_gte`, so that one
older than the stored document's gets a 409, which Logstash drops (kept here in `conflicts`).
Events that cannot be written are kept in `unrouted` with the reason Logstash or Elasticsearch
would give, instead of silently vanishing as they would in a real stack (dropped, logged or
sent to a DLQ).
"""
from __future__ import annotations

import json
import re
import threading
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

from tests.fakes.logstash_events import JSON_PARSE_FAILURE, Event
from tests.fakes.serving import LockedList

DocKey = Tuple[str, str]  # (index, document id)

# Characters Elasticsearch refuses in index names (MetadataCreateIndexService); ':' since 7.0.
_INDEX_FORBIDDEN = set('\\/*?"<>| ,#:')
_INDEX_MAX_BYTES = 255
_ID_MAX_BYTES = 512
# The versions the pipeline's filter lets through: a text of 1 to 18 digits (kcing.conf).
_VERSION = re.compile(r"[0-9]{1,18}\Z")

# Elasticsearch metadata fields: a document that carries one as a top-level field gets a 400
# mapper_parsing_exception ("Field [_id] is a metadata field and cannot be added inside a document").
METADATA_FIELDS = frozenset({
    "_id", "_index", "_source", "_routing", "_field_names", "_ignored", "_ignored_source",
    "_seq_no", "_primary_term", "_version", "_tier", "_doc_count", "_nested_path",
    "_data_stream_timestamp", "_feature", "_type", "_size",
})


class Unroutable(Exception):
    """The event would not become a stored document; the message is the reason."""


@dataclass(frozen=True)
class Unrouted:
    reason: str
    event: Event


def interpolate(value: Any) -> Optional[str]:
    """Render a field the way Logstash sprintf `%{[field]}` does; None when it stays literal."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join(interpolate(item) or "" for item in value)
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


@lru_cache(maxsize=1024)
def simple_match(name: str, pattern: str) -> bool:
    """Elasticsearch's Regex.simpleMatch: `*` matches any run of characters, and nothing else is
    special (`?` and `[` are themselves, unlike in fnmatch)."""
    return _simple_pattern(pattern).fullmatch(name) is not None


@lru_cache(maxsize=1024)
def _simple_pattern(pattern: str) -> "re.Pattern":
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)


def index_name_problem(name: str) -> Optional[str]:
    """Return why Elasticsearch would refuse `name` as an index name, or None if it is valid."""
    if not name:
        return "index name must not be empty"
    if name != name.lower():
        return "index name [%s] must be lowercase" % name
    if name[0] in "_-+":
        return "index name [%s] must not start with '_', '-', or '+'" % name
    if name in (".", ".."):
        return "index name [%s] must not be '.' or '..'" % name
    bad = sorted(set(name) & _INDEX_FORBIDDEN)
    if bad:
        return "index name [%s] must not contain %s" % (name, " ".join(repr(c) for c in bad))
    if len(name.encode("utf-8")) > _INDEX_MAX_BYTES:
        return "index name [%s...] is longer than %d bytes" % (name[:40], _INDEX_MAX_BYTES)
    return None


def field_name_problem(document: Dict[str, Any]) -> Optional[str]:
    """Return the mapper_parsing_exception a document would cause by its field names, or None."""
    for name in document:
        if name in METADATA_FIELDS:
            return ("mapper_parsing_exception: Field [%s] is a metadata field and cannot be added "
                    "inside a document" % name)
    return _nested_name_problem(document)


def _nested_name_problem(document: Dict[str, Any]) -> Optional[str]:
    # Iterative and only descending into containers: this runs for every stored document.
    pending: List[Any] = [document]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            for name, child in value.items():
                # As Elasticsearch 8 splits a dotted name into objects: an empty segment at the
                # start or in the middle is refused; a trailing dot is dropped ("a." is "a").
                if not name.strip():
                    return "mapper_parsing_exception: field name cannot be an empty string"
                if set(name) == {"."}:
                    return "mapper_parsing_exception: field name cannot contain only dots: [%s]" % name
                if name[0] == "." or ".." in name:
                    return ("mapper_parsing_exception: field name [%s] has an empty object name segment"
                            % name)
                if isinstance(child, (dict, list)):
                    pending.append(child)
        else:
            pending.extend(child for child in value if isinstance(child, (dict, list)))
    return None


def route(event: Event) -> DocKey:
    """Return (index, id) the output would write `event` to, or raise Unroutable(reason)."""
    if JSON_PARSE_FAILURE in event.tags:
        raise Unroutable("_jsonparsefailure: the body was not a JSON object or array of objects")
    index = interpolate(event.metadata.get("index"))
    doc_id = interpolate(event.metadata.get("id"))
    if index is None:
        raise Unroutable("no [@metadata][index]")
    if doc_id is None:
        raise Unroutable("no [@metadata][id]")
    problem = index_name_problem(index)
    if problem:
        raise Unroutable("invalid_index_name_exception: " + problem)
    if not doc_id:
        raise Unroutable("document id must not be empty")
    if len(doc_id.encode("utf-8")) > _ID_MAX_BYTES:
        raise Unroutable("id [%s...] is too long, must be no longer than %d bytes" % (doc_id[:40], _ID_MAX_BYTES))
    problem = field_name_problem(event.fields)
    if problem:
        raise Unroutable(problem)
    return index, doc_id


def logstash_truthy(value: Any) -> bool:
    """Whether a Logstash condition (`if [field]`) takes the field's value as true: present, and
    its text neither empty nor "false" (JSON's false, "" and "false" are all false; 0 is true)."""
    return value is not None and value is not False and value not in ("", "false")


def version_of(event: Event) -> Optional[int]:
    """The version the pipeline writes `event` with, None for none; Unroutable when its filter
    sends the event to kcing-unrouted instead (a version that is not a text of digits)."""
    value = event.metadata.get("version")
    if not logstash_truthy(value):  # the version's output is not taken: written without one
        return None
    if not isinstance(value, str) or not _VERSION.match(value):
        raise Unroutable("[@metadata][version] %r is not a version (a text of 1 to 18 digits)" % (value,))
    return int(value)


@dataclass(frozen=True)
class Conflict:
    """An event Elasticsearch refused (409) for a version older than the stored document's."""

    key: DocKey
    stored: int
    refused: int


class IndexStore:
    """Thread-safe stand-in for the Elasticsearch indices behind one or more Logstash inputs.

    `documents[(index, id)]` is the last version written (the `index` action overwrites);
    `writes[(index, id)]` counts how many times it was written; `versions[(index, id)]` is its
    version as Elasticsearch counts it (the one it was written with, else one more each write).
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.documents: Dict[DocKey, Dict[str, Any]] = {}
        self.writes: Counter = Counter()
        self.versions: Dict[DocKey, int] = {}
        self.unrouted: LockedList = LockedList()
        self.conflicts: LockedList = LockedList()

    def write(self, events: List[Event]) -> int:
        """Index what can be indexed, keep the rest in `unrouted` or `conflicts`; return how
        many were stored."""
        stored = 0
        for event in events:
            try:
                key, version = route(event), version_of(event)
            except Unroutable as reason:
                self.unrouted.append(Unrouted(str(reason), event))
                continue
            with self._lock:
                current = self.versions.get(key)
                if version is not None and current is not None and current > version:
                    self.conflicts.append(Conflict(key, current, version))
                    continue
                self.documents[key] = event.fields
                self.writes[key] += 1
                self.versions[key] = version if version is not None else (current or 0) + 1
            stored += 1
        return stored

    def snapshot(self) -> Dict[DocKey, Dict[str, Any]]:
        with self._lock:
            return dict(self.documents)

    def index_names(self) -> List[str]:
        with self._lock:
            return sorted({index for index, _ in self.documents})

    def in_index(self, index: str) -> Dict[str, Dict[str, Any]]:
        """Return {id: document} for one index."""
        with self._lock:
            return {doc_id: doc for (name, doc_id), doc in self.documents.items() if name == index}

    def rewritten(self) -> Dict[DocKey, int]:
        """Return the keys written more than once (resends), with their write counts."""
        with self._lock:
            return {key: count for key, count in self.writes.items() if count > 1}

    def clear(self) -> None:
        with self._lock:
            self.documents.clear()
            self.writes.clear()
            self.versions.clear()
        self.unrouted.clear()
        self.conflicts.clear()
