"""The Logstash emulators' store in forwarding mode: what they accept goes on to an Elasticsearch.

It applies the repository pipeline's elasticsearch output (logstash/pipeline/kcing.conf): index
and id from `[@metadata]`, action `index`, the event's fields as the document. One `_bulk` per
accepted request, to the emulator or to a real node alike; any item error raises, so nothing is
lost by accident. Keys in `drop` are left out: the "200 from Logstash, then lost before
Elasticsearch indexed it" case.
"""
from __future__ import annotations

from typing import Set

from elasticsearch import Elasticsearch, helpers

from tests.fakes.elastic_store import DocKey, IndexStore, Unroutable, route


class ForwardingStore(IndexStore):
    """An IndexStore that also indexes what it stored into the Elasticsearch at `es_url`."""

    def __init__(self, es_url: str):
        super().__init__()
        self.client = Elasticsearch(es_url, request_timeout=60)
        self.drop: Set[DocKey] = set()
        self.dropped: Set[DocKey] = set()

    def write(self, events) -> int:
        stored = super().write(events)
        actions = []
        for event in events:
            try:
                index, doc_id = route(event)
            except Unroutable:
                continue
            if (index, doc_id) in self.drop:
                self.dropped.add((index, doc_id))
                continue
            actions.append({"_op_type": "index", "_index": index, "_id": doc_id, "_source": event.fields})
        if actions:
            helpers.bulk(self.client, actions)  # raises BulkIndexError on any item error
        return stored
