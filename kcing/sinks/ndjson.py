"""Write documents as NDJSON files for the Elasticsearch `_bulk` API instead of posting them."""
from __future__ import annotations

import json
import os
from pathlib import Path

from kcing.sinks import ndjson_destination
from kcing.errors import ConfigError
from kcing.records import Document
from kcing.sinks.batching import Batch


class NdjsonDirSink:
    """Appends each batch to `<dir>/<route>.ndjson`: an `index` action line, then the document.

    A file can be replayed with `curl -H 'Content-Type: application/x-ndjson' --data-binary @FILE
    http://localhost:9200/_bulk`; the action carries the index and id, so a replay is idempotent.
    """

    name = "NDJSON files"

    def __init__(self, directory: str):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError("cannot create output directory %s: %s" % (directory, error.strerror)) from None

    def destination(self, kind: str) -> str:
        """What the ledger records as where objects were delivered: this directory."""
        return ndjson_destination(str(self.directory))

    def destinations_key(self) -> str:
        return ndjson_destination(str(self.directory))

    @staticmethod
    def encode(document: Document) -> bytes:
        action = {"index": {"_index": document.index, "_id": document.doc_id}}
        return (json.dumps(action, separators=(",", ":")) + "\n" + document.source_json() + "\n").encode("utf-8")

    def send(self, batch: Batch) -> None:
        """Append and flush to disk; only then does the pipeline record the objects as delivered."""
        path = self.directory / ("%s.ndjson" % batch.route)
        with open(path, "ab") as handle:
            handle.write(b"".join(batch.items))
            handle.flush()
            os.fsync(handle.fileno())
