"""Progress of a long command (feed_es, reconcile, gen_samples) while it runs.

On a terminal, one live line redrawn in place a few times a second; otherwise (cron, a pipe) a
`progress:` log line every `every` seconds, as the log file and the mail from cron want. Log
records that reach the terminal meanwhile clear the live line first (see kcing/logs.py), so the
two never share a line.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, TextIO

log = logging.getLogger(__name__)

LOG_EVERY = 10.0
REDRAW_EVERY = 0.25
# How often a command's progress is looked at while the command waits (`Progress.kept_up`).
TICK_EVERY = 1.0
CLEAR = "\r\x1b[K"

# Re-entrant: a signal's handler logs (kcing/shutdown.py), and runs in the main thread, also
# while that thread holds this lock (drawing the line, or clearing it for a record of its own);
# with a plain lock the handler waited for its own thread, and the process hung, its next
# signals waiting alike.
_lock = threading.RLock()
_shown: Optional["Progress"] = None  # the live line on the terminal now, if any
# False with --quiet: no live line even on a terminal (kcing/logs.py sets it).
live_allowed = True


def clear_live_line(stream: TextIO) -> None:
    """Before a log record is written to `stream`: take the live line off it (redrawn later)."""
    with _lock:
        if _shown is not None and _shown.stream is stream and _shown.drawn:
            stream.write(CLEAR)
            _shown.drawn = False


def seconds_left(done: int, total: Optional[int], elapsed: float) -> Optional[float]:
    """How long the rest of `total` takes at the pace `done` took `elapsed`; None while unknown
    (no total yet, nothing done) or when nothing is left."""
    if total is None or done <= 0 or elapsed <= 0 or done >= total:
        return None
    return (total - done) * elapsed / done


def eta_text(done: int, total: Optional[int], elapsed: float) -> str:
    """', ETA 1m20s' once the total is known and something was done; else ''."""
    return eta_of(seconds_left(done, total, elapsed))


def eta_of(seconds: Optional[float]) -> str:
    """', ETA 1m20s' for `seconds`; '' for None."""
    if seconds is None:
        return ""
    minutes, seconds = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return ", ETA %dh%02dm" % (hours, minutes)
    return ", ETA %dm%02ds" % (minutes, seconds) if minutes else ", ETA %ds" % seconds


def _columns(stream: TextIO) -> int:
    """The terminal's width (a line longer than that would wrap and never be redrawn in place)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return columns or shutil.get_terminal_size((120, 24)).columns


class Progress:
    def __init__(self, name: str, stream: Optional[TextIO] = None, live: Optional[bool] = None,
                 every: float = LOG_EVERY, redraw: float = REDRAW_EVERY,
                 clock: Callable[[], float] = time.monotonic):
        self.name = name
        self.stream = stream or sys.stderr
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(live_allowed and isatty and isatty())
        self.live = live
        self.every = every
        self.redraw = redraw
        self.clock = clock
        self.drawn = False
        self._last: Optional[float] = None if live else clock()
        self._turn = threading.Lock()  # the command's thread and `kept_up`'s both report

    def update(self, text: Callable[[], str]) -> None:
        """Report `text()` if it is time to; cheap to call for every object."""
        now = self.clock()
        with self._turn:
            if self._last is not None and now - self._last < (self.redraw if self.live else self.every):
                return
            self._last = now
        if self.live:
            self._draw(text())
        else:
            log.info("progress: %s", text())

    @contextmanager
    def kept_up(self, text: Callable[[], str], every: float = TICK_EVERY) -> Iterator[None]:
        """Report `text()` on time while the block runs, also while its thread only waits (a
        pause ES_MAX_DOCS_PER_SECOND sets, a post retried after a backoff, a slow answer): a
        thread of its own looks every `every` seconds whether a report is due."""
        done = threading.Event()

        def tick() -> None:
            while not done.wait(every):
                try:
                    self.update(text)
                except Exception:  # figures read while the command changes them: the next tick tells
                    log.debug("progress not reported this time", exc_info=True)

        ticker = threading.Thread(target=tick, name="progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join(every + 1.0)

    def finish(self, text: Callable[[], str]) -> None:
        """End the live line with the final figures (the summary follows on its own lines)."""
        global _shown
        if not self.live:
            return
        self._draw(text())
        with _lock:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
            _shown = None

    def _draw(self, line: str) -> None:
        global _shown
        width = _columns(self.stream)
        line = ("%s: %s" % (self.name, line))[:max(width - 1, 20)]
        with _lock:
            self.stream.write(CLEAR + line)
            self.stream.flush()
            self.drawn = True
            _shown = self
