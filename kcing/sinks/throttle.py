"""Pace batches: a fixed pause between batches and an optional documents-per-second cap."""
from __future__ import annotations

import time
from typing import Callable


class RateLimiter:
    """Decides how long to wait before the next batch; sleeps through the injected `sleep`."""

    def __init__(self, interval: float = 0.0, docs_per_second: float = 0.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.interval = interval
        self.docs_per_second = docs_per_second
        self.clock = clock
        self.sleep = sleep
        self._next_allowed = None

    def wait_for(self, documents: int) -> float:
        """Block until a batch of `documents` may go; return the seconds waited."""
        now = self.clock()
        waited = 0.0
        if self._next_allowed is not None and now < self._next_allowed:
            waited = self._next_allowed - now
            self.sleep(waited)
            now += waited
        spacing = self.interval
        if self.docs_per_second > 0:
            spacing = max(spacing, documents / self.docs_per_second)
        self._next_allowed = now + spacing
        return waited
