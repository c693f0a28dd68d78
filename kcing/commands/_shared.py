"""What several commands print or record the same way: a feed run and its summary, a
reconcile check. Commands import this module; services never do."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Callable, Optional

from kcing import keptdays
from kcing.commands import said
from kcing.errors import KcingError
from kcing.logs import logged_line
from kcing.ledger.ledger import Ledger
from kcing.pipeline import feed
from kcing.plural import counted
from kcing.progress import Progress
from kcing.sinks.throttle import RateLimiter
from kcing.wiring import feed_options

log = logging.getLogger(__name__)


def run_feed(source, ledger: Ledger, sink, settings, dry_run: bool, stop, on_delivered=lambda obj: None,
             on_recorded=lambda row_ids: None):
    """One feed run recorded in the ledger's runs table (unless a dry run); return its summary."""
    # Paced by waiting on the stop, in short slices (a signal's handler runs in this, the main,
    # thread), and no longer than until a stop: a pause before a batch lasts the batch's size
    # over ES_MAX_DOCS_PER_SECOND.
    limiter = RateLimiter(settings.ES_LOAD_INTERVAL, settings.ES_MAX_DOCS_PER_SECOND, sleep=stop.wait)
    if dry_run:
        # A dry run prints its plan on stdout line by line; a live line would only get in its way.
        return feed(source, ledger, sink, feed_options(settings, dry_run), limiter, on_planned=print_plan,
                    stop=stop, on_delivered=on_delivered,
                    progress=Progress("feed_es", live=False, every=settings.KCING_PROGRESS_EVERY))
    # Whatever ends the run (but SIGKILL), its row gets an outcome: never "running or killed".
    # Which feed it was: several (sources, --output directories) may share one ledger.
    where = {"source": source.name, "destination": getattr(sink, "destinations_key", lambda: "")()}
    # And what the source needs of it later: where the legacy one built the URLs its rows hold
    # (recorded as the run starts, so a run killed half way leaves it too).
    where.update(getattr(source, "recorded_with_run", {}))
    summary = None
    try:
        with ledger.recorded_run("feed_es", where) as run:
            summary = feed(source, ledger, sink, feed_options(settings, dry_run), limiter, on_planned=print_plan,
                           stop=stop, on_delivered=on_delivered, on_recorded=on_recorded,
                           progress=Progress("feed_es", every=settings.KCING_PROGRESS_EVERY))
            summary.run_id = run.id
            run.outcome = "ok" if summary.exit_code == 0 else "error %d" % summary.exit_code
            run.counts = dict(summary.as_dict(), **where)
    except KcingError as error:
        if summary is None:
            raise
        # The feed is over and its summary stands; only the write closing its row failed (the
        # disk under the ledger still full, the ledger locked): the run ends with that error,
        # or with the one that stopped it, and still says what it did and writes its metrics.
        if summary.stopped_by is None:
            summary.stopped_by = error
        elif str(summary.stopped_by) != str(error):
            log.error("cannot record how the feed_es run ended: %s", error)
    return summary


def print_plan(obj) -> None:
    # The URL of a local file is its name as given, which may hold a line break or an escape.
    said("would fetch %-5s %s %s" % (obj.kind, obj.upstream_id, obj.url))


def print_summary(summary, sink_name: str, dry_run: bool) -> None:
    s = summary
    # `listed` is what upstream listed, as its own count would say; the earlier failures the
    # ledger adds (the legacy crawl's, out of its window) are said apart, after the known counts.
    if dry_run:
        print("dry run: listed %d, %d already delivered, %d would be fetched%s"
              % (s.listed, s.skipped, s.listed + s.retried - s.skipped - s.rejected,
                 ", %d of them %s" % (s.retried, "an earlier failure" if s.retried == 1 else "earlier failures")
                 if s.retried else ""))
    else:
        retried = ", retried %s" % counted(s.retried, "earlier failure") if s.retried else ""
        rate = s.documents / s.elapsed if s.elapsed > 0 else 0.0
        print("feed_es: listed %d, skipped %d (already delivered), downloaded %d, delivered %d, rejected %d, "
              "failed %d%s%s" % (s.listed, s.skipped, s.downloaded, s.delivered, s.rejected, s.failed,
                                 ", too large for Logstash %d" % s.too_large if s.too_large else "", retried))
        print("feed_es: %s in %s (%.1f MB) to %s in %.1fs (%.0f documents/s)"
              % (counted(s.documents, "document"), counted(s.batches, "batch", "batches"), s.bytes_sent / 1e6,
                 sink_name, s.elapsed, rate))
    for problem in s.problems[:20]:
        # Each names an object and quotes why, upstream's words among them: one line, bounded, as
        # the log has it.
        print("  problem: %s" % logged_line(problem))
    shown = min(len(s.problems), 20)
    if s.problem_count > shown:
        print("  ... and %s (see the log)" % counted(s.problem_count - shown, "more problem"))


def check_and_record(client, settings, ledger: Ledger, report, chunks, stop, dry_run: bool = False,
                     total: Optional[int] = None, held_missing: Optional[Callable[[], int]] = None,
                     advise_refeed: bool = True):
    """Run a reconcile over `chunks` of delivered rows, print it, and record it as a run.
    `advise_refeed`: see `reconcile.summary_lines`.

    `held_missing`, when given, counts after the check the objects missing in Elasticsearch that
    the run leaves so: the row's outcome is `missing` while there are any."""
    # Imported here: the Elasticsearch client takes a quarter of a second to import, which
    # every feed_es run from cron would pay.
    from kcing import reconcile as reconciling
    today = datetime.now(timezone.utc).date()
    # A drp run with a shorter --drp-days than this DRP_DAYS deleted more: its indices are not
    # missing, and sending their objects again would bring back what it deleted.
    first_kept = keptdays.first_kept(today, settings.DRP_DAYS, ledger.deleted_before())
    report.kept_by_drp = first_kept > keptdays.cutoff_day(today, settings.DRP_DAYS)
    report.first_kept = first_kept
    checker = reconciling.Reconciler(client, settings.ES_HOST, ledger, report, mark=not dry_run,
                                     first_kept=first_kept)
    if dry_run:
        checker.run(chunks, stop, Progress("reconcile", every=settings.KCING_PROGRESS_EVERY), total)
    else:
        with ledger.recorded_run("reconcile") as run:
            report.run_id = run.id
            try:
                checker.run(chunks, stop, Progress("reconcile", every=settings.KCING_PROGRESS_EVERY), total)
                if held_missing is not None:
                    report.held_missing = held_missing()
            finally:
                run.counts = report.as_counts()
            run.outcome = report.outcome
    for line in reconciling.summary_lines(report, settings.ES_HOST, advise_refeed):
        print(line)
    reconciling.warn_unchecked(report)
    return report
