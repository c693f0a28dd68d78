"""What a command waiting for a service (setup_es, setup_kbn, backup_kbn) tells the user: one line
when it starts waiting, then a short countdown at most every `every` seconds, not a line per poll."""
from __future__ import annotations

import logging
import time
from typing import Callable, Optional

log = logging.getLogger(__name__)

COUNTDOWN_EVERY = 10.0


class WaitReport:
    def __init__(self, what: str, timeout: float, clock: Callable[[], float] = time.monotonic,
                 every: float = COUNTDOWN_EVERY):
        self.what = what
        self.timeout = timeout
        self.clock = clock
        self.every = every
        self.deadline = clock() + timeout
        self._last: Optional[float] = None

    def not_ready(self, reason: str) -> None:
        """Called after each poll that found the service not ready yet."""
        now = self.clock()
        if self._last is None:
            # %g, as the closing line says it: a --wait of 0.4 was announced as "up to 0s".
            log.info("waiting up to %gs for %s (%s)", self.timeout, self.what, reason)
            self._last = now
        elif now - self._last >= self.every:
            log.info("still waiting for %s: %.0fs left (%s)", self.what, max(0.0, self.deadline - now), reason)
            self._last = now
