"""The CLI commands, one module each: `kcing/commands/<name>.py` owns the command's `SUMMARY`
(one line for `kcing --help`), its `USAGE` (what `kcing <name> --help` prints, parsed by docopt)
and its thin `run(args, settings)` function. Modules starting with `_` hold what several share.

Commands are imported on use: `feed_es` from cron should not pay for the Elasticsearch client
(a quarter of a second to import) that only the admin commands need.
"""
from __future__ import annotations

import importlib
from types import ModuleType

# In the order `kcing --help` lists them.
NAMES = ("feed_es", "reconcile", "gen_samples", "drp", "setup_es", "setup_ls", "setup_kbn", "backup_kbn",
         "status", "test")


def load(name: str) -> ModuleType:
    return importlib.import_module("kcing.commands.%s" % name)
