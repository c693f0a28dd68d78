"""Turn SIGINT and SIGTERM into a request to stop after the batch in flight."""
from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Yield an Event set by the first SIGINT/SIGTERM; a second one interrupts at once."""
    stop = threading.Event()
    previous = {}

    def request_stop(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        log.warning("%s received: finishing the batch in flight, then stopping",
                    signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, request_stop)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
