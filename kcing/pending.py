"""How many bytes of built documents may wait for the sink before downloads pause.

While Logstash refuses or slows (429, 503, a slow pipeline), the feed's own thread waits for its
posts, and the download threads would go on fetching and building every object already handed
to them: their documents, many times a file's size, would wait in memory. Before each download
a thread asks here: it goes on while the documents waiting hold less than the budget, and the
object the feed takes next always goes on (it alone may be larger than the budget), so the feed
never waits for a download that waits for the feed.
"""
from __future__ import annotations

import threading


class PendingBytes:
    """Bytes of documents built and not yet taken by the feed, against a budget.

    Objects are numbered in the order the feed hands them to the download threads, which is the
    order it takes them back in."""

    def __init__(self, budget: int):
        self.budget = budget
        self.held = 0
        self.most_held = 0  # the largest `held` seen (what tests and a curious user look at)
        self.next_taken = 0  # the number of the object the feed takes next
        self.closed = False
        self._changed = threading.Condition()

    def admit(self, number: int) -> bool:
        """Wait until object `number` may be downloaded; False once the feed no longer takes any."""
        with self._changed:
            while not self.closed and number != self.next_taken and self.held >= self.budget:
                self._changed.wait()
            return not self.closed

    def built(self, size: int) -> None:
        """A download thread holds `size` more bytes of documents for the feed."""
        with self._changed:
            self.held += size
            self.most_held = max(self.most_held, self.held)

    def taken(self, size: int) -> None:
        """The feed took the next object, and with it `size` bytes its thread held."""
        with self._changed:
            self.held -= size
            self.next_taken += 1
            self._changed.notify_all()

    def close(self) -> None:
        """The run is ending: a thread waiting downloads nothing."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()
