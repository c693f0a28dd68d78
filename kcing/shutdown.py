"""Turn SIGINT and SIGTERM into a request to stop: the first one gently, a second one at once."""
from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Optional

from kcing.errors import Interrupted, RunFailing

log = logging.getLogger(__name__)

# After the second signal the process ends within this many seconds, whatever a thread is stuck
# in (a wait no signal reaches, a lock an interrupted thread left held): the run has already
# recorded what was acknowledged, and a half-written ledger transaction rolls back like a kill.
URGENT_EXIT_SECONDS = 3.0
# The longest the main thread blocks in one wait. The kernel hands a signal to any thread of the
# process; Python runs the handler in the main thread, and only once that thread runs Python code
# again. A main thread blocked in one long wait (for a post's answer, a backoff) would keep the
# handler, and so the stop, waiting as long as that wait lasts.
WAIT_SLICE_SECONDS = 0.2
# How long after the first signal the batch in flight may take to be answered: a stopping
# service manager waits 10 s (Docker) to 90 s (systemd) before it kills, and an input that does
# not answer would otherwise hold the stop for ES_TIMEOUT or ES_POST_DEADLINE.
GRACE_SECONDS = 10.0


class Stop:
    """Set by the first SIGINT/SIGTERM: finish the batch in flight, start nothing new, retry
    nothing. `urgent` turns true with the second: cut every transfer in progress now.

    Sources and sinks wait between retries with `pause`, so a stop never waits a backoff out;
    nor does a run that is ending with an error (`fail`).

    `set` runs in signal handlers, and takes no lock it could wait for: a handler runs in the main
    thread between two of its bytecodes, also while that thread is inside the stop's own lock (a
    `set` an earlier signal interrupted, a `wait`). threading.Event.set waited there for its own
    thread: the next signal's handler, run inside that wait, waited too, one frame deeper for
    each signal, until the run ended in RecursionError (exit 70, its row closed `ok`).
    """

    urgent = False
    # Set by the third signal, which says it is ignored, as the later ones are (quietly).
    ignoring = False
    # How many blocks of the main thread the first signal cuts at once (`cut_by_a_stop`).
    cutting = 0
    # When the stop was requested (time.monotonic()), once it was.
    requested_at: Optional[float] = None
    # Set by `fail`: the run is ending with an error, and none of its waits is worth waiting out.
    failed = False

    def __init__(self) -> None:
        self._requested = False
        self._cond = threading.Condition(threading.Lock())

    def set(self) -> None:
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        self._requested = True
        # Wake the waiters now if the lock is free; if it is held, its holder is a waiter about
        # to look at the flag, or the thread this runs in: every wait looks again within
        # WAIT_SLICE_SECONDS.
        if self._cond.acquire(blocking=False):
            try:
                self._cond.notify_all()
            finally:
                self._cond.release()

    def fail(self) -> None:
        """The run is ending with an error (the feed's, which it reports): its waits end now
        and no retry starts (`ending`), as at a stop, but it is no stop: `is_set` stays false,
        nothing is cut at the end of a grace period, and a signal after it is the first.

        Called by the feed's threads, never in a signal handler: it may wait for the lock."""
        self.failed = True
        with self._cond:
            self._cond.notify_all()

    def is_set(self) -> bool:
        return self._requested

    def ending(self) -> bool:
        """Whether the run is ending, stopped by a signal or failed (`fail`): no retry starts."""
        return self._requested or self.failed

    def past_grace(self) -> bool:
        """Whether the batch in flight has had its GRACE_SECONDS since the stop to be answered:
        then it is cut as by a second signal (sent again by the next run, under the same ids)."""
        return self.requested_at is not None and time.monotonic() - self.requested_at > GRACE_SECONDS

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Whether the run began ending (a stop was requested, or `fail`) within `timeout`
        seconds (without one, wait for it), waiting in slices of WAIT_SLICE_SECONDS."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ending():
            remaining = WAIT_SLICE_SECONDS if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                if not self.ending():
                    self._cond.wait(min(remaining, WAIT_SLICE_SECONDS))
        return True

    def pause(self, seconds: float) -> None:
        """Sleep `seconds`, unless the run begins ending before or meanwhile: then raise
        Interrupted (a stop) or RunFailing (`fail`)."""
        if self.wait(seconds):
            if self._requested:
                raise Interrupted("stopped by a signal while waiting to retry")
            raise RunFailing("not retried: the run is ending with an error")


# Set once the line saying a command was interrupted is written (kcing/cli.py).
interrupt_reported = threading.Event()

# For the process that is kcing (not a test calling a command): whether a signal may still
# change how the command ends (see `hold_signals_after_the_end`), and the status it ends with.
_after_the_command = {"held": False, "status": None, "command": "", "row_closed": False, "row_closing": False}


def hold_signals_after_the_end(command: str) -> None:
    """Once the command's run row records how it ended (`run_row_closed`), and once the command
    is done, a SIGINT or SIGTERM no longer changes how it ends (`_signal_after_the_end`), and
    the process leaves no moment to Python's own handlers: with those, a SIGTERM in its last
    milliseconds (its summary printed, its row closed `ok`) killed it, exit 143 without a word,
    and one a moment earlier ended it `interrupted`, exit 130, its row saying `ok` all the same."""
    _after_the_command.update(held=True, command=command)
    # Exit functions run last registered first: this one, registered as the command starts, runs
    # after those registered since, and does logging's (registered at import) itself. Past it,
    # the interpreter would put the default handlers back while it tears its modules down.
    atexit.register(_exit_without_finalizing)


def run_row_opened() -> None:
    """A run row of this process is open: a signal stops its run (Ledger.recorded_run)."""
    _after_the_command.update(row_closed=False, row_closing=False)


def run_row_closing() -> None:
    """The run row of this process is being given its outcome: a signal no longer interrupts
    that write. Interrupted before it committed, it left the row open; after, it ended the
    process `interrupted` (exit 130) beside a row saying `ok`. Should the write fail, the row
    is open again (`run_row_opened`)."""
    _after_the_command["row_closing"] = True


def run_row_closed() -> None:
    """The run row of this process has its outcome: a signal can no longer change it."""
    _after_the_command.update(row_closed=True, row_closing=False)


def ending_with(status: int) -> None:
    """The status the process ends with, once the command line knows it."""
    _after_the_command["status"] = status


def _settled() -> bool:
    """Whether how the command ends is recorded, and a signal must not change it."""
    return _after_the_command["held"] and (_after_the_command["row_closed"] or _after_the_command["row_closing"])


def _exit_without_finalizing() -> None:
    """End the process with the command's status once every exit function ran (threads were
    joined before them), without the interpreter's teardown, during which a SIGTERM would
    find the default handler and end the process with 143."""
    status = _after_the_command["status"]
    if status is None:  # the command line did not end as it does: let Python say what happened
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # said already (kcing/cli.py: stdout_flushed), or nowhere left to say it
            pass
    os._exit(status)


def _signal_after_the_end(signum, frame) -> None:
    """A signal once the command is done changes nothing of how it ended (its run row says so
    already): the process ends with the command's status, as it is about to, or after
    URGENT_EXIT_SECONDS if something holds it (a thread the interpreter waits for)."""
    line = b"kcing %s: still ending %.0f s after the signal: exiting now\n" % (
        _after_the_command["command"].encode(), URGENT_EXIT_SECONDS)
    _exit_soon(line)


@contextmanager
def terminate_as_interrupt(command: str) -> Iterator[None]:
    """SIGINT and SIGTERM interrupt the main thread (KeyboardInterrupt) for the block: a command
    that does not stop gently (drp, gen_samples, setup_*, status) then ends with exit status 130
    and one line, rather than killed by SIGTERM with no word. Whatever a thread is stuck in (a
    download of gen_samples' pool, which the interpreter would wait for), the process is gone
    URGENT_EXIT_SECONDS later. `stop_on_signals` inside the block takes both over for its own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    line = b"kcing %s: interrupted (still running %.0f s after the signal: exiting now)\n" % (
        command.encode(), URGENT_EXIT_SECONDS)

    def interrupt(signum, frame):
        if _settled():
            _signal_after_the_end(signum, frame)
            return
        _exit_soon(line, interrupt_reported)
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _watching_signals(line):
            yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, _signal_after_the_end if _after_the_command["held"] else handler)


# What the signal watcher acts on: how many signals arrived, from which count on they end the
# process (the first outside a gentle stop, the second within one), and what it then says.
_watched = {"arrived": 0, "urgent_from": 1, "line": None, "said": None}


@contextmanager
def _watching_signals(line: bytes) -> Iterator[None]:
    """Start the exit URGENT_EXIT_SECONDS after a signal even while the main thread is blocked
    in C code, where Python runs no signal handler until the call returns: SQLite waiting out
    KCING_DB_LOCK_WAIT for another process's lock, say. Python's own C-level handler writes each
    signal's number to the wakeup fd at once; a thread reading it starts the exit."""
    reading, writing = os.pipe()
    os.set_blocking(writing, False)
    try:
        previous = signal.set_wakeup_fd(writing, warn_on_full_buffer=False)
    except ValueError:  # not the main thread of the main interpreter
        os.close(reading)
        os.close(writing)
        yield
        return
    _watched.update(arrived=0, urgent_from=1, line=line, said=interrupt_reported)

    def watch() -> None:
        while True:
            try:
                arrived = os.read(reading, 64)
            except OSError:
                return
            if not arrived:
                return
            _watched["arrived"] += sum(1 for number in arrived if number in (signal.SIGINT, signal.SIGTERM))
            if _watched["arrived"] >= _watched["urgent_from"]:
                _exit_soon(_watched["line"], _watched["said"])

    watcher = threading.Thread(target=watch, name="signal-watcher", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous)
        os.close(writing)
        watcher.join(1.0)
        os.close(reading)


@contextmanager
def stop_on_signals(stop: Optional[Stop] = None) -> Iterator[Stop]:
    """Yield a Stop set by the first SIGINT/SIGTERM; the second makes it urgent and interrupts the
    main thread (KeyboardInterrupt). Later ones are ignored: the run is already stopping at once,
    and an interruption inside its last ledger writes would only leave the run row open."""
    stop = stop if stop is not None else Stop()
    previous = {}

    def request_stop(signum, frame):
        name = signal.Signals(signum).name
        if _settled():
            # The run's row says how it ended: what is left of the command (its summary, its
            # metrics) is done as it is. Only what would start a new run stops: the check of
            # `feed_es --verify`, a re-send of reconcile, which open rows of their own.
            # Set before the line is written: a handler run inside this one's write (the next
            # signal) writing too would find stderr's buffer busy (RuntimeError: reentrant call).
            said = stop.is_set()
            stop.set()
            if not said:
                log.warning("%s received: the run's end is recorded; finishing", name)
            _signal_after_the_end(signum, frame)
            return
        if not stop.is_set():
            stop.set()
            if stop.cutting:
                log.warning("%s received: stopping now", name)
                raise KeyboardInterrupt
            log.warning("%s received: finishing the batch in flight (for up to %gs), then stopping", name,
                        GRACE_SECONDS)
        elif not stop.urgent:
            stop.urgent = True
            log.warning("%s received again: stopping now", name)
            _exit_soon()
            raise KeyboardInterrupt
        elif not stop.ignoring:
            stop.ignoring = True
            log.warning("%s received: already stopping; further signals are ignored", name)

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, request_stop)
    # The first signal is a gentle stop: the watcher (if one runs) ends the process only after
    # the second, as the handler does.
    watched = dict(_watched)
    _watched.update(urgent_from=_watched["arrived"] + 2, line=None, said=None)
    try:
        yield stop
    finally:
        _watched.update(urgent_from=watched["urgent_from"], line=watched["line"], said=watched["said"])
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def cut_by_a_stop(stop: Optional[Stop], what: str) -> Iterator[None]:
    """Raise Interrupted ("stopped by a signal `what`") as soon as `stop` is set within the block,
    even while the main thread is blocked in it: for a wait that nothing is lost by abandoning (a
    question to Elasticsearch, answered or cut by ES_REQUEST_DEADLINE only), unlike a batch in
    flight. Off the main thread, which no signal handler interrupts, it does nothing."""
    if stop is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    if stop.is_set():
        raise Interrupted("stopped by a signal %s" % what)
    stop.cutting += 1
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted("stopped by a signal %s" % what) from None
    finally:
        stop.cutting -= 1


def wait_all(pending: Iterable[futures.Future]) -> None:
    """Return once every future of `pending` is done, waking every WAIT_SLICE_SECONDS."""
    pending = [future for future in pending if not future.done()]
    while pending:
        try:
            pending = list(futures.wait(pending, timeout=WAIT_SLICE_SECONDS).not_done)
        except KeyboardInterrupt:
            _let_go_of(pending)
            raise


def _let_go_of(pending: Iterable[futures.Future]) -> None:
    """Release the futures' locks this thread still holds. futures.wait takes each future's lock
    in turn before its `with` block begins: a signal's KeyboardInterrupt between two of them left
    those taken so far held, and the thread finishing such a future waited for the lock forever;
    the process, which waits for that thread as it exits, then ended only by the urgent exit."""
    for future in pending:
        lock = future._condition
        while lock._is_owned():
            lock.release()


def result_of(future: futures.Future) -> Any:
    """`future.result()`, waiting in slices of WAIT_SLICE_SECONDS."""
    wait_all((future,))
    return future.result()


_exit_started = threading.Lock()


def _exit_soon(line: Optional[bytes] = None, said: Optional[threading.Event] = None) -> None:
    """Start the exit URGENT_EXIT_SECONDS from now, once per process (a handler and the signal
    watcher may both ask for it)."""
    if _exit_started.acquire(blocking=False):
        threading.Thread(target=_exit_after, args=(URGENT_EXIT_SECONDS, line, said), name="urgent-exit",
                         daemon=True).start()


def _exit_after(seconds: float, line: Optional[bytes] = None, said: Optional[threading.Event] = None) -> None:
    """End the process in `seconds`, unless it ends first, writing `line` unless `said` is set
    (what happened was told already), with status 130, or the command's own status once the
    command line knows it (the command was done: the signal changed nothing).

    Writes with os.write, not logging: a stuck thread may hold the logging lock."""
    time.sleep(seconds)
    if line is None:
        line = b"kcing: still running %.0f s after the second signal: exiting now\n" % seconds
    try:
        if said is None or not said.is_set():
            os.write(2, line)
    except OSError:
        pass
    ending = _after_the_command["status"]
    os._exit(130 if ending is None else ending)
