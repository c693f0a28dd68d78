"""Build functions for tests of kcing.building: each misbehaves on one object, then builds as kcing does.

A worker process imports this module by name (kcing.building.TARGET), so it stays free of
pytest and of test fixtures.
"""
from __future__ import annotations

import hashlib
import os
import signal
import time
from pathlib import Path

from kcing.building import encoded_documents

# Set in the environment the workers inherit: the sha256 of the file that kills its worker, and
# the signal that kills it (a name; SIGKILL if unset).
CRASH_SHA256 = "KCING_TEST_CRASH_SHA256"
CRASH_SIGNAL = "KCING_TEST_CRASH_SIGNAL"


def crash_on_one_file(kind, content, created, listed_lab, encode, separator=b","):
    """End the worker process on one file, every time: by SIGSEGV as a parser's fault would, by
    SIGKILL as the out-of-memory killer would."""
    if hashlib.sha256(content).hexdigest() == os.environ.get(CRASH_SHA256):
        signal.signal(signal.SIGSEGV, signal.SIG_DFL)  # Python's faulthandler may hold it
        os.kill(os.getpid(), signal.Signals[os.environ.get(CRASH_SIGNAL, "SIGKILL")])
    return encoded_documents(kind, content, created, listed_lab, encode, separator)


def crash_once(kind, content, created, listed_lab, encode, separator=b","):
    """Kill the worker the first time: `listed_lab` is "crash-once:<marker file>" for this test."""
    if listed_lab and listed_lab.startswith("crash-once:"):
        marker = Path(listed_lab.split(":", 1)[1])
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        listed_lab = None
    return encoded_documents(kind, content, created, listed_lab, encode, separator)


def fault_on_lab(kind, content, created, listed_lab, encode, separator=b","):
    """A programming fault (not bad input) on objects listed with the lab "fault", and the worker's pid."""
    if listed_lab == "fault":
        raise TypeError("unsupported operand in worker %d" % os.getpid())
    if listed_lab == "pid":
        raise ValueError("pid %d" % os.getpid())
    if listed_lab == "multiline":
        raise ValueError("first line\nsecond line " + "x" * 500)
    return encoded_documents(kind, content, created, listed_lab, encode, separator)


def hang_on_lab(kind, content, created, listed_lab, encode, separator=b","):
    """Never return on objects listed with the lab "hang:<marker file>", as a worker stuck in a
    parser: the marker, written first, holds the worker's pid."""
    if listed_lab and listed_lab.startswith("hang:"):
        Path(listed_lab.split(":", 1)[1]).write_text(str(os.getpid()))
        while True:
            time.sleep(60)
    return encoded_documents(kind, content, created, listed_lab, encode, separator)
