"""kcing backup_kbn: export the Kibana space's saved objects into kibana/saved_objects.ndjson."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from kcing.admin.kibana import (
    canonical_ndjson, count_by_type, dangling_references, describe, hide_url, parse_ndjson, space_url,
)
from kcing.commands import said
from kcing.commands._kibana import DEFAULT_WAIT, SAVED_OBJECTS, kibana_dir, make_client
from kcing.errors import ConfigError, reading_failure
from kcing.flags import seconds
from kcing.files import NotRegularFile, holds, is_directory, read_regular_text, write_atomically
from kcing.plural import counted, verb

log = logging.getLogger(__name__)

SUMMARY = "export the Kibana saved objects into kibana/"

USAGE = """\
Usage:
  kcing backup_kbn [options]

Export the saved objects of the Kibana space (KB_URL, KB_SPACE) to kibana/saved_objects.ndjson:
every data view, saved search, visualization, Lens visualization and dashboard it holds, kcing's
and any other, with what they refer to; stable order, links into Kibana starting with a
placeholder, so that diffs stay reviewable.

Settings read (from the environment or ./local_settings.py; the README's table says each):
KB_URL, KB_USER, KB_PASSWORD, KB_API_KEY (without them, the ~/.netrc entry of KB_URL's host; NETRC
names another file), KB_CA_BUNDLE, KB_SPACE, KB_REQUEST_DEADLINE, KCING_PROGRESS_EVERY.

Options:
  --space=ID           Kibana space (setting KB_SPACE, default: the default space).
  --kibana-dir=DIR     Where saved_objects.ndjson lives (default: this checkout's kibana/).
                       A DIR that does not exist is created, if the directory it is
                       in exists (a DIR whose parent is missing is refused: a typo).
  --wait=SECONDS       How long to wait for Kibana to be ready (default 60).
  --dry-run            Say what would be written; write nothing.
  -d --debug           Log debug messages.
  -l --log-file=FILE   Also write the log to FILE.
  -q --quiet           Print only warnings and errors (for cron, which mails what a job
                       prints): no progress, and no summary unless the command fails;
                       with -l, FILE still gets everything.
  -h --help            Show this help.

Exit status: 0 written; 1 written, but some objects refer to objects Kibana does not hold
(listed: deleted while still in use), which a setup_kbn of the file cannot restore whole; 2
configuration error (a space Kibana does not have, or one holding no saved objects when the file
holds some: the file is kept; a KB_URL that is not Kibana or answers a redirect); 3 Kibana
unreachable, not ready or refusing, or an answer of it too large; 5 the export could not be
written (a full disk: the previous file is left as it was); 130 stopped by a signal.

Examples:
  KB_URL=http://kibana:5601 kcing backup_kbn       # then review `git diff kibana/`
  kcing backup_kbn --space team-a --kibana-dir /tmp/kbn --dry-run
"""


def _kept_in(path: Path) -> str:
    """What the file at `path` holds that an export of no objects would replace: its saved objects
    counted, or that it cannot be read as saved objects (a merge's conflict markers in it: the
    objects around them are still someone's); "" when it holds nothing (absent, empty)."""
    try:
        text = read_regular_text(path)
    except (FileNotFoundError, NotRegularFile):
        return ""  # nothing to keep; a FIFO or a device is refused by name as the file is written
    except (OSError, UnicodeDecodeError) as error:
        return "which kcing cannot read: %s" % reading_failure(error)
    try:
        objects = parse_ndjson(text)
    except ValueError as error:
        return "which is not all saved objects: %s" % error
    return counted(len(objects), "object") if objects else ""


def _checked_directory(directory: Path) -> bool:
    """Whether `directory`, where the export goes, is to be created; refused (ConfigError) when it
    is no directory, or when the directory it would be created in is missing: `/srv/kcnig/kibana`
    would otherwise put the export in a tree of new directories nobody looks in."""
    if is_directory(directory, "--kibana-dir"):
        return False
    if os.path.lexists(str(directory)):
        raise ConfigError("--kibana-dir %s is not a directory" % directory)
    parent = directory.absolute().parent
    if not is_directory(parent, "--kibana-dir"):
        raise ConfigError("--kibana-dir %s: directory %s does not exist; create it, or check the name (kcing "
                          "creates the last directory of DIR only)" % (directory, parent))
    return True


def _report_dangling(objects: list) -> int:
    """List the objects that refer to objects Kibana does not hold; 1 when there are some."""
    dangling = dangling_references(objects)
    for problem in dangling:
        said("  %s" % describe(problem))
    if dangling:
        # The one line on stderr the command ends with: the list is on stdout.
        log.warning("backup_kbn: %d of %s %s to objects Kibana does not hold: see the list printed",
                    len(dangling), counted(len(objects), "object"), verb(len(dangling), "refers", "refer"))
    return 1 if dangling else 0


def run(args: dict, settings, session=None) -> int:
    """Export the space's saved objects into the saved objects file (dry run: only say so); 1
    when some of them refer to objects Kibana does not hold."""
    directory = kibana_dir(args)
    create = _checked_directory(directory)  # before waiting for Kibana: a typo is said at once
    client = make_client(args, settings, session)
    url = space_url(settings.KB_URL, client.space)
    client.wait_ready(seconds(args, "--wait", DEFAULT_WAIT), every=settings.KCING_PROGRESS_EVERY)
    client.check_space()
    objects = client.export()
    text = hide_url(canonical_ndjson(objects), url)
    path = directory / SAVED_OBJECTS
    summary = "%s (%s) from %s" % (counted(len(objects), "object"), count_by_type(objects), url)
    if not objects:
        kept = _kept_in(path)
        if kept:
            # A Kibana that lost its saved objects, or the wrong KB_URL or KB_SPACE: emptying the
            # file would lose the dashboards it holds, and setup_kbn refuses an empty file.
            raise ConfigError("Kibana at %s holds no saved objects: kept %s (%s) as it was; check KB_URL "
                              "and KB_SPACE" % (url, path, kept))
    if args.get("--dry-run"):
        same = holds(path, text.encode("utf-8"))
        said("backup_kbn: dry run: would write %s to %s (%s)" % (
            summary, path, "creating directory %s" % directory if create else "no change" if same else "changed"))
        return _report_dangling(objects)
    write_atomically(path, text.encode("utf-8"))
    said("backup_kbn: %s written to %s%s" % (summary, path, " (directory %s created)" % directory if create else ""))
    return _report_dangling(objects)
