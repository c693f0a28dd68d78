"""reconcile, and feed_es --verify: check that Elasticsearch holds what the ledger says was
delivered, mark what it lacks for sending again, and record the check as a run."""
from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kcing import reconcile as reconciling
from kcing.admin.elastic import make_client
from kcing.admin.retention import cutoff_day
from kcing.commands import _print_summary, make_sink, make_source, run_feed
from kcing.errors import ConfigError, Interrupted
from kcing.ledger.ledger import Ledger
from kcing.runlock import RunLock
from kcing.shutdown import stop_on_signals
from kcing.sources.localfiles import LocalFiles
from kcing.watermark import parse_since

__all__ = ["make_client", "verify", "reconcile"]


def verify(client, settings, ledger: Ledger, delivered: list, delay: float, stop) -> "reconciling.Report":
    """feed_es --verify: after `delay`, check the objects this run delivered (no window query)."""
    if delivered and delay > 0:
        print("feed_es: verifying %d objects in Elasticsearch in %.0fs" % (len(delivered), delay), flush=True)
        if stop.wait(delay):
            raise Interrupted("stopped by a signal before verifying; run `kcing reconcile` to check this run")
    report = reconciling.Report(scope="the %d objects this feed_es run delivered" % len(delivered))
    check_and_record(client, settings, ledger, report, ledger.delivered_rows(delivered), stop)
    return report


def check_and_record(client, settings, ledger: Ledger, report, chunks, stop, dry_run: bool = False):
    """Run a reconcile over `chunks` of delivered rows, print it, and record it as a run."""
    first_kept = cutoff_day(datetime.now(timezone.utc).date(), settings.DRP_DAYS)
    checker = reconciling.Reconciler(client, settings.ES_HOST, ledger, report, mark=not dry_run,
                                     first_kept=first_kept)
    if dry_run:
        checker.run(chunks, stop)
    else:
        with ledger.recorded_run("reconcile") as run:
            try:
                checker.run(chunks, stop)
            finally:
                run.counts = report.as_counts()
            run.outcome = report.outcome
    for line in reconciling.summary_lines(report, settings.ES_HOST):
        print(line)
    return report


def reconcile(args: dict, settings) -> int:
    """Check that Elasticsearch holds every document of the objects delivered in the window."""
    dry_run = bool(args.get("--dry-run"))
    if not Path(settings.KCING_DB).exists():
        raise ConfigError("no ledger at %s yet: run `kcing feed_es` first (or pass --db)" % settings.KCING_DB)
    if args.get("--since"):
        since = parse_since(args["--since"])
    else:
        # --days is applied to KCI_DAYS by the CLI: the window defaults to the crawl window.
        since = datetime.now(timezone.utc) - timedelta(days=settings.KCI_DAYS)
    client = make_client(settings)
    with ExitStack() as stack:
        if not dry_run:
            stack.enter_context(RunLock(settings.KCING_DB))
        stop = stack.enter_context(stop_on_signals())
        ledger = Ledger.open(settings.KCING_DB, wait=settings.KCING_DB_LOCK_WAIT)
        stack.callback(ledger.close)
        report = reconciling.Report(scope="objects delivered since %s" % since.strftime("%Y-%m-%d %H:%M UTC"),
                                    dry_run=dry_run)
        check_and_record(client, settings, ledger, report, ledger.delivered_since(since, reconciling.CHUNK), stop,
                         dry_run=dry_run)
        resent = 0
        if args.get("--resend"):
            # Not only what this check found: an earlier reconcile or feed_es --verify may have
            # marked objects missing that no run has sent again yet (a dry run marked nothing).
            held = sum(ledger.sources_with_missing().values())
            if dry_run and report.missing + held:
                print("reconcile: dry run: would re-send the %d objects with missing documents"
                      % (report.missing + held))
            elif held:
                resent = _resend(settings, ledger, stop)
    # Something was missing even when --resend sent it all again: say so to cron.
    return max(report.exit_code, resent)


def _resend(settings, ledger: Ledger, stop) -> int:
    """reconcile --resend: fetch every object the ledger holds as missing in Elasticsearch again
    from the ledger's URLs and feed it through the usual pipeline; return the worst exit code."""
    sink = None
    worst = 0
    for name, count in sorted(ledger.sources_with_missing().items()):
        if name not in reconciling.RESENDABLE:
            print("reconcile: %d objects of the %s source cannot be fetched again from the ledger alone; "
                  "`kcing feed_es --source %s --since DATE` (DATE before their last update) sends them again"
                  % (count, name, name))
            worst = 1  # still missing in Elasticsearch: cron must hear of it
            continue
        if sink is None:
            sink = make_sink({}, settings)
        fetcher = make_source({}, settings.with_overrides({"KCI_SOURCE": "legacy"})) if name == "legacy" \
            else LocalFiles([])
        print("reconcile: re-sending %d %s objects" % (count, name), flush=True)
        summary = run_feed(reconciling.MissingObjects(ledger, name, fetcher), ledger, sink, settings, False, stop)
        _print_summary(summary, sink.name, False)
        if summary.stopped_by is not None:
            raise summary.stopped_by
        worst = max(worst, summary.exit_code)
    return worst
