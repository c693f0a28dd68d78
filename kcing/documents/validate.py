"""Check that a document can be posted: Logstash will accept it and Elasticsearch will store it.

`check` guards the boundary between tolerant parsing and the sink. A document that fails is
refused with RejectedInput, so its upstream object is recorded as rejected instead of making a
whole batch fail later.
"""
from __future__ import annotations

import json
import re
from typing import Any, List, Mapping

from kcing.errors import RejectedInput, one_line
from kcing.records import DOCUMENT_KINDS, Document

INDEX = re.compile(r"^(%s)-\d{4}\.\d{2}\.\d{2}$" % "|".join(DOCUMENT_KINDS))
_TIMESTAMP_TEXT = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:Z|[+-]\d{2}:\d{2})"
TIMESTAMP = re.compile(r"^%s$" % _TIMESTAMP_TEXT)
# Many timestamps joined by newlines, each of them whole.
_TIMESTAMPS = re.compile(r"(?:%s\n)*%s" % (_TIMESTAMP_TEXT, _TIMESTAMP_TEXT))
MAX_ID_BYTES = 512  # Elasticsearch refuses longer _id values
# Logstash moves "@metadata" out of the body and sets "@timestamp" from the document's own.
LOGSTASH_KEYS = frozenset(("@metadata", "@timestamp"))
# The Logstash http input (ECS mode) writes [host][ip], [url][path], [http][method] and
# [user_agent][original] after decoding: a scalar posted under one of these names makes it fail.
HTTP_INPUT_OBJECTS = frozenset(("host", "url", "http", "user_agent"))
# The sinks' encoding (records.Document.to_json), built once: this runs for every document.
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def check(document: Document) -> None:
    """Return None if `document` is postable; raise RejectedInput saying why not."""
    if document.kind not in DOCUMENT_KINDS:
        raise RejectedInput("unknown document kind %r" % (document.kind,))
    _check_routing(document)
    if document.body_json is None:
        _check_body_keys(document.body)
        document.remember_body_json(_serialised(document.body))
    # Otherwise the builder serialised the body itself (a LAVA job's log lines: the fields they
    # share once, then each line's own) and checked its field names with `check_field_names`.


def check_all(documents) -> None:
    """`check` each of `documents` in order, with the same outcome, doing once what is the same
    for many of them: an object's documents share a handful of indices (every log line of a
    LAVA job goes to one), so a document whose kind and index are the very objects of the last
    fully checked one needs only its own parts checked."""
    kind = index = None
    for document in documents:
        timestamp, doc_id = document.timestamp, document.doc_id
        if (document.index is index and document.kind is kind and document.body_json is not None
                and type(timestamp) is str and TIMESTAMP.match(timestamp)
                and type(doc_id) is str and 0 < len(doc_id) <= MAX_ID_BYTES and doc_id.isascii()):
            continue  # what `check` would find: nothing (ASCII is one byte a character)
        check(document)
        kind, index = document.kind, document.index


def routing_fine(timestamps: List[Any], ids: List[Any]) -> bool:
    """True when each of `timestamps` and `ids` is what `check` takes, all checked at once;
    False does not say which is not, nor that any is not."""
    try:
        joined = "\n".join(timestamps)  # a TypeError for any that is not text
        joined_ids = "".join(ids)
    except TypeError:
        return False
    # Each a whole timestamp: a newline inside one would make two of it.
    return (joined.count("\n") == len(timestamps) - 1
            and (_all_usual(joined, len(timestamps)) or _TIMESTAMPS.fullmatch(joined) is not None)
            and joined_ids.isascii() and min(map(len, ids), default=1) > 0
            and max(map(len, ids), default=0) <= MAX_ID_BYTES)


# The timestamps the builders make ("2020-11-19T07:06:00.379Z"), with each digit read as 0.
_USUAL_SHAPE = b"0000-00-00T00:00:00.000Z"
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _all_usual(joined: str, count: int) -> bool:
    """True when the `count` timestamps joined by newlines in `joined` all have the usual shape,
    which _TIMESTAMPS takes: a comparison of bytes, where the regular expression, for the
    thousands of a LAVA log, costs a few tenths of a millisecond. False says nothing."""
    if len(joined) != count * (len(_USUAL_SHAPE) + 1) - 1 or not joined.isascii():
        return False
    return joined.encode("ascii").translate(_DIGITS_AS_ZERO) == b"\n".join([_USUAL_SHAPE] * count)


def check_field_names(names) -> None:
    """`_check_body_keys` for a builder that serialises bodies itself: raise RejectedInput if a
    body with these field names could not be posted."""
    _check_body_keys(dict.fromkeys(names, {}))


def serialised(value: Any) -> str:
    """`value` as the compact JSON the sinks post, or RejectedInput when it cannot be."""
    return _serialised(value)


def _check_routing(document: Document) -> None:
    if not isinstance(document.index, str) or not INDEX.match(document.index) \
            or not document.index.startswith(document.kind + "-"):
        raise RejectedInput("bad index name %r for a %s document" % (document.index, document.kind))
    if not isinstance(document.timestamp, str) or not TIMESTAMP.match(document.timestamp):
        raise RejectedInput("@timestamp %r is not ISO 8601 with a zone" % (document.timestamp,))
    if not isinstance(document.doc_id, str) or not document.doc_id:
        raise RejectedInput("empty document id")
    try:
        id_bytes = len(document.doc_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise RejectedInput("document id is not valid Unicode") from None
    if id_bytes > MAX_ID_BYTES:
        raise RejectedInput("document id longer than %d bytes" % MAX_ID_BYTES)


def _check_body_keys(body: Mapping[str, Any]) -> None:
    if not isinstance(body, dict) and not isinstance(body, Mapping):
        raise RejectedInput("document body is not a mapping")
    # Substring tests on all names at once: this runs for every log line of every LAVA job.
    try:
        names = "\n%s\n" % "\n".join(body)
    except TypeError:
        raise RejectedInput("a field name is not a string") from None
    # A leading "_" (an Elasticsearch metadata field), an empty name, a dot at either end
    # (Elasticsearch refuses both), or a Logstash field.
    if body and ("\n_" in names or "\n\n" in names or "\n." in names or ".\n" in names
                 or "\n@metadata\n" in names or "\n@timestamp\n" in names):
        raise RejectedInput(_bad_name_reason(body))
    for key in HTTP_INPUT_OBJECTS.intersection(body):
        if not isinstance(body[key], Mapping):
            raise RejectedInput("scalar field %r collides with the Logstash http input" % key)


def _bad_name_reason(body: Mapping[str, Any]) -> str:
    for key in body:
        if key.startswith("_"):
            return "field %r would be an Elasticsearch metadata field" % key
        if key in LOGSTASH_KEYS:
            return "field %r belongs to Logstash, not the body" % key
        if not key or key.startswith(".") or key.endswith(".") or "\n" in key:
            return "field name %r cannot be indexed" % key
    return "a field name cannot be indexed"


def _serialised(body: Mapping[str, Any]) -> str:
    try:
        text = _ENCODER.encode(body)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RejectedInput("document text is not valid Unicode (a lone surrogate)") from None
    except (TypeError, ValueError, RecursionError) as error:
        raise RejectedInput("document is not JSON: %s" % one_line(error)) from None
    return text
