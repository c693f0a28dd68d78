"""kcing feed_es: crawl upstream, skip what was delivered, send the rest to Logstash or NDJSON files."""
from __future__ import annotations

import logging
import os
import time
from array import array
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Optional, Sequence

from kcing import metrics
from kcing.commands._shared import check_and_record, print_summary, run_feed
from kcing.errors import ConfigError, Interrupted, KcingError, NothingChecked, exit_status
from kcing.files import is_directory, ledger_in_the_way, not_replaceable
from kcing.flags import seconds
from kcing.ledger.ledger import Ledger
from kcing.ledgerfile import check_ledger_directory, not_a_directory, open_ledger
from kcing.plural import counted
from kcing.runlock import RunLock
from kcing.settings import warn_crawl_past_retention
from kcing.shutdown import Stop, stop_on_signals
from kcing.wiring import make_source, make_sink

log = logging.getLogger(__name__)

SUMMARY = "crawl upstream, skip what was delivered, post new documents to Logstash (or --output DIR)"

USAGE = """\
Usage:
  kcing feed_es [options] [--source=NAME] [--days=N | --how-many=N | --since=DATE] [--with-logs]
                [--samples-dir=DIR] [--output=DIR] [--dry-run] [--verify] [--verify-delay=SECONDS]
                [--metrics=FILE]
  kcing feed_es [options] (--builds | --lavas | --boots) <file>... [--date=DATE] [--output=DIR]
                [--dry-run] [--verify] [--verify-delay=SECONDS] [--metrics=FILE]

Crawl upstream, skip what the ledger says was delivered to this run's destination, turn each new
file into Elasticsearch documents and post them in batches to the Logstash inputs (ES_BUILD,
ES_LAVA, ES_BOOT, ES_REGRESSION). With --output, write NDJSON files for the Elasticsearch _bulk API instead.
With --verify, then check that Elasticsearch holds what was delivered, as reconcile does.

Settings read (from the environment or ./local_settings.py; the README's table says each):
upstream, every KCI_* setting (KCI_SOURCE, KCI_HOST, KCI_SCHEME, KCI_STORAGE_URL, KCI_API_URL,
KCI_API_TOKEN, KCI_DAYS, KCI_THREADS, KCI_TIMEOUT, ...); delivery, ES_BUILD, ES_LAVA, ES_BOOT,
ES_REGRESSION, LS_USER, LS_PASSWORD (without them, the ~/.netrc entry of an input's host; NETRC
names another file), LS_CA_BUNDLE, LS_PIPELINE_BATCH_SIZE, LS_BATCH_MAX_BYTES, ES_PARALLEL_POSTS,
ES_MAX_RETRIES, ES_RETRY_BACKOFF, ES_TIMEOUT, ES_POST_DEADLINE, ES_LOAD_INTERVAL,
ES_MAX_DOCS_PER_SECOND, ES_QUEUE_MAX_BYTES; with --output, KCING_OUTPUT_MAX_BYTES;
KCING_WORKERS, KCING_BUILD_TIMEOUT, KCING_DB, KCING_DB_LOCK_WAIT, KCING_PROGRESS_EVERY; DRP_DAYS (a
legacy crawl, unless given --how-many, warns when it is less than KCI_DAYS, where drp warns when it
does not exceed it, and tries no object that failed before again once its day is past the
retention; one storage answered 404 or 410 for, it tries again only while its day is in the
window); with --verify, ES_HOST, ES_USER, ES_PASSWORD, ES_API_KEY, ES_CA_BUNDLE,
ES_REQUEST_DEADLINE and ES_VERIFY_DELAY.

Options:
  --source=NAME        legacy (a legacy KernelCI's _ajax API + storage at KCI_HOST; kernelci.org's
                       was retired in 2024), samples (a saved samples directory) or api (the
                       current KernelCI API at KCI_API_URL; each run resumes from the ledger's
                       watermark) (setting KCI_SOURCE, default legacy).
  --days=N             Crawl the last N days (setting KCI_DAYS, default 2). Not for the
                       samples source, which replays the whole directory. With --source
                       api, the setting is only how far back a first run (no watermark
                       yet) lists; --days N lists the last N days instead of from the
                       watermark.
  --how-many=N         Instead of --days, take the newest N objects of each kind (not for
                       the samples source; with --source api, the newest N of the nodes it
                       lists: updated since the watermark, or in the last KCI_DAYS days).
  --since=DATE         With --source api: list nodes updated since DATE (any date
                       python-dateutil reads that names its year, month and day, in one
                       order only: 2024-10-16, not 10/12/2024, and a weekday only if it is
                       that day's; UTC unless it gives an offset such as +01:00), not since
                       the watermark.
  --with-logs          With --source api: also fetch the logs documents need: a LAVA job's
                       callback (boot details, one log document per line), a build.log.
  --threads=N          Concurrent downloads (setting KCI_THREADS, default 4).
  --workers=N          Processes building documents while feeding; 1 builds them in kcing's own
                       process but for a file of 4 MiB or more, which one worker builds, 0 every
                       file (setting KCING_WORKERS, default auto: one per usable core).
  --samples-dir=DIR    The directory --source samples replays (setting KCI_SAMPLES_DIR,
                       default samples); not for the other sources.
  --output=DIR         Write NDJSON _bulk files into DIR instead of posting to Logstash.
  --batch-size=N       Documents per POST (setting LS_PIPELINE_BATCH_SIZE, default 500).
  --dry-run            Show what would be fetched and sent; change nothing.
  --verify             After the run, wait --verify-delay, then check that Elasticsearch
                       (ES_HOST) holds every document this run delivered; exit 1 if some are
                       missing (their objects go back to undelivered). Not with --dry-run
                       or --output, which deliver nothing to Elasticsearch.
  --verify-delay=SECONDS  How long --verify waits for Logstash and Elasticsearch first
                       (setting ES_VERIFY_DELAY, default 30).
  --metrics=FILE       Write the run's figures to FILE in the Prometheus text format, for a
                       node exporter's textfile collector (e.g. .../textfile/kcing.prom).
                       A --dry-run leaves FILE as it is.
  --builds             The <file>s are build.json files.
  --lavas              The <file>s are lava-json-<board>.json files.
  --boots              The <file>s are boot-<board>.json files.
  --date=DATE          The day of the <file>s that carry no date of their own (build.json,
                       bmeta.json, boot-<board>.json): it names their index, as the listing
                       date does when crawling, so a day from 1970 to 9998, read as --since
                       is. Files without a date are refused without it; a LAVA file's own
                       dates win over it; a file already delivered keeps the day it was
                       delivered with (the run warns so).
                       Never the files' modification time.
  --db=FILE            Ledger database (setting KCING_DB, default kcing.db).
  -d --debug           Log debug messages (every request, every retry decision).
  -l --log-file=FILE   Also write the log to FILE (for cron jobs).
  -q --quiet           Print only warnings and errors (for cron, which mails what a job
                       prints): no progress, and no summary unless the command fails;
                       with -l, FILE still gets everything.
  -h --help            Show this help.

Exit status: 0 all delivered; 1 some objects failed or were rejected, or upstream's listing
stopped part-way (what it listed before was delivered; with --verify: some documents are missing
in Elasticsearch); 2 usage or configuration error (a Logstash input, or with --verify ES_HOST,
that redirects included); 3 Logstash or Elasticsearch unreachable or refusing (a document too
large for Logstash included), or, with --verify, an answer of Elasticsearch too large or
unreadable; 4 another run holds the lock (the ledger's, or that of the --output DIR; or a
gen_samples is saving into the samples directory to replay, its first manifest not written yet)
or the ledger's database lock; 5 the ledger or an output file could not be written (disk full);
6 with --verify, none of what the run delivered could be checked (all of it in closed or
unreadable indices, or past the retention); 130 stopped by a signal.

Examples:
  kcing feed_es --source api --with-logs          # the KernelCI API, from where the last run got to
  kcing feed_es --source samples --output out/    # offline: bundled samples to NDJSON files
  kcing feed_es                                   # last 2 days of the legacy KernelCI at KCI_HOST
  kcing feed_es --how-many 50 --dry-run           # what its newest 50 builds/boots would be
  kcing feed_es --lavas saved/lava-json-*.json    # send local files (recorded by content hash)
  kcing feed_es --builds --date 2020-11-04 bmeta.json  # a build file dated by the day it was built
  ES_LAVA=http://ls1:8338,http://ls2:8338 kcing feed_es -l /var/log/kcing.log
  kcing feed_es --verify --verify-delay 60        # then check Elasticsearch holds it all
"""


@contextmanager
def _unmade_output_if_refused(sink):
    """A run refused before it began leaves no empty --output directory behind."""
    try:
        yield
    except KcingError:
        unmake = getattr(sink, "unmake", None)
        if unmake is not None:
            unmake()
        raise


def run(args: dict, settings) -> int:
    dry_run = bool(args.get("--dry-run"))
    verify = bool(args.get("--verify"))
    if verify and args.get("--output"):
        raise ConfigError("--verify checks Elasticsearch after posting to Logstash; it does not apply to --output")
    if verify and dry_run:
        raise ConfigError("--verify checks what a run delivered; a --dry-run delivers nothing")
    if args.get("--verify-delay") is not None and not args.get("--verify"):
        # Refused rather than ignored: a cron line with it alone would be taken for one that checks.
        raise ConfigError("--verify-delay is how long --verify waits; it does nothing without --verify")
    if args.get("--samples-dir") is not None and settings.KCI_SOURCE != "samples":
        # Refused rather than ignored: `feed_es --samples-dir DIR` alone would crawl upstream and
        # post to Logstash where a replay of DIR was meant.
        raise ConfigError("--samples-dir names the directory --source samples replays; the source here is %s "
                          "(add --source samples to replay it)" % settings.KCI_SOURCE)
    delay = seconds(args, "--verify-delay", settings.ES_VERIFY_DELAY)
    if args.get("--metrics"):
        _check_metrics_path(args["--metrics"], settings.KCING_DB)
        if dry_run:
            # Not refused: a cron line tried out with --dry-run keeps its --metrics.
            log.warning("a --dry-run writes no metrics: %s is left as it is", args["--metrics"])
    stop = Stop()
    source = make_source(args, settings, stop=stop)
    if source.name == "legacy" and source.how_many is None:
        # Said here, where a cron line's --days is given, which drp does not know.
        warn_crawl_past_retention(settings)
    sink = make_sink(args, settings, stop=stop, kinds=getattr(source, "kinds", None))
    if not dry_run:
        # After the sink: `--output DIR --db DIR/kcing.db` (the README's first command) keeps
        # its ledger in the directory the sink has just made.
        with _unmade_output_if_refused(sink):
            check_ledger_directory(settings)
    elif not _made_by_the_run(settings.KCING_DB, args.get("--output")):
        # A dry run tries out a cron line: one whose ledger the run would refuse is refused too,
        # not shown as a first run with everything to fetch.
        check_ledger_directory(settings)
    if verify:
        # Imported here: the Elasticsearch client takes a quarter of a second to import, which
        # every cron run without --verify would pay.
        from kcing.admin.elastic import make_client
        client = make_client(settings)
    # The ledger rows this run marked delivered, for --verify: 8 bytes an object, where a backfill
    # of millions kept each object's key (a quarter of a kilobyte) until the check.
    delivered = array("q")
    with ExitStack() as stack:
        output_locked = not dry_run and hasattr(sink, "run_lock")
        if output_locked and sink.run_lock_made():
            # The output directory's lock file is there (a run that is writing into it made it):
            # such a run refuses this one before anything is made for it, a ledger and the lock
            # beside it included (a run with a ledger of its own made both, then exited 4).
            stack.enter_context(sink.run_lock())
            output_locked = False
        if not dry_run:
            # Another run holding the lock refuses this one before it began, as a ledger that is
            # none does.
            with _unmade_output_if_refused(sink):
                stack.enter_context(RunLock(settings.KCING_DB))
        stack.enter_context(stop_on_signals(stop))
        with _unmade_output_if_refused(sink):
            ledger = open_ledger(settings, dry_run, stop)
        stack.callback(ledger.close)
        if output_locked:
            # After the ledger: a run refused for its ledger leaves no lock file in an output
            # directory (it made, or that held none).
            stack.enter_context(sink.run_lock())
        summary = run_feed(source, ledger, sink, settings, dry_run, stop,
                           on_recorded=delivered.extend if verify else (lambda row_ids: None))
        status = summary.exit_code
        try:
            # Inside: stdout failing (a full disk under `>> kcing.log`) ends the run, with its
            # metrics written all the same.
            print_summary(summary, sink.name, dry_run)
            if summary.stopped_by is not None:
                raise summary.stopped_by
            if verify:
                try:
                    report = verify_delivered(client, settings, ledger, delivered, delay, stop)
                except KcingError as error:
                    # Elasticsearch unreachable, refusing, or not Elasticsearch at all: the row says
                    # the status the run ends with, when worse than the feed's own. Not a signal:
                    # the operator stopped the check of a feed that was done, which the check's own
                    # row says (`error 130`).
                    if exit_status(error) > summary.exit_code and not isinstance(error, Interrupted):
                        _record_outcome(ledger, summary, "error %d" % exit_status(error))
                    raise
                status = max(summary.exit_code, report.exit_code)
                if report.exit_code and summary.exit_code == 0:
                    _record_outcome(ledger, summary, "missing")
                unproven = _checked_none(report, settings)
                if unproven is not None:
                    # As reconcile's: a check of nothing must not read as success in cron (nor in
                    # --metrics: Elasticsearch may hold none of what Logstash acknowledged).
                    _record_outcome(ledger, summary, "nothing checked" if summary.exit_code == 0 else
                                    "error %d" % NothingChecked.exit_code)
                    raise NothingChecked(unproven)
            return status
        except BaseException as error:
            status = exit_status(error)
            raise
        finally:
            if args.get("--metrics") and not dry_run:
                # After --verify: the exit code written is the one the run ends with.
                _write_metrics(args["--metrics"], summary, source.name, ledger,
                               getattr(sink, "destinations_key", lambda: "")(), status)


def verify_delivered(client, settings, ledger: Ledger, delivered: Sequence[int], delay: float, stop):
    """feed_es --verify: after `delay`, check the objects this run delivered (their ledger rows'
    ids, `delivered`; no window query)."""
    from kcing import reconcile as reconciling
    if delivered and delay > 0:
        print("feed_es: verifying %s in Elasticsearch in %.0fs" % (counted(len(delivered), "object"), delay),
              flush=True)
        if stop.wait(delay):
            raise Interrupted("stopped by a signal before verifying; run `kcing reconcile` to check this run")
    report = reconciling.Report(scope="the %s this feed_es run delivered" % counted(len(delivered), "object"))
    # A run that delivered nothing has nothing to check, and records no check: an hourly feed
    # finding nothing new recorded `nothing checked` as the last reconcile in `kcing status`,
    # in place of the nightly check that found documents missing.
    check_and_record(client, settings, ledger, report, ledger.delivered_rows_with_ids(delivered), stop,
                     dry_run=not delivered)
    return report


def _checked_none(report, settings) -> Optional[str]:
    """Why the check of what the run delivered proved nothing: it checked no object, though some
    made documents (in closed or unreadable indices, past the retention); None otherwise. A run
    that delivered only objects making none (KernelCI API checkouts) has nothing to prove."""
    from kcing.reconcile import unchecked_reasons  # as verify_delivered: the Elasticsearch client is slow to import
    if report.total("checked"):
        return None
    reasons = unchecked_reasons(report, settings.DRP_DAYS, empty=False)
    if not reasons:
        return None
    return "--verify could check none of the objects this run delivered: %s" % " and ".join(reasons)


def _record_outcome(ledger: Ledger, summary, outcome: str) -> None:
    """The run delivered everything to Logstash, but Elasticsearch lacks some of it (`missing`),
    or could not be asked (`error N`: unreachable, not Elasticsearch, a signal before the check):
    its row says so, not `ok`, so that `kcing status` shows the outcome the run's exit status gives
    and the last success of the --metrics file (an `ok` row) is not this run. Otherwise a Logstash
    that acknowledges every event and never passes one on would keep that metric fresh, every
    hour, and the alert on its age quiet, as would an Elasticsearch down for good."""
    if summary.run_id is None:
        return
    try:
        ledger.change_outcome(summary.run_id, outcome)
    except KcingError as error:
        log.error("cannot record that this feed_es run ended %s after its check of Elasticsearch: %s", outcome, error)


def _made_by_the_run(ledger: str, output: Optional[str]) -> bool:
    """Whether the ledger's directory is one the run would make, which its dry run does not: the
    --output DIR or a missing directory above it (`--output DIR --db DIR/kcing.db`)."""
    if not output:
        return False
    directory = Path(ledger).expanduser().absolute().parent
    made = Path(output).expanduser().absolute()
    return directory == made or directory in made.parents


def _check_metrics_path(path: str, ledger: str) -> None:
    """Before the run, as -l does: a metrics file that cannot be written would be noticed only
    when a dashboard goes stale."""
    written_over = ledger_in_the_way(Path(path), ledger)
    if written_over:
        raise ConfigError("--metrics %s is %s, which the run's figures would replace: name another file, e.g. "
                          "kcing.prom" % (path, written_over))
    directory = Path(path).expanduser().absolute().parent
    if not is_directory(directory, "--metrics"):
        raise ConfigError("--metrics %s: directory %s %s" % (path, directory, not_a_directory(directory)))
    if is_directory(Path(path), "--metrics"):
        raise ConfigError("--metrics %s is a directory; name the file to write" % path)
    refused = not_replaceable(Path(path))
    if refused:
        raise ConfigError("--metrics %s: %s" % (path, refused))
    if not os.access(directory, os.W_OK):
        raise ConfigError("--metrics %s: cannot write into %s" % (path, directory))


def _write_metrics(path: str, summary, source_name: str, ledger: Ledger, destination: str, status: int) -> None:
    try:
        # This feed's last success: of its source to its destination, as the runs table records it.
        last_success = ledger.last_success("feed_es", source_name, destination)
        text = metrics.render(summary, source_name, status, time.time(),
                              last_success.timestamp() if last_success else None)
        metrics.write(path, text)
    except KcingError as error:
        # The run itself is done and recorded: a metrics file that cannot be written must not
        # turn its outcome into a failure, but it must be seen.
        log.error("cannot write the metrics file: %s", error)
