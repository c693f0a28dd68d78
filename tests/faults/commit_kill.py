"""Run `kcing` exactly as kcing.py does, but SIGKILL the process inside its N-th SQLite COMMIT.

The fault suite starts this script instead of kcing.py to kill the feed while the ledger commits:

    KCING_FAULT_KILL_AT_COMMIT=N      which COMMIT statement (1 is the schema check at open)
    KCING_FAULT_KILL_DELAY=SECONDS    how long after the COMMIT starts the signal is sent
    KCING_FAULT_KILL_MARKER=FILE      written just before, so the test knows where the kill was
    KCING_FAULT_KILL_COUNT=deliveries count only the COMMITs of transactions that mark objects
                                      delivered (default: every COMMIT)

Which transaction the N-th COMMIT holds depends on how the run batches its writes; counting
deliveries names a point that does not: killed inside the 2nd delivering COMMIT, the run has
certainly recorded the deliveries of the 1st, whether or not SQLite finished writing the 2nd.

The COMMIT runs in SQLite's C code with the GIL released, so a thread that sleeps a few hundred
microseconds and then sends SIGKILL lands before, while or just after SQLite writes the WAL
frames. Nothing else in the program changes.

The kill always lands by the end of that COMMIT: the program's next SQL statement, or its exit,
waits for it. Without that, a loaded machine could leave the killing thread unscheduled while
the program went on (it holds the GIL between statements) and even finished its run.
"""
import os
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


# Set when the target COMMIT started and the killing thread is on its way.
KILL_SENT = threading.Event()


def wait_for_the_kill() -> None:
    """Hold this thread (releasing the GIL) until SIGKILL arrives."""
    while True:
        time.sleep(0.01)


def _kill_later(delay: float) -> None:
    time.sleep(delay)
    os.kill(os.getpid(), signal.SIGKILL)


def install(target: int, delay: float, marker: Path, deliveries_only: bool = False) -> None:
    """Make every SQLite connection count COMMITs and start the killer at the `target`-th."""
    real_connect = sqlite3.connect
    lock = threading.Lock()
    seen = [0]
    delivering = [False]  # the open transaction marks objects delivered

    def on_statement(statement: str) -> None:
        if KILL_SENT.is_set():
            wait_for_the_kill()  # the statement after the target COMMIT never runs
        word = statement.strip().upper()
        if word.startswith("BEGIN"):
            delivering[0] = False
        elif 'INSERT INTO "upstream_file"' in statement and "'delivered'" in statement.split("ON CONFLICT", 1)[0]:
            # A row's state among the values inserted (the upsert's update clause names the
            # state 'delivered' too, in every outcome's statement).
            delivering[0] = True
        if word != "COMMIT" or (deliveries_only and not delivering[0]):
            return
        with lock:
            seen[0] += 1
            number = seen[0]
        if number == target:
            marker.write_text("%sCOMMIT %d, SIGKILL after %.6fs\n"
                              % ("delivering " if deliveries_only else "", number, delay))
            KILL_SENT.set()
            threading.Thread(target=_kill_later, args=(delay,), daemon=True).start()

    def connect(*args, **kwargs):
        connection = real_connect(*args, **kwargs)
        connection.set_trace_callback(on_statement)
        return connection

    sqlite3.connect = connect


def main() -> int:
    # This directory must not shadow anything the program imports.
    sys.path[0] = str(REPO)
    target = int(os.environ["KCING_FAULT_KILL_AT_COMMIT"])
    delay = float(os.environ.get("KCING_FAULT_KILL_DELAY", "0"))
    install(target, delay, Path(os.environ["KCING_FAULT_KILL_MARKER"]),
            deliveries_only=os.environ.get("KCING_FAULT_KILL_COUNT") == "deliveries")
    from kcing.cli import main as kcing_main

    code = kcing_main()
    if KILL_SENT.is_set():
        wait_for_the_kill()  # the run ended within the target COMMIT's last statement
    return code


if __name__ == "__main__":
    sys.exit(main())
