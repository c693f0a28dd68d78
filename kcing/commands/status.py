"""kcing status: what the ledger holds, and the last runs."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from kcing import keptdays, status as status_report
from kcing.ledger.location import ledger_exists
from kcing.ledgerfile import no_ledger, open_ledger

SUMMARY = "what the ledger holds, per destination, and the last runs"

USAGE = """\
Usage:
  kcing status [options]

Show what the ledger holds per source, kind and destination (delivered, failed, rejected,
pending, too large for Logstash; and, of the undelivered, those reconcile found missing in
Elasticsearch), the last runs (outcome, counts, and for feed_es its source and destination), the
last reconcile, the watermarks and the most frequent errors; where legacy objects are not
delivered, the first day whose objects every run to their destination still tries again (the
first day drp keeps).

Settings read (from the environment or ./local_settings.py; the README's table says each):
KCING_DB, KCING_DB_LOCK_WAIT; DRP_DAYS (the first day kept, or a later one a recorded drp run
kept from); ES_BUILD, ES_LAVA, ES_BOOT and ES_REGRESSION name the Logstash inputs a ledger
written before kcing recorded destinations (schema 1 or 2) is shown as sent to.

Options:
  --json               Print machine-readable JSON.
  --db=FILE            Ledger database (setting KCING_DB, default kcing.db).
  -d --debug           Log debug messages.
  -l --log-file=FILE   Also write the log to FILE.
  -h --help            Show this help.

Reads the ledger and changes nothing in it: an account that may only read the ledger and its
directory can run it.

Exit status: 0 shown; 2 no ledger there, or not a kcing ledger; 4 another process held the
ledger locked for reading too (exclusive locking mode) longer than KCING_DB_LOCK_WAIT; 5 the
ledger could not be read (an I/O error); 130 stopped by a signal.

Examples:
  kcing status --db /var/lib/kcing/kcing.db
  kcing status --json | jq .objects
"""


def run(args: dict, settings) -> int:
    if not ledger_exists(settings.KCING_DB):
        raise no_ledger(settings, args)
    # Read as a dry run reads it, changing nothing: an older ledger is shown migrated, not
    # migrated, and one this user may only read (a monitoring account) is shown too.
    ledger = open_ledger(settings, dry_run=True)
    try:
        held = status_report.lock_holders(ledger)
        # Every read from one snapshot: a feed recording its objects and its end meanwhile showed
        # its end ("ok, delivered 387") beside the object counts read before it delivered them.
        with ledger.snapshot():
            # As a legacy feed_es run reads it: DRP_DAYS, or a later day a recorded drp run kept from.
            first_kept = keptdays.first_kept(datetime.now(timezone.utc).date(), settings.DRP_DAYS,
                                             ledger.deleted_before())
            data = status_report.report(ledger, first_kept=first_kept, held_before=held)
    finally:
        ledger.close()
    print(json.dumps(data, indent=2, sort_keys=True) if args.get("--json") else status_report.as_text(data))
    return 0
