"""The shared nouns that flow from sources through the ledger and documents to sinks."""
from __future__ import annotations

import hashlib
import json
from json.encoder import encode_basestring
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping, Optional

# Kinds of upstream objects (one file each) and the Logstash input each one goes to.
BUILD = "build"  # build.json -> ES_BUILD
LAVA = "lava"  # lava-json-<board>.json -> ES_LAVA
BOOT = "boot"  # boot-<board>.json (labs without LAVA) -> ES_BOOT
# KernelCI API ("Maestro") nodes, one object per node version, named as the API names them.
CHECKOUT = "checkout"  # no document: its revision is on every node below it -> ES_BUILD
KBUILD = "kbuild"  # build document -> ES_BUILD
JOB = "job"  # boot document (a lab job) or test document, plus log documents -> ES_LAVA
TEST = "test"  # test document -> ES_LAVA
# The generic kind of older data (the checkouts of early 2023, KUnit cases): a root (a
# checkout) has no document, the others read as jobs and tests do -> ES_LAVA
NODE = "node"
REGRESSION = "regression"  # regression document (a test that passed, then failed) -> ES_REGRESSION
# Listed in this order: parents before children, and regressions after the nodes they name.
NODE_KINDS = (CHECKOUT, KBUILD, JOB, TEST, NODE, REGRESSION)
OBJECT_KINDS = (BUILD, LAVA, BOOT) + NODE_KINDS

# Kinds of Elasticsearch documents; each has its own date-suffixed index.
DOCUMENT_KINDS = ("build", "boot", "test", "log", "regression")


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made creating
# one cost as much as reading its listing item, and a routine run creates one per listed item.
# Nothing changes an object once made; `dataclasses.replace` makes the variants.
@dataclass
class UpstreamObject:
    """One file listed upstream, before it is downloaded.

    `created` is the object's own date (UTC, timezone-aware) taken from the listing; it decides
    the index of documents whose file carries no date of its own. `url` is an http(s) URL or a
    local file path, depending on the source.
    """

    source: str
    kind: str
    upstream_id: str
    url: str
    created: Optional[datetime] = None
    facts: Mapping[str, Any] = field(default_factory=dict)
    # Set when the listing item itself is unusable (no id, unsafe path): recorded as rejected.
    problem: Optional[str] = None

    @property
    def key(self) -> tuple:
        return (self.source, self.kind, self.upstream_id)

    @property
    def label(self) -> str:
        """How messages name the object: its kind and id, or, for a file given on the command
        line (whose id is the hash of its content, which tells a user nothing), its kind, the
        file's name as given and the start of that hash, or `(not read)` when it could not be."""
        named = self.facts.get("file")
        if isinstance(named, str) and named:
            named = named if named.isprintable() else repr(named)  # messages are one line
            if self.facts.get("unread"):  # missing, unreadable or too large: no hash to show
                return "%s %s (not read)" % (self.kind, named)
            return "%s %s (sha256 %s)" % (self.kind, named, self.upstream_id[:12])
        return "%s %s" % (self.kind, self.upstream_id)

    @property
    def lineage(self) -> tuple:
        """What the versions of one upstream thing share (a KernelCI API node's id): their documents
        have the same ids, so the newer must reach Logstash after the older."""
        return (self.source, self.kind, self.facts.get("node_id") or self.upstream_id)


def invalid_item_id(item: Any) -> str:
    """A stable ledger id for a listing item without a usable id, so that distinct bad items are
    counted apart (each its own row, with its own reason) and the same one is recognised on the
    next run."""
    try:
        canonical = json.dumps(item, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        canonical = repr(item)
    return "invalid-" + hashlib.sha256(canonical.encode("utf-8", "replace")).hexdigest()[:16]

# Not frozen, like UpstreamObject: a frozen dataclass sets each field through
# object.__setattr__, which cost as much as the rest of making a log line's document, and a
# LAVA job makes one per line. Nothing changes a document once made but `remember_body_json`
# (validate.py, for a body whose JSON it made anyway).
@dataclass
class Document:
    """One Elasticsearch document and where it goes.

    `doc_id` is deterministic: the same upstream object always yields the same ids, so a resend
    overwrites instead of duplicating. `index` is `<kind>-YYYY.MM.DD` from the object's own date.
    """

    kind: str
    index: str
    doc_id: str
    timestamp: str  # ISO 8601 with zone, e.g. 2020-11-19T07:06:18.385Z
    body: Mapping[str, Any]
    # The body as compact JSON, kept by validation (which has to serialise it anyway) so the
    # sinks do not serialise every document a second time.
    body_json: Optional[str] = field(default=None, compare=False, repr=False)
    # The version of the upstream object the document was made from, for Elasticsearch's
    # external versioning (EXTERNAL_VERSION_TYPE): an API node's `updated` time in microseconds
    # (documents/nodes.py). Batches posted side by side, or to several Logstash instances, are
    # indexed in any order; with it, an older version of a node indexed after a newer one is
    # refused (409) instead of replacing it. None for a legacy file, which has no version: its
    # documents are indexed as they come.
    version: Optional[int] = None

    def remember_body_json(self, text: str) -> None:
        object.__setattr__(self, "body_json", text)

    def to_wire(self) -> dict:
        """The JSON object posted to Logstash: fields plus routing in @metadata (never stored)."""
        wire = dict(self.body)
        wire["@timestamp"] = self.timestamp
        wire["@metadata"] = {"index": self.index, "id": self.doc_id}
        if self.version is not None:
            wire["@metadata"]["version"] = str(self.version)
        return wire

    def to_json(self) -> str:
        """`to_wire()` as compact JSON text."""
        body = self._body_text()
        timestamp, index, doc_id = self.timestamp, self.index, self.doc_id
        if type(timestamp) is str and type(index) is str and type(doc_id) is str:
            # What the encoder does with a string, without its dispatch: this runs per document.
            # The body is joined by `+`: "%s" with a long text costs more than the copy.
            routing = _ROUTING % (_string_json(timestamp), _string_json(index), _string_json(doc_id),
                                  metadata_version(self.version))
            return body[:-1] + ("," + routing if len(body) > 2 else routing)
        return _with_fields(body, '"@timestamp":%s,"@metadata":{"index":%s,"id":%s%s}' % (
            _ENCODER.encode(timestamp), _ENCODER.encode(index), _ENCODER.encode(doc_id),
            metadata_version(self.version)))

    def source_json(self) -> str:
        """The document as Elasticsearch stores it: the body plus @timestamp."""
        timestamp = self.timestamp
        return _with_fields(self._body_text(), '"@timestamp":%s' % (
            _string_json(timestamp) if type(timestamp) is str else _ENCODER.encode(timestamp)))

    def _body_text(self) -> str:
        return self.body_json if self.body_json is not None else _ENCODER.encode(dict(self.body))


_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# `_ENCODER.encode(text)` for a str is exactly this function (ensure_ascii=False).
_string_json = encode_basestring
# The routing members that close a document's wire JSON.
_ROUTING = '"@timestamp":%s,"@metadata":{"index":%s,"id":%s%s}}'
# How Elasticsearch compares a document's version with the stored one's: a version equal to it
# is taken too, so a resend of the same version (a retry, reconcile) overwrites as before.
EXTERNAL_VERSION_TYPE = "external_gte"


def metadata_version(version: Optional[int]) -> str:
    """The `@metadata` member that carries a document's version to Logstash ("" without one):
    a text of digits, as the pipeline's check of it expects (logstash/pipeline/kcing.conf)."""
    return "" if version is None else ',"version":"%d"' % version


def _with_fields(object_text: str, members: str) -> str:
    """Append JSON `members` to the JSON object `object_text` (whose keys differ from them)."""
    return object_text[:-1] + ("," if len(object_text) > 2 else "") + members + "}"
