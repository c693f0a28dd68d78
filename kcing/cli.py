"""kcing: put KernelCI results into Elasticsearch (through Logstash) for search and dashboards.

Usage:
  kcing feed_es [options] [--source=NAME] [--days=N | --how-many=N | --since=DATE] [--threads=N]
                [--workers=N] [--samples-dir=DIR] [--output=DIR] [--batch-size=N] [--with-logs] [--dry-run]
                [--verify] [--verify-delay=SECONDS] [--metrics=FILE]
  kcing feed_es [options] (--builds | --lavas | --boots) <file>... [--date=DATE] [--output=DIR]
                [--workers=N] [--dry-run] [--verify] [--verify-delay=SECONDS] [--metrics=FILE]
  kcing reconcile [options] [--days=N | --since=DATE] [--dry-run] [--resend]
  kcing gen_samples [options] [--source=NAME] [--sample-size=N] [--days=N | --since=DATE]
                    [--samples-dir=DIR] [--threads=N] [--with-logs]
  kcing drp [options] [--drp-days=N] [--dry-run]
  kcing setup_es [options] [--ilm] [--drp-days=N] [--wait=SECONDS]
  kcing setup_ls [options] [--dry-run]
  kcing setup_kbn [options] [--overwrite] [--space=ID] [--kibana-dir=DIR] [--wait=SECONDS] [--dry-run]
  kcing backup_kbn [options] [--space=ID] [--kibana-dir=DIR] [--wait=SECONDS] [--dry-run]
  kcing status [options] [--json]
  kcing test [<pytest-arg>...]
  kcing -h | --help
  kcing --version

Commands:
  feed_es      Crawl upstream, skip what the ledger says was delivered, turn each new file into
               Elasticsearch documents and post them in batches to the Logstash inputs
               (ES_BUILD, ES_LAVA, ES_BOOT, ES_REGRESSION). With --output, write NDJSON files for the
               Elasticsearch _bulk API instead of posting. With --verify, then check that
               Elasticsearch holds what was delivered, as reconcile does.
  reconcile    Ask Elasticsearch (ES_HOST) whether it holds every document of the objects the
               ledger marks delivered in the last --days (or since --since): Logstash answers 200
               before Elasticsearch indexes. Objects with missing documents go back to
               undelivered, so the next feed_es sends them again; --resend does it at once.
               Prints per kind: checked, present, missing, and the first missing ids.
  gen_samples  Save upstream files into the samples directory for offline work.
  drp          Data-retention policy: forget ledger rows and delete the build-, boot-, test-,
               log- and regression-YYYY.MM.DD indices older than --drp-days, by exact name
               (ES_HOST).
  setup_es     Wait for Elasticsearch (ES_HOST), then install one index template per kind;
               with --ilm also a lifecycle policy deleting indices after DRP_DAYS. Idempotent.
  setup_ls     Write the kcing pipeline entry into LS_HOME/config/pipelines.yml, keeping the
               other pipelines in it (LS_QUEUE_TYPE, LS_NUM_WORKERS, ... from settings).
  setup_kbn    Import the Kibana saved objects from kibana/ into KB_URL. Objects that differ
               are kept unless --overwrite; with it, the current ones are backed up first.
  backup_kbn   Export the kcing Kibana saved objects to kibana/saved_objects.ndjson (stable
               order, the Kibana URL replaced by a placeholder, so diffs stay reviewable).
  status       Show what the ledger holds: delivered, failed, rejected, pending, too large
               (for Logstash); last runs and the last reconcile.
  test         Run the test suite (pytest); extra arguments go to pytest.

Options:
  -h --help            Show this text.
  --version            Show the version.
  -d --debug           Log debug messages (every request, every retry decision).
  -l --log-file=FILE   Also write the log to FILE (for cron jobs).
  --db=FILE            Ledger database (setting KCING_DB, default kcing.db).
  --source=NAME        legacy (kernelci.org _ajax API + storage), samples (a saved samples
                       directory) or api (the current KernelCI API at KCI_API_URL; each run
                       resumes from the ledger's watermark) (setting KCI_SOURCE, default legacy).
  --days=N             Crawl the last N days (setting KCI_DAYS, default 2); reconcile: check
                       the objects delivered in the last N days.
  --how-many=N         Instead of --days, take the newest N objects of each kind.
  --since=DATE         With --source api: list nodes updated since DATE (any date
                       python-dateutil reads; UTC unless it names a zone), not since the
                       watermark. --days N means N days before now. reconcile: check the
                       objects delivered since DATE.
  --with-logs          With --source api: also fetch the logs documents need: a LAVA job's
                       callback (boot details, one log document per line), a build.log.
  --threads=N          Concurrent downloads (setting KCI_THREADS, default 4).
  --workers=N          Processes building documents while feeding; 0 or 1 builds them in kcing's
                       own process (setting KCING_WORKERS, default auto: one per usable core).
  --samples-dir=DIR    Samples directory (setting KCI_SAMPLES_DIR, default samples).
  --output=DIR         Write NDJSON _bulk files into DIR instead of posting to Logstash.
  --batch-size=N       Documents per POST (setting LS_PIPELINE_BATCH_SIZE, default 500).
  --dry-run            Show what would be fetched, sent, deleted or marked; change nothing.
  --verify             feed_es: after the run, wait --verify-delay, then check that Elasticsearch
                       (ES_HOST) holds every document this run delivered; exit 1 if some are
                       missing (their objects go back to undelivered).
  --verify-delay=SECONDS  How long --verify waits for Logstash and Elasticsearch first
                       (setting ES_VERIFY_DELAY, default 30).
  --metrics=FILE       feed_es: write the run's figures to FILE in the Prometheus text format,
                       for a node exporter's textfile collector (e.g. .../textfile/kcing.prom).
  --resend             reconcile: send the objects with missing documents again now, fetched
                       from the URLs in the ledger (not for --source api objects).
  --builds             The <file>s are build.json files.
  --lavas              The <file>s are lava-json-<board>.json files.
  --boots              The <file>s are boot-<board>.json files.
  --date=DATE          The day of the <file>s that carry no date of their own (build.json,
                       bmeta.json, boot-<board>.json): it names their index, as the listing
                       date does when crawling. Files without a date are refused without it;
                       a LAVA file's own dates win over it. Never the files' modification time.
  --sample-size=N      Save N objects of each kind instead of the last --days.
  --drp-days=N         Keep this many days of data (setting DRP_DAYS, default 3).
  --ilm                Also install an index lifecycle policy that deletes indices DRP_DAYS
                       days old (then drp need not delete indices, only ledger rows).
  --wait=SECONDS       How long to wait for Elasticsearch or Kibana to be ready
                       (setup_es: setting ES_READY_TIMEOUT, default 60; Kibana: 60).
  --overwrite          setup_kbn: replace objects that differ from the file (after a backup
                       into kibana/backups/).
  --space=ID           Kibana space (setting KB_SPACE, default: the default space).
  --kibana-dir=DIR     Where saved_objects.ndjson lives (default: this checkout's kibana/).
  --json               Print machine-readable JSON.

Settings come from kcing/settings.py defaults, then ./local_settings.py, then environment
variables of the same name, then the flags above. The main ones: KCI_HOST, KCI_SCHEME,
KCI_STORAGE_URL, ES_BUILD, ES_LAVA, ES_BOOT, ES_REGRESSION (comma-separated URLs spread the load),
ES_MAX_RETRIES, ES_LOAD_INTERVAL, ES_MAX_DOCS_PER_SECOND, LS_USER, LS_PASSWORD, KCING_DB,
DRP_DAYS, ES_HOST, KB_URL. The README lists them all.

Exit status: 0 all delivered; 1 some objects failed or were rejected (reconcile, --verify:
some documents are missing in Elasticsearch); 2 usage or configuration error (a Logstash input
that redirects included); 3 Logstash, Elasticsearch or Kibana unreachable or refusing (a
document too large for Logstash included: its object is sent again by the next run); 4 another
run holds the lock, or another process held the ledger's database lock longer than
KCING_DB_LOCK_WAIT; 5 the ledger or an output file (of --output) could not be written (disk
full, I/O error; what was written is whole); 70 an internal error (a bug; -d shows the
traceback); 130 stopped by SIGINT/SIGTERM after recording the batch in flight.

Examples:
  kcing feed_es                                   # last 2 days of kernelci.org into Logstash
  kcing feed_es --source samples --output out/    # offline: bundled samples to NDJSON files
  kcing feed_es --how-many 50 --dry-run           # what the newest 50 builds/boots would be
  kcing feed_es --lavas saved/lava-json-*.json    # send local files (recorded by content hash)
  kcing feed_es --builds --date 2020-11-04 bmeta.json  # a build file dated by the day it was built
  kcing feed_es --source api --with-logs          # the KernelCI API, from where the last run got to
  ES_LAVA=http://ls1:8338,http://ls2:8338 kcing feed_es -l /var/log/kcing.log
  kcing feed_es --verify --verify-delay 60       # then check Elasticsearch holds it all
  kcing reconcile --days 1                        # is what was delivered yesterday indexed?
  kcing reconcile --since 2024-10-16 --resend     # check since a date, re-send what is missing
  kcing drp --drp-days 30 --dry-run               # what retention would delete
  ES_HOST=http://es:9200 kcing setup_es --ilm     # templates and a lifecycle policy
  KB_URL=http://kibana:5601 kcing setup_kbn       # dashboards, keeping what users changed
"""
from __future__ import annotations

import importlib
import logging
import sys
from typing import Callable, List, Optional

from docopt import DocoptExit, docopt

from kcing import __version__, logs, settings as settings_module
from kcing.errors import INTERNAL_ERROR, ConfigError, KcingError
from kcing.urls import redacted

log = logging.getLogger(__name__)

# Command -> "module:function". Imported on use: `feed_es` from cron should not pay for the
# Elasticsearch client (a quarter of a second to import) that only the admin commands need.
COMMANDS = {
    "feed_es": "kcing.commands:feed_es",
    "gen_samples": "kcing.commands:gen_samples",
    "drp": "kcing.admin.commands:drp",
    "setup_es": "kcing.admin.commands:setup_es",
    "setup_ls": "kcing.admin.logstash_setup:setup_ls",
    "setup_kbn": "kcing.admin.kibana_commands:setup_kbn",
    "backup_kbn": "kcing.admin.kibana_commands:backup_kbn",
    "reconcile": "kcing.reconcile_command:reconcile",
    "status": "kcing.commands:status",
    "test": "kcing.commands:run_tests",
}


def command_function(name: str) -> Callable[[dict, object], int]:
    module, function = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), function)


# Flags that override a setting of the same meaning: flag -> (setting name).
FLAG_SETTINGS = {
    "--db": "KCING_DB",
    "--source": "KCI_SOURCE",
    "--days": "KCI_DAYS",
    "--threads": "KCI_THREADS",
    "--workers": "KCING_WORKERS",
    "--samples-dir": "KCI_SAMPLES_DIR",
    "--batch-size": "LS_PIPELINE_BATCH_SIZE",
    "--drp-days": "DRP_DAYS",
}


def parse_args(argv: Optional[List[str]]) -> dict:
    return docopt(__doc__, argv=argv, version="kcing %s" % __version__)


def settings_from(args: dict, environ=None):
    """Load settings and apply the flags the user gave (docopt leaves absent ones as None)."""
    overrides = {name: args.get(flag) for flag, name in FLAG_SETTINGS.items() if args.get(flag) is not None}
    return settings_module.load(environ=environ, overrides=overrides)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; return its exit status. The only place that turns errors into exit codes."""
    try:
        args = parse_args(argv)
    except DocoptExit as usage:
        print(str(usage), file=sys.stderr)
        return 2
    except SystemExit as done:  # --help and --version print and exit 0
        return done.code if isinstance(done.code, int) else 0
    command = next(name for name in COMMANDS if args.get(name))
    try:
        logs.configure(debug=args["--debug"], log_file=args["--log-file"])
    except OSError as error:
        print("kcing: cannot open log file %s: %s" % (args["--log-file"], error.strerror), file=sys.stderr)
        return 2
    try:
        settings = settings_from(args)
        logs.configure(debug=args["--debug"], log_file=args["--log-file"],
                       secrets=[getattr(settings, name) for name in settings_module.SECRET_NAMES])
        return command_function(command)(args, settings)
    except KcingError as error:
        print("kcing %s: %s" % (command, redacted(str(error))), file=sys.stderr)
        log.debug("error details", exc_info=True)
        return error.exit_code
    except KeyboardInterrupt:
        print("kcing %s: interrupted" % command, file=sys.stderr)
        return 130
    except Exception as error:  # a bug: one line for cron; the message may quote anything, so not shown
        print("kcing %s: internal error (%s); run again with -d for the traceback, and report it"
              % (command, type(error).__name__), file=sys.stderr)
        log.debug("internal error", exc_info=True)
        return INTERNAL_ERROR


__all__ = ["main", "COMMANDS", "ConfigError"]
