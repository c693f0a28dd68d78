"""setup_es and drp: build the client and the ledger from settings, call the admin module, report.

Both print what they did (or, for a dry run, would do) on stdout and raise kcing errors.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from kcing.admin import retention
from kcing.admin.elastic import make_client, server_version
from kcing.admin.templates import (
    KINDS, POLICY_NAME, index_pattern, install, retention_policy, template_name, templates_for, wait_until_ready,
)
from kcing.flags import seconds
from kcing.ledger.ledger import Ledger
from kcing.runlock import RunLock

log = logging.getLogger(__name__)


def _with_flags(args: dict, settings):
    """Settings with --drp-days applied (the CLI does it too; applying it twice is harmless)."""
    if args.get("--drp-days") is not None:
        return settings.with_overrides({"DRP_DAYS": args["--drp-days"]})
    return settings


def _warn_short_retention(settings) -> None:
    if settings.DRP_DAYS <= settings.KCI_DAYS:
        # feed_es lists the last KCI_DAYS days again on every run and skips what the ledger says
        # was delivered: forgetting those rows would download and send those objects again.
        log.warning("DRP_DAYS=%d is not more than KCI_DAYS=%d: ledger rows of objects the next crawl lists "
                    "again would be forgotten, and those objects downloaded and sent again",
                    settings.DRP_DAYS, settings.KCI_DAYS)


def setup_es(args: dict, settings) -> int:
    """Wait for the cluster, then install the templates (and with --ilm the retention policy)."""
    settings = _with_flags(args, settings)
    host = settings.ES_HOST
    use_ilm = bool(args.get("--ilm"))
    client = make_client(settings)
    status = wait_until_ready(client, host, seconds(args, "--wait", settings.ES_READY_TIMEOUT))
    version = server_version(client, host)
    print("setup_es: Elasticsearch %s at %s, cluster %s" % (version, host, status))
    policy = None
    if use_ilm:
        _warn_short_retention(settings)
        policy = (POLICY_NAME, retention_policy(settings.DRP_DAYS))
    changes = install(client, host, templates_for(POLICY_NAME if use_ilm else None), policy)
    patterns = {template_name(kind): index_pattern(kind) for kind in KINDS}
    for change in changes:
        if change.what == "template":
            print("setup_es: index template %s (%s) %s" % (change.name, patterns[change.name], change.outcome))
        else:
            print("setup_es: ILM policy %s (delete indices %d days after the date in their name) %s"
                  % (change.name, settings.DRP_DAYS, change.outcome))
    if not use_ilm:
        print("setup_es: no ILM policy in the templates; run `kcing drp` (e.g. daily from cron) to delete old indices")
    return 0


def drp(args: dict, settings, now: Optional[datetime] = None) -> int:
    """Delete expired kcing indices and forget old ledger rows; with --dry-run only say which."""
    settings = _with_flags(args, settings)
    _warn_short_retention(settings)
    dry_run = bool(args.get("--dry-run"))
    today = (now or datetime.now(timezone.utc)).astimezone(timezone.utc).date()
    host = settings.ES_HOST
    client = make_client(settings)
    have_ledger = Path(settings.KCING_DB).exists()
    with ExitStack() as stack:
        if have_ledger and not dry_run:
            # A feed run writing rows while they are pruned would race; one run at a time.
            stack.enter_context(RunLock(settings.KCING_DB))
        ledger = Ledger.open(settings.KCING_DB, wait=settings.KCING_DB_LOCK_WAIT) if have_ledger else None
        if ledger is not None:
            stack.callback(ledger.close)
        chosen = retention.plan(client, host, ledger, today, settings.DRP_DAYS)
        print("drp: keeping %d days: indices dated from %s, ledger rows first seen since %s"
              % (chosen.days, chosen.first_kept.strftime("%Y.%m.%d"), chosen.ledger_cutoff.strftime("%Y-%m-%d %H:%M UTC")))
        if dry_run:
            _print_plan(chosen, settings.KCING_DB)
            return 0
        deleted, forgotten = retention.apply(client, host, ledger, chosen)
    for name in deleted:
        print("drp: deleted index %s" % name)
    rows = ("forgot %d ledger rows" % forgotten) if have_ledger else ("no ledger at %s" % settings.KCING_DB)
    print("drp: deleted %d indices, %s" % (len(deleted), rows))
    return 0


def _print_plan(chosen: retention.RetentionPlan, db: str) -> None:
    for name in chosen.indices:
        print("drp: would delete index %s" % name)
    rows = ("would forget %d ledger rows" % chosen.ledger_rows) if chosen.ledger_rows is not None \
        else ("no ledger at %s" % db)
    print("drp: dry run: would delete %d indices, %s" % (len(chosen.indices), rows))
