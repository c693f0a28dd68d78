"""A strict local Elasticsearch 8 (or 9) on 127.0.0.1, for the admin commands and for checks (elk.md §3.8).

Like Elasticsearch it sends `X-Elastic-Product: Elasticsearch` on every answer, checks the
`compatible-with` media types before anything else (so a 9.x client fails against the default
8.15.3 server exactly as it does against a real one), answers errors in the ES envelope
`{"error":{"root_cause":[...],"type","reason"},"status":N}`, refuses unknown query parameters,
settings, mapping parameters and template fields, refuses overlapping equal-priority templates,
refuses wildcard deletes (`action.destructive_requires_name`) and shards past
`cluster.max_shards_per_node` (`max_shards_per_node`), and type-checks documents against
the mapping their index got from the matching template.

Routes: `GET|HEAD /`, `GET /_cluster/health`, `PUT|POST|GET|HEAD|DELETE /_index_template/<name>`,
`PUT|POST|GET|DELETE /_template/<name>` (legacy templates: kept; a composable template whose
patterns overlap one is answered with the node's `Warning` header, and a legacy template whose
patterns overlap a composable one is refused, as the node does; they are never applied to a new
index, where a node applies them when no composable template matches),
`PUT|GET|DELETE /_ilm/policy/<name>`, `GET /_cat/indices[/<expr>]`, `PUT|GET|HEAD|DELETE /<index>`,
`POST|PUT /[<index>/]_bulk` (index, create, delete), `GET|POST /[<index>/]_mget` (with or without `_source`),
`GET|POST /[<index>/]_count` (match_all, term, terms, ids, exists, bool); closed indices, blocks,
aliases, `_resolve/index` and data streams made by a template (elastic_states.py).

Not emulated (answered with a 400 `emulator_unsupported` so nobody mistakes them for working):
update actions, versioned deletes, ingest pipelines, component templates, the `_data_stream` API,
`_source` filtering in `_mget`. External versions (`version`, `version_type` external,
external_gt, external_gte) are taken by the `index` action, with the node's 409s and a deleted
document's version kept for `index.gc_deletes` (60 s) as on the node.
Positions (`[1:23]`) in parse errors are left out. Assumptions not checked against a running
server: a comma-separated Accept (`text/plain,application/json`, which the client sends for cat
APIs) is read entry by entry; unknown `h=` columns of `_cat/indices` are ignored.
"""
from __future__ import annotations

import base64
import calendar
import copy
import json
import math
import os
import re
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakes.elastic_states import STATE_ROUTE_PARAMS, IndexStates
from tests.fakes.elastic_store import field_name_problem, index_name_problem, simple_match
from tests.fakes.serving import (
    BackgroundServer, BodyTooLarge, FaultQueue, LockedList, QuietHandler, ServedByBackgroundServer,
)

VERSION = "8.15.3"
MAX_CONTENT_LENGTH = 100 * 1024 * 1024
# http.max_initial_line_length: a node refuses a longer request line (method, target and HTTP
# version) before routing it, with 400 too_long_http_line_exception, and closes the connection.
MAX_INITIAL_LINE = 4096
PRODUCT_HEADER = ("X-Elastic-Product", "Elasticsearch")
GLOBAL_PARAMS = frozenset({"pretty", "human", "error_trace", "filter_path"})
HEALTH_ORDER = {"red": 0, "yellow": 1, "green": 2}
# The options of a template's `data_stream` a node fills in when it keeps the template.
DATA_STREAM_DEFAULTS = {"hidden": False, "allow_custom_routing": False}
# What a fresh Elasticsearch 8/9 holds: data-stream templates at priority 100 (elk.md §3.2).
BUILTIN_TEMPLATES = {
    name: {"index_patterns": ["%s-*-*" % name], "priority": 100, "data_stream": dict(DATA_STREAM_DEFAULTS),
           "composed_of": [], "_meta": {"managed": True, "description": "default %s template" % name}}
    for name in ("logs", "metrics", "synthetics")
}
EXPAND_WILDCARDS = ("all", "open", "closed", "hidden", "none")
# The suffixes in the order TimeValue.parseTimeValue tries them ("ms" before "s").
_TIME_UNITS = ("nanos", "micros", "ms", "s", "m", "h", "d")
_TIME_SECONDS = {"nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
_MEDIA_TYPE = re.compile(r"^([a-z0-9!#$&^_.+-]+)/([a-z0-9!#$&^_.+-]+)$")
# strict_date_optional_time as java.time reads it: a year of four digits, from -9999 (year 0 and
# the years before it count), and an offset of hours, minutes and seconds up to 18 hours.
_DATE = re.compile(r"^(-?\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:[.,]\d{1,9})?)?)?"
                   r"(?:Z|[+-](\d{2})(?::?(\d{2})(?::(\d{2}))?)?)?)?)?)?$")
# epoch_millis: digits with an optional fraction, no sign but a minus, no exponent.
_EPOCH_MILLIS = re.compile(r"^-?(\d+)(?:\.\d*)?$")
# A number in text as Elasticsearch reads it into a long (Long.parseLong, else BigDecimal) and
# into a double (Double.parseDouble, after trimming control characters and spaces).
_BIG_DECIMAL = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_JAVA_DOUBLE = re.compile(r"^[+-]?(?:NaN|Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[fFdD]?)$")
_JAVA_TRIMMED = "".join(map(chr, range(33)))
# Decimal types narrower than a double, by their struct format: a number beyond their range
# rounds to infinity, which Elasticsearch refuses.
_NARROW_DECIMALS = {"float": "<f", "half_float": "<e"}
# How ILM finds the day in an index name (index.lifecycle.parse_origination_date): its pattern,
# as the node writes it in its refusal (each `.` any character, `\d` an ASCII digit), and then
# that day read strictly as uuuu.MM.dd (IndexLifecycleOriginationDateParser).
_ORIGINATION_PATTERN = "^.*-(\\d{4}.\\d{2}.\\d{2})(-[\\d]+)?$"
_ORIGINATION_NAME = re.compile(_ORIGINATION_PATTERN.replace("[\\d]", "[0-9]").replace("\\d", "[0-9]"))
_ORIGINATION_DAY = re.compile(r"([0-9]{4})\.([0-9]{2})\.([0-9]{2})")

# -- mapping and settings vocabularies ---------------------------------------------------------

_COMMON = {"type", "fields", "meta", "copy_to"}
_NUMERIC = _COMMON | {"coerce", "doc_values", "ignore_malformed", "index", "null_value", "store", "script",
                      "on_script_error", "time_series_metric", "time_series_dimension"}
MAPPING_PARAMETERS = {
    "keyword": _COMMON | {"ignore_above", "index", "doc_values", "store", "null_value", "normalizer", "norms",
                          "eager_global_ordinals", "similarity", "split_queries_on_whitespace", "index_options",
                          "script", "on_script_error", "time_series_dimension"},
    "text": _COMMON | {"analyzer", "search_analyzer", "search_quote_analyzer", "index", "store", "norms",
                       "index_options", "index_prefixes", "index_phrases", "position_increment_gap", "similarity",
                       "term_vector", "fielddata", "fielddata_frequency_filter", "eager_global_ordinals"},
    "match_only_text": _COMMON,
    "wildcard": _COMMON | {"ignore_above", "null_value"},
    "constant_keyword": _COMMON | {"value"},
    "long": _NUMERIC, "integer": _NUMERIC, "short": _NUMERIC, "byte": _NUMERIC, "unsigned_long": _NUMERIC,
    "double": _NUMERIC, "float": _NUMERIC, "half_float": _NUMERIC, "scaled_float": _NUMERIC | {"scaling_factor"},
    "boolean": _COMMON | {"doc_values", "index", "null_value", "store", "script", "on_script_error"},
    "date": _COMMON | {"format", "locale", "ignore_malformed", "doc_values", "index", "null_value", "store",
                       "script", "on_script_error"},
    "ip": _COMMON | {"doc_values", "ignore_malformed", "index", "null_value", "store"},
    "flattened": {"type", "depth_limit", "doc_values", "eager_global_ordinals", "ignore_above", "index",
                  "index_options", "null_value", "similarity", "split_queries_on_whitespace", "meta"},
    "object": {"type", "properties", "dynamic", "enabled", "subobjects"},
    "nested": {"type", "properties", "dynamic", "include_in_parent", "include_in_root"},
}
MAPPING_PARAMETERS["date_nanos"] = MAPPING_PARAMETERS["date"]
ROOT_MAPPING_PARAMETERS = {"dynamic", "date_detection", "numeric_detection", "dynamic_date_formats",
                           "dynamic_templates", "properties", "_source", "_meta", "_routing", "runtime",
                           "subobjects", "enabled"}
_TEXTUAL = {"keyword", "text", "match_only_text", "wildcard", "constant_keyword", "ip"}
_INTEGRAL = {"long": 63, "integer": 31, "short": 15, "byte": 7, "unsigned_long": 64}
_DECIMAL = {"double", "float", "half_float", "scaled_float"}

NODE_NAME = "emulator-node"
INDEX_SETTINGS = {
    "index.number_of_shards": "int>=1", "index.number_of_replicas": "int>=0", "index.lifecycle.name": "str",
    "index.lifecycle.parse_origination_date": "bool", "index.lifecycle.origination_date": "int>=0",
    "index.lifecycle.rollover_alias": "str", "index.lifecycle.indexing_complete": "bool",
    "index.refresh_interval": "time", "index.hidden": "bool", "index.codec": "str",
    "index.mapping.total_fields.limit": "int>=0", "index.mapping.ignore_malformed": "bool",
    "index.mapping.coerce": "bool", "index.default_pipeline": "str", "index.final_pipeline": "str",
    "index.auto_expand_replicas": "auto_expand", "index.max_result_window": "int>=1", "index.query.default_field": "str",
    "index.routing.allocation.include._tier_preference": "str", "index.routing.allocation.require._name": "str",
    "index.mode": "str",
    "index.blocks.read_only": "bool", "index.blocks.read": "bool", "index.blocks.write": "bool",
    "index.blocks.read_only_allow_delete": "bool", "index.blocks.metadata": "bool",
}
LEGACY_TEMPLATE_FIELDS = {"index_patterns", "order", "version", "settings", "mappings", "aliases"}
ILM_ACTIONS = {
    "hot": {"rollover", "set_priority", "unfollow", "readonly", "shrink", "forcemerge", "searchable_snapshot",
            "downsample"},
    "warm": {"set_priority", "unfollow", "readonly", "allocate", "migrate", "shrink", "forcemerge", "downsample"},
    "cold": {"set_priority", "unfollow", "readonly", "allocate", "migrate", "searchable_snapshot", "downsample"},
    "frozen": {"searchable_snapshot", "unfollow"},
    "delete": {"delete", "wait_for_snapshot"},
}
# What a `docs` entry of _mget may name (MultiGetRequest.parseDocuments); anything else is refused.
MGET_DOC_FIELDS = frozenset({"_index", "_id", "routing", "stored_fields", "_source", "version", "version_type"})
CAT_COLUMNS = ("health", "status", "index", "uuid", "pri", "rep", "docs.count", "docs.deleted", "store.size",
               "pri.store.size", "dataset.size", "creation.date", "creation.date.string")
CAT_DEFAULT = CAT_COLUMNS[:11]
CAT_ALIASES = {"h": "health", "s": "status", "i": "index", "idx": "index", "id": "uuid", "p": "pri",
               "shards.primary": "pri", "r": "rep", "shards.replica": "rep", "dc": "docs.count",
               "docsCount": "docs.count", "dd": "docs.deleted", "ss": "store.size", "storeSize": "store.size",
               "cd": "creation.date", "cds": "creation.date.string"}

ROUTE_PARAMS = {
    "info": set(),
    "health": {"wait_for_status", "timeout", "level", "local", "master_timeout", "wait_for_nodes",
               "wait_for_active_shards", "wait_for_events", "wait_for_no_relocating_shards",
               "wait_for_no_initializing_shards", "expand_wildcards"},
    "put_template": {"create", "master_timeout", "cause"},
    "get_template": {"flat_settings", "local", "master_timeout", "include_defaults"},
    "put_legacy_template": {"create", "master_timeout", "order", "cause"},
    "get_legacy_template": {"flat_settings", "local", "master_timeout"},
    "delete_legacy_template": {"master_timeout", "timeout"},
    "delete_template": {"master_timeout", "timeout"},
    "put_policy": {"master_timeout", "timeout"},
    "get_policy": {"master_timeout", "timeout"},
    "delete_policy": {"master_timeout", "timeout"},
    "cat_indices": {"format", "h", "s", "bytes", "health", "pri", "expand_wildcards", "v", "help", "local",
                    "master_timeout", "time", "include_unloaded_segments"},
    "create_index": {"master_timeout", "timeout", "wait_for_active_shards"},
    "get_index": {"allow_no_indices", "expand_wildcards", "flat_settings", "ignore_unavailable",
                  "include_defaults", "local", "master_timeout", "features"},
    "delete_index": {"allow_no_indices", "expand_wildcards", "ignore_unavailable", "master_timeout", "timeout"},
    "bulk": {"refresh", "pipeline", "routing", "timeout", "wait_for_active_shards", "require_alias",
             "require_data_stream", "_source", "_source_excludes", "_source_includes", "list_executed_pipelines"},
    "mget": {"preference", "realtime", "refresh", "routing", "stored_fields", "_source", "_source_excludes",
             "_source_includes"},
    "count": {"allow_no_indices", "expand_wildcards", "ignore_unavailable", "ignore_throttled", "min_score",
              "preference", "routing", "terminate_after", "analyzer", "analyze_wildcard", "default_operator",
              "df", "lenient", "q"},
    **STATE_ROUTE_PARAMS,
}


# -- errors and answers ------------------------------------------------------------------------

class EsError(Exception):
    """An error Elasticsearch answers with its envelope; `extra` goes beside type and reason."""

    def __init__(self, status: int, type_: str, reason: Optional[str], caused_by: Optional[dict] = None, **extra):
        super().__init__(reason)
        self.status, self.type, self.reason, self.caused_by, self.extra = status, type_, reason, caused_by, extra

    def cause(self) -> dict:
        body = {"type": self.type, "reason": self.reason, **self.extra}
        if self.caused_by:
            body["caused_by"] = self.caused_by
        return body

    def envelope(self) -> dict:
        root = {"type": self.type, "reason": self.reason, **self.extra}
        return {"error": {"root_cause": [root], **self.cause()}, "status": self.status}


class _Answer(Exception):
    def __init__(self, status: int, body: Any = None, headers: Sequence[Tuple[str, str]] = (), raw: bytes = None):
        super().__init__(status)
        self.status, self.body, self.headers, self.raw = status, body, tuple(headers), raw


def bad_request(reason: str, type_: str = "illegal_argument_exception", **extra) -> EsError:
    return EsError(400, type_, reason, **extra)


def check_origination_name(name: str) -> None:
    """Refuse, as ILM does, to create an index whose name holds no day it can read: a name its
    pattern does not match, or one whose day is no date (`build-2024.13.45`, `build-2024-10-16`)."""
    matched = _ORIGINATION_NAME.match(name)
    if not matched:
        raise bad_request("index name [%s] does not match pattern '%s'" % (name, _ORIGINATION_PATTERN))
    day = _ORIGINATION_DAY.fullmatch(matched.group(1))
    if not day or not _calendar_has(*map(int, day.groups())):
        raise bad_request("index name [%s] contains date [%s] which couldn't be parsed using the 'yyyy.MM.dd' format"
                          % (name, matched.group(1)))


def _calendar_has(year: int, month: int, day: int) -> bool:
    """Whether the proleptic Gregorian calendar has that day (year 0 included, as java.time's)."""
    return 1 <= month <= 12 and 1 <= day <= (29 if month == 2 and calendar.isleap(year) else
                                             calendar.mdays[month])


def unsupported(what: str) -> EsError:
    return EsError(400, "emulator_unsupported", "the Elasticsearch emulator does not emulate %s" % what)


def index_not_found(name: str) -> EsError:
    # A name beginning with `-` reads, after a wildcard, as one left out: a node says so.
    hint = (" and if you intended to exclude this index, ensure that you use wildcards that include it before "
            "explicitly excluding it" if name.startswith("-") else "")
    return EsError(404, "index_not_found_exception", "no such index [%s]%s" % (name, hint), **{
        "resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_", "index": name})


# -- composable index templates: the body's fields as a node's parser reads them ----------------

# Field of the body -> what it holds: a list of texts (a single scalar too), an object, a long
# (numbers and numeric texts, the fraction cut off), or a boolean (or the texts "true"/"false").
TEMPLATE_FIELD_KINDS = {"index_patterns": "texts", "composed_of": "texts", "ignore_missing_component_templates": "texts",
                        "template": "object", "_meta": "object", "data_stream": "object", "priority": "long",
                        "version": "long", "allow_auto_create": "boolean", "deprecated": "boolean"}
TEMPLATE_SECTION_KINDS = {"settings": "object", "mappings": "object", "aliases": "object", "lifecycle": "object",
                          "data_stream_options": "object"}
DATA_STREAM_TEMPLATE_KINDS = {"hidden": "boolean", "allow_custom_routing": "boolean"}
# What an index pattern of a template may not hold besides `*` (Strings.INVALID_FILENAME_CHARS).
_INVALID_PATTERN_CHARACTERS = "\\/?\"<>| ,"


def _token(value: Any) -> str:
    """The JSON parser's name for the token that starts `value`."""
    if value is None:
        return "VALUE_NULL"
    if isinstance(value, bool):
        return "VALUE_BOOLEAN"
    if isinstance(value, (int, float)):
        return "VALUE_NUMBER"
    if isinstance(value, list):
        return "START_ARRAY"
    if isinstance(value, dict):
        return "START_OBJECT"
    return "VALUE_STRING"


def _field_failure(parser: str, field: str, cause_type: str, cause: str) -> EsError:
    return bad_request("[1:2] [%s] failed to parse field [%s]" % (parser, field), "x_content_parse_exception",
                       caused_by={"type": cause_type, "reason": cause})


def _scalar_text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else _number_text(value)


def _parsed_field(parser: str, field: str, kind: str, value: Any) -> Any:
    """`value` as the parser named `parser` reads field `field` of `kind`; x_content_parse_exception else."""
    unsupported = bad_request("[1:2] [%s] %s doesn't support values of type: %s" % (parser, field, _token(value)),
                              "x_content_parse_exception")
    if kind == "object":
        if not isinstance(value, dict):
            raise unsupported
        return value
    if kind == "texts":
        if value is None or isinstance(value, dict):
            raise unsupported
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, (list, dict)):
                raise _field_failure(parser, field, "illegal_state_exception", "expected value but got [%s]" % _token(item))
            if item is None:
                raise _field_failure(parser, field, "illegal_argument_exception", "Expected text at 1:2 but found VALUE_NULL")
        return [_scalar_text(item) for item in items]
    if kind == "long":
        if value is None or isinstance(value, (bool, list, dict)):
            raise unsupported
        problem = _integral_problem(value, "long")
        if problem:
            raise _field_failure(parser, field, "illegal_argument_exception", problem[1])
        return int(Decimal(value)) if isinstance(value, str) else int(value)
    if value is None or not isinstance(value, (bool, str)):
        raise unsupported
    if isinstance(value, str) and value not in ("true", "false"):
        raise _field_failure(parser, field, "illegal_argument_exception",
                             "Failed to parse value [%s] as only [true] or [false] are allowed." % value)
    return value if isinstance(value, bool) else value == "true"


def _parsed_object(parser: str, value: dict, kinds: Dict[str, str]) -> dict:
    unknown = sorted(set(value) - set(kinds))
    if unknown:
        raise bad_request("[1:2] [%s] unknown field [%s]" % (parser, unknown[0]), "x_content_parse_exception")
    return {field: _parsed_field(parser, field, kinds[field], item) for field, item in value.items()}


def parse_template_fields(spec: dict) -> dict:
    """The body of `PUT _index_template/<name>` as a node reads it: unknown fields, and values of a
    type a field does not take (null included), refused; numbers and texts coerced as it does."""
    parsed = _parsed_object("index_template", spec, TEMPLATE_FIELD_KINDS)
    if "template" in parsed:
        parsed["template"] = _parsed_object("template", parsed["template"], TEMPLATE_SECTION_KINDS)
    if "data_stream" in parsed:
        _parsed_object("data_stream_template", parsed["data_stream"], DATA_STREAM_TEMPLATE_KINDS)
    return parsed


def template_name_problems(name: str) -> List[str]:
    """Why a node refuses `name` for an index template (MetadataIndexTemplateService.validate)."""
    checks = [(" " in name, "name must not contain a space"), ("," in name, "name must not contain a ','"),
              ("#" in name, "name must not contain a '#'"), ("*" in name, "name must not contain a '*'"),
              (name.startswith("_"), "name must not start with '_'"),
              (name.lower() != name, "name must be lower cased")]
    return [problem for failed, problem in checks if failed]


def index_pattern_problems(patterns: Iterable[str]) -> List[str]:
    """Why a node refuses index patterns of a template."""
    problems = []
    listed = ",".join("'%s'" % char for char in "/,|>?*<\" \\")
    for pattern in patterns:
        checks = [(" " in pattern, "index_patterns [%s] must not contain a space" % pattern),
                  ("," in pattern, "index_pattern [%s] must not contain a ','" % pattern),
                  ("#" in pattern, "index_pattern [%s] must not contain a '#'" % pattern),
                  (":" in pattern, "index_pattern [%s] must not contain a ':'" % pattern),
                  (pattern.startswith("_"), "index_pattern [%s] must not start with '_'" % pattern),
                  (any(char in _INVALID_PATTERN_CHARACTERS for char in pattern),
                   "index_pattern [%s] must not contain the following characters [%s]" % (pattern, listed))]
        problems += [problem for failed, problem in checks if failed]
    return problems


def _json_bool(value: Optional[str], name: str, default: bool = False) -> bool:
    if value is None:
        return default
    if value in ("", "true"):
        return True
    if value == "false":
        return False
    raise bad_request("Failed to parse value [%s] only [true] or [false] are allowed." % value)


def parse_time(value: str, name: str) -> float:
    """Seconds in an ES time value (`30s`, `1500ms`, `-1`), read as TimeValue.parseTimeValue reads
    it: units in any case, blanks around the number, whole numbers only."""
    text = value or ""
    normalized = text.lower().strip()
    if normalized in ("-1", "0"):
        return float(normalized)
    unit = next((unit for unit in _TIME_UNITS if normalized.endswith(unit)), None)
    if unit is None:
        raise bad_request("failed to parse setting [%s] with value [%s] as a time value: unit is missing or "
                          "unrecognized" % (name, text))
    number = normalized[:-len(unit)].strip()
    if not re.match(r"^[+-]?\d+$", number):
        fractional = re.match(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?[fd]?$", number)
        raise bad_request("failed to parse [%s]%s" % (text, ", fractional time values are not supported" if fractional else ""),
                          caused_by={"type": "number_format_exception", "reason": 'For input string: "%s"' % number})
    if int(number) < -1:
        raise bad_request("failed to parse setting [%s] with value [%s] as a time value: negative durations are not "
                          "supported" % (name, text))
    return int(number) * _TIME_SECONDS[unit]


def globs_overlap(a: str, b: str) -> bool:
    """True if some name matches both `*`-patterns (how ES decides that templates overlap)."""
    memo: Dict[Tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        key = (i, j)
        if key not in memo:
            if i == len(a) and j == len(b):
                result = True
            elif i < len(a) and a[i] == "*":
                result = match(i + 1, j) or (j < len(b) and match(i, j + 1))
            elif j < len(b) and b[j] == "*":
                result = match(i, j + 1) or (i < len(a) and match(i + 1, j))
            else:
                result = i < len(a) and j < len(b) and a[i] == b[j] and match(i + 1, j + 1)
            memo[key] = result
        return memo[key]

    return match(0, 0)


# -- media types (RestCompatibleVersionHelper) -------------------------------------------------

@dataclass(frozen=True)
class MediaType:
    raw: str
    essence: str  # type/subtype, lower-case
    version: Optional[int]  # compatible-with, when given


def parse_media_types(raw: Optional[str], header: str) -> List[MediaType]:
    """Each comma-separated entry of a media-type header; an invalid one is a media_type_header_exception."""
    if not raw or not raw.strip():
        return []
    found = []
    for entry in raw.split(","):
        parts = [part.strip() for part in entry.strip().lower().split(";")]
        essence = parts[0]
        if not _MEDIA_TYPE.match(essence) and essence != "*/*":
            raise _media_error(header, "invalid media-type [%s]" % raw.strip())
        version = None
        for parameter in parts[1:]:
            if not parameter:
                continue
            name, _, value = parameter.partition("=")
            if name.strip() == "compatible-with":
                if not value.strip().isdigit():
                    raise _media_error(header, "invalid media-type [%s]" % raw.strip())
                version = int(value.strip())
        found.append(MediaType(entry.strip(), essence, version))
    return found


def _media_error(headers: str, reason: str) -> EsError:
    return EsError(400, "media_type_header_exception", "Invalid media-type value on headers [%s]" % headers,
                   caused_by={"type": "status_exception", "reason": reason})


def compatible_version(accept: Optional[str], content_type: Optional[str], has_body: bool, major: int) -> Optional[int]:
    """The compat version the request asked for (None if none); refuse what this major cannot serve."""
    accepted = {major, major - 1}
    accept_types = parse_media_types(accept, "Accept")
    content_types = parse_media_types(content_type, "Content-Type") if has_body else []
    accept_versions = {t.version for t in accept_types if t.version is not None}
    content_versions = {t.version for t in content_types if t.version is not None}
    accept_version = max(accept_versions) if accept_versions else None
    content_version = max(content_versions) if content_versions else None
    both = "Accept, Content-Type"
    if accept_version is not None and accept_version not in accepted:
        raise _media_error(both, "Accept version must be either version %d or %d, but found %d. Accept=%s"
                           % (major, major - 1, accept_version, accept))
    if has_body:
        if content_version is not None and content_version not in accepted:
            raise _media_error(both, "Content-Type version must be either version %d or %d, but found %d. "
                                     "Content-Type=%s" % (major, major - 1, content_version, content_type))
        if accept_version is not None and content_version is not None and accept_version != content_version:
            raise _media_error(both, "A compatible version is required on both Content-Type and Accept headers if "
                                     "either one has requested a compatible version and the compatible versions "
                                     "must match. Accept=%s, Content-Type=%s" % (accept, content_type))
        if (accept_version is None) != (content_version is None) and accept_types:
            raise _media_error(both, "A compatible version is required on both Content-Type and Accept headers if "
                                     "either one has requested a compatible version. Accept=%s, Content-Type=%s"
                               % (accept, content_type))
    return accept_version if accept_version is not None else content_version


def body_format(content_type: Optional[str]) -> str:
    """"json" or "ndjson" for a request body; 406 for anything else, as ES answers."""
    types = parse_media_types(content_type, "Content-Type")
    essence = types[0].essence if types else ""
    if essence in ("application/json", "application/vnd.elasticsearch+json"):
        return "json"
    if essence in ("application/x-ndjson", "application/vnd.elasticsearch+x-ndjson"):
        return "ndjson"
    raise _Answer(406, {"error": "Content-Type header [%s] is not supported" % (content_type or ""), "status": 406})


# -- settings, mappings, documents -------------------------------------------------------------

def normalize_settings(settings: Any) -> Dict[str, str]:
    """Flat `index.*` settings with string values, as ES stores them; unknown names are refused."""
    if settings is None:
        return {}
    if not isinstance(settings, dict):
        raise bad_request("settings must be an object", "x_content_parse_exception")
    flat: Dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, child in value.items():
                walk("%s.%s" % (prefix, key) if prefix else key, child)
            return
        name = prefix if prefix.startswith("index.") else "index." + prefix
        flat[name] = _setting_value(name, value)

    walk("", settings)
    return flat


def _setting_value(name: str, value: Any) -> str:
    kind = INDEX_SETTINGS.get(name)
    if kind is None:
        raise bad_request("unknown setting [%s] please check that any required plugins are installed, or check the "
                          "breaking changes documentation for removed settings" % name)
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    if kind.startswith("int"):
        minimum = int(kind.split(">=")[1])
        if not re.match(r"^-?\d+$", text) or int(text) < minimum:
            raise bad_request("Failed to parse value [%s] for setting [%s] must be >= %d" % (text, name, minimum))
    elif kind == "bool" and text not in ("true", "false"):
        raise bad_request("Failed to parse value [%s] as only [true] or [false] are allowed." % text)
    elif kind == "time":
        parse_time(text, name)
    elif kind == "auto_expand" and text != "false":
        # AutoExpandReplicas.parse: "<min>-<max>", max a number or "all"
        low, dash, high = text.partition("-")
        if not (dash and low.isdigit() and (high.isdigit() or high == "all")):
            raise bad_request("failed to parse [index.auto_expand_replicas] from value: [%s] at index %d"
                              % (text, text.find("-")))
    return text


def auto_expanded_replicas(settings: Dict[str, str]) -> Optional[str]:
    """The replicas `index.auto_expand_replicas` gives an index on this single-node cluster (its
    lower bound: no other node can hold a copy), or None when it is not set or "false"."""
    expand = settings.get("index.auto_expand_replicas", "false")
    return None if expand == "false" else expand.split("-")[0]


def nested_settings(flat: Dict[str, str]) -> dict:
    """The nested form GET answers with: {"index": {"number_of_shards": "1", ...}}."""
    nested: dict = {}
    for name, value in sorted(flat.items()):
        node = nested
        parts = name.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def validate_mappings(mappings: Any) -> dict:
    if mappings is None:
        return {}
    if not isinstance(mappings, dict):
        raise bad_request("mappings must be an object", "mapper_parsing_exception")
    unknown = sorted(set(mappings) - ROOT_MAPPING_PARAMETERS)
    if unknown:
        raise bad_request("Root mapping definition has unsupported parameters:  %s"
                          % " ".join("[%s : %s]" % (name, json.dumps(mappings[name])) for name in unknown),
                          "mapper_parsing_exception")
    if "dynamic" in mappings and str(mappings["dynamic"]).lower() not in ("true", "false", "strict", "runtime"):
        raise bad_request("No enum constant for dynamic [%s]" % mappings["dynamic"], "mapper_parsing_exception")
    _validate_properties(mappings.get("properties") or {}, "")
    return copy.deepcopy(mappings)


def _validate_properties(properties: Any, prefix: str) -> None:
    if not isinstance(properties, dict):
        raise bad_request("Expected map for property [properties] on field [%s] but got a %s"
                          % (prefix or "_doc", type(properties).__name__), "mapper_parsing_exception")
    for name, definition in properties.items():
        _validate_field(prefix + name, definition, multi_field=False)


def _validate_field(path: str, definition: Any, multi_field: bool) -> None:
    if not isinstance(definition, dict):
        raise bad_request("Expected map for property [fields] on field [%s] but got a class java.lang.String" % path,
                          "mapper_parsing_exception")
    field_type = definition.get("type", "object")
    allowed = MAPPING_PARAMETERS.get(field_type)
    if allowed is None or (multi_field and field_type in ("object", "nested")):
        raise bad_request("No handler for type [%s] declared on field [%s]" % (field_type, path),
                          "mapper_parsing_exception")
    for parameter in definition:
        if parameter not in allowed:
            raise bad_request("unknown parameter [%s] on mapper [%s] of type [%s]" % (parameter, path, field_type),
                              "mapper_parsing_exception")
    if "ignore_above" in definition and (not isinstance(definition["ignore_above"], int)
                                         or definition["ignore_above"] < 0):
        raise bad_request("[ignore_above] must be positive, got [%s]" % definition["ignore_above"],
                          "mapper_parsing_exception")
    for sub_name, sub in (definition.get("fields") or {}).items():
        _validate_field("%s.%s" % (path, sub_name), sub, multi_field=True)
    if field_type in ("object", "nested"):
        _validate_properties(definition.get("properties") or {}, path + ".")


def _expand_dots(source: dict) -> dict:
    """`{"a.b": 1}` as ES reads it: `{"a": {"b": 1}}`."""
    expanded: dict = {}
    for name, value in source.items():
        value = _expand_dots(value) if isinstance(value, dict) else value
        # A trailing dot is dropped ("a." is "a"); names with other empty segments never get here.
        name = name.rstrip(".") or name
        parts = name.split(".") if "." in name else [name]
        node = expanded
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise EsError(400, "document_parsing_exception", "Could not dynamically add mapping for field [%s]. "
                              "Existing mapping for [%s] must be of type object but found [%s]."
                              % (name, part, type(child).__name__))
            node = child
        node[parts[-1]] = value
    return expanded


def _preview(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list)) else str(value)
    return text if len(text) <= 30 else text[:30] + "..."


def _parse_failure(path: str, field_type: str, doc_id: str, value: Any, cause_type: str, cause: str) -> EsError:
    return EsError(400, "document_parsing_exception",
                   "failed to parse field [%s] of type [%s] in document with id '%s'. Preview of field's value: '%s'"
                   % (path, field_type, doc_id, _preview(value)),
                   caused_by={"type": cause_type, "reason": cause})


def _check_scalar(path: str, field_type: str, doc_id: str, value: Any, definition: dict) -> None:
    if field_type in _TEXTUAL or field_type == "flattened":
        return
    if isinstance(value, bool) and field_type != "boolean":
        raise _parse_failure(path, field_type, doc_id, value, "illegal_argument_exception",
                             "Current token (VALUE_%s) not numeric, can not use numeric value accessors"
                             % str(value).upper())
    if field_type in _INTEGRAL or field_type in _DECIMAL:
        if value == "":
            return  # an empty string is no value, as null
        problem = (_integral_problem(value, field_type) if field_type in _INTEGRAL
                   else _decimal_problem(value, field_type))
        if problem:
            raise _parse_failure(path, field_type, doc_id, value, *problem)
    elif field_type == "boolean":
        if not (isinstance(value, bool) or value in ("true", "false", "")):
            raise _parse_failure(path, field_type, doc_id, value, "illegal_argument_exception",
                                 "Failed to parse value [%s] as only [true] or [false] are allowed." % value)
    elif field_type in ("date", "date_nanos") and "format" not in definition:
        if not _is_date(value):
            raise _parse_failure(path, field_type, doc_id, value, "illegal_argument_exception",
                                 "failed to parse date field [%s] with format [strict_date_optional_time||epoch_millis]"
                                 % _number_text(value))


def _integral_problem(value: Any, field_type: str) -> Optional[Tuple[str, str]]:
    """None when Elasticsearch reads `value` into `field_type` (cutting a fraction off), else
    (cause type, reason)."""
    bits = _INTEGRAL[field_type]
    low, high = -(2 ** bits), 2 ** bits - 1
    if isinstance(value, str):
        if not _BIG_DECIMAL.match(value):
            return "number_format_exception", 'For input string: "%s"' % value
        # The range is checked before the fraction is cut: 9223372036854775807.5 is taken.
        if not low - 1 < Decimal(value) < high + 1:
            return "illegal_argument_exception", "Value [%s] is out of range for a %s" % (value, field_type)
        return None
    # A JSON number with a fraction is a double, compared with the double nearest the bound.
    if not (low <= value <= high if isinstance(value, int) else low <= value <= float(high)):
        return "input_coercion_exception", "Numeric value (%s) out of range of %s" % (value, field_type)
    return None


def _decimal_problem(value: Any, field_type: str) -> Optional[Tuple[str, str]]:
    if isinstance(value, str):
        text = value.strip(_JAVA_TRIMMED)
        if not _JAVA_DOUBLE.match(text):
            return "number_format_exception", 'For input string: "%s"' % value
        number = float(text.rstrip("fFdD"))
    elif isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:
            number = math.copysign(math.inf, value)
    else:
        return "number_format_exception", 'For input string: "%s"' % value
    narrow = _NARROW_DECIMALS.get(field_type)
    if narrow and math.isfinite(number):
        try:
            struct.pack(narrow, number)  # rounds as Java's cast does
        except OverflowError:
            number = math.copysign(math.inf, number)
    if not math.isfinite(number):
        shown = "NaN" if number != number else ("Infinity" if number > 0 else "-Infinity")
        return "illegal_argument_exception", "[%s] supports only finite values, but got [%s]" % (field_type, shown)
    return None


class JsonDecimal(float):
    """A JSON number with a fraction or an exponent that keeps its text: a date field reads the
    text (`1.5` is epoch milliseconds, `1e3` is not)."""

    def __new__(cls, text: str) -> "JsonDecimal":
        number = super().__new__(cls, text)
        number.text = text
        return number


def _number_text(value: Any) -> str:
    if isinstance(value, JsonDecimal) and isinstance(value.text, str):
        return value.text
    return value if isinstance(value, str) else json.dumps(value)


def _is_date(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return False
    text = _number_text(value)
    millis = _EPOCH_MILLIS.match(text)
    if millis:
        # A long, but not the smallest one, whose negation overflows.
        return int(millis.group(1)) <= 2 ** 63 - 1
    if not isinstance(value, str):
        return False
    match = _DATE.match(value)
    if not match:
        return False
    year, month, day, hour, minute, second, off_hours, off_minutes, off_seconds = (
        int(g) if g else None for g in match.groups())
    if not (1 <= (month or 1) <= 12 and (hour or 0) <= 23 and (minute or 0) <= 59 and (second or 0) <= 59
            and (off_minutes or 0) <= 59 and (off_seconds or 0) <= 59):
        return False
    if (off_hours or 0) * 3600 + (off_minutes or 0) * 60 + (off_seconds or 0) > 18 * 3600:
        return False
    # The proleptic calendar repeats every 400 years: year 0 and -1 are leap years as 2000 and 1999 are not.
    return 1 <= (day or 1) <= calendar.monthrange(2000 + year % 400, month or 1)[1]


def _dynamic_mapping(value: Any, date_detection: bool) -> Optional[dict]:
    if isinstance(value, list):
        first = next((item for item in value if item is not None), None)
        return _dynamic_mapping(first, date_detection) if first is not None else None
    if value is None:
        return None
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "long"}
    if isinstance(value, float):
        return {"type": "float"}
    if isinstance(value, dict):
        return {"properties": {}}
    if date_detection and re.match(r"^\d{4}-\d{2}-\d{2}", value) and _is_date(value):
        return {"type": "date"}
    return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}


def apply_mapping(mappings: dict, doc_id: str, source: dict) -> dict:
    """Check `source` against `mappings`; return the mappings with any dynamic additions."""
    updated = copy.deepcopy(mappings)
    dynamic = str(updated.get("dynamic", "true")).lower()
    date_detection = updated.get("date_detection", True) not in (False, "false")
    _walk(updated.setdefault("properties", {}), dynamic, date_detection, "", doc_id, _expand_dots(source))
    return updated


def _walk(properties: dict, dynamic: str, date_detection: bool, prefix: str, doc_id: str, obj: dict) -> None:
    for name, value in obj.items():
        path = prefix + name
        definition = properties.get(name)
        if definition is None:
            if dynamic == "strict":
                raise EsError(400, "strict_dynamic_mapping_exception",
                              "mapping set to strict, dynamic introduction of [%s] within [%s] is not allowed"
                              % (name, prefix.rstrip(".") or "_doc"))
            if dynamic != "true":
                continue
            definition = _dynamic_mapping(value, date_detection)
            if definition is None:
                continue
            properties[name] = definition
        field_type = definition.get("type", "object")
        for item in _flattened(value):
            if item is None:
                continue
            if field_type in ("object", "nested"):
                if not isinstance(item, dict):
                    raise EsError(400, "document_parsing_exception",
                                  "object mapping for [%s] tried to parse field [%s] as object, but found a concrete "
                                  "value" % (path, name))
                inner = str(definition.get("dynamic", dynamic)).lower()
                _walk(definition.setdefault("properties", {}), inner, date_detection, path + ".", doc_id, item)
            elif isinstance(item, dict) and field_type != "flattened":
                raise _parse_failure(path, field_type, doc_id, item, "illegal_state_exception",
                                     "Can't get text on a START_OBJECT")
            else:
                _check_scalar(path, field_type, doc_id, item, definition)


def _flattened(value: Any) -> Iterable[Any]:
    """The values of a field: arrays, nested in arrays too, are read as their elements."""
    if isinstance(value, list):
        for item in value:
            yield from _flattened(item)
    else:
        yield value


# -- state -------------------------------------------------------------------------------------

@dataclass
class Doc:
    source: dict
    version: int
    seq_no: int


# How long a node remembers a deleted document's version (index.gc_deletes): a write in that
# time continues from it, and an external version below it is refused.
GC_DELETES_SECONDS = 60.0
# version_type as the bulk API takes it, and the name its messages give it.
VERSION_TYPES = {"internal": "INTERNAL", "external": "EXTERNAL", "external_gt": "EXTERNAL", "external_gte": "EXTERNAL_GTE"}
# The version of an action that gives none (Versions.MATCH_ANY).
MATCH_ANY = -3


@dataclass
class Index:
    name: str
    uuid: str
    created_ms: int
    settings: Dict[str, str]
    mappings: dict
    hidden: bool
    docs: Dict[str, Doc] = field(default_factory=dict)
    # id -> (the deleted document's version, time.monotonic() of the delete)
    tombstones: Dict[str, Tuple[int, float]] = field(default_factory=dict)
    next_seq_no: int = 0
    closed: bool = False

    @property
    def unassigned(self) -> bool:
        """Its primary shard is not assigned: it must live on a node that is not this one (as when
        its node left); the index is red and unreadable until that changes."""
        required = self.settings.get("index.routing.allocation.require._name")
        return required is not None and required != NODE_NAME

    @property
    def shards(self) -> int:
        return int(self.settings.get("index.number_of_shards", "1"))

    @property
    def replicas(self) -> int:
        return int(self.settings.get("index.number_of_replicas", "1"))

    def store_bytes(self) -> int:
        return 225 + sum(len(json.dumps(doc.source)) for doc in self.docs.values())


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it (headers lower-cased)."""

    method: str
    path: str  # as sent, with the query string
    route: str  # the path without the query, percent-decoded
    query: Dict[str, str]
    headers: Dict[str, str]
    body: bytes
    status: Optional[int]


@dataclass(frozen=True)
class _Fail:
    status: int
    body: dict


@dataclass(frozen=True)
class _Reset:
    pass


class ElasticsearchEmulator(IndexStates, ServedByBackgroundServer):
    """Elasticsearch's REST API for kcing, in memory. `requests` records every call.

    `user`/`password` and/or `api_key` (the encoded form a client sends after `ApiKey `) turn
    security on. `version` "9.x" makes it accept compatible-with 8 and 9 instead of 7 and 8.
    """

    def __init__(self, port: int = 0, version: str = VERSION, user: Optional[str] = None,
                 password: Optional[str] = None, api_key: Optional[str] = None,
                 destructive_requires_name: bool = True, builtin_templates: bool = True,
                 cluster_name: str = "kcing-emulator", clock: Callable[[], float] = time.time,
                 auto_create_index: bool = True, max_shards_per_node: int = 1000):
        self.version = version
        self.major = int(version.split(".")[0])
        self.user, self.password, self.api_key = user, password, api_key
        self.destructive_requires_name = destructive_requires_name
        # The cluster setting action.auto_create_index, true or false (a node's default is true).
        self.auto_create_index = auto_create_index
        # The cluster setting cluster.max_shards_per_node, for this cluster's one data node.
        self.max_shards_per_node = max_shards_per_node
        self.cluster_name = cluster_name
        self.cluster_uuid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        self.clock = clock
        self.requests: LockedList = LockedList()
        self.templates: Dict[str, dict] = copy.deepcopy(BUILTIN_TEMPLATES) if builtin_templates else {}
        self.legacy_templates: Dict[str, dict] = {}
        self.policies: Dict[str, dict] = {}
        self.indices: Dict[str, Index] = {}
        self.aliases: Dict[str, List[str]] = {}
        self.data_streams: Dict[str, List[str]] = {}
        self.health_override: Optional[str] = None
        self.not_ready_mode: Optional[str] = None
        self._rejected_items = 0
        self._rejected_gets = 0
        self.read_denied: set = set()  # indices the user may not read (`deny_read`)
        self._lock = threading.RLock()
        self._faults = FaultQueue()
        self._server = BackgroundServer(_ElasticHandler, self, port)

    # -- faults and states -------------------------------------------------------------------

    def not_ready(self, mode: str = "503") -> None:
        """"503": every request but `GET /` gets 503 master_not_discovered_exception (a node still
        forming its cluster); "refuse": nothing listens on the port until `ready()`."""
        if mode not in ("503", "refuse"):
            raise ValueError("mode is '503' or 'refuse'")
        self.not_ready_mode = mode
        if mode == "refuse":
            self._server.down()

    def ready(self) -> None:
        if self.not_ready_mode == "refuse":
            self._server.start()
        self.not_ready_mode = None

    def set_health(self, status: Optional[str]) -> None:
        """Force the cluster status (green, yellow, red); None computes it from the replicas."""
        if status is not None and status not in HEALTH_ORDER:
            raise ValueError(status)
        self.health_override = status

    def fail_next(self, status: int, route: str = "", count: Optional[int] = 1, body: Optional[dict] = None) -> None:
        """Answer the next `count` requests whose route starts with `route` with `status` (ES envelope)."""
        if body is None:
            kinds = {401: "security_exception", 403: "security_exception", 429: "es_rejected_execution_exception",
                     503: "unavailable_shards_exception"}
            body = EsError(status, kinds.get(status, "exception"), "injected fault").envelope()
        self._faults.add(route, _Fail(status, body), count)

    def reset_next(self, route: str = "", count: Optional[int] = 1) -> None:
        """Close the connection without answering."""
        self._faults.add(route, _Reset(), count)

    def clear_faults(self) -> None:
        """Drop the faults `fail_next` and `reset_next` queued that no request took."""
        self._faults.clear()

    def reject_mget_docs(self, count: int) -> None:
        """The next `count` _mget documents fail with a per-document 429, as a node answers the
        documents of a shard request its get queue turned away."""
        with self._lock:
            self._rejected_gets += count

    def deny_read(self, name: str) -> None:
        """The user's roles do not grant `read` on index `name`: its _mget documents fail with a
        per-document security_exception (403), as on a node with security on."""
        with self._lock:
            self.read_denied.add(name)

    def reject_bulk_items(self, count: int) -> None:
        """The next `count` bulk items fail with an item-level 429 (write queue full)."""
        with self._lock:
            self._rejected_items += count

    def forget_deleted_versions(self) -> None:
        """Forget the versions of the documents deleted so far, as a node does once
        `index.gc_deletes` (60 s) has passed since a delete: documents lost a while ago."""
        with self._lock:
            for index in self.indices.values():
                index.tombstones.clear()

    # -- the store, for tests ----------------------------------------------------------------

    def seed_index(self, name: str, docs: Optional[Dict[str, dict]] = None, hidden: Optional[bool] = None,
                   settings: Optional[dict] = None) -> Index:
        """Create `name` holding `docs` ({id: source}), through the templates like an auto-create.

        A dot-prefixed (system-like) name, or one a data-stream template matches, skips the
        templates: it stands for an index that was there before, made by something else. A
        dot-prefixed seed is hidden unless `hidden` says otherwise, as system indices such as
        `.kibana_1` or `.tasks` are; an index created through the API is hidden only by its
        `index.hidden` setting, as on a real node.
        """
        with self._lock:
            matched = self.matching_template(name)
            skip = name.startswith(".") or (matched is not None and "data_stream" in matched[1])
            index = self._create_index(name, {"settings": settings or {}}, skip_templates=skip)
            index.hidden = name.startswith(".") if hidden is None else hidden
            for doc_id, source in (docs or {}).items():
                self._store(index, doc_id, source)
            return index

    def unassign(self, name: str, unassigned: bool = True) -> None:
        """Make the primary shard of index `name` unassigned (the cluster turns red), as when the
        only node holding it left: a node then answers each _mget document of it with
        no_shard_available_action_exception. False assigns it again. (Through the API: the
        setting index.routing.allocation.require._name naming another node.)"""
        with self._lock:
            settings = self.indices[name].settings
            if unassigned:
                settings["index.routing.allocation.require._name"] = "a-node-that-left"
            else:
                settings.pop("index.routing.allocation.require._name", None)

    def index_names(self) -> List[str]:
        with self._lock:
            return sorted(self.indices)

    def documents(self, index: str) -> Dict[str, dict]:
        with self._lock:
            return {doc_id: doc.source for doc_id, doc in self.indices[index].docs.items()}

    def status(self) -> str:
        with self._lock:
            if self.health_override:
                return self.health_override
            if any(index.unassigned for index in self.indices.values()):
                return "red"
            return "yellow" if any(index.replicas > 0 for index in self.indices.values()) else "green"

    # -- request entry -----------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Dict[str, str], body: bytes) -> _Answer:
        parts = urlsplit(target)
        route = unquote(parts.path) or "/"
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        fault = self._faults.take(route)
        if isinstance(fault, _Reset):
            return _Answer(0)
        compat = None
        try:
            if isinstance(fault, _Fail):
                raise _Answer(fault.status, fault.body)
            compat = compatible_version(headers.get("accept"), headers.get("content-type"), bool(body), self.major)
            if self.not_ready_mode == "503" and not (method in ("GET", "HEAD") and route == "/"):
                raise EsError(503, "master_not_discovered_exception", None)
            self._authenticate(headers.get("authorization"), route)
            answer = self._route(method, target, route, query, headers, body)
        except EsError as error:
            answer = _Answer(error.status, error.envelope())
        except _Answer as direct:
            answer = direct
        answer.compat = compat
        return answer

    def _authenticate(self, authorization: Optional[str], route: str) -> None:
        if not (self.user or self.api_key):
            return
        # As an 8.x node words them (no comma between realm and charset).
        header = (("WWW-Authenticate", 'Basic realm="security" charset="UTF-8"'), ("WWW-Authenticate", "ApiKey"))
        scheme, _, credentials = (authorization or "").partition(" ")
        if not authorization:
            reason = "missing authentication credentials for REST request [%s]" % route
        elif scheme.lower() == "basic" and self.user:
            try:
                user, _, password = base64.b64decode(credentials).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", None
            if user == self.user and password == self.password:
                return
            reason = "unable to authenticate user [%s] for REST request [%s]" % (user, route)
        elif scheme.lower() == "apikey" and self.api_key and credentials == self.api_key:
            return
        else:
            reason = "unable to authenticate with provided credentials and anonymous access is not allowed for this request"
        www = {"WWW-Authenticate": [value for _, value in header]}
        error = EsError(401, "security_exception", reason, header=www)
        raise _Answer(401, error.envelope(), header)

    def _route(self, method: str, target: str, route: str, query: Dict[str, str], headers: Dict[str, str],
               body: bytes) -> _Answer:
        segments = [s for s in route.split("/") if s]
        name, handler, args = self._match(method, target, route, segments)
        allowed = ROUTE_PARAMS[name] | GLOBAL_PARAMS
        for param in query:
            if param not in allowed:
                raise bad_request("request [%s] contains unrecognized parameter: [%s]" % (route, param))
        for value in query.get("expand_wildcards", "open").split(","):
            if value and value not in EXPAND_WILDCARDS:
                raise bad_request("No valid expand wildcard value [%s]" % value)
        answer = handler(*args, query=query, headers=headers, body=body)
        if "filter_path" in query and isinstance(answer.body, (dict, list)):
            answer.body = filter_paths(answer.body, query["filter_path"].split(","))
        return answer

    def _match(self, method: str, target: str, route: str, s: List[str]):
        """(name, handler, args) of the route; a refusal naming `target`, the request's URI as
        sent (its query included, nothing decoded), as a node names it."""
        def allowed(*methods):
            if method not in methods:
                raise _Answer(405, {"error": "Incorrect HTTP method for uri [%s] and method [%s], allowed: [%s]"
                                             % (target, method, ", ".join(methods)), "status": 405})

        if not s:
            allowed("GET", "HEAD")
            return "info", self._info, (method,)
        head = s[0]
        if head == "_cluster" and s[1:] == ["health"]:
            allowed("GET")
            return "health", self._health, ()
        if head == "_index_template" and len(s) == 2:
            allowed("PUT", "POST", "GET", "HEAD", "DELETE")
            if method in ("PUT", "POST"):
                return "put_template", self._put_template, (s[1],)
            if method == "DELETE":
                return "delete_template", self._delete_template, (s[1],)
            return "get_template", self._get_templates, (s[1], method)
        if head == "_index_template" and len(s) == 1:
            allowed("GET")
            return "get_template", self._get_templates, (None, method)
        if head == "_template" and len(s) <= 2:
            allowed(*(("PUT", "POST", "GET", "DELETE") if len(s) == 2 else ("GET",)))
            name = s[1] if len(s) == 2 else None
            if method in ("PUT", "POST"):
                return "put_legacy_template", self._put_legacy_template, (name,)
            if method == "DELETE":
                return "delete_legacy_template", self._delete_legacy_template, (name,)
            return "get_legacy_template", self._get_legacy_templates, (name,)
        if head == "_ilm" and s[1:2] == ["policy"] and len(s) <= 3:
            name = s[2] if len(s) == 3 else None
            allowed(*(("PUT", "GET", "DELETE") if name else ("GET",)))
            if method == "PUT":
                return "put_policy", self._put_policy, (name,)
            if method == "DELETE":
                return "delete_policy", self._delete_policy, (name,)
            return "get_policy", self._get_policies, (name,)
        if head == "_cat" and s[1:2] == ["indices"] and len(s) <= 3:
            allowed("GET")
            return "cat_indices", self._cat_indices, (s[2] if len(s) == 3 else None,)
        if s[-1] in ("_bulk", "_mget", "_count") and len(s) <= 2:
            target = s[0] if len(s) == 2 else None
            if s[-1] == "_bulk":
                allowed("POST", "PUT")
                return "bulk", self._bulk, (target,)
            allowed("GET", "POST")
            return (("mget", self._mget, (target,)) if s[-1] == "_mget" else ("count", self._count, (target,)))
        state_route = self._state_route(method, route, s, allowed)
        if state_route is not None:
            return state_route
        if len(s) == 1 and (head == "_all" or not head.startswith("_")):
            allowed("PUT", "GET", "HEAD", "DELETE")
            if method == "PUT":
                return "create_index", self._put_index, (head,)
            if method == "DELETE":
                return "delete_index", self._delete_indices, (head,)
            return "get_index", self._get_index, (head, method)
        if head in ("_component_template", "_data_stream", "_ingest") or {"_search", "_doc", "_create", "_update"} & set(s):
            raise unsupported(route)
        raise _Answer(400, {"error": "no handler found for uri [%s] and method [%s]" % (target, method)})

    # -- cluster -----------------------------------------------------------------------------

    def _info(self, method: str, query, headers, body) -> _Answer:
        lucene, wire, index_compat = (("10.2.2", "8.19.0", "8.0.0") if self.major >= 9 else ("9.11.1", "7.17.0", "7.0.0"))
        return _Answer(200, {
            "name": NODE_NAME, "cluster_name": self.cluster_name,
            "cluster_uuid": "_na_" if self.not_ready_mode else self.cluster_uuid,
            "version": {"number": self.version, "build_flavor": "default", "build_type": "docker",
                        "build_hash": "0" * 40, "build_date": "2024-10-09T22:08:00.328917561Z",
                        "build_snapshot": False, "lucene_version": lucene,
                        "minimum_wire_compatibility_version": wire,
                        "minimum_index_compatibility_version": index_compat},
            "tagline": "You Know, for Search"})

    def _health(self, query, headers, body) -> _Answer:
        wanted = query.get("wait_for_status")
        if wanted is not None and wanted not in HEALTH_ORDER:
            raise bad_request("unknown cluster health status [%s]" % wanted)
        timeout = parse_time(query.get("timeout", "30s"), "timeout")
        deadline = time.monotonic() + max(0.0, timeout)
        while wanted and HEALTH_ORDER[self.status()] < HEALTH_ORDER[wanted] and time.monotonic() < deadline:
            time.sleep(0.01)
        timed_out = bool(wanted) and HEALTH_ORDER[self.status()] < HEALTH_ORDER[wanted]
        with self._lock:
            # One node: replicas are never assigned, and neither is the primary of an index that
            # must live on another node (nor then its replicas).
            primaries = sum(index.shards for index in self.indices.values() if not index.unassigned)
            total = sum(index.shards * (1 + index.replicas) for index in self.indices.values())
        unassigned = total - primaries
        return _Answer(408 if timed_out else 200, {
            "cluster_name": self.cluster_name, "status": self.status(), "timed_out": timed_out,
            "number_of_nodes": 1, "number_of_data_nodes": 1, "active_primary_shards": primaries,
            "active_shards": primaries, "relocating_shards": 0, "initializing_shards": 0,
            "unassigned_shards": unassigned, "delayed_unassigned_shards": 0, "number_of_pending_tasks": 0,
            "number_of_in_flight_fetch": 0, "task_max_waiting_in_queue_millis": 0,
            "active_shards_percent_as_number": 100.0 * primaries / total if total else 100.0})

    # -- index templates ---------------------------------------------------------------------

    def _put_template(self, name: str, query, headers, body) -> _Answer:
        spec = self._json_body(headers, body, required=True)
        spec = parse_template_fields(spec)
        patterns = spec.get("index_patterns")
        if not patterns and "index_patterns" not in spec:
            raise bad_request("Required [index_patterns]")
        priority = spec.get("priority", 0)
        if priority < 0:
            raise bad_request("Validation Failed: 1: index template priority must be >= 0;",
                              "action_request_validation_exception")
        if spec.get("composed_of") and not spec.get("ignore_missing_component_templates"):
            raise EsError(400, "invalid_index_template_exception", "index_template [%s] invalid, cause [index template "
                          "[%s] specifies component templates %s that do not exist]"
                          % (name, name, "[%s]" % ", ".join(spec["composed_of"])))
        if not patterns:
            raise bad_request("There must be at least one pattern, zero given")
        with self._lock:
            self._check_overlap(name, patterns, priority)
        template = spec.get("template") or {}
        # A node checks the name, the patterns and the settings together, and the mappings last.
        problems = template_name_problems(name) + index_pattern_problems(patterns)
        try:
            settings = normalize_settings(template.get("settings"))
        except EsError as error:
            settings = {}
            problems.append(error.reason)
        if problems:
            raise EsError(400, "invalid_index_template_exception", "index_template [%s] invalid, cause [Validation "
                          "Failed: %s]" % (name, "".join("%d: %s;" % item for item in enumerate(problems, 1))))
        try:
            mappings = validate_mappings(template.get("mappings"))
        except EsError as error:
            raise bad_request("composable template [%s] template after composition is invalid" % name, caused_by={
                "type": "illegal_argument_exception", "reason": "invalid composite mappings for [%s]" % name,
                "caused_by": error.cause()}) from None
        with self._lock:
            if _json_bool(query.get("create"), "create") and name in self.templates:
                raise bad_request("index template [%s] already exists" % name)
            self._check_overlap(name, patterns, priority)
            stored = {key: copy.deepcopy(value) for key, value in spec.items() if key != "template"}
            stored["index_patterns"] = patterns
            if isinstance(stored.get("data_stream"), dict):
                # Read back with the options a node fills in.
                stored["data_stream"] = {**DATA_STREAM_DEFAULTS, **stored["data_stream"]}
            stored.setdefault("composed_of", [])
            stored["template"] = {key: copy.deepcopy(value) for key, value in template.items()
                                  if key not in ("settings", "mappings")}
            if settings:
                stored["template"]["settings"] = nested_settings(settings)
            if template.get("mappings") is not None:
                stored["template"]["mappings"] = mappings
            if not stored["template"]:
                del stored["template"]
            self._check_data_streams_kept(name, stored)
            self.templates[name] = stored
            older = self._overlapping(self.legacy_templates, patterns)
        warned = ()
        if older:
            warned = (self._warning(
                "index template [%s] has index patterns %s matching patterns from existing older templates [%s] with "
                "patterns (%s); this template [%s] will take precedence during new index creation"
                % (name, _list(patterns), ",".join(older), ",".join("%s => %s" % (other, _list(theirs))
                                                                    for other, theirs in older.items()), name)),)
        return _Answer(200, {"acknowledged": True}, warned)

    @staticmethod
    def _overlapping(templates: Dict[str, dict], patterns: List[str]) -> Dict[str, List[str]]:
        """{name: its patterns} of the `templates` whose patterns overlap `patterns`."""
        return {other: spec["index_patterns"] for other, spec in sorted(templates.items())
                if any(globs_overlap(mine, theirs) for mine in patterns for theirs in spec["index_patterns"])}

    def _warning(self, text: str) -> Tuple[str, str]:
        """The `Warning` header a node adds to an answer (RFC 7234 code 299, agent, quoted text)."""
        quoted = text.replace("\\", "\\\\").replace('"', '\\"')
        return "Warning", '299 Elasticsearch-%s-%s "%s"' % (self.version, "0" * 40, quoted)

    # -- legacy templates (`_template`): kept, listed and warned about as a node does; never
    # applied to a new index.

    def _put_legacy_template(self, name: str, query, headers, body) -> _Answer:
        spec = self._json_body(headers, body, required=True)
        unknown = sorted(set(spec) - LEGACY_TEMPLATE_FIELDS)
        if unknown:
            raise bad_request("unknown key [%s] in the template " % unknown[0])
        patterns = spec.get("index_patterns")
        patterns = [patterns] if isinstance(patterns, str) else patterns
        if not patterns or not all(isinstance(p, str) and p for p in patterns):
            raise bad_request("Validation Failed: 1: index patterns are missing;", "action_request_validation_exception")
        with self._lock:
            if _json_bool(query.get("create"), "create") and name in self.legacy_templates:
                raise bad_request("index_template [%s] already exists" % name)
            newer = self._overlapping(self.templates, patterns)
            if newer:
                raise bad_request(
                    "legacy template [%s] has index patterns %s matching patterns from existing composable templates "
                    "[%s] with patterns (%s), use composable templates (/_index_template) instead"
                    % (name, _list(patterns), ",".join(newer),
                       ",".join("%s => %s" % (other, _list(theirs)) for other, theirs in newer.items())))
            self.legacy_templates[name] = {"order": spec.get("order", 0), "index_patterns": patterns,
                                           "settings": nested_settings(normalize_settings(spec.get("settings"))),
                                           "mappings": copy.deepcopy(spec.get("mappings") or {}),
                                           "aliases": copy.deepcopy(spec.get("aliases") or {})}
        return _Answer(200, {"acknowledged": True})

    def _get_legacy_templates(self, pattern: Optional[str], query, headers, body) -> _Answer:
        """Those `pattern` names (all without one): a name or pattern matching none is a 404, the
        list of all never is."""
        with self._lock:
            found = {name: copy.deepcopy(spec) for name, spec in sorted(self.legacy_templates.items())
                     if pattern is None or any(simple_match(name, part) for part in pattern.split(","))}
        return _Answer(200 if found or pattern is None else 404, found)

    def _delete_legacy_template(self, pattern: str, query, headers, body) -> _Answer:
        with self._lock:
            matched = [name for name in self.legacy_templates if simple_match(name, pattern)]
            if not matched:
                raise EsError(404, "index_template_missing_exception", "index_template [%s] missing" % pattern)
            for name in matched:
                del self.legacy_templates[name]
        return _Answer(200, {"acknowledged": True})

    def _check_data_streams_kept(self, name: str, stored: dict) -> None:
        """A node refuses a template that would leave a data stream matched by a template without
        `data_stream` (its next backing index could not be made)."""
        def unreferenced(templates: Dict[str, dict]) -> List[str]:
            """The streams no template with `data_stream` is the one to match (none matching either)."""
            left = []
            for stream in sorted(self.data_streams):
                candidates = [(spec.get("priority", 0), other) for other, spec in templates.items()
                              if any(simple_match(stream, p) for p in spec["index_patterns"])]
                if not candidates or "data_stream" not in templates[max(candidates)[1]]:
                    left.append(stream)
            return left
        before = set(unreferenced(self.templates))
        lost = [stream for stream in unreferenced(dict(self.templates, **{name: stored})) if stream not in before]
        if lost:
            raise bad_request("composable template [%s] with index patterns %s, priority [%s] %swould cause data "
                              "streams %s to no longer match a data stream template"
                              % (name, _list(stored["index_patterns"]), _null_or(stored.get("priority")),
                                 "" if "data_stream" in stored else "and no data stream configuration ",
                                 _list(lost)))

    def _check_overlap(self, name: str, patterns: List[str], priority: int) -> None:
        for other, spec in sorted(self.templates.items()):
            if other == name or spec.get("priority", 0) != priority:
                continue
            theirs = spec["index_patterns"]
            if any(globs_overlap(mine, their) for mine in patterns for their in theirs):
                raise bad_request(
                    "index template [%s] has index patterns %s matching patterns from existing templates [%s] with "
                    "patterns (%s => %s) that have the same priority [%d], multiple index templates may not match "
                    "during index creation, please use a different priority"
                    % (name, _list(patterns), other, other, _list(theirs), priority))

    def _get_templates(self, pattern: Optional[str], method: str, query, headers, body) -> _Answer:
        """Those `pattern` names (all without one)."""
        if pattern is not None and "," in pattern:
            raise bad_request("template name may not contain ','")
        with self._lock:
            names = [n for n in sorted(self.templates) if pattern is None or simple_match(n, pattern)]
            if not names and pattern is not None and "*" not in pattern:
                if method == "HEAD":
                    raise _Answer(404, {})
                raise EsError(404, "resource_not_found_exception", "index template matching [%s] not found" % pattern)
            found = [{"name": n, "index_template": copy.deepcopy(self.templates[n])} for n in names]
        # A pattern that matches nothing is a 404 too, with the empty list as its body; the list of
        # all templates is a 200, whatever it holds.
        return _Answer(200 if names or pattern is None else 404, {"index_templates": found})

    def _delete_template(self, pattern: str, query, headers, body) -> _Answer:
        names = pattern.split(",")
        with self._lock:
            doomed, missing = [], []
            for part in names:
                matched = [name for name in self.templates if simple_match(name, part)]
                doomed.extend(matched)
                if not matched:
                    missing.append(part)
            # A name or a pattern that matches no template is a 404 naming each such one, but
            # for a lone `*`, which may match none.
            if missing and names != ["*"]:
                raise EsError(404, "index_template_missing_exception", "index_template [%s] missing" % ",".join(missing))
            # A data stream keeps the template that made it: none of the templates is deleted.
            using = sorted(stream for stream in self.data_streams
                           if (self.matching_template(stream) or ("", {}))[0] in doomed)
            if using:
                raise bad_request("unable to remove composable templates %s as they are in use by a data streams %s"
                                  % (_list(sorted(set(doomed))), _list(using)))
            for name in doomed:
                self.templates.pop(name, None)
        return _Answer(200, {"acknowledged": True})

    def matching_template(self, index: str) -> Optional[Tuple[str, dict]]:
        """The template an index of this name gets: the highest priority among those matching."""
        candidates = [(spec.get("priority", 0), name) for name, spec in self.templates.items()
                      if any(simple_match(index, p) for p in spec["index_patterns"])]
        if not candidates:
            return None
        _, name = max(candidates)
        return name, self.templates[name]

    # -- ILM ---------------------------------------------------------------------------------

    def _put_policy(self, name: str, query, headers, body) -> _Answer:
        spec = self._json_body(headers, body, required=True)
        unknown = sorted(set(spec) - {"policy"})
        if unknown or not isinstance(spec.get("policy"), dict):
            raise bad_request("[1:2] [put_lifecycle_request] unknown field [%s]" % (unknown or ["policy"])[0],
                              "x_content_parse_exception")
        policy = spec["policy"]
        unknown = sorted(set(policy) - {"phases", "_meta", "deprecated"})
        if unknown:
            raise bad_request("[1:13] [lifecycle_policy] unknown field [%s]" % unknown[0], "x_content_parse_exception")
        phases = policy.get("phases")
        if not isinstance(phases, dict):
            raise bad_request("[1:13] [lifecycle_policy] phases must be an object", "x_content_parse_exception")
        for phase, definition in phases.items():
            if phase not in ILM_ACTIONS:
                raise bad_request("Timeseries lifecycle does not support phase [%s]" % phase)
            if not isinstance(definition, dict) or set(definition) - {"min_age", "actions"}:
                raise bad_request("[%s] phase has unknown fields" % phase, "x_content_parse_exception")
            parse_time(str(definition.get("min_age", "0ms")), "min_age")
            for action in definition.get("actions") or {}:
                if action not in ILM_ACTIONS[phase]:
                    raise bad_request("invalid action [%s] defined in phase [%s]" % (action, phase))
        with self._lock:
            version = self.policies.get(name, {}).get("version", 0) + 1
            stored = copy.deepcopy(policy)
            for definition in stored["phases"].values():
                definition.setdefault("min_age", "0ms")
            self.policies[name] = {"version": version, "modified_date": _iso(self.clock()), "policy": stored}
        return _Answer(200, {"acknowledged": True})

    def _get_policies(self, name: Optional[str], query, headers, body) -> _Answer:
        with self._lock:
            names = sorted(self.policies) if name in (None, "*", "_all") else name.split(",")
            missing = [n for n in names if n not in self.policies]
            if missing:
                raise EsError(404, "resource_not_found_exception", "Lifecycle policy not found: %s" % _list(missing))
            return _Answer(200, {n: {**copy.deepcopy(self.policies[n]), "in_use_by": self._policy_users(n)}
                                 for n in names})

    def _policy_users(self, name: str) -> dict:
        indices = sorted(i.name for i in self.indices.values() if i.settings.get("index.lifecycle.name") == name)
        templates = sorted(t for t, spec in self.templates.items()
                           if (((spec.get("template") or {}).get("settings") or {}).get("index") or {})
                           .get("lifecycle", {}).get("name") == name)
        return {"indices": indices, "data_streams": [], "composable_templates": templates}

    def _delete_policy(self, name: str, query, headers, body) -> _Answer:
        with self._lock:
            if name not in self.policies:
                raise EsError(404, "resource_not_found_exception", "Lifecycle policy not found: %s" % name)
            users = self._policy_users(name)["indices"]
            if users:
                raise bad_request("Cannot delete policy [%s]. It is in use by one or more indices: %s"
                                  % (name, _list(users)))
            del self.policies[name]
        return _Answer(200, {"acknowledged": True})

    # -- indices -----------------------------------------------------------------------------

    def _create_index(self, name: str, request: dict, skip_templates: bool = False) -> Index:
        problem = index_name_problem(name)
        if problem:
            raise EsError(400, "invalid_index_name_exception", "Invalid index name [%s], %s" % (name, problem),
                          index=name, index_uuid="_na_")
        if name in self.indices:
            existing = self.indices[name]
            raise EsError(400, "resource_already_exists_exception", "index [%s/%s] already exists"
                          % (name, existing.uuid), index=name, index_uuid=existing.uuid)
        settings: Dict[str, str] = {}
        mappings: dict = {}
        aliases: List[str] = []
        matched = None if skip_templates else self.matching_template(name)
        if matched:
            template_name, spec = matched
            if "data_stream" in spec:
                raise unsupported("data streams (index [%s] matches template [%s])" % (name, template_name))
            template = spec.get("template") or {}
            settings.update(normalize_settings(template.get("settings")))
            mappings = copy.deepcopy(template.get("mappings") or {})
            aliases.extend(template.get("aliases") or {})
        # A node makes the aliases of the template and of the request with the index.
        aliases.extend(request.get("aliases") or {})
        settings.update(normalize_settings(request.get("settings")))
        if request.get("mappings"):
            mappings = validate_mappings(request["mappings"])
        settings.setdefault("index.number_of_shards", "1")
        # A node counts the replicas asked for, before auto-expansion gives a single node none.
        self.check_shard_limit(int(settings["index.number_of_shards"])
                               * (1 + int(settings.get("index.number_of_replicas", "1"))))
        expanded = auto_expanded_replicas(settings)
        if expanded is not None:
            settings["index.number_of_replicas"] = expanded
        settings.setdefault("index.number_of_replicas", "1")
        if (settings.get("index.lifecycle.parse_origination_date") == "true"
                and settings.get("index.lifecycle.origination_date") is None):
            check_origination_name(name)
        index = Index(name=name, uuid=base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
                      created_ms=int(self.clock() * 1000), settings=settings, mappings=mappings,
                      hidden=settings.get("index.hidden") == "true")
        self.indices[name] = index
        for alias in dict.fromkeys(aliases):
            self.aliases.setdefault(alias, []).append(name)
        return index

    def check_shard_limit(self, adding: int) -> None:
        """Refuse to open `adding` more shards past cluster.max_shards_per_node, as a node does:
        every copy of an open index counts, assigned or not (a closed index counts nothing), so a
        single node holds at most 1,000 shards by default, 500 indices of one primary and one replica."""
        open_now = sum(index.shards * (1 + index.replicas) for index in self.indices.values() if not index.closed)
        if open_now + adding > self.max_shards_per_node:
            raise EsError(400, "validation_exception", "Validation Failed: 1: this action would add [%d] shards, but "
                          "this cluster currently has [%d]/[%d] maximum normal shards open;"
                          % (adding, open_now, self.max_shards_per_node))

    def _store(self, index: Index, doc_id: str, source: dict, version: int = MATCH_ANY,
               version_type: str = "internal") -> Tuple[Doc, bool]:
        problem = field_name_problem(source)
        if problem:
            raise EsError(400, "document_parsing_exception", problem.split(": ", 1)[1])
        # As on a node: the document is parsed, and its new fields mapped, before its version is compared.
        index.mappings = apply_mapping(index.mappings, doc_id, source)
        current = self._current_version(index, doc_id)
        if version_type != "internal":
            refused = current > version if version_type == "external_gte" else current >= version
            if current >= 0 and refused:
                raise EsError(409, "version_conflict_engine_exception",
                              "[%s]: version conflict, current version [%d] is higher %s the one provided [%d]"
                              % (doc_id, current, "than" if version_type == "external_gte" else "or equal to", version),
                              index_uuid=index.uuid, shard="0", index=index.name)
        previous = index.docs.get(doc_id)
        new_version = version if version_type != "internal" else current + 1 if current >= 0 else 1
        doc = Doc(copy.deepcopy(source), new_version, index.next_seq_no)
        index.next_seq_no += 1
        index.docs[doc_id] = doc
        index.tombstones.pop(doc_id, None)
        return doc, previous is None

    @staticmethod
    def _current_version(index: Index, doc_id: str) -> int:
        """The stored document's version, or a deleted one's within gc_deletes; -1 for none."""
        if doc_id in index.docs:
            return index.docs[doc_id].version
        deleted = index.tombstones.get(doc_id)
        if deleted is not None and time.monotonic() - deleted[1] < GC_DELETES_SECONDS:
            return deleted[0]
        return -1

    def resolve(self, expression: Optional[str], query: Dict[str, str], default_expand: str = "open",
                through_aliases: bool = True) -> List[str]:
        """Concrete index names for an expression (names, `*` patterns, `_all`), as ES resolves them.

        Without `through_aliases` (a DELETE of indices) an alias stands for nothing: a pattern
        matches index names alone, and an alias named is refused, or skipped with ignore_unavailable."""
        expand = set(query.get("expand_wildcards", default_expand).split(","))
        with_hidden = "all" in expand or "hidden" in expand
        with_open = "all" in expand or "open" in expand
        with_closed = "all" in expand or "closed" in expand
        # `none` anywhere, or neither open nor closed (`hidden` alone), expands no pattern: a
        # pattern is then the name of an index no node can hold.
        expanding = "none" not in expand and (with_open or with_closed)
        ignore_unavailable = _json_bool(query.get("ignore_unavailable"), "ignore_unavailable")
        names: List[str] = []
        after_pattern = False
        for part in (expression or "_all").split(","):
            if part.startswith("-") and after_pattern:
                # An exclusion, once a pattern came before it: the names it matches are taken out.
                names = [n for n in names if not simple_match(n, part[1:])]
                continue
            if part == "_all" or (expanding and "*" in part):
                after_pattern = True
                pattern = "*" if part == "_all" else part
                # A pattern matches index names and alias names (which stand for their indices),
                # and data stream names, which stand for their backing indices, hidden as they are.
                aliased = {n for alias, targets in self.aliases.items() if simple_match(alias, pattern)
                           for n in targets} if through_aliases else set()
                streamed = {n for stream, backing in self.data_streams.items() if simple_match(stream, pattern)
                            for n in backing} if through_aliases else set()
                names.extend(n for n, index in sorted(self.indices.items())
                             if ((simple_match(n, pattern) or n in aliased) and (with_hidden or not index.hidden)
                                 or n in streamed) and (with_closed if index.closed else with_open))
            elif part in self.indices:
                names.append(part)
            elif part in self.aliases and through_aliases:
                names.extend(sorted(self.aliases[part]))
            elif part in self.data_streams and through_aliases:
                names.extend(self.data_streams[part])
            elif part in self.aliases and not ignore_unavailable:
                raise bad_request("The provided expression [%s] matches an alias, specify the corresponding "
                                  "concrete indices instead." % part)
            elif not ignore_unavailable:
                error = index_not_found(part)
                if part in self.data_streams:
                    # A DELETE of indices never resolves a data stream, and says it left it out.
                    error.extra["excluded_ds"] = "true"
                raise error
        return list(dict.fromkeys(names))

    def _put_index(self, name: str, query, headers, body) -> _Answer:
        request = self._json_body(headers, body, required=False) or {}
        unknown = sorted(set(request) - {"settings", "mappings", "aliases"})
        if unknown:
            raise bad_request("unknown key [%s] for create index" % unknown[0], "parse_exception")
        with self._lock:
            self._create_index(name, request)
        return _Answer(200, {"acknowledged": True, "shards_acknowledged": True, "index": name})

    def _get_index(self, expression: str, method: str, query, headers, body) -> _Answer:
        with self._lock:
            try:
                names = self.resolve(expression, query)
            except EsError:
                if method == "HEAD":
                    raise _Answer(404, {})
                raise
            if method == "GET":
                self.check_metadata_readable(names)
            found = {n: {"aliases": {}, "mappings": copy.deepcopy(self.indices[n].mappings),
                         "settings": nested_settings({**self.indices[n].settings,
                                                      "index.uuid": self.indices[n].uuid,
                                                      "index.creation_date": str(self.indices[n].created_ms),
                                                      "index.provided_name": n})}
                     for n in names}
        if method == "HEAD" and not found:
            raise _Answer(404, {})
        return _Answer(200, found)

    def _delete_indices(self, expression: str, query, headers, body) -> _Answer:
        with self._lock:
            parts = expression.split(",")
            if self.destructive_requires_name and any(p == "_all" or "*" in p for p in parts):
                raise bad_request("Wildcard expressions or all indices are not allowed")
            names = self.resolve(expression, query, through_aliases=False)
            self.check_deletable(names)
            for name in names:
                del self.indices[name]
                for alias, targets in list(self.aliases.items()):
                    if name in targets:
                        targets.remove(name)
                    if not targets:
                        del self.aliases[alias]
        return _Answer(200, {"acknowledged": True})

    def _cat_indices(self, expression: Optional[str], query, headers, body) -> _Answer:
        with self._lock:
            # A real node lists open and closed indices, not hidden ones, unless told otherwise.
            names = self.resolve(expression, query, default_expand="open,closed")
            self.check_metadata_readable(names)
            rows = [self._cat_row(self.indices[n], query.get("bytes")) for n in names]
        if query.get("health"):
            rows = [row for row in rows if row["health"] == query["health"]]
        columns = _cat_columns(query.get("h"))
        for key in reversed([s for s in (query.get("s") or "").split(",") if s]):
            column, _, order = key.partition(":")
            column = CAT_ALIASES.get(column, column)
            rows.sort(key=lambda row: _sort_key(row.get(column)), reverse=order == "desc")
        table = [{column: row.get(column) for column in columns} for row in rows]
        if query.get("format") == "json":
            return _Answer(200, table)
        if query.get("format") not in (None, "txt", "text"):
            raise unsupported("cat format [%s]" % query["format"])
        lines = ([" ".join(columns)] if _json_bool(query.get("v"), "v") else [])
        lines += [" ".join("" if row[c] is None else str(row[c]) for c in columns) for row in table]
        return _Answer(200, raw=("\n".join(lines) + ("\n" if lines else "")).encode(),
                       headers=(("Content-Type", "text/plain; charset=UTF-8"),))

    def _cat_row(self, index: Index, unit: Optional[str]) -> dict:
        size = index.store_bytes()
        health = "red" if index.unassigned else "green" if index.replicas == 0 else "yellow"
        if index.closed:
            # A node knows no counts or sizes of a closed index.
            return {"health": health, "status": "close", "index": index.name, "uuid": index.uuid,
                    "pri": str(index.shards), "rep": str(index.replicas), "docs.count": None, "docs.deleted": None,
                    "store.size": None, "pri.store.size": None, "dataset.size": None,
                    "creation.date": str(index.created_ms), "creation.date.string": _iso(index.created_ms / 1000)}
        return {"health": health, "status": "open", "index": index.name, "uuid": index.uuid,
                "pri": str(index.shards), "rep": str(index.replicas), "docs.count": str(len(index.docs)),
                "docs.deleted": "0", "store.size": _bytes(size, unit), "pri.store.size": _bytes(size, unit),
                "dataset.size": _bytes(size, unit), "creation.date": str(index.created_ms),
                "creation.date.string": _iso(index.created_ms / 1000)}

    # -- documents ---------------------------------------------------------------------------

    def _bulk(self, target: Optional[str], query, headers, body) -> _Answer:
        body_format(headers.get("content-type"))
        if not body:
            raise bad_request("Validation Failed: 1: no requests added;", "action_request_validation_exception")
        if not body.endswith(b"\n"):
            raise bad_request("The bulk request must be terminated by a newline [\\n]")
        if query.get("pipeline"):
            raise unsupported("ingest pipelines")
        started = time.monotonic()
        operations = _parse_bulk(body.decode("utf-8"), target)
        items = []
        with self._lock:
            for op, meta, source in operations:
                items.append({op: self._bulk_item(op, meta, source, query)})
        errors = any("error" in item[op] for item in items for op in item)
        return _Answer(200, {"errors": errors, "took": int((time.monotonic() - started) * 1000), "items": items})

    def _bulk_item(self, op: str, meta: dict, source: Any, query: Dict[str, str]) -> dict:
        name = meta["_index"]
        doc_id = meta.get("_id") or base64.urlsafe_b64encode(os.urandom(15)).decode()
        result = {"_index": name, "_id": doc_id}
        try:
            if name == "":  # what an 8.15 node answers, a failure of its own
                raise EsError(500, "string_index_out_of_bounds_exception", "String index out of range: 0")
            if self._rejected_items:
                self._rejected_items -= 1
                raise EsError(429, "es_rejected_execution_exception",
                              "rejected execution of coordinating operation [emulator write queue full]")
            backing = self.data_stream_write(op, name, source)
            if backing is not None:
                name = backing
            elif name in self.aliases:
                if len(self.aliases[name]) > 1:
                    raise bad_request("no write index is defined for alias [%s]. The write index may be explicitly "
                                      "disabled using is_write_index=false or the alias points to multiple indices "
                                      "without one being designated as a write index" % name)
                name = self.aliases[name][0]
            index = self.indices.get(name)
            if index is not None:
                self.check_writable(name)
            result["_index"] = name
            if op == "delete":
                if index is None:
                    raise index_not_found(name)
                _check_routed(index, name, doc_id, meta.get("routing", query.get("routing")))
                current = self._current_version(index, doc_id)
                existing = index.docs.pop(doc_id, None)
                seq_no, index.next_seq_no = index.next_seq_no, index.next_seq_no + 1
                version = current + 1 if current >= 0 else 1
                index.tombstones[doc_id] = (version, time.monotonic())
                return {**result, "_version": version,
                        "result": "deleted" if existing else "not_found", "_shards": _shards(index),
                        "_seq_no": seq_no, "_primary_term": 1, "status": 200 if existing else 404}
            if _json_bool(str(meta.get("require_alias", query.get("require_alias", "false"))).lower(), "require_alias"):
                raise EsError(404, "index_not_found_exception", "no such index [%s] and [require_alias] request flag "
                              "is [true] and [%s] is not an alias" % (name, name), index=name)
            if not isinstance(source, dict):
                raise EsError(400, "document_parsing_exception", "failed to parse",
                              caused_by={"type": "not_x_content_exception",
                                         "reason": "Compressor detection can only be called on some xcontent bytes "
                                                   "or compressed xcontent bytes"})
            if index is None:
                self._check_auto_create(name)
                index = self._create_index(name, {})
            _check_routed(index, name, doc_id, meta.get("routing", query.get("routing")))
            if op == "create" and doc_id in index.docs:
                raise EsError(409, "version_conflict_engine_exception",
                              "[%s]: version conflict, document already exists (current version [%d])"
                              % (doc_id, index.docs[doc_id].version), index_uuid=index.uuid, shard="0", index=name)
            doc, created = self._store(index, doc_id, source, meta.get("version", MATCH_ANY),
                                       meta.get("version_type", "internal"))
            return {**result, "_version": doc.version, "result": "created" if created else "updated",
                    "_shards": _shards(index), "_seq_no": doc.seq_no, "_primary_term": 1,
                    "status": 201 if created else 200}
        except EsError as error:
            return {**result, "status": error.status, "error": error.cause()}

    def _check_auto_create(self, name: str) -> None:
        """A write creates a missing index only where auto-creation is allowed, as on a node: the
        matching template's allow_auto_create decides when it sets it, else the cluster's
        action.auto_create_index."""
        matched = self.matching_template(name)
        allowed = matched[1].get("allow_auto_create") if matched is not None else None
        if allowed is False:
            why = "composable template [%s] forbids index auto creation" % ", ".join(matched[1]["index_patterns"])
            raise EsError(404, "index_not_found_exception", "no such index [%s]" % why, index_uuid="_na_", index=why)
        if allowed is None and not self.auto_create_index:
            raise EsError(404, "index_not_found_exception",
                          "no such index [%s] and [action.auto_create_index] is [false]" % name,
                          index_uuid="_na_", index=name)

    def _mget(self, target: Optional[str], query, headers, body) -> _Answer:
        spec = self._json_body(headers, body, required=True)
        if isinstance(spec.get("docs"), list):
            wanted = spec["docs"]
        elif isinstance(spec.get("ids"), list):
            wanted = [{"_id": doc_id} for doc_id in spec["ids"]]
        else:
            raise bad_request("unknown parameter [%s], expected one of [docs, ids]" % next(iter(spec), ""),
                              "parsing_exception")
        if query.get("_source") not in (None, "", "true", "false"):
            raise unsupported("_source filtering in _mget")
        default_source = query.get("_source") != "false"
        sources = []
        for item in wanted:
            # Parsing comes before validation, as in MultiGetRequest: a wrong shape or an unknown
            # field fails the whole request with the first problem.
            if not isinstance(item, dict):
                raise bad_request("docs array element should include an object")
            unknown = next((key for key in item if key not in MGET_DOC_FIELDS), None)
            if unknown is not None:
                raise bad_request("failed to parse multi get request. unknown field [%s]" % unknown, "parse_exception")
            fetch = item.get("_source", default_source)
            if not isinstance(fetch, bool):
                if isinstance(fetch, (str, list, dict)):
                    raise unsupported("_source filtering in _mget")
                raise bad_request("illegal type for _source: [%s]" % _token_name(fetch), "parse_exception")
            sources.append(fetch)
        problems = [] if wanted else ["no documents to get"]
        for position, item in enumerate(wanted):
            if item.get("_index") is None and not target:
                problems.append("index is missing for doc %d" % position)
            # An empty id is refused for its document alone, below.
            if item.get("_id") is None:
                problems.append("id is missing for doc %d" % position)
        if problems:
            raise bad_request("Validation Failed: %s" % "".join("%d: %s;" % (n + 1, p) for n, p in enumerate(problems)),
                              "action_request_validation_exception")
        docs = []
        with self._lock:
            for item, fetch in zip(wanted, sources):
                name = target if item.get("_index") is None else item["_index"]
                doc_id = _scalar_text(item["_id"])
                if self._rejected_gets:
                    self._rejected_gets -= 1
                    docs.append({"_index": name, "_id": doc_id, "error": EsError(
                        429, "es_rejected_execution_exception", "rejected execution of ActionRunnable on "
                        "EsThreadPoolExecutor[name = emulator-node/get, queue capacity = 1000]").envelope()["error"]})
                    continue
                if doc_id == "":
                    docs.append({"_index": name, "_id": doc_id, "error": EsError(
                        400, "illegal_argument_exception", "Ids can't be empty").envelope()["error"]})
                    continue
                try:
                    # ES reports a missing, closed or unreadable index per document, with no `found` key.
                    concrete = self.single_index(name)
                    self.check_readable(concrete)
                except EsError as error:
                    docs.append({"_index": name, "_id": doc_id, "error": error.envelope()["error"]})
                    continue
                name, index = concrete, self.indices[concrete]
                try:
                    _check_routed(index, name, doc_id, item.get("routing", query.get("routing")))
                except EsError as error:
                    docs.append({"_index": name, "_id": doc_id, "error": error.envelope()["error"]})
                    continue
                doc = index.docs.get(doc_id)
                if doc is None:
                    docs.append({"_index": name, "_id": doc_id, "found": False})
                else:
                    entry = {"_index": name, "_id": doc_id, "_version": doc.version, "_seq_no": doc.seq_no,
                             "_primary_term": 1, "found": True}
                    if fetch:
                        entry["_source"] = copy.deepcopy(doc.source)
                    docs.append(entry)
        return _Answer(200, {"docs": docs})

    def _count(self, target: Optional[str], query, headers, body) -> _Answer:
        if "q" in query:
            raise unsupported("query strings (q=)")
        spec = self._json_body(headers, body, required=False) or {}
        unknown = sorted(set(spec) - {"query"})
        if unknown:
            raise bad_request("request does not support [%s]" % unknown[0], "parsing_exception")
        condition = spec.get("query", {"match_all": {}})
        with self._lock:
            names = self.resolve(target, query)
            count = sum(1 for n in names for doc in self.indices[n].docs.items()
                        if _matches(condition, doc[0], doc[1].source))
            shards = sum(self.indices[n].shards for n in names)
        return _Answer(200, {"count": count, "_shards": {"total": shards, "successful": shards, "skipped": 0,
                                                          "failed": 0}})

    # -- helpers -----------------------------------------------------------------------------

    def _json_body(self, headers: Dict[str, str], body: bytes, required: bool) -> Optional[dict]:
        if not body:
            if required:
                raise bad_request("request body is required", "parse_exception")
            return None
        if body_format(headers.get("content-type")) != "json":
            raise bad_request("this API takes a JSON body", "parse_exception")
        try:
            value = json.loads(body)
        except ValueError as error:
            raise bad_request("Failed to parse content to map: %s" % error, "parse_exception") from None
        if not isinstance(value, dict):
            raise bad_request("request body must be a JSON object", "parse_exception")
        return value


def _token_name(value: Any) -> str:
    """The JSON parser's token name for a scalar, as Elasticsearch puts it in parse errors."""
    if value is None:
        return "VALUE_NULL"
    if isinstance(value, (int, float)):
        return "VALUE_NUMBER"
    return "VALUE_STRING"


def _parse_bulk(text: str, target: Optional[str]) -> List[Tuple[str, dict, Any]]:
    lines = text.split("\n")[:-1]
    operations, position = [], 0
    problems: List[str] = []
    known = {"_index", "_id", "routing", "if_seq_no", "if_primary_term", "version", "version_type", "pipeline",
             "require_alias", "dynamic_templates", "retry_on_conflict", "_source", "list_executed_pipelines",
             "require_data_stream"}
    while position < len(lines):
        number = position + 1
        try:
            action = json.loads(lines[position])
        except ValueError as error:
            raise bad_request("[%d:1] Unexpected character: %s" % (number, error), "x_content_parse_exception") from None
        if not isinstance(action, dict) or len(action) != 1:
            raise bad_request("Malformed action/metadata line [%d], expected START_OBJECT or END_OBJECT but found "
                              "[%s]" % (number, type(action).__name__))
        op, meta = next(iter(action.items()))
        if op not in ("index", "create", "delete", "update"):
            raise bad_request("Malformed action/metadata line [%d], expected one of [create, delete, index, update] "
                              "but found [%s]" % (number, op))
        if not isinstance(meta, dict):
            raise bad_request("Malformed action/metadata line [%d], expected START_OBJECT" % number)
        for key in meta:
            if key not in known:
                raise bad_request("Action/metadata line [%d] contains an unknown parameter [%s]" % (number, key))
        if op == "update":
            raise unsupported("bulk update actions")
        conditional = sorted({"if_seq_no", "if_primary_term", "pipeline"} & set(meta)
                             | ({"version", "version_type"} & set(meta) if op == "delete" else set()))
        if conditional:
            raise unsupported("bulk %s with %s" % (op, ", ".join(conditional)))
        meta = dict(meta)
        _parse_version(meta, number)
        if meta.get("_index") is None:
            meta["_index"] = target
        if meta["_index"] is None:
            problems.append("index is missing")
        if op == "delete" and not meta.get("_id"):
            problems.append("id is missing")
        problems.extend(_version_problems(op, meta))
        position += 1
        source = None
        if op != "delete":
            if position >= len(lines):
                raise bad_request("The bulk request must be terminated by a newline [\\n]")
            try:
                source = json.loads(lines[position], parse_float=JsonDecimal)
            except ValueError:
                source = lines[position]  # refused per item, as ES does
            position += 1
        operations.append((op, meta, source))
    if problems:  # all of them at once, numbered, as the node's validation of the whole request says them
        raise bad_request("Validation Failed: %s" % "".join("%d: %s;" % (n, p) for n, p in enumerate(problems, 1)),
                          "action_request_validation_exception")
    return operations


def _parse_version(meta: dict, number: int) -> None:
    """`version` read as a long and `version_type` as one of VERSION_TYPES, as the node parses
    an action line (the whole request refused otherwise)."""
    for name in ("version", "version_type"):
        if name in meta and meta[name] is None:  # JSON's null: as if it were not given
            del meta[name]
    if "version_type" in meta:
        kind = meta["version_type"]
        text = kind if isinstance(kind, str) else json.dumps(kind)
        if text not in VERSION_TYPES:
            raise bad_request("No version type match [%s]" % text, "illegal_argument_exception")
    if "version" in meta:
        value = meta["version"]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad_request("[%d:1] Current token (%s) not numeric, can not use numeric value accessors"
                              % (number, "VALUE_TRUE" if value is True else "VALUE_FALSE" if value is False
                                 else "START_OBJECT"), "x_content_parse_exception")
        if isinstance(value, str):
            value = _text_long(value)
        if not -2 ** 63 <= value < 2 ** 63:
            raise bad_request("[%d:1] Numeric value (%s) out of range of long (-9223372036854775808 - "
                              "9223372036854775807)" % (number, value), "x_content_parse_exception")
        meta["version"] = int(value)


# A text the node reads as a long: Java's Long.parseLong, else a BigDecimal cut to its whole
# part. Neither takes spaces or underscores, which Python's int() and float() do.
_JAVA_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\Z")


def _text_long(text: str) -> int:
    """A version given as a text, read as the node reads it (the whole request refused otherwise)."""
    if not _JAVA_DECIMAL.match(text):
        raise bad_request('For input string: "%s"' % text, "illegal_argument_exception")
    value = Decimal(text)
    if not -2 ** 63 - 1 < value < 2 ** 63:
        raise bad_request("Value [%s] is out of range for a long" % text, "illegal_argument_exception")
    return int(value)  # toward zero, as BigDecimal.toBigInteger


def _version_problems(op: str, meta: dict) -> List[str]:
    """What the node's request validation says of an action's version (ActionRequestValidationException)."""
    kind = meta.get("version_type", "internal")
    version = meta.get("version", MATCH_ANY)
    if kind != "internal":
        if op == "create":
            return ["create operations only support internal versioning. use index instead"]
        if version < 0:
            return ["illegal version value [%d] for version type [%s]" % (version, VERSION_TYPES[kind])]
    elif version != MATCH_ANY:
        return ["internal versioning can not be used for optimistic concurrency control. Please use `if_seq_no` "
                "and `if_primary_term` instead"]
    return []


def _value_at(source: dict, path: str) -> List[Any]:
    values: List[Any] = [_expand_dots(source)]
    for part in path.split("."):
        nxt = []
        for value in values:
            if isinstance(value, dict) and part in value:
                child = value[part]
                nxt.extend(child if isinstance(child, list) else [child])
        values = nxt
    if not values and path.endswith(".keyword"):
        return _value_at(source, path[:-len(".keyword")])
    return [v for v in values if v is not None]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _matches(query: Any, doc_id: str, source: dict) -> bool:
    if not isinstance(query, dict) or len(query) != 1:
        raise bad_request("[_na] query malformed, must start with start_object", "parsing_exception")
    kind, spec = next(iter(query.items()))
    if kind == "match_all":
        return True
    if kind == "ids":
        return doc_id in [str(v) for v in spec.get("values", [])]
    if kind == "exists":
        return bool(_value_at(source, spec["field"]))
    if kind == "term":
        (name, wanted), = spec.items()
        wanted = wanted.get("value") if isinstance(wanted, dict) else wanted
        return any(_same(value, wanted) for value in _value_at(source, name))
    if kind == "terms":
        (name, wanted), = spec.items()
        return any(_same(value, w) for value in _value_at(source, name) for w in wanted)
    if kind == "bool":
        def clauses(key):
            value = spec.get(key, [])
            return value if isinstance(value, list) else [value]
        return (all(_matches(q, doc_id, source) for q in clauses("must") + clauses("filter"))
                and not any(_matches(q, doc_id, source) for q in clauses("must_not"))
                and (not clauses("should") or any(_matches(q, doc_id, source) for q in clauses("should"))))
    raise EsError(400, "parsing_exception", "unknown query [%s]" % kind, line=1, col=13)


def filter_paths(value: Any, paths: Iterable[str]) -> Any:
    """ES `filter_path`: keep only the dotted paths (with `*` segments) asked for."""
    patterns = [p.split(".") for p in paths if p]

    def keep(node: Any, remaining: List[List[str]]) -> Any:
        if any(not p for p in remaining):
            return node
        if isinstance(node, list):
            kept = [keep(item, remaining) for item in node]
            return [item for item in kept if item is not None]
        if not isinstance(node, dict):
            return None
        out = {}
        for key, child in node.items():
            nxt = [p[1:] for p in remaining if simple_match(key, p[0])]
            if nxt:
                kept = keep(child, nxt)
                if kept not in (None, {}, []):
                    out[key] = kept
        return out

    kept = keep(value, patterns)
    return {} if kept is None else kept


def _cat_columns(h: Optional[str]) -> List[str]:
    if not h:
        return list(CAT_DEFAULT)
    columns = []
    for name in h.split(","):
        if "*" in name:
            columns.extend(c for c in CAT_COLUMNS if simple_match(c, name))
        else:
            name = CAT_ALIASES.get(name, name)
            if name in CAT_COLUMNS:
                columns.append(name)
    return columns


def _sort_key(value: Optional[str]):
    if value is None:
        return (0, 0, "")
    return (1, float(value), "") if re.match(r"^\d+(\.\d+)?$", value) else (2, 0, value)


def _bytes(size: int, unit: Optional[str]) -> str:
    if unit == "b":
        return str(size)
    if unit in ("kb", "mb", "gb"):
        return str(size // 1024 ** ("kb", "mb", "gb").index(unit) // 1024)
    return "%db" % size if size < 1024 else "%.1fkb" % (size / 1024)


def _shards(index: Index) -> dict:
    return {"total": 1 + index.replicas, "successful": 1, "failed": 0}


def _check_routed(index, name: str, doc_id: str, routing) -> None:
    """A node refuses a write or get without a routing in an index whose mapping requires one.
    (A routing given is taken and not modelled: the emulator holds one shard's worth of ids.)"""
    required = (index.mappings.get("_routing") or {}).get("required") if isinstance(index.mappings, dict) else None
    if required in (True, "true") and routing is None:
        raise EsError(400, "routing_missing_exception", "routing is required for [%s]/[%s]" % (name, doc_id),
                      index=name, index_uuid=index.uuid)


def _null_or(value) -> str:
    return "null" if value is None else str(value)


def _list(names: Iterable[str]) -> str:
    return "[%s]" % ", ".join(names)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (int(epoch * 1000) % 1000)


class _ElasticHandler(QuietHandler):
    def do_GET(self):
        self._serve("GET")

    def do_HEAD(self):
        self._serve("HEAD")

    def do_PUT(self):
        self._serve("PUT")

    def do_POST(self):
        self._serve("POST")

    def do_DELETE(self):
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        app: ElasticsearchEmulator = self.app
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            body = self.read_body(max_bytes=MAX_CONTENT_LENGTH)
        except BodyTooLarge as too_large:
            app.requests.append(RequestRecord(method, self.path, urlsplit(self.path).path, {}, headers, b"", 413))
            self.send_whole(413, [PRODUCT_HEADER], close=not too_large.drained)
            return
        if len(self.requestline) > MAX_INITIAL_LINE:
            reason = "An HTTP line is larger than %d bytes." % MAX_INITIAL_LINE
            app.requests.append(RequestRecord(method, self.path, urlsplit(self.path).path, {}, headers, body, 400))
            raw = json.dumps(EsError(400, "too_long_http_line_exception", reason).envelope()).encode("utf-8")
            self.send_whole(400, [PRODUCT_HEADER, ("Content-Type", "application/json")], raw, close=True,
                            head_only=method == "HEAD")
            return
        answer = app.handle(method, self.path, headers, body)
        parts = urlsplit(self.path)
        app.requests.append(RequestRecord(method, self.path, unquote(parts.path),
                                          dict(parse_qsl(parts.query, keep_blank_values=True)), headers, body,
                                          answer.status or None))
        if answer.status == 0:
            self.drop_connection()
            return
        if answer.raw is not None:
            raw, content_type = answer.raw, None
        else:
            raw = b"" if answer.body is None else json.dumps(answer.body).encode("utf-8")
            compat = getattr(answer, "compat", None)
            content_type = ("application/vnd.elasticsearch+json;compatible-with=%d" % compat if compat
                            else "application/json")
        out = [PRODUCT_HEADER] + list(answer.headers)
        if content_type and not any(name.lower() == "content-type" for name, _ in answer.headers):
            out.append(("Content-Type", content_type))
        self.send_whole(answer.status, out, raw, head_only=method == "HEAD")
