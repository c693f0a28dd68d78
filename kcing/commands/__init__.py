"""The CLI commands, one module each: `kcing/commands/<name>.py` owns the command's `SUMMARY`
(one line for `kcing --help`), its `USAGE` (what `kcing <name> --help` prints, parsed by docopt)
and its thin `run(args, settings)` function. Modules starting with `_` hold what several share.

Commands are imported on use: `feed_es` from cron should not pay for the Elasticsearch client
(a quarter of a second to import) that only the admin commands need.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from kcing import shutdown
from kcing.errors import kept_on_one_line

# In the order `kcing --help` lists them.
NAMES = ("feed_es", "reconcile", "gen_samples", "drp", "setup_es", "setup_ls", "setup_kbn", "backup_kbn",
         "status", "test")


def load(name: str) -> ModuleType:
    return importlib.import_module("kcing.commands.%s" % name)


def run(name: str, args: dict, settings) -> int:
    """Run command `name`. SIGINT and SIGTERM interrupt it as Ctrl-C does (the CLI says so in one
    line, exit 130), unless it stops gently on its own (feed_es, reconcile), or is pytest's."""
    module = load(name)
    if name == "test":
        return module.run(args, settings)
    with shutdown.terminate_as_interrupt(name):
        return module.run(args, settings)


def hold_signals_after_the_end(name: str) -> None:
    """In the process that is kcing: a signal once command `name` recorded how its run ended,
    or once it is done, no longer changes how it ends (kcing/shutdown.py). Not for `test`,
    whose tests run commands in this process and signal them as they please."""
    if name != "test":
        shutdown.hold_signals_after_the_end(name)


def ending_with(status: int) -> None:
    """The status the process ends with, which a signal from now on leaves as it is."""
    shutdown.ending_with(status)


def interruption_told() -> None:
    """The line saying the command was interrupted is written: the exit forced a few seconds
    after the signal, if it comes, need not say it again."""
    shutdown.interrupt_reported.set()


def said(line: str) -> None:
    """Print one line of a command's output: what it quotes (a name given on the command line or
    in a setting, a server's words) may hold a line break or a terminal escape, written as
    escapes (`kept_on_one_line`), so the line stays one and forges none."""
    print(kept_on_one_line(line))


def with_drp_days(args: dict, settings):
    """Settings with --drp-days applied (the CLI does it too; applying it twice is harmless)."""
    if args.get("--drp-days") is not None:
        return settings.with_overrides({"DRP_DAYS": args["--drp-days"]})
    return settings
