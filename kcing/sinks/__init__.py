"""Sinks: where documents go. Each names its destination for the ledger, so that "delivered"
means delivered there: `logstash <input URLs>` per route, or `ndjson <directory>`."""
from __future__ import annotations

import os
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit

from kcing.files import as_text
from kcing.records import BOOT, BUILD, CHECKOUT, JOB, KBUILD, LAVA, NODE, REGRESSION, TEST

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


# kind -> the setting naming the Logstash inputs its documents go to. KernelCI API nodes go where
# the legacy documents of the same kinds go: builds to the build input, and jobs and tests (boot,
# test and log documents) to the LAVA one. Regressions, which legacy had not, have an input of
# their own.
ROUTE_SETTINGS = {BUILD: "ES_BUILD", LAVA: "ES_LAVA", BOOT: "ES_BOOT", CHECKOUT: "ES_BUILD", KBUILD: "ES_BUILD",
                  JOB: "ES_LAVA", TEST: "ES_LAVA", NODE: "ES_LAVA", REGRESSION: "ES_REGRESSION"}


def named_as_today(destination: str) -> str:
    """A destination's name as this kcing writes it, from the name an earlier one wrote (the case
    of a Logstash URL kept, an input listed twice, a default port written out, an output directory
    named through a link): one place, whose deliveries are not to be made again."""
    if destination.startswith(LOGSTASH):
        return logstash_destination(url for url in destination[len(LOGSTASH):].split(",") if url)
    if destination.startswith(NDJSON):
        return ndjson_destination(destination[len(NDJSON):])
    return destination


def logstash_routes(settings) -> dict:
    """{kind: Logstash input URLs}."""
    return {kind: getattr(settings, name) for kind, name in ROUTE_SETTINGS.items()}


def logstash_destination_of(settings):
    """kind -> the ledger's name for the Logstash inputs configured for it."""
    routes = logstash_routes(settings)
    return lambda kind: logstash_destination(routes.get(kind, settings.ES_LAVA))


def logstash_destinations_key(settings) -> str:
    """Every Logstash input configured: where the watermark of a run posting to them applies."""
    return logstash_destination({url for urls in logstash_routes(settings).values() for url in urls})
