"""Build the feed's parts from settings and flags: sources, sinks, feed options (the ledger:
kcing/ledgerfile.py).

Shared by the commands that feed (feed_es, gen_samples, reconcile --resend); no command logic here.
"""
from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from typing import Iterable, Optional
from urllib.parse import urlsplit

from kcing.building import usable_cores
from kcing.errors import ConfigError
from kcing.flags import a_document_date, positive_int
from kcing.pipeline import FeedOptions
from kcing.records import BOOT, BUILD, LAVA
from kcing.settingvalues import MAX_DAYS
from kcing.shutdown import Stop
from kcing.sinks import ROUTE_SETTINGS, logstash_routes
from kcing.watermark import parse_since, warn_if_future


def make_source(args: dict, settings, how_many_flag: str = "--how-many", stop: Optional[Stop] = None):
    """The source the settings and flags name. `stop`: retry waits end, and downloads in progress
    are cut, once it is set (the feed takes nothing more after a signal)."""
    # Each source's module is imported only when it is the one read, and the HTTP stack only for
    # an upstream source or Logstash: every run starts a process, and a cron run's start is most
    # of its time (an offline run, from samples into NDJSON files, needs no HTTP at all).
    if settings.KCI_SOURCE != "api" and (args.get("--since") or args.get("--with-logs")):
        raise ConfigError("--since and --with-logs apply to --source api only")
    for flag, kind in (("--builds", BUILD), ("--lavas", LAVA), ("--boots", BOOT)):
        if args.get(flag):
            from kcing.sources.localfiles import LocalFiles
            return LocalFiles([(kind, path) for path in args["<file>"]], settings.KCI_MAX_OBJECT_BYTES,
                              date=a_document_date(args, "--date"))
    if settings.KCI_SOURCE == "samples":
        given = [flag for flag in ("--days", how_many_flag) if args.get(flag) is not None]
        if given:
            # Refused rather than ignored: the samples source replays the whole directory.
            raise ConfigError("%s does not apply to %s, which replays the whole samples directory"
                              % (" and ".join(given), source_named(args, "samples")))
        from kcing.sources.localfiles import SamplesDir
        return SamplesDir(settings.KCI_SAMPLES_DIR, settings.KCI_MAX_OBJECT_BYTES)
    from kcing.http import BodyReader, RetryPolicy, new_session, warn_cleartext_credentials
    from kcing.sources.requester import Requester
    from kcing.transport import check_ca_bundle
    stop = stop if stop is not None else Stop()
    check_ca_bundle("KCI_CA_BUNDLE", settings.KCI_CA_BUNDLE)
    session = new_session(pool_size=settings.KCI_THREADS + 2, verify=settings.KCI_CA_BUNDLE, netrc=False)
    reader = BodyReader(settings.KCI_DOWNLOAD_DEADLINE, settings.KCI_MAX_OBJECT_BYTES, abandon=stop.is_set)
    requester = Requester(session, RetryPolicy(attempts=settings.KCI_MAX_RETRIES, base=settings.KCI_RETRY_BACKOFF),
                          settings.KCI_TIMEOUT, sleep=stop.pause, reader=reader,
                          allowed_origins=settings.upstream_origins, give_up_after=settings.KCI_GIVE_UP_AFTER)
    if settings.KCI_SOURCE == "api":
        from kcing.sources.api import KernelCIApi
        if settings.KCI_API_TOKEN:
            warn_cleartext_credentials("the KernelCI API token (KCI_API_TOKEN)", {"KCI_API_URL": [settings.KCI_API_URL]})
        return KernelCIApi(requester, settings.KCI_API_URL, settings.KCI_API_STORAGE_URL, settings.KCI_API_TOKEN,
                           since=crawl_since(args), default_days=settings.KCI_DAYS,
                           overlap=timedelta(minutes=settings.KCI_API_OVERLAP_MINUTES),
                           page_size=settings.KCI_API_PAGE_SIZE, how_many=positive_int(args, how_many_flag),
                           with_logs=bool(args.get("--with-logs")))
    from kcing.sources.legacy import LegacyKernelCI
    how_many = positive_int(args, how_many_flag)  # the command line first, as for the other sources
    check_storage_url(settings)
    return LegacyKernelCI(requester, settings.frontend_url, settings.storage_url, settings.non_lava_labs,
                          days=settings.KCI_DAYS, how_many=how_many, page_size=settings.KCI_PAGE_SIZE,
                          retention_days=settings.DRP_DAYS)


def check_storage_url(settings) -> None:
    """Refuse to derive legacy storage's URL from a KCI_HOST that is an IP address: storage.<host>
    names no host then (`storage.192.0.2.7`), and every file of the crawl would fail, after its
    retries, as an unknown host."""
    if settings.KCI_STORAGE_URL:
        return
    host = urlsplit(settings.frontend_url).hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return
    raise ConfigError("KCI_HOST=%s is an IP address, from which no storage URL can be made (%s names no host): set "
                      "KCI_STORAGE_URL to the URL of the legacy storage" % (settings.KCI_HOST, settings.storage_url))


def source_named(args: dict, name: str) -> str:
    """How the user chose source `name`: by the flag, or by KCI_SOURCE (the environment or
    local_settings.py), which a message must name when no --source was given."""
    return "--source %s" % name if args.get("--source") is not None else "KCI_SOURCE=%s" % name


def crawl_since(args: dict, now=None):
    """Where --since or --days (never both: see the usage) start the API crawl; None lets the
    source resume from its watermark."""
    if args.get("--since"):
        since = parse_since(args["--since"])
        warn_if_future(since, now or datetime.now(timezone.utc),
                       "no node can have been updated since (a mistyped date or offset?)")
        return since
    days = positive_int(args, "--days", MAX_DAYS)
    if days is None:
        return None
    return (now or datetime.now(timezone.utc)) - timedelta(days=days)


def make_sink(args: dict, settings, stop: Optional[Stop] = None, kinds: Optional[Iterable[str]] = None):
    """The sink the settings and flags name. `stop`: retry waits end once it is set or failed (no
    retry starts then), and answers being read are cut once it is urgent (a second signal).
    `kinds`: those of the objects the run may send, when the source knows them (None: any)."""
    if args.get("--output"):
        from kcing.sinks.ndjson import NdjsonDirSink  # as the sources: imported when used
        return NdjsonDirSink(args["--output"], create=not args.get("--dry-run"),
                             max_file_bytes=settings.KCING_OUTPUT_MAX_BYTES)
    from kcing.http import BodyReader, RetryPolicy, warn_cleartext_credentials
    from kcing.sinks.logstash import MAX_ANSWER_BYTES, LogstashSink
    from kcing.transport import BadCaBundle, Transport
    auth = None
    if settings.LS_USER or settings.LS_PASSWORD:
        if not (settings.LS_USER and settings.LS_PASSWORD):
            raise ConfigError("LS_USER and LS_PASSWORD must be set together")
        auth = (settings.LS_USER, settings.LS_PASSWORD)
        # Only the inputs the run may post to: the API source never posts to ES_BOOT nor the
        # legacy one to ES_REGRESSION, and one left at its default http:// URL beside https://
        # inputs would have every run warn of a password it never sends there.
        posted_to = {ROUTE_SETTINGS[kind] for kind in (ROUTE_SETTINGS if kinds is None else kinds)}
        inputs = [name for name in dict.fromkeys(ROUTE_SETTINGS.values()) if name in posted_to]
        warn_cleartext_credentials("the Logstash password (LS_PASSWORD)",
                                   {name: getattr(settings, name) for name in inputs})
    stop = stop if stop is not None else Stop()
    try:
        transport = Transport(pool_size=settings.ES_PARALLEL_POSTS + 2, ca_bundle=settings.LS_CA_BUNDLE, auth=auth)
    except BadCaBundle as error:
        raise ConfigError("LS_CA_BUNDLE %s" % error) from None
    reader = BodyReader(settings.ES_POST_DEADLINE, MAX_ANSWER_BYTES, abandon=lambda: stop.urgent or stop.past_grace())
    return LogstashSink(logstash_routes(settings), transport,
                        RetryPolicy(attempts=settings.ES_MAX_RETRIES, base=settings.ES_RETRY_BACKOFF),
                        settings.ES_TIMEOUT, sleep=stop.pause, settings=ROUTE_SETTINGS, reader=reader, stopping=stop.ending)


def feed_options(settings, dry_run: bool) -> FeedOptions:
    workers = usable_cores() if settings.KCING_WORKERS == "auto" else settings.KCING_WORKERS
    return FeedOptions(threads=settings.KCI_THREADS, workers=workers, build_timeout=settings.KCING_BUILD_TIMEOUT,
                       posts_in_flight=settings.ES_PARALLEL_POSTS,
                       max_docs=settings.LS_PIPELINE_BATCH_SIZE, max_bytes=settings.LS_BATCH_MAX_BYTES,
                       queue_max_bytes=settings.ES_QUEUE_MAX_BYTES,
                       dry_run=dry_run)
