"""How each sink encodes a document: what it writes or posts for one document, as bytes.

Apart from the sinks, so that a worker process building documents (kcing/building.py) imports
the encoder without the sink's HTTP client, which would add a third to its memory.
"""
from __future__ import annotations

import json
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from kcing.records import EXTERNAL_VERSION_TYPE, Document, metadata_version

if TYPE_CHECKING:  # not imported at run time: the feed's own process never loads the LAVA code
    from kcing.documents.lava import LogLines


def logstash_json(document: Document) -> bytes:
    """An element of the JSON array a Logstash http input takes: the document's JSON."""
    return document.to_json().encode("utf-8")


def ndjson_record(document: Document) -> bytes:
    """A `_bulk` record: the `index` action line, then the document, each ending in a newline."""
    index, doc_id = document.index, document.doc_id
    if type(index) is str and type(doc_id) is str:
        # json.dumps of the action, without its dispatch: this runs per document.
        action = '{"index":{"_index":%s,"_id":%s%s}}' % (encode_basestring_ascii(index),
                                                           encode_basestring_ascii(doc_id),
                                                           action_version(document.version))
    else:
        metadata = {"_index": index, "_id": doc_id}
        if document.version is not None:
            metadata.update(version=document.version, version_type=EXTERNAL_VERSION_TYPE)
        action = json.dumps({"index": metadata}, separators=(",", ":"))
    return (action + "\n" + document.source_json() + "\n").encode("utf-8")


# A LAVA job's log documents, thousands of them, are encoded straight from their parts
# (documents.lava.LogLines) instead of one Document at a time: the same text as the function
# each stands for gives for each document, without making the documents.

def logstash_json_texts(lines: LogLines) -> List[str]:
    """`logstash_json` of each of `lines`' documents, as text."""
    prefix, route = lines.prefix, ',"@metadata":{"index":' + encode_basestring(lines.index) + ',"id":'
    version = metadata_version(lines.version)
    timestamps = _inside_quotes(lines.timestamps, encode_basestring)
    ids = _inside_quotes(lines.ids, encode_basestring)
    # Each text built by one f-string: `+` would copy the long shared prefix once per `+`.
    return [f'{prefix}{own},"@timestamp":"{timestamp}"{route}"{doc_id}"{version}}}}}'
            for own, timestamp, doc_id in zip(lines.own_json, timestamps, ids)]


def ndjson_record_texts(lines: LogLines) -> List[str]:
    """`ndjson_record` of each of `lines`' documents, as text."""
    prefix, action = lines.prefix, '{"index":{"_index":' + encode_basestring_ascii(lines.index) + ',"_id":'
    version = action_version(lines.version)
    timestamps = _inside_quotes(lines.timestamps, encode_basestring)
    ids = _inside_quotes(lines.ids, encode_basestring_ascii)
    return [f'{action}"{doc_id}"{version}}}}}\n{prefix}{own},"@timestamp":"{timestamp}"}}\n'
            for own, timestamp, doc_id in zip(lines.own_json, timestamps, ids)]


def action_version(version: Optional[int]) -> str:
    """The members of a `_bulk` action that version its document ("" without a version): the
    replay of an `--output` file keeps a node's newer version whatever order it posts them in."""
    return "" if version is None else ',"version":%d,"version_type":"%s"' % (version, EXTERNAL_VERSION_TYPE)


def _inside_quotes(texts: List[str], encode: Callable[[str], str]) -> List[str]:
    """Each of `texts` as `encode` writes it, without the quotes around it: `texts` themselves
    when they are printable ASCII without a quote or a backslash (as timestamps and ids are),
    which both encoders write as they are."""
    try:
        joined = "".join(texts)
    except TypeError:
        joined = None
    if joined is not None and joined.isascii() and joined.isprintable() and '"' not in joined and "\\" not in joined:
        return texts
    return [encode(text)[1:-1] for text in texts]


# The encoders that have a way for LogLines, and that way.
LINES_ENCODERS: Dict[Callable, Callable[[LogLines], List[str]]] = {
    logstash_json: logstash_json_texts,
    ndjson_record: ndjson_record_texts,
}
