"""Sinks: where documents go. Each names its destination for the ledger, so that "delivered"
means delivered there: `logstash <input URLs>` per route, or `ndjson <directory>`."""
from __future__ import annotations

import os
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

from kcing.files import as_text

# Destination names start with these; reconcile checks only what went to Logstash.
LOGSTASH = "logstash "
NDJSON = "ndjson "


def logstash_destination(urls: Iterable[str]) -> str:
    """One route's inputs; their order does not matter (batches are spread across them), nor
    does one listed twice, nor the case of a scheme or host: `HTTP://LS:8337` is the input
    `http://ls:8337` was, whose deliveries a run must not make again."""
    return LOGSTASH + ",".join(sorted({_input_named(url) for url in urls}))


def _input_named(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, parts.fragment))


def ndjson_destination(directory: str) -> str:
    """The directory as it is on disk, links resolved: `out` and a link to it are one place, whose
    files a second run through the link must not append to again. A name that is not UTF-8 is
    kept as its text shows it (the ledger stores text)."""
    return NDJSON + as_text(os.path.realpath(directory))
