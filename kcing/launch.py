"""Starting kcing from its clone (`python kcing.py`, `python -m kcing`) with a Python that cannot
run it: one that lacks its dependencies (the clone's `.venv` not made yet, or another Python than
its own), or is older than 3.11. This module imports nothing beyond the standard library."""
import sys

OLDEST_PYTHON = (3, 11)


def cli_main() -> int:
    """kcing.cli.main(), or 2 with one line saying what to do where this Python cannot run kcing,
    in place of the traceback of the first import that fails."""
    if sys.version_info < OLDEST_PYTHON:
        return _cannot("kcing needs Python %d.%d or later, not %s" % (OLDEST_PYTHON + (sys.version.split()[0],)))
    try:
        from kcing.cli import main
    except ModuleNotFoundError as missing:
        if (missing.name or "kcing").split(".")[0] == "kcing":
            raise  # a module of kcing's own: a broken clone, which the traceback shows
        return _cannot("the Python module %s, which kcing needs, is not installed for %s"
                       % (missing.name, sys.executable))
    return main()


def _cannot(why: str) -> int:
    sys.stderr.write("kcing: %s: run `make install` in the clone, then .venv/bin/kcing (or `pip install -e .` "
                     "into a Python 3.11 or later)\n" % why)
    return 2
