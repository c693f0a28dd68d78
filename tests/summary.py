"""Lines for the end of a test session's output: the real node's figures, the fault suite's totals.

With pytest-xdist (`make test` runs the tests in several processes) each worker hands its lines
to the main process when it ends (tests/conftest.py), which prints them all.
"""
from __future__ import annotations

from typing import List

LINES: List[str] = []


def summary_line(line: str) -> None:
    """Print `line` at the end of the session, whichever process ran the test that made it."""
    LINES.append(line)
