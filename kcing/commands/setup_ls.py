"""kcing setup_ls: write the kcing entry of Logstash's pipelines.yml, keeping the other pipelines."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from kcing.commands import said
from kcing.admin.logstash_setup import free_backup_path, merge_pipeline_entry, names_no_file, pipeline_entry
from kcing.errors import ConfigError, reading_failure
from kcing.files import is_directory, read_regular_text, write_atomically

log = logging.getLogger(__name__)

SUMMARY = "write the kcing entry of Logstash's pipelines.yml"

USAGE = """\
Usage:
  kcing setup_ls [options]

Write the kcing pipeline entry into LS_HOME/config/pipelines.yml (LS_PATH_SETTINGS/pipelines.yml
when set: /etc/logstash for the deb and rpm packages), keeping the other pipelines in it
(LS_QUEUE_TYPE, LS_NUM_WORKERS, ... from settings). The previous file is kept beside it as
pipelines.yml.<time>.bak.

Settings read (from the environment or ./local_settings.py; the README's table says each):
LS_HOME, LS_PATH_SETTINGS, LS_PATH_CONFIG, LS_PIPELINE_BATCH_SIZE, LS_NUM_WORKERS, LS_QUEUE_TYPE,
LS_QUEUE_MAX_EVENTS, LS_QUEUE_MAX_BYTES.

Options:
  --dry-run            Print the file as it would become; write nothing.
  -d --debug           Log debug messages.
  -l --log-file=FILE   Also write the log to FILE.
  -q --quiet           Print only warnings and errors (for cron, which mails what a job
                       prints): no progress, and no summary unless the command fails;
                       with -l, FILE still gets everything.
  -h --help            Show this help.

Exit status: 0 written (or already right); 2 configuration error (LS_HOME, LS_PATH_SETTINGS, an
unreadable file, a directory it may not write into); 5 pipelines.yml could not be written (a
full disk: the previous file is left as it was); 130 stopped by a signal (pipelines.yml is left
as it was).

Examples:
  LS_HOME=/opt/logstash-8.15.3 kcing setup_ls --dry-run      # an archive install
  LS_HOME=/opt/logstash-8.15.3 LS_QUEUE_TYPE=persisted kcing setup_ls
  LS_PATH_SETTINGS=/etc/logstash kcing setup_ls              # the deb or rpm package
"""


def settings_directory(settings) -> Path:
    """The directory Logstash reads pipelines.yml from (its path.settings).

    LS_HOME/config for an archive or Docker install; the deb and rpm packages keep their home
    in /usr/share/logstash but run Logstash with --path.settings /etc/logstash, so a file
    written into the home would never be read: LS_PATH_SETTINGS names that directory."""
    if settings.LS_PATH_SETTINGS:
        if not is_directory(Path(settings.LS_PATH_SETTINGS), "LS_PATH_SETTINGS"):
            raise ConfigError("LS_PATH_SETTINGS=%s is not a directory" % settings.LS_PATH_SETTINGS)
        return Path(settings.LS_PATH_SETTINGS)
    if not settings.LS_HOME:
        raise ConfigError("LS_HOME is not set: point it at the Logstash home, whose config/ holds pipelines.yml "
                          "(or LS_PATH_SETTINGS at the directory that holds it, /etc/logstash for the deb and rpm "
                          "packages)")
    config_dir = Path(settings.LS_HOME) / "config"
    if not is_directory(Path(settings.LS_HOME), "LS_HOME"):
        raise ConfigError("LS_HOME=%s is not a directory" % settings.LS_HOME)
    if not is_directory(config_dir, "LS_HOME"):
        raise ConfigError("%s does not exist: is LS_HOME=%s a Logstash home? A deb or rpm install keeps its "
                          "settings in /etc/logstash: set LS_PATH_SETTINGS=/etc/logstash"
                          % (config_dir, settings.LS_HOME))
    return config_dir


def run(args: dict, settings, now=time.time) -> int:
    """Write the kcing entry into pipelines.yml of Logstash's settings directory; --dry-run prints it."""
    config_dir = settings_directory(settings)
    path = config_dir / "pipelines.yml"
    try:
        existing = read_regular_text(path) if path.exists() else ""
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("cannot read %s: %s" % (path, reading_failure(error))) from None
    entry = pipeline_entry(settings)
    if names_no_file(entry["path.config"]):
        # A mistyped LS_PATH_CONFIG would be found only when Logstash next starts, and refuses the
        # pipeline. Not refused here: the pipeline file may be put in place after this entry.
        log.warning("LS_PATH_CONFIG=%s names no file on this host: Logstash refuses to start the kcing pipeline "
                    "until it does (No config files found in path)", entry["path.config"])
    try:
        merged = merge_pipeline_entry(existing, entry)
    except ValueError as error:
        raise ConfigError("%s: %s; fix or move it, then run setup_ls again" % (path, error)) from None
    if args.get("--dry-run"):
        # A comment keeps the output valid YAML for whoever pipes it somewhere: one line, whatever
        # the path holds.
        said("# setup_ls dry run: %s would become (%s):" % (path, "unchanged" if merged == existing else "changed"))
        print(merged, end="")
        return 0
    if merged == existing:
        said("setup_ls: %s already has this kcing pipeline entry" % path)
        return 0
    saved = ""
    if path.exists():
        backup = free_backup_path(config_dir, now())
        write_atomically(backup, existing.encode("utf-8"), like=path)
        saved = "; previous file saved as %s" % backup
    write_atomically(path, merged.encode("utf-8"))
    said("setup_ls: wrote the kcing pipeline (path.config %s) to %s%s" % (entry["path.config"], path, saved))
    return 0
