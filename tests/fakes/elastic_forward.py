"""The Logstash emulators' store in forwarding mode: what they accept goes on to an Elasticsearch.

It applies the repository pipeline's elasticsearch outputs (logstash/pipeline/kcing.conf): index
and id from `[@metadata]`, action `index`, the version too where there is one (external_gte),
the event's fields as the document. One `_bulk` per accepted request, to the emulator or to a
real node alike; any item error but an older version's 409 (which Logstash drops) raises, so
nothing is lost by accident. Keys in `drop` are left out: the "200 from Logstash, then lost before
Elasticsearch indexed it" case.
"""
from __future__ import annotations

from typing import Set

from elasticsearch import Elasticsearch, helpers

from tests.fakes.elastic_store import DocKey, IndexStore, Unroutable, route, version_of


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
                (index, doc_id), version = route(event), version_of(event)
            except Unroutable:
                continue
            if (index, doc_id) in self.drop:
                self.dropped.add((index, doc_id))
                continue
            action = {"_op_type": "index", "_index": index, "_id": doc_id, "_source": event.fields}
            if version is not None:
                # As Logstash's sprintf gives it: a text, which Elasticsearch reads as a long.
                action.update(version=str(version), version_type="external_gte")
            actions.append(action)
        if actions:
            _, errors = helpers.bulk(self.client, actions, raise_on_error=False)
            failed = [error for error in errors if error["index"]["status"] != 409]
            if failed:
                raise helpers.BulkIndexError("%d document(s) failed to index" % len(failed), failed)
        return stored
