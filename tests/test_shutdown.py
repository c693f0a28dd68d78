"""The stop's waits in the main thread let a signal's handler run, whichever thread the kernel
handed the signal to."""
from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import Future

import pytest

from kcing import shutdown
from kcing.errors import RunFailing


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


def test_a_failed_run_ends_its_waits_but_is_no_stop():
    """`fail` (a post's error the run ends with) ends a retry's pause at once as a stop does,
    without passing for one: the pause says why, and no signal is taken to have come."""
    stop = shutdown.Stop()
    threading.Timer(0.3, stop.fail).start()
    started = time.monotonic()
    with pytest.raises(RunFailing):
        stop.pause(100.0)
    assert time.monotonic() - started < 10
    assert stop.ending() and not stop.is_set() and not stop.past_grace()
    assert stop.wait(100.0) is True


def signalled_from_its_closing_line(command, env, cwd, closing: str):
    """Run kcing `command`, and from the moment it prints `closing` (its run row is closed by
    then), send it SIGTERM every millisecond until it is gone; return (its exit status, stderr,
    how many signals were sent: none when the command ended before the first)."""
    import os
    import subprocess
    import sys

    from tests.feedrun import REPO

    process = subprocess.Popen([sys.executable, str(REPO / "kcing.py"), *command], env=dict(env, PYTHONUNBUFFERED="1"),
                               cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith(closing):
            break
    sent = 0
    while process.poll() is None:
        try:
            os.kill(process.pid, signal.SIGTERM)
            sent += 1
        except ProcessLookupError:
            break
        time.sleep(0.001)
    process.stdout.read()
    errors = process.stderr.read()
    process.wait(10)
    return process.returncode, errors, sent


def signalled_in_its_last_milliseconds(tmp_path, run):
    """`run(directory)` (a command started in a directory of its own, with a ledger of its own,
    signalled from its closing line: `signalled_from_its_closing_line`) until a signal reached
    the command before it was gone, which a loaded machine may not let the first attempts do;
    return (its exit status, stderr, its ledger)."""
    for attempt in range(20):
        directory = tmp_path / ("attempt%d" % attempt)
        directory.mkdir()
        status, errors, sent = run(directory)
        if sent:
            return status, errors, directory / "kcing.db"
    pytest.fail("the command was gone before a signal was sent, 20 times")


def last_run(db) -> tuple:
    import sqlite3

    with sqlite3.connect(str(db)) as connection:
        return connection.execute("SELECT command, outcome FROM run ORDER BY id DESC LIMIT 1").fetchone()


@pytest.mark.parametrize("attempt", range(3))
def test_a_signal_once_the_feeds_row_is_closed_changes_nothing_of_how_it_ends(tmp_path, attempt):
    """A SIGTERM in the last milliseconds of a run, its row closed `ok`, ended it with 143 (the
    default handler, put back as the interpreter ended) or 130 (`interrupted`), or, landing in
    the stop's own lock, with RecursionError (70): now the run ends as its row says."""
    from tests.feedrun import SAMPLES, clean_environ

    build = sorted((SAMPLES / "build").glob("*.json"))[attempt]

    def run(directory):
        env = clean_environ(KCING_DB=str(directory / "kcing.db"))
        return signalled_from_its_closing_line(
            ["feed_es", "--builds", str(build), "--date", "2020-11-04", "--output", str(directory / "out")], env,
            directory, "feed_es: 1 document in 1 batch")

    status, errors, ledger = signalled_in_its_last_milliseconds(tmp_path, run)
    assert (status, last_run(ledger)) == (0, ("feed_es", "ok")), errors
    assert "interrupted" not in errors and "Traceback" not in errors and "internal error" not in errors, errors


def kcing_signalled_from_within(tmp_path, patch: str, command, **settings):
    """Run the real kcing.py `command` after `patch` (Python run first in its process, which makes
    the signal arrive at the moment under test), with a ledger in `tmp_path`; return (its exit
    status, stdout, stderr)."""
    from tests.feedrun import REPO, clean_environ

    script = "%s\nimport runpy, sys\nsys.argv = ['kcing.py'] + %r\nrunpy.run_path(%r, run_name='__main__')\n" % (
        patch, list(command), str(REPO / "kcing.py"))
    return run_script(script, timeout=60, cwd=tmp_path, env=clean_environ(KCING_DB=str(tmp_path / "kcing.db"),
                                                                         **settings))


# The signal sent by the run itself as its row is closed, while the feed still stops on signals.
SIGNALLED_AS_THE_ROW_CLOSES = """
import os, signal
from kcing import shutdown
run_row_closed = shutdown.run_row_closed
def signalled_run_row_closed():
    run_row_closed()
    os.kill(os.getpid(), signal.SIGTERM)
shutdown.run_row_closed = signalled_run_row_closed
"""


def test_a_signal_as_the_feeds_row_closes_is_said_once_and_changes_nothing(tmp_path):
    from tests.feedrun import SAMPLES

    build = sorted((SAMPLES / "build").glob("*.json"))[0]
    status, out, errors = kcing_signalled_from_within(
        tmp_path, SIGNALLED_AS_THE_ROW_CLOSES,
        ["feed_es", "--builds", str(build), "--date", "2020-11-04", "--output", str(tmp_path / "out")])
    assert (status, last_run(tmp_path / "kcing.db")) == (0, ("feed_es", "ok")), errors
    assert "\nfeed_es: 1 document in 1 batch" in out, out
    assert errors.count("SIGTERM received: the run's end is recorded; finishing") == 1, errors
    assert "interrupted" not in errors and "Traceback" not in errors, errors


def test_a_signal_once_drps_row_is_closed_changes_nothing_of_how_it_ends(tmp_path):
    from kcing.ledger.ledger import Ledger
    from tests.fakes.elastic_server import ElasticsearchEmulator
    from tests.feedrun import clean_environ

    with ElasticsearchEmulator() as es:
        def run(directory):
            Ledger.open(str(directory / "kcing.db")).close()
            env = clean_environ(KCING_DB=str(directory / "kcing.db"), ES_HOST=es.url, DRP_DAYS="3", KCI_DAYS="2")
            return signalled_from_its_closing_line(["drp"], env, directory, "drp: deleted 0 indices")

        status, errors, ledger = signalled_in_its_last_milliseconds(tmp_path, run)
    assert (status, last_run(ledger)) == (0, ("drp", "ok")), errors
    assert "interrupted" not in errors and "Traceback" not in errors, errors


def test_a_run_row_is_settled_once_closed_by_an_error_as_by_success_and_unsettled_by_the_next(tmp_path, monkeypatch):
    """A signal in the last milliseconds of a run whose row closed `error 3` ended it with 130
    beside that row, as one closed `ok` did; a second run row of the same process (the check of
    `feed_es --verify`, a re-send of reconcile) is stopped by a signal again while it is open."""
    from kcing.errors import ConfigError
    from kcing.ledger.ledger import Ledger

    monkeypatch.setitem(shutdown._after_the_command, "held", True)
    monkeypatch.setitem(shutdown._after_the_command, "row_closed", False)
    ledger = Ledger.open(str(tmp_path / "kcing.db"))
    try:
        with pytest.raises(ConfigError):
            with ledger.recorded_run("drp"):
                assert not shutdown._settled()
                raise ConfigError("refused")
        assert shutdown._settled()
        with ledger.recorded_run("feed_es"):
            assert not shutdown._settled()
        assert shutdown._settled()
    finally:
        ledger.close()


def test_a_signal_once_the_command_settled_how_it_ends_interrupts_nothing(monkeypatch):
    """Within the command, once its row is closed, a SIGTERM raises no KeyboardInterrupt (that
    ended drp with 130 beside a row saying ok); past the command, it finds the end's handler, not
    the default one that ended the process with 143."""
    exits = []
    monkeypatch.setattr(shutdown, "_exit_soon", lambda *args: exits.append(args))
    monkeypatch.setitem(shutdown._after_the_command, "held", True)
    monkeypatch.setitem(shutdown._after_the_command, "row_closed", True)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            with shutdown.terminate_as_interrupt("drp"):
                signal.raise_signal(signal.SIGTERM)
                time.sleep(0.05)
        except KeyboardInterrupt:
            pytest.fail("a signal once the row was closed interrupted the command")
        assert exits, "the signal was not taken"
        assert signal.getsignal(signal.SIGTERM) is shutdown._signal_after_the_end
        assert signal.getsignal(signal.SIGINT) is shutdown._signal_after_the_end
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def run_script(script: str, timeout: float = 20.0, cwd=None, env=None):
    """Run `script` (Python, kcing importable) in a process of its own, where its signals go, in
    `cwd` (the repository without one) with `env` (this process's without one); return (exit
    status, stdout, stderr), or fail the test if it is still running after `timeout`."""
    import subprocess
    import sys

    from tests.feedrun import REPO

    try:
        done = subprocess.run([sys.executable, "-c", script], cwd=str(cwd or REPO), env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail("still running %gs after the signal" % timeout)
    return done.returncode, done.stdout, done.stderr


def test_a_signal_arriving_while_the_main_thread_is_inside_the_stops_own_lock_is_taken_at_once():
    """The stop's handler runs in the main thread between two of its bytecodes, also inside the
    stop's own lock (a set an earlier signal interrupted, a wait). Its set waited there for its
    own thread: each later signal's handler, run inside that wait, waited one frame deeper,
    until RecursionError ended a run whose row said `ok` (exit 70); one signal alone hung it."""
    status, out, errors = run_script("""
import os, signal
from kcing import shutdown
with shutdown.stop_on_signals() as stop:
    with stop._cond:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
    print("stop requested:", stop.is_set(), stop.wait(0))
""")
    assert (status, out) == (0, "stop requested: True True\n"), errors
    assert "SIGTERM received: finishing the batch in flight" in errors, errors



def test_a_signal_arriving_while_the_main_thread_draws_the_progress_line_is_reported_and_taken():
    """The handler's line clears the live progress line first, under the lock the main thread
    holds while it draws that line: the handler waited for its own thread, the process hung, and
    Ctrl-C again only stacked another waiting handler."""
    status, out, errors = run_script("""
import os, signal
from kcing import logs, progress, shutdown
logs.configure()
with shutdown.stop_on_signals() as stop:
    with progress._lock:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
    print("stop requested:", stop.is_set())
""")
    assert (status, out) == (0, "stop requested: True\n"), errors
    assert "SIGINT received: finishing the batch in flight" in errors, errors


def logging_2000_lines(configured: str) -> str:
    """A script that logs 2,000 lines of 200 characters (logs.configure(`configured`)), within
    the stop's handling of signals, once it printed `writing`; then it prints whether a stop was
    requested."""
    return """
import logging, sys
from kcing import logs, shutdown
logs.configure(%s)
with shutdown.stop_on_signals() as stop:
    print("writing", flush=True)
    for number in range(2000):
        logging.getLogger("filler").info("line %%d %%s", number, "x" * 200)
    print("stop requested:", stop.is_set())
""" % configured


def test_a_signal_arriving_while_the_main_thread_waits_to_write_to_stderr_has_its_line_written_after():
    """stderr a pipe nobody reads for a while (a service manager's journal, busy): the main thread
    waits inside its write of a log line, and the handler's line, written from that same thread,
    was refused ("reentrant call"): lost, with "--- Logging error ---" and a traceback instead."""
    import os
    import subprocess
    import sys

    from tests.feedrun import REPO

    script = logging_2000_lines("")
    # Buffered, as stderr is unless PYTHONUNBUFFERED says otherwise: the busy buffer refuses.
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    child = subprocess.Popen([sys.executable, "-c", script], cwd=str(REPO), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "writing\n"
        time.sleep(0.5)  # stderr's pipe (64 KiB) is full: the main thread waits inside a write
        child.send_signal(signal.SIGTERM)
        out, errors = child.communicate(timeout=20)
    finally:
        child.kill()
        child.wait()
    lines = errors.splitlines()
    assert (child.returncode, out) == (0, "stop requested: True\n"), errors[-3000:]
    assert "Logging error" not in errors and "Traceback" not in errors, errors[-3000:]
    assert sum("SIGTERM received: finishing the batch in flight" in line for line in lines) == 1, errors[-3000:]
    assert sum(" filler: line " in line for line in lines) == 2000


def drp_signalled_from_within(tmp_path, patch: str):
    """`kcing_signalled_from_within` for drp, with an empty ledger and an Elasticsearch."""
    from kcing.ledger.ledger import Ledger
    from tests.fakes.elastic_server import ElasticsearchEmulator

    Ledger.open(str(tmp_path / "kcing.db")).close()
    with ElasticsearchEmulator() as es:
        return kcing_signalled_from_within(tmp_path, patch, ["drp"], ES_HOST=es.url, DRP_DAYS="3", KCI_DAYS="2")


@pytest.mark.parametrize("arriving", ["before", "after"])
def test_a_signal_arriving_while_drps_row_is_being_closed_leaves_it_closed_as_the_run_ended(tmp_path, arriving):
    """A SIGTERM handled while the row's closing write was prepared left the row open (no
    outcome, no end) beside exit status 130; one handled once it committed ended the process
    `interrupted`, 130, beside a row saying `ok`. The signal now waits for that write."""
    status, out, errors = drp_signalled_from_within(tmp_path, """
import os, signal
from kcing.ledger.ledger import Ledger
finish_run = Ledger.finish_run
def signalled_finish_run(self, *args):
    if %(arriving)r == "before":
        os.kill(os.getpid(), signal.SIGTERM)
    finish_run(self, *args)
    if %(arriving)r == "after":
        os.kill(os.getpid(), signal.SIGTERM)
Ledger.finish_run = signalled_finish_run
""" % {"arriving": arriving})
    assert (status, last_run(tmp_path / "kcing.db")) == (0, ("drp", "ok")), errors
    assert "drp: deleted 0 indices" in out and "interrupted" not in errors, errors


def test_a_signal_arriving_as_a_ledger_transaction_begins_leaves_none_begun(tmp_path):
    """Python runs the handler as SQLite returns from BEGIN, before the `with` block the
    transaction starts: its KeyboardInterrupt left the transaction begun, with nothing to end it.
    The row's closing (`error 130`) was written inside it, and rolled back with it as the ledger
    closed: the row stayed open."""
    status, out, errors = drp_signalled_from_within(tmp_path, """
import os, signal
from kcing.ledger.database import LedgerDatabase
from kcing.ledger.ledger import Ledger
running = []
start_run = Ledger.start_run
def started(self, *args):
    running.append(True)
    return start_run(self, *args)
Ledger.start_run = started
begin = LedgerDatabase.begin
def signalled_begin(self, *args):
    begin(self, *args)
    if running and running.pop():
        os.kill(os.getpid(), signal.SIGTERM)
LedgerDatabase.begin = signalled_begin
""")
    assert (status, last_run(tmp_path / "kcing.db")) == (130, ("drp", "error 130")), errors
    assert "kcing drp: interrupted" in errors, errors


def test_a_second_signal_arriving_as_the_main_thread_takes_the_futures_locks_leaves_none_held():
    """futures.wait takes each future's lock before its `with` block begins: the second signal's
    KeyboardInterrupt there left the lock held, the thread finishing that future waited for it
    forever, and the process, waiting for that thread as it exits, ended only by the urgent
    exit 3 s later, with 130 and a line saying it was still running."""
    status, out, errors = run_script("""
import os, signal, time
from concurrent.futures import ThreadPoolExecutor
from kcing import shutdown
with shutdown.stop_on_signals() as stop:
    os.kill(os.getpid(), signal.SIGTERM)
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(time.sleep, 0.3)
    condition = future._condition
    acquire = condition.acquire
    def signalling_acquire(*args):
        taken = acquire(*args)
        condition.acquire = acquire
        os.kill(os.getpid(), signal.SIGTERM)  # handled as futures.wait holds the future's lock
        return taken
    condition.acquire = signalling_acquire
    try:
        shutdown.wait_all([future])
    except KeyboardInterrupt:
        print("interrupted")
    pool.shutdown(wait=False, cancel_futures=True)
""")
    assert (status, out) == (0, "interrupted\n"), errors
    assert "still running" not in errors, errors


def test_a_signal_arriving_while_the_main_thread_waits_to_write_to_a_log_fifo_has_its_line_written_after(tmp_path):
    """-l a FIFO whose reader lags: the handler's line, refused by the file's busy buffer, was
    lost from the log, and the log file was said to be failing ("its later lines are lost")."""
    import os
    import subprocess
    import sys

    from tests.feedrun import REPO

    fifo = tmp_path / "kcing.log"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    script = logging_2000_lines("log_file=sys.argv[1], quiet=True")
    env = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    child = subprocess.Popen([sys.executable, "-c", script, str(fifo)], cwd=str(REPO), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    written = []
    try:
        assert child.stdout.readline() == "writing\n"
        time.sleep(0.5)  # the FIFO (64 KiB) is full: the main thread waits inside a write to the log
        child.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # handled in that write, before the FIFO is read again
        os.set_blocking(reader, True)
        while True:
            chunk = os.read(reader, 1 << 16)
            if not chunk:
                break
            written.append(chunk)
        out, errors = child.communicate(timeout=20)
    finally:
        os.close(reader)
        child.kill()
        child.wait()
    lines = b"".join(written).decode().splitlines()
    assert (child.returncode, out) == (0, "stop requested: True\n"), errors
    assert "cannot write the log file" not in errors and "Traceback" not in errors, errors
    assert sum("SIGTERM received: finishing the batch in flight" in line for line in lines) == 1
    assert sum(" filler: line " in line for line in lines) == 2000


def test_a_signal_once_the_command_is_done_ends_a_process_held_by_a_thread_with_the_commands_status():
    """The command is done and its status known (1 here): a SIGTERM while a thread still holds the
    process (one the interpreter waits for) ends it URGENT_EXIT_SECONDS later with that status,
    saying so, not with 130: the signal changed nothing of how the command ended."""
    import subprocess
    import sys

    from tests.feedrun import REPO

    script = """
import threading, time
from kcing import shutdown
shutdown.hold_signals_after_the_end("feed_es")
with shutdown.terminate_as_interrupt("feed_es"):
    shutdown.run_row_closed()
shutdown.ending_with(1)
threading.Thread(target=time.sleep, args=(3600,)).start()
print("done", flush=True)
"""
    child = subprocess.Popen([sys.executable, "-c", script], cwd=str(REPO), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "done\n"
        child.send_signal(signal.SIGTERM)
        _, errors = child.communicate(timeout=20)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 1, errors
    assert "kcing feed_es: still ending %.0f s after the signal: exiting now" % shutdown.URGENT_EXIT_SECONDS in errors
