"""The stop's waits in the main thread let a signal's handler run, whichever thread the kernel
handed the signal to."""
from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import Future

import pytest

from kcing import shutdown


class Handled(Exception):
    pass


@pytest.fixture
def handler_raising():
    """SIGUSR1 raises Handled in the main thread once its handler runs."""
    def handle(signum, frame):
        raise Handled()

    previous = signal.signal(signal.SIGUSR1, handle)
    yield
    signal.signal(signal.SIGUSR1, previous)


def signal_from_another_thread(after: float) -> threading.Thread:
    """In `after` seconds, SIGUSR1 to a thread that is not the main one (the signalling thread)."""
    def send():
        time.sleep(after)
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def later(seconds: float, value="done") -> Future:
    future = Future()
    timer = threading.Timer(seconds, future.set_result, args=(value,))
    timer.daemon = True
    timer.start()
    return future


@pytest.mark.parametrize("wait", [
    lambda: shutdown.result_of(later(5.0)),
    lambda: shutdown.wait_all([later(0.1), later(5.0)]),
    lambda: shutdown.Stop().wait(5.0),
    lambda: shutdown.Stop().wait(),
], ids=["result_of", "wait_all", "Stop.wait", "Stop.wait-without-timeout"])
def test_a_signal_handled_by_another_thread_interrupts_the_main_threads_wait(wait, handler_raising):
    signal_from_another_thread(after=0.2)
    started = time.monotonic()
    with pytest.raises(Handled):
        wait()
    assert time.monotonic() - started < 1.5


def test_the_waits_still_give_what_they_waited_for():
    assert shutdown.result_of(later(0.3, "answer")) == "answer"
    failed = Future()
    failed.set_exception(ValueError("refused"))
    with pytest.raises(ValueError, match="refused"):
        shutdown.result_of(failed)
    stop = shutdown.Stop()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    assert stop.wait(10.0) is True and time.monotonic() - started < 2
    assert shutdown.Stop().wait(0.3) is False


def test_a_wait_without_timeout_lasts_until_the_stop():
    stop = shutdown.Stop()
    waited = []
    waiter = threading.Thread(target=lambda: waited.append(stop.wait()), daemon=True)
    waiter.start()
    waiter.join(1.0)
    assert waiter.is_alive() and not waited  # several slices later, still waiting
    stop.set()
    waiter.join(2.0)
    assert waited == [True]
