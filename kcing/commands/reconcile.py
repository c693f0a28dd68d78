"""kcing reconcile: check that Elasticsearch holds what the ledger says was delivered, mark what
it lacks for sending again, and record the check as a run."""
from __future__ import annotations

import logging
from collections import Counter
from contextlib import ExitStack
from typing import Callable, Optional
from datetime import datetime, timedelta, timezone

from kcing import keptdays, reconcile as reconciling
from kcing.admin.elastic import make_client
from kcing.commands._shared import check_and_record, print_summary, run_feed
from kcing.errors import ConfigError, KcingError, NothingChecked, exit_status
from kcing.flags import utc_text
from kcing.ledger.ledger import Ledger
from kcing.ledger.location import ledger_exists
from kcing.ledgerfile import ledger_run_lock, no_ledger, open_ledger
from kcing.plural import counted, verb
from kcing.sinks import LOGSTASH, logstash_destination_of
from kcing.shutdown import Stop, stop_on_signals
from kcing.sources.localfiles import LocalFiles, SavedSamples
from kcing.watermark import parse_since, warn_if_future
from kcing.wiring import make_sink, make_source

log = logging.getLogger(__name__)

SUMMARY = "check that Elasticsearch holds every document of what the ledger marks delivered; send back what it lacks"

USAGE = """\
Usage:
  kcing reconcile [options] [--days=N | --since=DATE] [--dry-run] [--resend]

Ask Elasticsearch (ES_HOST) whether it holds every document of the objects the ledger marks
delivered to Logstash in the last --days (or since --since): Logstash answers 200 before
Elasticsearch indexes. Objects with missing documents go back to undelivered, so the next
feed_es sends them again; --resend does it at once. Prints per kind: checked, present,
missing, and the first missing ids. Documents in closed indices, indices with a read block or
whose primary shard is not assigned (red), aliases of several indices or data streams are not
checked (a line names them and what to do); objects whose missing documents are all in indices
with a write block are not marked.

Settings read (from the environment or ./local_settings.py; the README's table says each):
ES_HOST, ES_USER, ES_PASSWORD, ES_API_KEY, ES_CA_BUNDLE, ES_REQUEST_DEADLINE, ES_RETRY_BACKOFF,
KCI_DAYS, DRP_DAYS, KCING_DB, KCING_DB_LOCK_WAIT, KCING_PROGRESS_EVERY; ES_BUILD, ES_LAVA, ES_BOOT
and ES_REGRESSION, which name the Logstash inputs a ledger written before kcing recorded
destinations (schema 1 or 2) is upgraded as sent to, and with --resend where objects are posted;
with --resend, also what feed_es reads to fetch legacy objects and post them (KCI_*, LS_USER,
LS_PASSWORD or the ~/.netrc entry of an input's host, LS_CA_BUNDLE and the other delivery settings).

Options:
  --days=N             Check the objects delivered in the last N days (setting KCI_DAYS,
                       default 2).
  --since=DATE         Check the objects delivered since DATE (any date python-dateutil
                       reads that names its year, month and day, in one order only:
                       2024-10-16, not 10/12/2024, and a weekday only if it is that day's;
                       UTC unless it gives an offset such as +01:00).
  --dry-run            Check and report; mark nothing and send nothing.
  --resend             Send the objects with missing documents again now, fetched from the
                       URLs in the ledger (not for --source api objects, nor for objects
                       delivered through other Logstash inputs than ES_BUILD, ES_LAVA,
                       ES_BOOT and ES_REGRESSION name now: those are named).
  --threads=N          Concurrent downloads for --resend (setting KCI_THREADS, default 4);
                       refused without --resend.
  --batch-size=N       Documents per POST for --resend (setting LS_PIPELINE_BATCH_SIZE,
                       default 500); refused without --resend.
  --db=FILE            Ledger database (setting KCING_DB, default kcing.db).
  -d --debug           Log debug messages (every request, every retry decision).
  -l --log-file=FILE   Also write the log to FILE (for cron jobs).
  -q --quiet           Print only warnings and errors (for cron, which mails what a job
                       prints): no progress, and no summary unless the command fails;
                       with -l, FILE still gets everything.
  -h --help            Show this help.

Exit status: 0 everything checked is in Elasticsearch (and, with --resend, everything held as
missing was sent again); 1 some documents are missing, or objects are still held as missing; 2
usage or configuration error (an ES_HOST that redirects or is not Elasticsearch, a kcing index
the user may not read included); 3 Elasticsearch unreachable or refusing, or an answer of it too
large or unreadable (with --resend, Logstash unreachable or refusing too: what it did not take
stays held as missing); 4 another run holds the lock or the ledger's database lock; 5 the ledger
cannot be written (a full disk, a read-only file); 6 nothing could be checked (no object
delivered to Logstash in the window, or all of it past retention, in closed or unreadable
indices, or delivered before ids were kept); 130 stopped by a signal.

Examples:
  kcing reconcile --days 1                        # is what was delivered yesterday indexed?
  kcing reconcile --since 2024-10-16 --resend     # check since a date, re-send what is missing
"""


def run(args: dict, settings) -> int:
    """Check that Elasticsearch holds every document of the objects delivered in the window."""
    dry_run = bool(args.get("--dry-run"))
    for option in ("--threads", "--batch-size"):
        if args.get(option) is not None and not args.get("--resend"):
            # Refused rather than ignored: a cron line with it would be taken for one that re-sends.
            raise ConfigError("%s is for --resend (how it downloads and posts); without --resend reconcile only "
                              "checks" % option)
    # The command line first: a --since mistyped is said before whatever else is wrong.
    if args.get("--since"):
        since = parse_since(args["--since"])
        warn_if_future(since, datetime.now(timezone.utc), "no object can have been delivered since (a mistyped date or offset?)")
    else:
        # --days is applied to KCI_DAYS by the CLI: the window defaults to the crawl window.
        since = datetime.now(timezone.utc) - timedelta(days=settings.KCI_DAYS)
    if not ledger_exists(settings.KCING_DB):
        raise no_ledger(settings, args)
    client = make_client(settings)
    # The run's stop, which the re-send's sink and source wait on, as feed_es's do: after one
    # signal no retry is waited for and no download goes on, and a batch in flight has its grace.
    stop = Stop()
    # Made now: a Logstash setting it cannot use (LS_USER without LS_PASSWORD, LS_CA_BUNDLE) is
    # refused before the check marks anything, not after; by a dry run too, which tries out the
    # cron line (as feed_es's does), and would otherwise plan a re-send that the run refuses.
    sink = make_sink({}, settings, stop=stop) if args.get("--resend") else None
    # Where these settings send each kind: a re-send clears only the rows of that destination.
    destination_of = logstash_destination_of(settings)
    with ExitStack() as stack:
        if not dry_run:
            stack.enter_context(ledger_run_lock(settings))
        stack.enter_context(stop_on_signals(stop))
        ledger = open_ledger(settings, dry_run, stop)
        stack.callback(ledger.close)
        report = reconciling.Report(scope="objects delivered since %s" % utc_text(since),
                                    dry_run=dry_run)
        # Only what went to Logstash can be in Elasticsearch; NDJSON files are the user's to load.
        check_and_record(client, settings, ledger, report,
                         ledger.delivered_since(since, reconciling.CHUNK, destination_prefix=LOGSTASH), stop,
                         dry_run=dry_run, total=ledger.count_delivered_since(since, destination_prefix=LOGSTASH),
                         held_missing=lambda: _held(ledger, keptdays.day_start(report.first_kept)),
                         # The lines on objects held as missing that follow name that feed, with
                         # the earliest date of all those held, this check's included.
                         advise_refeed=False)
        # Midnight UTC of the first day drp keeps, as the check took it (DRP_DAYS, or a later day a
        # recorded drp run kept from). An object held as missing that is dated before it is given
        # up, as a feed gives up its earlier failures: its index is one drp deletes or deleted,
        # which a re-send would make again (an object listed a day after its date, by a lab late
        # to report, keeps its row a day longer than its index), and drp forgets its row in a day
        # or two.
        kept_from = keptdays.day_start(report.first_kept)
        resent = None  # the worst exit code of re-sending, when something was sent again
        # Not only what this check found: an earlier reconcile or feed_es --verify may have
        # marked objects missing that no run has sent again yet (a dry run marked nothing).
        held = _held(ledger, kept_from)
        if args.get("--resend"):
            if dry_run and report.missing + held:
                _print_plan(reconciling.resend_plan(Counter(ledger.missing_counts(kept_from=kept_from))
                                                    + Counter(report.found_missing), destination_of),
                            lambda name: _earliest_missing(name, report, ledger, kept_from))
                resent = 1  # a dry run sends nothing: they are still missing, as without --resend
            elif held:
                resent = _resend_recorded(settings, ledger, stop, report, sink, destination_of, kept_from)
        elif held:
            # They are no longer delivered, so this check did not look at them: without this, a
            # check after an earlier one found documents missing would read as all clear.
            _print_held(ledger, destination_of, kept_from)
            resent = 1
    if not report.total("checked") and resent is None:
        # A check of nothing must not read as success in cron.
        raise NothingChecked(_nothing_checked(report, since, settings))
    # Something was missing even when --resend sent it all again: say so to cron.
    return max(report.exit_code, resent or 0)


def _resend_recorded(settings, ledger: Ledger, stop, report, sink, destination_of, kept_from: datetime) -> int:
    """`_resend`, and the reconcile's row in the runs table closed again with the exit status
    re-sending gives the run when it is worse than the check's (Logstash down: `error 3`)."""
    try:
        worst = _resend(settings, ledger, stop, sink, destination_of, kept_from)
    except BaseException as error:
        _record_outcome(ledger, report, exit_status(error), kept_from)
        raise
    _record_outcome(ledger, report, worst, kept_from)
    return worst


def _record_outcome(ledger: Ledger, report, code: int, kept_from: datetime) -> None:
    """Close the reconcile's row again once re-sending is over. Closed before it as `missing`,
    counting every object held (so a kill in the middle leaves no `ok` behind), it now says what
    the re-send left held, and the run's outcome: `error N` when re-sending ended it."""
    if report.run_id is None:
        return
    try:
        report.held_missing = _held(ledger, kept_from)
        if code in (0, 1):
            outcome = report.outcome
            if outcome == "nothing checked" and code == 0:
                # Every object the check would have looked at was held missing, and is delivered
                # again: the run exits 0, and `nothing checked` is what a run that exits 6 records.
                outcome = "ok"
        else:
            outcome = "error %d" % code
        ledger.finish_run(report.run_id, outcome, report.as_counts())
    except KcingError as failure:  # the ledger itself failed: the error that ends the run goes on
        log.error("cannot record how reconcile run %d ended: %s", report.run_id, failure)


def _print_held(ledger: Ledger, destination_of, kept_from: datetime) -> None:
    """Say how many objects are held as missing, and what sends them again: `--resend`, but for a
    source whose objects it cannot fetch (the KernelCI API's), which a feed must list again, and
    for objects delivered through other Logstash inputs than these settings name, which only a
    `--resend` with the settings of the feed that delivered them sends: told otherwise, a user
    ran `--resend` and was told only then."""
    plan = reconciling.resend_plan(ledger.missing_counts(kept_from=kept_from), destination_of)
    resendable = plan.sendable + plan.unknown  # the unknown kinds: --resend says it skips them
    if resendable > 0:
        print("reconcile: %s held as missing in Elasticsearch (found by this check or an earlier "
              "one, not delivered since): `kcing reconcile --resend` sends %s again"
              % (counted(resendable, "object") + verb(resendable, " is", " are"), verb(resendable, "it", "them")))
    for name, count in sorted(plan.unfetchable.items()):
        print(_unfetchable_line(name, count, ledger.earliest_missing_date(name, destination_prefix=LOGSTASH,
                                                                          kept_from=kept_from)))
    for name, other in sorted(plan.elsewhere.items()):
        print(_elsewhere_line(name, other))


def _held(ledger: Ledger, kept_from: datetime) -> int:
    """The objects held as missing in Elasticsearch (found by this check or an earlier one, and
    not delivered since), whichever source they are of and wherever they were delivered, but for
    those dated before `kept_from` (see `run`)."""
    return sum(ledger.sources_with_missing(destination_prefix=LOGSTASH, kept_from=kept_from).values())


def _earliest_missing(source: str, report, ledger: Ledger, kept_from: datetime) -> Optional[datetime]:
    """The earliest date of the objects of `source` a dry run found missing (and did not mark)
    or the ledger already holds as missing: where a feed must list from to send them all."""
    held = ledger.sources_with_missing(destination_prefix=LOGSTASH, kept_from=kept_from).get(source)
    stored = (ledger.earliest_missing_date(source, destination_prefix=LOGSTASH, kept_from=kept_from) if held
              else reconciling.EPOCH_END)
    return reconciling.earliest(report.found_since.get(source, reconciling.EPOCH_END), stored)


def _print_plan(plan: reconciling.ResendPlan, since_of: Callable[[str], Optional[datetime]]) -> None:
    """What a dry run's --resend would do: the objects it would send, and those it would name
    instead, as the real run does."""
    print("reconcile: dry run: would re-send %s with missing documents" % counted(plan.sendable, "object"))
    for name, count in sorted(plan.unfetchable.items()):
        print(_unfetchable_line(name, count, since_of(name)))
    for name, other in sorted(plan.elsewhere.items()):
        print(_elsewhere_line(name, other))
    if plan.unknown:
        print("reconcile: %s held as missing %s of a kind kcing does not know; --resend would skip them"
              % (counted(plan.unknown, "object"), verb(plan.unknown, "is", "are")))


def _unfetchable_line(name: str, count: int, since: Optional[datetime]) -> str:
    return ("reconcile: %s of the %s source cannot be fetched again from the ledger alone, nor does a feed "
            "from the watermark list %s again; %s"
            % (counted(count, "object"), name, verb(count, "it", "them"), reconciling.refeed_command(name, since)))


def _elsewhere_line(name: str, other: dict) -> str:
    count = sum(other.values())
    return ("reconcile: %s held as missing %s delivered through other Logstash inputs than "
            "these settings send their kind to (%s): `kcing reconcile --resend` with the ES_BUILD, ES_LAVA, "
            "ES_BOOT and ES_REGRESSION of the feed that delivered %s sends %s again"
            % (counted(count, "%s object" % name), verb(count, "was", "were"), reconciling.named(other),
               verb(count, "it", "them"), verb(count, "it", "them")))


def _nothing_checked(report, since: datetime, settings) -> str:
    reasons = reconciling.unchecked_reasons(report, settings.DRP_DAYS)
    if not reasons:
        return ("nothing to check: no object was delivered to Logstash since %s (objects written with "
                "--output are not in Elasticsearch)" % utc_text(since))
    return "nothing could be checked: of the objects delivered since %s, %s" % (utc_text(since), " and ".join(reasons))


def _resend(settings, ledger: Ledger, stop, sink, destination_of, kept_from: datetime) -> int:
    """reconcile --resend: fetch every object the ledger holds as missing in Elasticsearch again
    from the ledger's URLs and feed it through the usual pipeline; return the worst exit code."""
    worst = 0
    elsewhere = reconciling.held_elsewhere(ledger.missing_counts(kept_from=kept_from), destination_of)
    for name, count in sorted(ledger.sources_with_missing(destination_prefix=LOGSTASH, kept_from=kept_from).items()):
        if name not in reconciling.RESENDABLE:
            print(_unfetchable_line(name, count, ledger.earliest_missing_date(name, destination_prefix=LOGSTASH,
                                                                              kept_from=kept_from)))
            worst = 1  # still missing in Elasticsearch: cron must hear of it
            continue
        other = elsewhere.get(name, {})
        if other:
            # Their rows are cleared by a delivery to their own inputs only: sent through these,
            # they would get rows of their own and stay held for ever.
            print(_elsewhere_line(name, other))
            worst = 1
            count -= sum(other.values())
            if count <= 0:
                continue
        if name == "legacy":
            fetcher = make_source({}, settings.with_overrides({"KCI_SOURCE": "legacy"}), stop=stop)
        elif name == "samples":
            fetcher = SavedSamples(settings.KCI_MAX_OBJECT_BYTES)
        else:
            fetcher = LocalFiles([], settings.KCI_MAX_OBJECT_BYTES)
        print("reconcile: re-sending %s" % counted(count, "%s object" % name), flush=True)
        summary = run_feed(reconciling.MissingObjects(ledger, name, fetcher, destination_of, kept_from), ledger, sink,
                           settings, False, stop)
        print_summary(summary, sink.name, False)
        if summary.stopped_by is not None:
            raise summary.stopped_by
        worst = max(worst, summary.exit_code)
    if _held(ledger, kept_from):
        # Whatever a re-send left held (an object of a kind kcing does not know, skipped with a
        # warning) is still missing in Elasticsearch: exit 0 says everything was sent again.
        worst = max(worst, 1)
    return worst
