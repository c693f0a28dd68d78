"""kcing setup_kbn: import the Kibana saved objects from kibana/ into KB_URL."""
from __future__ import annotations

import logging
import time
from typing import Callable

from kcing.admin.kibana import (
    broken_references, conflict, count_by_type, describe, export_types, import_text, plan_import, space_url,
)
from kcing.commands import said
from kcing.commands._kibana import (
    BACKUPS, DEFAULT_WAIT, SAVED_OBJECTS, kibana_dir, make_client, read_saved_objects, save_backup,
)
from kcing.flags import seconds
from kcing.plural import counted, verb

log = logging.getLogger(__name__)

SUMMARY = "import the Kibana saved objects in kibana/ (dashboards, visualisations)"

USAGE = """\
Usage:
  kcing setup_kbn [options]

Import the Kibana saved objects from kibana/ into KB_URL. Objects that differ from the file are
kept unless --overwrite; either way the current objects are saved into kibana/backups/ first
(unless the newest backup there holds them byte for byte: then no new file is written).

Settings read (from the environment or ./local_settings.py; the README's table says each):
KB_URL, KB_USER, KB_PASSWORD, KB_API_KEY (without them, the ~/.netrc entry of KB_URL's host; NETRC
names another file), KB_CA_BUNDLE, KB_SPACE, KB_REQUEST_DEADLINE, KCING_PROGRESS_EVERY.

Options:
  --overwrite          Replace objects that differ from the file.
  --space=ID           Kibana space (setting KB_SPACE, default: the default space).
  --kibana-dir=DIR     Where saved_objects.ndjson lives (default: this checkout's kibana/).
  --wait=SECONDS       How long to wait for Kibana to be ready (default 60).
  --dry-run            Check the file and say what would be imported; contact no Kibana.
  -d --debug           Log debug messages.
  -l --log-file=FILE   Also write the log to FILE.
  -q --quiet           Print only warnings and errors (for cron, which mails what a job
                       prints): no progress, and no summary unless the command fails;
                       with -l, FILE still gets everything.
  -h --help            Show this help.

Exit status: 0 imported; 1 some objects were not imported, or refer to objects found neither in
the file nor in Kibana (listed); 2 configuration error (a bad file, a space Kibana does not
have, a KB_URL that is not Kibana or answers a redirect); 3 Kibana unreachable, not ready or
refusing, or an answer of it too large; 5 the backup of the current objects could not be written
(a full disk: nothing is imported); 130 stopped by a signal.

Examples:
  KB_URL=http://kibana:5601 kcing setup_kbn        # dashboards, keeping what users changed
  kcing setup_kbn --overwrite --wait 300          # replace them, right after starting Kibana
"""


def run(args: dict, settings, session=None, now: Callable[[], float] = time.time) -> int:
    """Import the saved objects file into the space; 1 when some objects were not imported.

    The current objects are exported to kibana/backups/ first, with --overwrite too: that is
    when what users changed in Kibana is replaced (the newest backup, when it holds them
    already). Without --overwrite, objects that already exist are reported as conflicts (or as
    unchanged when identical). A dry run reads and checks the file and says what would happen,
    without contacting Kibana.
    """
    client = make_client(args, settings, session)
    url = space_url(settings.KB_URL, client.space)
    source = kibana_dir(args) / SAVED_OBJECTS
    objects = read_saved_objects(source, url)
    overwrite = bool(args.get("--overwrite"))
    plan = "%s (%s) from %s into %s" % (counted(len(objects), "object"), count_by_type(objects), source, url)
    # Checked before a dry run returns: a cron line tried out with --dry-run must fail as it would.
    wait = seconds(args, "--wait", DEFAULT_WAIT)
    if args.get("--dry-run"):
        how = "replacing existing objects" if overwrite else "keeping existing objects"
        said("setup_kbn: dry run: would import %s, %s, after saving the current objects under %s"
             % (plan, how, kibana_dir(args) / BACKUPS))
        return 0
    client.wait_ready(wait, every=settings.KCING_PROGRESS_EVERY)
    client.check_space()
    current = client.export(export_types(objects))
    save_backup(kibana_dir(args) / BACKUPS, current, url, now())
    said("setup_kbn: importing %s%s" % (plan, " (overwrite)" if overwrite else ""))
    split = plan_import(objects, current, url)
    # Kibana writes none of a file's objects while one of them conflicts with an object it
    # holds: only what it lacks (and, to replace them, what differs) is sent.
    problems = [] if overwrite else [conflict(obj) for obj in split.changed]
    problems += broken_references(objects, current)
    sending = split.to_send(overwrite)
    imported, held_back, unexplained = 0, False, False
    if sending:
        report = client.import_ndjson(import_text(sending), overwrite)
        imported, held_back = report.imported, report.held_back
        problems += report.problems
        # Kibana's word that the import did not wholly succeed, though it names no object that failed.
        unexplained = not report.success and not report.problems
    said("setup_kbn: imported %d of %s%s" % (
        imported, counted(len(objects), "object"),
        ", %d already present and unchanged" % len(split.unchanged) if split.unchanged else ""))
    if held_back:
        said("setup_kbn: Kibana imported none of them while an object below has a conflict or a missing reference")
    for problem in problems:
        said("  %s" % describe(problem))
    if unexplained:
        log.warning("setup_kbn: Kibana answered that the import did not succeed (success: false) without naming an "
                    "object that failed: see Kibana's log")
    if problems:
        # The one line on stderr a command that fails ends with: the list is on stdout, which a
        # cron job under --quiet shows only after it.
        log.warning("setup_kbn: %s", outcome_line(len(objects), imported, len(split.unchanged), problems,
                                                  bool(split.changed) and not overwrite))
    return 1 if problems or unexplained else 0


def outcome_line(total: int, imported: int, unchanged: int, problems, overwrite_helps: bool) -> str:
    """What went wrong, counted in objects of the file: those neither imported nor already there
    unchanged, and those that refer to objects found nowhere. The problems listed count neither:
    an object may have two, one with a broken reference is imported all the same, and an import
    Kibana held back wrote none of the objects, those without a problem too."""
    not_imported = max(0, total - imported - unchanged)
    broken = len({(problem.type, problem.id) for problem in problems if problem.error == "broken_references"})
    parts = []
    if not_imported:
        parts.append("%d of %s not imported" % (not_imported, counted(total, "object")))
    if broken:
        parts.append("%d of %s %s to objects found neither in the file nor in Kibana"
                     % (broken, counted(total, "object"), verb(broken, "refers", "refer")))
    hint = "run with --overwrite to replace those that differ" if overwrite_helps else "see the list printed"
    return "%s: %s" % ("; ".join(parts) or "%s listed" % counted(len(problems), "problem"), hint)
