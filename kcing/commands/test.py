"""kcing test: run the test suite (pytest) from the checkout; every argument goes to pytest."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from kcing.errors import ConfigError

SUMMARY = "run the test suite (pytest); every further argument goes to pytest"

USAGE = """\
Usage:
  kcing test [<pytest-arg>...]

Run the test suite with pytest from this kcing checkout. Every argument after `test` goes to
pytest unchanged (only `kcing test --help` or `kcing test -h` alone shows this text; `pytest --help`
shows pytest's).

Exit status: pytest's (0 all passed, 1 some failed, 2 interrupted, 3 pytest's internal error, 4
a usage error in the arguments, 5 no tests collected); 2 also when the tests or pytest are not
installed here.

Examples:
  kcing test                                      # the whole suite (CI runs `make test`, which first
                                                  # builds the Elasticsearch node of the real-engine tests)
  kcing test -q -k reconcile                      # quietly, only the tests named *reconcile*
  kcing test -m faults                            # the fault-injection scenarios
"""

# Parsed by kcing itself, not docopt: pytest's options are pytest's business.
RAW_ARGUMENTS = True
# The tests set what they need themselves: local_settings.py is neither run nor checked.
READS_SETTINGS = False


def run(args: dict, settings=None) -> int:
    """Run the test suite from the project checkout, as the original tool's `test` command did."""
    root = Path(__file__).resolve().parents[2]
    if not (root / "tests").is_dir():
        raise ConfigError("the tests are not installed here; run `kcing test` from a kcing checkout")
    if not _importable("pytest"):
        # Python's own "No module named pytest" ended with 1, which pytest gives for failed tests.
        raise ConfigError("pytest is not installed for %s: install the test dependencies (make install, or "
                          "pip install -e '.[test]' in the checkout)" % sys.executable)
    # pytest takes this process's place rather than running as its child: Ctrl-C reaches pytest
    # alone, which ends with its report and its own status, and a SIGTERM ends the suite itself
    # rather than a parent that would leave it running orphaned.
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(root)
    os.execv(sys.executable, [sys.executable, "-m", "pytest", *args.get("<pytest-arg>", [])])


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
