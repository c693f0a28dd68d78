"""How each sink encodes a document: what it writes or posts for one document, as bytes.

Apart from the sinks, so that a worker process building documents (kcing/building.py) imports
the encoder without the sink's HTTP client, which would add a third to its memory.
"""
from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii

from kcing.records import Document


def logstash_json(document: Document) -> bytes:
    """An element of the JSON array a Logstash http input takes: the document's JSON."""
    return document.to_json().encode("utf-8")


def ndjson_record(document: Document) -> bytes:
    """A `_bulk` record: the `index` action line, then the document, each ending in a newline."""
    index, doc_id = document.index, document.doc_id
    if type(index) is str and type(doc_id) is str:
        # json.dumps of the action, without its dispatch: this runs per document.
        action = '{"index":{"_index":%s,"_id":%s}}' % (encode_basestring_ascii(index),
                                                         encode_basestring_ascii(doc_id))
    else:
        action = json.dumps({"index": {"_index": index, "_id": doc_id}}, separators=(",", ":"))
    return (action + "\n" + document.source_json() + "\n").encode("utf-8")
