"""kcing setup_es: wait for Elasticsearch, then install the index templates (and an ILM policy)."""
from __future__ import annotations

import logging

from kcing.admin.elastic import make_client, server_version
from kcing.admin.templates import (
    KINDS, POLICY_NAME, existing_misfits, index_pattern, install, retention_policy, template_name, templates_for,
    wait_until_ready,
)
from kcing.commands import with_drp_days
from kcing.errors import ConfigError, ElasticsearchError
from kcing.flags import seconds
from kcing.plural import counted
from kcing.settings import warn_short_retention

log = logging.getLogger(__name__)

SUMMARY = "install the index templates (with --ilm a lifecycle policy too)"

USAGE = """\
Usage:
  kcing setup_es [options]

Wait for Elasticsearch (ES_HOST), then install one index template per kind; with --ilm also a
lifecycle policy deleting indices DRP_DAYS days after the day in their name, as drp does.
Idempotent: a template Elasticsearch holds as kcing puts it is left unchanged, one edited in
place is put back. Run it after every upgrade.
The templates have priority 200: another template whose patterns overlap one of them at the
same priority is refused by Elasticsearch (that kind's template is not installed, the others
are, and the error names it); one at a higher priority overrides kcing's (a warning names it).

Settings read (from the environment or ./local_settings.py; the README's table says each):
ES_HOST, ES_USER, ES_PASSWORD, ES_API_KEY, ES_CA_BUNDLE, ES_REQUEST_DEADLINE, ES_RETRY_BACKOFF,
ES_READY_TIMEOUT, KCING_PROGRESS_EVERY; with --ilm, DRP_DAYS (and KCI_DAYS: a warning when DRP_DAYS
does not exceed it).

Options:
  --ilm                Also install an index lifecycle policy that deletes indices DRP_DAYS
                       days after the day in their name, as drp does (then drp need not
                       delete indices, only ledger rows).
  --drp-days=N         With --ilm: days the lifecycle policy keeps (setting DRP_DAYS, default 3).
  --wait=SECONDS       How long to wait for Elasticsearch to be ready (setting
                       ES_READY_TIMEOUT, default 60).
  -d --debug           Log debug messages (every request).
  -l --log-file=FILE   Also write the log to FILE.
  -q --quiet           Print only warnings and errors (for cron, which mails what a job
                       prints): no progress, and no summary unless the command fails;
                       with -l, FILE still gets everything.
  -h --help            Show this help.

Exit status: 0 installed (or already there); 2 configuration error (an ES_HOST that redirects or
is not Elasticsearch included); 3 Elasticsearch unreachable, not ready in time, or refusing (a
template of the same priority in the way), or an answer of it too large or unreadable; 130
stopped by a signal.

Examples:
  ES_HOST=http://es:9200 kcing setup_es --ilm     # templates and a lifecycle policy
  kcing setup_es --wait 300                       # right after starting the stack
"""


def run(args: dict, settings) -> int:
    """Wait for the cluster, then install the templates (and with --ilm the retention policy)."""
    use_ilm = bool(args.get("--ilm"))
    if args.get("--drp-days") is not None and not use_ilm:
        # Refused rather than ignored: without --ilm no policy is installed, and nothing keeps
        # those days but `kcing drp`, which reads its own --drp-days or DRP_DAYS.
        raise ConfigError("--drp-days sets the days the --ilm policy keeps; it does nothing without --ilm")
    settings = with_drp_days(args, settings)
    host = settings.ES_HOST
    client = make_client(settings)
    status = wait_until_ready(client, host, seconds(args, "--wait", settings.ES_READY_TIMEOUT),
                              every=settings.KCING_PROGRESS_EVERY)
    version = server_version(client, host)
    print("setup_es: Elasticsearch %s at %s, cluster %s" % (version, host, status))
    policy = None
    if use_ilm:
        warn_short_retention(settings)
        policy = (POLICY_NAME, retention_policy(settings.DRP_DAYS))
    templates = templates_for(POLICY_NAME if use_ilm else None)
    changes = install(client, host, templates, policy)
    patterns = {template_name(kind): index_pattern(kind) for kind in KINDS}
    conflicts = [change for change in changes if change.outcome == "conflict"]
    for change in changes:
        if change.outcome == "conflict":
            continue
        if change.what == "template":
            print("setup_es: index template %s (%s) %s" % (change.name, patterns[change.name], change.outcome))
        else:
            print("setup_es: ILM policy %s (delete indices %s after the day in their name, as drp) %s"
                  % (change.name, counted(settings.DRP_DAYS, "day"), change.outcome))
    if not use_ilm:
        print("setup_es: no ILM policy in the templates; run `kcing drp` (e.g. daily from cron) to delete old indices")
    for warning in existing_misfits(client, host, templates):
        log.warning("%s", warning)
    if conflicts:
        raise ElasticsearchError("; ".join(change.detail for change in conflicts))
    return 0
