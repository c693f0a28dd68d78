"""Sinks: where documents go. Each names its destination for the ledger, so that "delivered"
means delivered there: `logstash <input URLs>` per route, or `ndjson <directory>`."""
from __future__ import annotations

import os
from typing import Iterable

from kcing.files import as_text

# Destination names start with these; reconcile checks only what went to Logstash.
LOGSTASH = "logstash "
NDJSON = "ndjson "


def logstash_destination(urls: Iterable[str]) -> str:
    """One route's inputs; their order does not matter (batches are spread across them)."""
    return LOGSTASH + ",".join(sorted(urls))


def ndjson_destination(directory: str) -> str:
    """The directory as it is on disk, links resolved: `out` and a link to it are one place, whose
    files a second run through the link must not append to again. A name that is not UTF-8 is
    kept as its text shows it (the ledger stores text)."""
    return NDJSON + as_text(os.path.realpath(directory))
