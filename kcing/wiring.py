"""Build the feed's parts from settings and flags: sources, sinks, the ledger, feed options.

Shared by the commands that feed (feed_es, gen_samples, reconcile --resend); no command logic here.
"""
from __future__ import annotations

import ipaddress
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import urlsplit

from kcing.building import usable_cores
from kcing.errors import ConfigError
from kcing.flags import a_document_date, positive_int
from kcing.http import BodyReader, RetryPolicy, new_session, warn_cleartext_credentials
from kcing.ledger.ledger import Ledger, check_ledger_path, ledger_exists
from kcing.pipeline import FeedOptions
from kcing.records import BOOT, BUILD, CHECKOUT, JOB, KBUILD, LAVA, NODE, REGRESSION, TEST
from kcing.runlock import RunLock
from kcing.settings import MAX_DAYS
from kcing.shutdown import Stop
from kcing.sinks import logstash_destination
from kcing.sinks.logstash import MAX_ANSWER_BYTES, LogstashSink
from kcing.sources.requester import Requester
from kcing.transport import BadCaBundle, Transport, check_ca_bundle
from kcing.watermark import parse_since, warn_if_future


def make_source(args: dict, settings, how_many_flag: str = "--how-many", stop: Optional[Stop] = None):
    """The source the settings and flags name. `stop`: retry waits end, and downloads in progress
    are cut, once it is set (the feed takes nothing more after a signal)."""
    # Each source's module is imported only when it is the one read: every run starts a process,
    # and a cron run's start is most of its time.
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


# kind -> the setting naming the Logstash inputs its documents go to. KernelCI API nodes go where
# the legacy documents of the same kinds go: builds to the build input, and jobs and tests (boot,
# test and log documents) to the LAVA one. Regressions, which legacy had not, have an input of
# their own.
ROUTE_SETTINGS = {BUILD: "ES_BUILD", LAVA: "ES_LAVA", BOOT: "ES_BOOT", CHECKOUT: "ES_BUILD", KBUILD: "ES_BUILD",
                  JOB: "ES_LAVA", TEST: "ES_LAVA", NODE: "ES_LAVA", REGRESSION: "ES_REGRESSION"}


def logstash_routes(settings) -> dict:
    """{kind: Logstash input URLs}."""
    return {kind: getattr(settings, name) for kind, name in ROUTE_SETTINGS.items()}


def logstash_destination_of(settings):
    """kind -> the ledger's name for the Logstash inputs configured for it."""
    routes = logstash_routes(settings)
    return lambda kind: logstash_destination(routes.get(kind, settings.ES_LAVA))


def no_ledger(settings, args: Optional[dict] = None) -> ConfigError:
    """The error of a command that reads a ledger when KCING_DB names none: a missing directory is
    said as such, since running feed_es first would not help. `args`: the command's flags, to
    name --db rather than KCING_DB, and not advise passing it, when it was passed."""
    directory = Path(settings.KCING_DB).expanduser().absolute().parent
    if not directory.is_dir():
        return ConfigError("no ledger at %s: directory %s %s (check KCING_DB or --db)"
                           % (settings.KCING_DB, directory, not_a_directory(directory)))
    by_flag = bool((args or {}).get("--db"))
    if not Path(settings.KCING_DB).expanduser().is_absolute():
        # The default `kcing.db` is read in the working directory: `kcing status` typed in one's
        # home, while cron's feed runs in /srv/kcing, is not a ledger to start with a feed_es
        # there (a second ledger, and everything sent again), but a directory to change to.
        return ConfigError("no ledger at %s yet (%s %s is relative to the working directory): run this where "
                           "feed_es runs, %s, or run `kcing feed_es` first"
                           % (Path(settings.KCING_DB).expanduser().absolute(), "--db" if by_flag else "KCING_DB",
                              settings.KCING_DB, "give --db the ledger's absolute path" if by_flag else "pass --db"))
    return ConfigError("no ledger at %s yet: run `kcing feed_es` first (or %s --db)"
                       % (settings.KCING_DB, "check" if by_flag else "pass"))


def check_ledger_directory(settings) -> None:
    """Before a run that creates the ledger: its directory must exist (kcing creates no directory
    for it), said of KCING_DB rather than of the lock file beside it."""
    directory = Path(settings.KCING_DB).expanduser().absolute().parent
    if not directory.is_dir():
        raise ConfigError("KCING_DB %s: directory %s %s; create it or point KCING_DB (or --db) "
                          "elsewhere" % (settings.KCING_DB, directory, not_a_directory(directory)))
    check_ledger_path(Path(settings.KCING_DB).expanduser())


def ledger_run_lock(settings) -> RunLock:
    """The run lock of the ledger KCING_DB names, whose path is checked first: the lock's file is
    made beside it, and `KCING_DB=/dev/null` left a /dev/null.lock in /dev."""
    check_ledger_path(Path(settings.KCING_DB).expanduser())
    return RunLock(settings.KCING_DB)


def not_a_directory(path: Path) -> str:
    """Why `path`, which should be a directory, is none: a file in its place is not "missing"."""
    return "is not a directory" if os.path.lexists(str(path)) else "does not exist"


def open_ledger(settings, dry_run: bool = False, stop: Optional[Stop] = None) -> Ledger:
    """The ledger at KCING_DB. A ledger from before destinations were recorded takes what it
    holds as sent to the Logstash inputs configured now. `stop`: once it is set, a write waits
    for another process's lock no longer than the batch in flight is waited for (its grace)."""
    # A dry run must not create or change anything, not even an empty ledger file.
    if dry_run and not ledger_exists(settings.KCING_DB):
        return Ledger.open(":memory:")
    return Ledger.open(settings.KCING_DB, wait=settings.KCING_DB_LOCK_WAIT,
                       earlier_destination=logstash_destination_of(settings),
                       earlier_watermark_destination=logstash_destinations_key(settings), unchanged=dry_run,
                       abandon_wait=stop.past_grace if stop is not None else (lambda: False))


def logstash_destinations_key(settings) -> str:
    """Every Logstash input configured: where the watermark of a run posting to them applies."""
    return logstash_destination({url for urls in logstash_routes(settings).values() for url in urls})


def feed_options(settings, dry_run: bool) -> FeedOptions:
    workers = usable_cores() if settings.KCING_WORKERS == "auto" else settings.KCING_WORKERS
    return FeedOptions(threads=settings.KCI_THREADS, workers=workers, build_timeout=settings.KCING_BUILD_TIMEOUT,
                       posts_in_flight=settings.ES_PARALLEL_POSTS,
                       max_docs=settings.LS_PIPELINE_BATCH_SIZE, max_bytes=settings.LS_BATCH_MAX_BYTES,
                       queue_max_bytes=settings.ES_QUEUE_MAX_BYTES,
                       dry_run=dry_run)
