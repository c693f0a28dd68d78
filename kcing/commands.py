"""One short function per command: build objects from settings, call one function, report."""
from __future__ import annotations

import json
import logging
import os
from contextlib import ExitStack
import subprocess
import time
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

from kcing import metrics, status as status_report
from kcing.building import usable_cores
from kcing.errors import ConfigError, KcingError
from kcing.flags import a_date, positive_int, seconds
from kcing.http import BodyReader, RetryPolicy, new_session, warn_cleartext_credentials
from kcing.ledger.ledger import Ledger
from kcing.pipeline import FeedOptions, feed
from kcing.records import BOOT, BUILD, CHECKOUT, JOB, KBUILD, LAVA, REGRESSION, TEST
from kcing.runlock import RunLock
from kcing.samples import SamplesWriter, gen_samples as save_samples
from kcing.shutdown import Stop, stop_on_signals
from kcing.sinks.logstash import MAX_ANSWER_BYTES, LogstashSink
from kcing.sinks.ndjson import NdjsonDirSink
from kcing.sinks.throttle import RateLimiter
from kcing.sources.api import KernelCIApi
from kcing.sources.legacy import LegacyKernelCI
from kcing.sources.localfiles import LocalFiles, SamplesDir
from kcing.sources.requester import Requester
from kcing.watermark import parse_since

log = logging.getLogger(__name__)


def make_source(args: dict, settings, how_many_flag: str = "--how-many", stop: Optional[Stop] = None):
    """The source the settings and flags name. `stop`: retry waits end, and downloads in progress
    are cut, once it is set (the feed takes nothing more after a signal)."""
    if settings.KCI_SOURCE != "api" and (args.get("--since") or args.get("--with-logs")):
        raise ConfigError("--since and --with-logs apply to --source api only")
    for flag, kind in (("--builds", BUILD), ("--lavas", LAVA), ("--boots", BOOT)):
        if args.get(flag):
            return LocalFiles([(kind, path) for path in args["<file>"]], date=a_date(args, "--date"))
    if settings.KCI_SOURCE == "samples":
        return SamplesDir(settings.KCI_SAMPLES_DIR)
    stop = stop if stop is not None else Stop()
    session = new_session(pool_size=settings.KCI_THREADS + 2, verify=settings.KCI_CA_BUNDLE)
    reader = BodyReader(settings.KCI_DOWNLOAD_DEADLINE, settings.KCI_MAX_OBJECT_BYTES, abandon=stop.is_set)
    requester = Requester(session, RetryPolicy(attempts=settings.KCI_MAX_RETRIES, base=settings.KCI_RETRY_BACKOFF),
                          settings.KCI_TIMEOUT, sleep=stop.pause, reader=reader,
                          allowed_origins=settings.upstream_origins)
    if settings.KCI_SOURCE == "api":
        return KernelCIApi(requester, settings.KCI_API_URL, settings.KCI_API_STORAGE_URL, settings.KCI_API_TOKEN,
                           since=crawl_since(args), default_days=settings.KCI_DAYS,
                           overlap=timedelta(minutes=settings.KCI_API_OVERLAP_MINUTES),
                           page_size=settings.KCI_API_PAGE_SIZE, how_many=positive_int(args, how_many_flag),
                           with_logs=bool(args.get("--with-logs")))
    return LegacyKernelCI(requester, settings.frontend_url, settings.storage_url, settings.non_lava_labs,
                          days=settings.KCI_DAYS, how_many=positive_int(args, how_many_flag),
                          page_size=settings.KCI_PAGE_SIZE)


def crawl_since(args: dict, now=None):
    """Where --since or --days (never both: see the usage) start the API crawl; None lets the
    source resume from its watermark."""
    if args.get("--since"):
        return parse_since(args["--since"])
    days = positive_int(args, "--days")
    if days is None:
        return None
    return (now or datetime.now(timezone.utc)) - timedelta(days=days)


def make_sink(args: dict, settings, stop: Optional[Stop] = None):
    """The sink the settings and flags name. `stop`: retry waits end once it is set, and answers
    being read are cut once it is urgent (a second signal)."""
    if args.get("--output"):
        return NdjsonDirSink(args["--output"])
    auth = None
    if settings.LS_USER or settings.LS_PASSWORD:
        if not (settings.LS_USER and settings.LS_PASSWORD):
            raise ConfigError("LS_USER and LS_PASSWORD must be set together")
        auth = (settings.LS_USER, settings.LS_PASSWORD)
        inputs = ("ES_BUILD", "ES_LAVA", "ES_BOOT", "ES_REGRESSION")
        warn_cleartext_credentials("the Logstash password (LS_PASSWORD)",
                                   {name: getattr(settings, name) for name in inputs})
    # KernelCI API nodes go where the legacy documents of the same kinds go: builds to the
    # build input, and jobs and tests (boot, test and log documents) to the LAVA one. Regressions,
    # which legacy had not, have an input of their own.
    routes = {BUILD: settings.ES_BUILD, LAVA: settings.ES_LAVA, BOOT: settings.ES_BOOT,
              CHECKOUT: settings.ES_BUILD, KBUILD: settings.ES_BUILD, JOB: settings.ES_LAVA, TEST: settings.ES_LAVA,
              REGRESSION: settings.ES_REGRESSION}
    names = {BUILD: "ES_BUILD", LAVA: "ES_LAVA", BOOT: "ES_BOOT", CHECKOUT: "ES_BUILD", KBUILD: "ES_BUILD",
             JOB: "ES_LAVA", TEST: "ES_LAVA", REGRESSION: "ES_REGRESSION"}
    stop = stop if stop is not None else Stop()
    session = new_session(pool_size=settings.ES_PARALLEL_POSTS + 2, verify=settings.LS_CA_BUNDLE)
    reader = BodyReader(settings.ES_POST_DEADLINE, MAX_ANSWER_BYTES, abandon=lambda: stop.urgent)
    return LogstashSink(routes, session, RetryPolicy(attempts=settings.ES_MAX_RETRIES, base=settings.ES_RETRY_BACKOFF),
                        settings.ES_TIMEOUT, auth, sleep=stop.pause, settings=names, reader=reader)


def open_ledger(settings, dry_run: bool) -> Ledger:
    # A dry run must not create or change anything, not even an empty ledger file.
    if dry_run and not Path(settings.KCING_DB).exists():
        return Ledger.open(":memory:")
    return Ledger.open(settings.KCING_DB, wait=settings.KCING_DB_LOCK_WAIT)


def feed_options(settings, dry_run: bool) -> FeedOptions:
    workers = usable_cores() if settings.KCING_WORKERS == "auto" else settings.KCING_WORKERS
    return FeedOptions(threads=settings.KCI_THREADS, workers=workers, posts_in_flight=settings.ES_PARALLEL_POSTS,
                       max_docs=settings.LS_PIPELINE_BATCH_SIZE, max_bytes=settings.LS_BATCH_MAX_BYTES,
                       dry_run=dry_run)


def run_feed(source, ledger: Ledger, sink, settings, dry_run: bool, stop, on_delivered=lambda obj: None):
    """One feed run recorded in the ledger's runs table (unless a dry run); return its summary."""
    limiter = RateLimiter(settings.ES_LOAD_INTERVAL, settings.ES_MAX_DOCS_PER_SECOND)
    if dry_run:
        return feed(source, ledger, sink, feed_options(settings, dry_run), limiter, on_planned=_print_plan,
                    stop=stop, on_delivered=on_delivered)
    # Whatever ends the run (but SIGKILL), its row gets an outcome: never "running or killed".
    with ledger.recorded_run("feed_es", {"source": source.name}) as run:
        summary = feed(source, ledger, sink, feed_options(settings, dry_run), limiter, on_planned=_print_plan,
                       stop=stop, on_delivered=on_delivered)
        run.outcome = "ok" if summary.exit_code == 0 else "error %d" % summary.exit_code
        run.counts = dict(summary.as_dict(), source=source.name)
    return summary


def feed_es(args: dict, settings) -> int:
    dry_run = bool(args.get("--dry-run"))
    verify = bool(args.get("--verify")) and not dry_run
    if args.get("--verify") and args.get("--output"):
        raise ConfigError("--verify checks Elasticsearch after posting to Logstash; it does not apply to --output")
    delay = seconds(args, "--verify-delay", settings.ES_VERIFY_DELAY)
    stop = Stop()
    source = make_source(args, settings, stop=stop)
    sink = make_sink(args, settings, stop=stop)
    if verify:
        # Imported here: the Elasticsearch client takes a quarter of a second to import, which
        # every cron run without --verify would pay.
        from kcing import reconcile_command
        client = reconcile_command.make_client(settings)
    delivered: list = []
    with ExitStack() as stack:
        if not dry_run:
            stack.enter_context(RunLock(settings.KCING_DB))
        stack.enter_context(stop_on_signals(stop))
        ledger = open_ledger(settings, dry_run)
        stack.callback(ledger.close)
        summary = run_feed(source, ledger, sink, settings, dry_run, stop,
                           on_delivered=(lambda obj: delivered.append(obj.key)) if verify else (lambda obj: None))
        _print_summary(summary, sink.name, dry_run)
        if args.get("--metrics") and not dry_run:
            _write_metrics(args["--metrics"], summary, source.name, ledger)
        if summary.stopped_by is not None:
            raise summary.stopped_by
        if not verify:
            return summary.exit_code
        report = reconcile_command.verify(client, settings, ledger, delivered, delay, stop)
    return max(summary.exit_code, report.exit_code)


def _write_metrics(path: str, summary, source_name: str, ledger: Ledger) -> None:
    last_success = ledger.last_success("feed_es", source_name)
    text = metrics.render(summary, source_name, summary.exit_code, time.time(),
                          last_success.timestamp() if last_success else None)
    try:
        metrics.write(path, text)
    except KcingError as error:
        # The run itself is done and recorded: a metrics file that cannot be written must not
        # turn its outcome into a failure, but it must be seen.
        log.error("cannot write the metrics file: %s", error)


def _print_plan(obj) -> None:
    print("would fetch %-5s %s %s" % (obj.kind, obj.upstream_id, obj.url))


def _print_summary(summary, sink_name: str, dry_run: bool) -> None:
    s = summary
    if dry_run:
        print("dry run: listed %d, %d already delivered, %d would be fetched"
              % (s.listed, s.skipped, s.listed - s.skipped - s.rejected))
    else:
        rate = s.documents / s.elapsed if s.elapsed > 0 else 0.0
        print("feed_es: listed %d, skipped %d (already delivered), downloaded %d, delivered %d, rejected %d, "
              "failed %d%s" % (s.listed, s.skipped, s.downloaded, s.delivered, s.rejected, s.failed,
                               ", too large for Logstash %d" % s.too_large if s.too_large else ""))
        print("feed_es: %d documents in %d batches (%.1f MB) to %s in %.1fs (%.0f documents/s)"
              % (s.documents, s.batches, s.bytes_sent / 1e6, sink_name, s.elapsed, rate))
    for problem in s.problems[:20]:
        print("  problem: %s" % problem)
    if len(s.problems) > 20:
        print("  ... and %d more problems (see the log)" % (len(s.problems) - 20))


def gen_samples(args: dict, settings) -> int:
    if settings.KCI_SOURCE == "samples":
        raise ConfigError("gen_samples saves from an upstream source; --source samples would copy the samples onto themselves")
    source = make_source(args, settings, how_many_flag="--sample-size")
    writer = SamplesWriter(settings.KCI_SAMPLES_DIR, source.name)
    # Two runs writing one manifest would lose entries: lock the samples directory.
    with RunLock(str(Path(settings.KCI_SAMPLES_DIR) / "manifest.json")):
        run = save_samples(source, writer, threads=settings.KCI_THREADS)
    print("gen_samples: %d saved, %d already present, %d failed, %d refused (unsafe or unusable) in %s"
          % (run.saved, run.unchanged, run.failed, run.refused, settings.KCI_SAMPLES_DIR))
    return 1 if (run.failed or run.refused) else 0


def status(args: dict, settings) -> int:
    if not Path(settings.KCING_DB).exists():
        raise ConfigError("no ledger at %s yet: run `kcing feed_es` first (or pass --db)" % settings.KCING_DB)
    ledger = Ledger.open(settings.KCING_DB, wait=settings.KCING_DB_LOCK_WAIT)
    try:
        data = status_report.report(ledger)
    finally:
        ledger.close()
    print(json.dumps(data, indent=2, sort_keys=True) if args.get("--json") else status_report.as_text(data))
    return 0


def run_tests(args: dict, settings) -> int:
    """Run the test suite from the project checkout, as the original tool's `test` command did."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "tests").is_dir():
        raise ConfigError("the tests are not installed here; run `kcing test` from a kcing checkout")
    return subprocess.call([sys.executable, "-m", "pytest", *args.get("<pytest-arg>", [])], cwd=root,
                           env=dict(os.environ))
