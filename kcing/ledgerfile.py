"""The ledger KCING_DB names: opened for a command, its run lock, and what to say when there is none.

Apart from kcing/wiring.py, which builds a feed's sources and sinks: the commands that only read
or prune the ledger (status, drp) do not import what a feed needs.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from kcing.errors import ConfigError
from kcing.ledger.ledger import Ledger
from kcing.ledger.location import check_ledger_path, ledger_exists
from kcing.runlock import RunLock
from kcing.shutdown import Stop
from kcing.sinks import logstash_destination_of, logstash_destinations_key


def no_ledger(settings, args: Optional[dict] = None) -> ConfigError:
    """The error of a command that reads a ledger when KCING_DB names none: a missing directory is
    said as such, since running feed_es first would not help. `args`: the command's flags, to
    name --db rather than KCING_DB, and not advise passing it, when it was passed."""
    directory = Path(settings.KCING_DB).expanduser().absolute().parent
    if not directory.is_dir():
        return ConfigError("no ledger at %s: directory %s %s (check KCING_DB or --db)"
                           % (settings.KCING_DB, directory, not_a_directory(directory)))
    by_flag = bool((args or {}).get("--db"))
    if not Path(settings.KCING_DB).expanduser().is_absolute():
        # The default `kcing.db` is read in the working directory: `kcing status` typed in one's
        # home, while cron's feed runs in /srv/kcing, is not a ledger to start with a feed_es
        # there (a second ledger, and everything sent again), but a directory to change to.
        return ConfigError("no ledger at %s yet (%s %s is relative to the working directory): run this where "
                           "feed_es runs, %s, or run `kcing feed_es` first"
                           % (Path(settings.KCING_DB).expanduser().absolute(), "--db" if by_flag else "KCING_DB",
                              settings.KCING_DB, "give --db the ledger's absolute path" if by_flag else "pass --db"))
    return ConfigError("no ledger at %s yet: run `kcing feed_es` first (or %s --db)"
                       % (settings.KCING_DB, "check" if by_flag else "pass"))


def check_ledger_directory(settings) -> None:
    """Before a run that creates the ledger: its directory must exist (kcing creates no directory
    for it), said of KCING_DB rather than of the lock file beside it."""
    directory = Path(settings.KCING_DB).expanduser().absolute().parent
    if not directory.is_dir():
        raise ConfigError("KCING_DB %s: directory %s %s; create it or point KCING_DB (or --db) "
                          "elsewhere" % (settings.KCING_DB, directory, not_a_directory(directory)))
    check_ledger_path(Path(settings.KCING_DB).expanduser())


def ledger_run_lock(settings) -> RunLock:
    """The run lock of the ledger KCING_DB names, whose path is checked first: the lock's file is
    made beside it, and `KCING_DB=/dev/null` left a /dev/null.lock in /dev."""
    check_ledger_path(Path(settings.KCING_DB).expanduser())
    return RunLock(settings.KCING_DB)


def not_a_directory(path: Path) -> str:
    """Why `path`, which should be a directory, is none: a file in its place is not "missing"."""
    return "is not a directory" if os.path.lexists(str(path)) else "does not exist"


def open_ledger(settings, dry_run: bool = False, stop: Optional[Stop] = None) -> Ledger:
    """The ledger at KCING_DB. A ledger from before destinations were recorded takes what it
    holds as sent to the Logstash inputs configured now. `stop`: once it is set, a write waits
    for another process's lock no longer than the batch in flight is waited for (its grace)."""
    # A dry run must not create or change anything, not even an empty ledger file.
    if dry_run and not ledger_exists(settings.KCING_DB):
        return Ledger.open(":memory:")
    return Ledger.open(settings.KCING_DB, wait=settings.KCING_DB_LOCK_WAIT,
                       earlier_destination=logstash_destination_of(settings),
                       earlier_watermark_destination=logstash_destinations_key(settings), unchanged=dry_run,
                       abandon_wait=stop.past_grace if stop is not None else (lambda: False))
