"""Turn SIGINT and SIGTERM into a request to stop: the first one gently, a second one at once."""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional

from kcing.errors import Interrupted

log = logging.getLogger(__name__)

# After the second signal the process ends within this many seconds, whatever a thread is stuck
# in (a wait no signal reaches, a lock an interrupted thread left held): the run has already
# recorded what was acknowledged, and a half-written ledger transaction rolls back like a kill.
URGENT_EXIT_SECONDS = 3.0


class Stop(threading.Event):
    """Set by the first SIGINT/SIGTERM: finish the batch in flight, start nothing new, retry
    nothing. `urgent` turns true with the second: cut every transfer in progress now.

    Sources and sinks wait between retries with `pause`, so a stop never waits a backoff out.
    """

    urgent = False

    def pause(self, seconds: float) -> None:
        """Sleep `seconds`, unless a stop is requested before or meanwhile: then raise Interrupted."""
        if self.wait(seconds):
            raise Interrupted("stopped by a signal while waiting to retry")


@contextmanager
def stop_on_signals(stop: Optional[Stop] = None) -> Iterator[Stop]:
    """Yield a Stop set by the first SIGINT/SIGTERM; the second makes it urgent and interrupts the
    main thread (KeyboardInterrupt). Later ones are ignored: the run is already stopping at once,
    and an interruption inside its last ledger writes would only leave the run row open."""
    stop = stop if stop is not None else Stop()
    previous = {}

    def request_stop(signum, frame):
        name = signal.Signals(signum).name
        if not stop.is_set():
            log.warning("%s received: finishing the batch in flight, then stopping", name)
            stop.set()
        elif not stop.urgent:
            stop.urgent = True
            log.warning("%s received again: stopping now", name)
            threading.Thread(target=_exit_after, args=(URGENT_EXIT_SECONDS,), name="urgent-exit", daemon=True).start()
            raise KeyboardInterrupt
        else:
            log.warning("%s received: already stopping", name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, request_stop)
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_after(seconds: float) -> None:
    """End the process with status 130 in `seconds`, unless it ends first.

    Writes with os.write, not logging: a stuck thread may hold the logging lock."""
    time.sleep(seconds)
    try:
        os.write(2, b"kcing: still running %.0f s after the second signal: exiting now\n" % seconds)
    except OSError:
        pass
    os._exit(130)
