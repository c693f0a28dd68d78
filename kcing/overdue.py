"""An overall deadline on one blocking call of the main thread: connecting, sending, and waiting
for every byte of the answer, together.

Socket timeouts bound each wait for the next bytes, so a server answering a byte at a time (its
status line, its headers, its body) within them would hold an admin command forever; a cron job
must end. The admin commands (setup_es, drp, reconcile, setup_kbn, backup_kbn) make their
requests one at a time on the main thread, where a timer signal can interrupt any of those waits.
The feed's threads have their own watchdog (kcing.http.BodyReader).
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


class Overdue(BaseException):
    """The call ran past its deadline. A BaseException, as KeyboardInterrupt is, so that no
    library's `except Exception` takes it for a failure of its own and retries."""


def _raise_overdue(signum, frame) -> None:
    raise Overdue()


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise Overdue in the main thread once `seconds` have passed within the block.

    Off the main thread, where no signal can reach the call, and within another deadline, it
    does nothing."""
    if threading.current_thread() is not threading.main_thread() or signal.getitimer(signal.ITIMER_REAL)[0] > 0:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _raise_overdue)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:  # even when the timer fired just now, within this block
            signal.signal(signal.SIGALRM, previous)
