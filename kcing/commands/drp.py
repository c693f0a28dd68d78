"""kcing drp: the data-retention policy: delete expired kcing indices, forget old ledger rows."""
from __future__ import annotations

from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from kcing.admin import retention
from kcing.admin.elastic import make_client
from kcing.commands import said, with_drp_days
from kcing.errors import ElasticsearchError, KcingError
from kcing.flags import utc_text
from kcing.ledger.location import ledger_exists
from kcing.ledgerfile import ledger_run_lock, no_ledger, open_ledger
from kcing.plural import counted
from kcing.settings import warn_short_retention

SUMMARY = "data-retention policy: forget ledger rows and delete indices older than DRP_DAYS"

USAGE = """\
Usage:
  kcing drp [options]

Delete the build-, boot-, test-, log- and regression-YYYY.MM.DD indices older than --drp-days,
by exact name (ES_HOST), and forget the ledger rows (of every destination) first seen before then,
and the runs started before then that nothing reads (kept: the newest of each command, the last
five, each feed's last success, the newest run that recorded each storage, and the drp run that
kept from the latest day). A run (not a --dry-run) is recorded in the ledger's runs table with its
outcome and counts, which `kcing status` shows.

Settings read (from the environment or ./local_settings.py; the README's table says each):
DRP_DAYS (and KCI_DAYS: a warning when DRP_DAYS does not exceed it), ES_HOST, ES_USER, ES_PASSWORD,
ES_API_KEY, ES_CA_BUNDLE, ES_REQUEST_DEADLINE, ES_RETRY_BACKOFF, KCING_DB, KCING_DB_LOCK_WAIT;
ES_BUILD, ES_LAVA, ES_BOOT and ES_REGRESSION name the Logstash inputs a ledger written before kcing
recorded destinations (schema 1 or 2) is upgraded as sent to.

Options:
  --drp-days=N         Keep this many days of data (setting DRP_DAYS, default 3).
  --dry-run            Show what would be deleted and forgotten; change nothing.
  --db=FILE            Ledger database (setting KCING_DB, default kcing.db).
  -d --debug           Log debug messages (every request).
  -l --log-file=FILE   Also write the log to FILE (for cron jobs).
  -q --quiet           Print only warnings and errors (for cron, which mails what a job
                       prints): no progress, and no summary unless the command fails;
                       with -l, FILE still gets everything.
  -h --help            Show this help.

An expired index Elasticsearch refuses to delete because of a block (index.blocks.read_only or
index.blocks.metadata) is named and left; the other expired indices are deleted, the ledger rows
forgotten, and drp exits 3. --dry-run names such an index too, as one it would not delete.

Exit status: 0 done; 2 configuration error (an ES_HOST that redirects or is not Elasticsearch
included); 3 Elasticsearch unreachable or refusing, or an answer of it too large or unreadable
(also: an expired index left because of its block); 4 another run holds the lock or the ledger's
database lock; 5 the ledger cannot be written (a full disk, a read-only file); 130 stopped by a
signal (the ledger rows are forgotten in one transaction, whole or not at all).

Examples:
  kcing drp --drp-days 30 --dry-run               # what retention would delete
  kcing drp -l /var/log/kcing-drp.log             # daily from cron
"""


def run(args: dict, settings, now: Optional[datetime] = None) -> int:
    """Delete expired kcing indices and forget old ledger rows; with --dry-run only say which."""
    settings = with_drp_days(args, settings)
    warn_short_retention(settings)
    dry_run = bool(args.get("--dry-run"))
    today = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()
    host = settings.ES_HOST
    client = make_client(settings)
    have_ledger = ledger_exists(settings.KCING_DB)
    if not have_ledger and not Path(settings.KCING_DB).absolute().parent.is_dir():
        # No ledger is a retention of indices alone; a ledger named in a directory that is not
        # there is a KCING_DB gone wrong, whose rows would never be forgotten while drp exits 0.
        raise no_ledger(settings, args)
    with ExitStack() as stack:
        if have_ledger and not dry_run:
            # A feed run writing rows while they are pruned would race; one run at a time.
            stack.enter_context(ledger_run_lock(settings))
        ledger = open_ledger(settings, dry_run) if have_ledger else None
        recorded = None
        if ledger is not None:
            stack.callback(ledger.close)
            if not dry_run:
                # A row in the runs table, as feed_es and reconcile keep, closed with the outcome
                # however the run ends: `kcing status` shows it.
                recorded = stack.enter_context(ledger.recorded_run("drp"))
        chosen = retention.plan(client, host, ledger, today, settings.DRP_DAYS,
                                recorded.id if recorded is not None else None)
        said("drp: keeping %d day%s: indices dated from %s, ledger rows first seen since %s"
             % (chosen.days, "" if chosen.days == 1 else "s", chosen.first_kept.strftime("%Y.%m.%d"),
                utc_text(chosen.ledger_cutoff)))
        # Rows of every destination go: delivered to an NDJSON directory or to Logstash. Said once
        # they are gone: a run that Elasticsearch stops first forgets none of them.
        by_destination = (sorted(ledger.seen_before_by_destination(chosen.ledger_cutoff).items())
                          if ledger is not None else [])
        if dry_run:
            _print_destinations("would forget", by_destination)
            _print_runs("would forget", len(chosen.runs), chosen)
            _print_plan(chosen, retention.blocked_from_deletion(client, host, chosen.indices), settings.KCING_DB)
            return 0
        if recorded is not None:
            # The first day kept, written before the first index is deleted (a kill during the
            # deletes leaves it too): reconcile then knows the indices this run deletes are gone on
            # purpose, whatever DRP_DAYS it is given, and the legacy feed stops retrying their
            # objects. Not before the indices were listed: a run that could not reach
            # Elasticsearch deleted nothing, and had every index before that day taken for gone.
            recorded.counts.update(days=settings.DRP_DAYS, first_kept=chosen.first_kept.isoformat())
            ledger.update_run_counts(recorded.id, recorded.counts)
        # Each step counted in the run's row as soon as it is done: a signal during the next one
        # closes the row with what was deleted and forgotten already (each step is whole or not at all).
        try:
            deleted, blocked = retention.delete_indices(client, host, chosen.indices)
        except KcingError as failure:  # refused for want of privileges is a ConfigError
            if recorded is not None and getattr(failure, "untouched", None):
                _kept_from_what_is_left(recorded, ledger, failure.untouched, len(chosen.indices))
            raise
        forgotten = runs_forgotten = 0
        if recorded is not None:  # a run with a ledger (a dry run has returned above)
            recorded.counts.update(indices_deleted=len(deleted))
            if blocked:
                recorded.counts["indices_blocked"] = len(blocked)
            forgotten = ledger.prune_older_than(chosen.ledger_cutoff)
            recorded.counts.update(forgotten=forgotten)
            runs_forgotten = ledger.forget_runs(list(chosen.runs))
            if runs_forgotten:
                recorded.counts["runs_forgotten"] = runs_forgotten
        for name in deleted:
            said("drp: deleted index %s" % name)
        for name in sorted(blocked):
            said("drp: not deleted index %s: blocked by [%s]" % (name, blocked[name]))
        _print_destinations("forgot", by_destination)
        _print_runs("forgot", runs_forgotten, chosen)
        if blocked:
            # Exits 3, and the runs table says so; the rest of the retention was done.
            said("drp: deleted %s, %s" % (counted(len(deleted), "index", "indices"),
                                          _rows_text(have_ledger, forgotten, settings.KCING_DB)))
            raise ElasticsearchError(retention.blocked_message(host, blocked, len(deleted)))
    said("drp: deleted %s, %s" % (counted(len(deleted), "index", "indices"),
                                  _rows_text(have_ledger, forgotten, settings.KCING_DB)))
    return 0


def _kept_from_what_is_left(recorded, ledger, untouched, expired: int) -> None:
    """A DELETE Elasticsearch refused (no privilege to delete, say) left `untouched` there: the
    run row's first day kept goes back to the oldest of them, or away if nothing was deleted, so
    that reconcile and the feeds do not take indices that are still there for ones drp deleted."""
    if len(untouched) == expired:
        for key in ("days", "first_kept"):
            recorded.counts.pop(key, None)
    else:
        recorded.counts["first_kept"] = min(filter(None, map(retention.index_day, untouched))).isoformat()
    ledger.update_run_counts(recorded.id, recorded.counts)


def _print_destinations(verb: str, by_destination) -> None:
    for destination, count in by_destination:
        said("drp: %s %s of objects sent to %s" % (verb, counted(count, "ledger row"), destination or "(unnamed)"))


def _print_runs(verb: str, count: int, chosen: retention.RetentionPlan) -> None:
    if count:
        said("drp: %s %s started before %s from the runs table (kept: those status, --metrics, reconcile and "
             "the feed still read)" % (verb, counted(count, "run"), utc_text(chosen.ledger_cutoff)))


def _rows_text(have_ledger: bool, forgotten: int, db: str) -> str:
    return ("forgot %s" % counted(forgotten, "ledger row")) if have_ledger else ("no ledger at %s" % db)


def _print_plan(chosen: retention.RetentionPlan, blocked: dict, db: str) -> None:
    """What a run would do: an expired index with a block is left by a run, so it is named as
    such, not as one to delete."""
    deleted = [name for name in chosen.indices if name not in blocked]
    for name in deleted:
        said("drp: would delete index %s" % name)
    for name in sorted(blocked):
        said("drp: would not delete index %s: blocked by [%s]" % (name, blocked[name]))
    rows = ("would forget %s" % counted(chosen.ledger_rows, "ledger row")) if chosen.ledger_rows is not None \
        else ("no ledger at %s" % db)
    left = ("; %s would be left because of a block (the run would exit 3)"
            % counted(len(blocked), "expired index", "expired indices") if blocked else "")
    said("drp: dry run: would delete %s, %s%s" % (counted(len(deleted), "index", "indices"), rows, left))
