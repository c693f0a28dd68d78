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
    does one listed twice, nor the case of a scheme or host, nor a scheme's default port written
    out: `HTTP://LS:8337` is the input `http://ls:8337` was, and `https://ls:443` is `https://ls`,
    whose deliveries a run must not make again."""
    return LOGSTASH + ",".join(sorted({_input_named(url) for url in urls}))


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _input_named(url: str) -> str:
    parts = urlsplit(url)
    scheme, netloc = parts.scheme.lower(), parts.netloc.lower()
    try:
        port = parts.port
    except ValueError:  # not a port: the settings refuse it; named as written
        port = None
    if port is not None and port == _DEFAULT_PORTS.get(scheme):
        netloc = netloc.rsplit(":", 1)[0]
    return urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))


def ndjson_destination(directory: str) -> str:
    """The directory as it is on disk, links resolved: `out` and a link to it are one place, whose
    files a second run through the link must not append to again. A name that is not UTF-8 is
    kept as its text shows it (the ledger stores text)."""
    return NDJSON + as_text(os.path.realpath(directory))
