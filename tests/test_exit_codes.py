"""Every command ends with the exit status its help and the README give, with one line on stderr:
here the situations that are not a feed's or a reconcile's own (see test_shutdown.py, test_reconcile.py)."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import pytest

from kcing import commands
from kcing.errors import StorageFailed
from kcing.ledger.ledger import Ledger
from kcing.shutdown import GRACE_SECONDS
from tests.fakes.serving import refusing_port, wait_until
from tests.feedrun import REPO, clean_environ, kcing, kcing_process, reaped


class Silent:
    """A loopback server that takes connections and never answers: a service that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted: List[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.sock.getsockname()[1]

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent():
    server = Silent()
    yield server
    server.close()


def terminated(process, started: Callable[[], None]) -> Tuple[str, str]:
    """The output of `process` sent SIGTERM once `started()` returned (it asserts that the process
    got where the test wants it); a process still running after is killed."""
    try:
        started()
        process.send_signal(signal.SIGTERM)
        return process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("args", [["drp"], ["setup_es", "--wait", "30"], ["setup_kbn"], ["backup_kbn"],
                                  ["gen_samples"]], ids=lambda args: args[0])
def test_sigterm_ends_every_command_with_130_and_one_line(tmp_path, silent, args):
    """The README: 130 stopped by SIGINT/SIGTERM, and one line on stderr, never a traceback."""
    Ledger.open(str(tmp_path / "kcing.db")).close()
    host = silent.url.split("://", 1)[1]
    env = clean_environ(ES_HOST=silent.url, KB_URL=silent.url, KCI_HOST=host, KCI_SCHEME="http",
                        KCI_STORAGE_URL=silent.url, KCING_DB=str(tmp_path / "kcing.db"), KCI_SAMPLES_DIR=str(tmp_path / "samples"))
    if args[0] == "setup_kbn":
        args = args + ["--kibana-dir", str(REPO / "kibana")]
    if args[0] == "backup_kbn":
        args = args + ["--kibana-dir", str(tmp_path / "kibana")]
        (tmp_path / "kibana").mkdir()
    process = kcing_process(args, env, tmp_path)

    def asked_the_server() -> None:
        assert wait_until(lambda: silent.accepted, timeout=20), "%s never asked the server" % args[0]

    _, err = terminated(process, asked_the_server)
    assert process.returncode == 130, (process.returncode, err)
    assert "Traceback" not in err
    # One line: that the main thread wrote, or, when a thread of the command was stuck in a
    # download the interpreter would wait for, the one written as the process ended.
    assert err.strip().splitlines()[-1].startswith("kcing %s: interrupted" % args[0]), err
    assert err.count("interrupted") == 1, err


def test_setup_ls_is_never_held_reading_a_pipelines_yml_that_is_a_fifo(tmp_path):
    """A pipelines.yml that is a FIFO nothing writes to held setup_ls until a signal ended it
    (130); it is now refused unread at once (exit 2), and left as it was."""
    import os
    (tmp_path / "logstash" / "config").mkdir(parents=True)
    pipelines = tmp_path / "logstash" / "config" / "pipelines.yml"
    os.mkfifo(str(pipelines))
    process = kcing_process(["setup_ls"], clean_environ(LS_HOME=str(tmp_path / "logstash")), tmp_path)
    with reaped(process):
        _, err = process.communicate(timeout=30)
    assert process.returncode == 2, (process.returncode, err)
    assert err.strip().splitlines() == ["kcing setup_ls: cannot read %s: not a regular file (a FIFO or a device is "
                                        "never read)" % pipelines], err
    assert sorted(path.name for path in pipelines.parent.iterdir()) == ["pipelines.yml"]


@pytest.mark.parametrize("command", ["setup_kbn", "backup_kbn"])
def test_a_kibana_that_never_answers_holds_the_wait_to_its_length_and_a_margin(tmp_path, silent, command):
    (tmp_path / "kibana").mkdir()
    kibana_dir = REPO / "kibana" if command == "setup_kbn" else tmp_path / "kibana"
    started = time.monotonic()
    ended = kcing([command, "--kibana-dir", str(kibana_dir), "--wait", "1"], clean_environ(KB_URL=silent.url), tmp_path)
    took = time.monotonic() - started
    assert ended.returncode == 3, ended.stderr
    assert ended.stderr.splitlines() == [
        "kcing %s: Kibana at %s sent no whole answer to report its status; gave up after waiting 1s"
        % (command, silent.url)]
    assert took < 11 + 8, took  # not the 120 s read timeout nor KB_REQUEST_DEADLINE's 300 s


# What each command's help lists; every one of these is reached by a test (this file,
# test_storage_failures.py, test_reconcile.py, test_operations.py, test_shutdown.py, ...).
DOCUMENTED = {
    "feed_es": {0, 1, 2, 3, 4, 5, 6, 130},  # 6: test_reconcile.py, a --verify that could check none
    "reconcile": {0, 1, 2, 3, 4, 5, 6, 130},
    "drp": {0, 2, 3, 4, 5, 130},
    "gen_samples": {0, 1, 2, 4, 5, 130},
    "setup_es": {0, 2, 3, 130},
    "setup_ls": {0, 2, 5, 130},
    "setup_kbn": {0, 1, 2, 3, 5, 130},
    "backup_kbn": {0, 1, 2, 3, 5, 130},
    "status": {0, 2, 4, 5, 130},
}


def exit_codes_in_help(command: str) -> set:
    text = commands.load(command).USAGE
    paragraph = " ".join(text.split("Exit status:", 1)[1].split("\n\n", 1)[0].split())
    # "0 all delivered; 1 some ...": a number opening the text or following "; ".
    return {int(code) for code in re.findall(r"(?:^|; )(\d+) ", paragraph.strip())}


@pytest.mark.parametrize("command", sorted(DOCUMENTED))
def test_each_help_lists_the_exit_statuses_the_command_can_end_with(command):
    assert exit_codes_in_help(command) == DOCUMENTED[command]


def test_kcing_help_gives_5_for_every_file_a_command_ends_with_5_for():
    from kcing import cli
    paragraph = " ".join(cli.global_help().split("Exit status:", 1)[1].split())
    five = paragraph.split("; 5 ", 1)[1].split("; 6 ", 1)[0]
    # The commands that end with 5 for a file that is not the ledger nor an --output file.
    for command, written in (("setup_ls", "pipelines.yml"), ("backup_kbn", "Kibana export"),
                             ("setup_kbn", "backup"), ("gen_samples", "sample")):
        assert 5 in DOCUMENTED[command]
        assert written in five, (command, five)


def test_kcing_help_gives_5_for_a_stdout_that_cannot_be_written():
    """Any command ends with 5 when its stdout cannot be written (`kcing status > report.txt` on a
    full disk), whatever its own help lists: kcing --help, which gives every status, says so."""
    from kcing import cli
    paragraph = " ".join(cli.global_help().split("Exit status:", 1)[1].split())
    assert "stdout" in paragraph.split("; 5 ", 1)[1].split("; 6 ", 1)[0]


def test_a_command_whose_help_lists_no_5_ends_with_5_for_a_stdout_that_cannot_be_written(tmp_path, es):
    """setup_es writes only its report: a full disk under it (/dev/full stands for it) ends it with
    5 and one line, as the README says of every command, though its help lists no 5."""
    assert 5 not in DOCUMENTED["setup_es"]
    with open("/dev/full", "w") as full:
        process = subprocess.run([sys.executable, str(REPO / "kcing.py"), "setup_es"], stdout=full,
                                 stderr=subprocess.PIPE, text=True, cwd=str(tmp_path), timeout=60,
                                 env=clean_environ(ES_HOST=es.url))
    assert process.returncode == 5, process.stderr
    assert process.stderr.splitlines() == [
        "kcing setup_es: cannot write to stdout: No space left on device; what it did not take is lost"]


@contextmanager
def locked_exclusively(db: Path) -> Iterator[None]:
    """A new ledger at `db`, held for the block by a process in exclusive locking mode in the
    middle of a write: no other connection may read or write it."""
    Ledger.open(str(db)).close()
    holder = sqlite3.connect(str(db), isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        holder.execute("INSERT INTO run (command, started) VALUES ('feed_es', '2024-10-16 08:00:00')")
        yield
    finally:
        holder.close()


def test_status_of_a_ledger_another_process_keeps_locked_is_exit_4(tmp_path):
    """Reading waits for no writer in WAL mode, but a process holding the file in exclusive
    locking mode keeps every reader out: status waits KCING_DB_LOCK_WAIT, then exit 4."""
    db = tmp_path / "kcing.db"
    with locked_exclusively(db):
        shown = kcing(["status"], clean_environ(KCING_DB=str(db), KCING_DB_LOCK_WAIT="0.5"), tmp_path)
    assert shown.returncode == 4, shown.stdout + shown.stderr
    assert shown.stderr.strip().splitlines() == [shown.stderr.strip()]
    assert "is locked by another process" in shown.stderr


@pytest.mark.parametrize("args", [["status"], ["status", "--json"], ["drp", "--dry-run"], ["reconcile", "--dry-run"],
                                  ["feed_es", "--dry-run", "--source", "samples", "--samples-dir", str(REPO / "samples")]],
                         ids=["status", "status-json", "drp-dry-run", "reconcile-dry-run", "feed_es-dry-run"])
def test_a_read_of_a_ledger_another_process_keeps_locked_says_it_could_not_read_it(tmp_path, args):
    """What only reads the ledger records nothing: its line says the ledger could not be read,
    not that "nothing more was recorded", as a run that writes says."""
    db = tmp_path / "kcing.db"
    with locked_exclusively(db):
        shown = kcing(args, clean_environ(KCING_DB=str(db), KCING_DB_LOCK_WAIT="0.5", ES_HOST="http://127.0.0.1:9"),
                      tmp_path)
    assert shown.returncode == 4, shown.stdout + shown.stderr
    assert shown.stderr.strip().splitlines()[-1] == (
        "kcing %s: cannot read the ledger %s: it is locked by another process (waited 0.5s, KCING_DB_LOCK_WAIT); "
        "try again when that process is done" % (args[0], db)), shown.stderr


def stopped_while_it_waits(process, db: Path, signals: int = 1) -> Tuple[str, float]:
    """Send `signals` SIGTERMs to `process` once it waits for the ledger `db`: (its stderr, the
    seconds it took to end after the last)."""
    try:
        # Started, and waiting for the ledger: however long a loaded machine takes to start it.
        if Path("/proc/self/fd").is_dir():
            assert wait_until(lambda: holds_open(process, db) or process.poll() is not None, timeout=60)
        else:
            time.sleep(3)
        time.sleep(0.5)
        assert process.poll() is None, process.communicate()
        for number in range(signals):
            if number:
                time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        _, err = process.communicate(timeout=60)
        return err, time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def holds_open(process, path: Path) -> bool:
    """Whether `process` has `path` open (Linux's /proc): kcing opens its ledger once its
    signal handlers are in place, and a signal before them ends the process with -15."""
    opened = Path("/proc/%d/fd" % process.pid)
    try:
        return any(os.path.realpath(fd) == os.path.realpath(path) for fd in opened.iterdir())
    except OSError:  # gone, or a file closed while listed
        return False


@pytest.mark.parametrize("args, signals", [
    (["status"], 1), (["drp"], 1),
    (["feed_es", "--source", "samples", "--samples-dir", str(REPO / "samples"), "--output", "out"], 2),
], ids=["status", "drp", "feed_es"])
def test_a_command_waiting_for_a_locked_ledger_is_gone_3_s_after_the_signal(tmp_path, args, signals):
    """SQLite waits out KCING_DB_LOCK_WAIT in C, where Python runs no signal handler: the process
    still ends with 130 and one line 3 s after the signal (a feed's second), not when the wait ends."""
    db = tmp_path / "kcing.db"
    with locked_exclusively(db):
        process = kcing_process(args, clean_environ(KCING_DB=str(db), KCING_DB_LOCK_WAIT="60"), tmp_path)
        err, took = stopped_while_it_waits(process, db, signals)
    assert process.returncode == 130, (process.returncode, err)
    assert took < 3 + 2, took
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("kcing"), err


# A backup tool (or `sqlite3 kcing.db .dump`) reading a ledger in rollback-journal mode (a copy
# restored from a backup): opening puts it back in WAL mode, which waits for the reader.
READING_IN_ROLLBACK_JOURNAL_MODE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM run").fetchall()
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def read_in_rollback_journal_mode(db: Path) -> Iterator[None]:
    Ledger.open(str(db)).close()
    with sqlite3.connect(str(db)) as raw:
        assert raw.execute("PRAGMA journal_mode = delete").fetchone()[0] == "delete"
    raw.close()
    holder = subprocess.Popen([sys.executable, "-c", READING_IN_ROLLBACK_JOURNAL_MODE, str(db)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


@pytest.mark.parametrize("args, holding", [
    (["feed_es", "--source", "samples", "--samples-dir", str(REPO / "samples"), "--output", "out"], locked_exclusively),
    (["reconcile"], read_in_rollback_journal_mode),
], ids=["feed_es-file-checked", "reconcile-wal-mode-set"])
def test_one_signal_while_a_run_opens_a_locked_ledger_ends_it_within_its_grace(tmp_path, args, holding):
    """A run waits for the lock as it opens the ledger too (checking the file is a ledger, setting
    WAL mode): one SIGTERM (a stopping service, which kills 10 s later) ends the wait within the
    grace a run gives the batch in flight, not when KCING_DB_LOCK_WAIT is over."""
    db = tmp_path / "kcing.db"
    with holding(db):
        process = kcing_process(args, clean_environ(KCING_DB=str(db), KCING_DB_LOCK_WAIT="60",
                                                    ES_HOST="http://127.0.0.1:9"), tmp_path)
        err, took = stopped_while_it_waits(process, db)
    assert process.returncode == 4, (process.returncode, err)
    assert took < GRACE_SECONDS + 3, (took, err)
    assert err.splitlines()[-1] == (
        "kcing %s: the ledger %s is locked by another process, and a run stopped by a signal waits for it no longer "
        "than for the batch in flight; nothing was recorded: try again when that process is done" % (args[0], db)), err


# Progress while a command only waits ------------------------------------------------------------

def progress_lines(stderr: str) -> list:
    return [line for line in stderr.splitlines() if " progress: " in line]


def test_reconcile_logs_progress_every_interval_while_elasticsearch_is_slow_to_answer(tmp_path, silent):
    """Not a terminal: a `progress:` line every KCING_PROGRESS_EVERY seconds, also while the one
    request in flight waits (an Elasticsearch slow to answer an _mget): cron's log shows the run alive."""
    from tests.test_reconcile import obj, packed, to_logstash
    from kcing.ledger.models import DELIVERED
    from kcing.ledger.ledger import Outcome
    db = tmp_path / "kcing.db"
    ledger = Ledger.open(str(db))
    ledger.record([Outcome(obj("one"), DELIVERED, documents=packed(1))], to_logstash)
    ledger.close()
    env = clean_environ(ES_HOST=silent.url, KCING_DB=str(db), ES_REQUEST_DEADLINE="4.5", KCING_PROGRESS_EVERY="1")
    done = kcing(["reconcile"], env, tmp_path)
    assert done.returncode == 3, done.stdout + done.stderr
    assert 3 <= len(progress_lines(done.stderr)) <= 5, done.stderr


def test_gen_samples_logs_progress_every_interval_while_upstream_is_slow_to_answer(tmp_path, silent):
    host = silent.url.split("://", 1)[1]
    env = clean_environ(KCI_HOST=host, KCI_SCHEME="http", KCI_STORAGE_URL=silent.url,
                        KCI_SAMPLES_DIR=str(tmp_path / "samples"),
                        KCI_DOWNLOAD_DEADLINE="4.5", KCI_MAX_RETRIES="1", KCING_PROGRESS_EVERY="1")
    done = kcing(["gen_samples"], env, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert 3 <= len(progress_lines(done.stderr)) <= 5, done.stderr


def test_a_ledger_on_a_read_only_file_system_is_exit_5_saying_so_and_still_read(tmp_path):
    """SQLite says only `unable to open database file`: the line must not send the user looking
    for a full disk or a failing device when the file system is mounted read-only. What only
    reads the ledger (status, a dry run) reads it there, as an account that may not write does."""
    import subprocess
    from tests.feedrun import SAMPLES
    from tests.tmpfs import small_tmpfs
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    with small_tmpfs(tmp_path / "ro", "16m") as mounted:
        db = mounted / "kcing.db"
        env = clean_environ(KCING_DB=str(db))
        feed = ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output"]
        fed = kcing(feed + [str(tmp_path / "out")], env, tmp_path)
        assert fed.returncode == 0, fed.stderr
        before = kcing(["status", "--json"], env, tmp_path)
        assert before.returncode == 0, before.stderr
        subprocess.run(["mount", "-o", "remount,ro", str(mounted)], check=True)
        with pytest.raises(StorageFailed) as opening:  # as a run that writes opens it
            Ledger.open(str(db))
        assert opening.value.exit_code == 5
        assert "read-only" in str(opening.value) and "full disk" not in str(opening.value), opening.value
        # A run that writes stops before: the run lock beside the ledger cannot be taken.
        refused = kcing(feed + [str(tmp_path / "elsewhere")], env, tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert refused.stderr.splitlines() == ["kcing feed_es: cannot open the lock file %s.lock for writing: "
                                               "Read-only file system" % db]
        shown = kcing(["status", "--json"], env, tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["objects"] == json.loads(before.stdout)["objects"]
        tried = kcing(feed + [str(tmp_path / "out"), "--dry-run"], env, tmp_path)
        assert tried.returncode == 0, tried.stderr
        assert "11 already delivered, 0 would be fetched" in tried.stdout


def _resident_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def test_a_ledger_on_a_read_only_file_system_is_read_where_it_is_not_copied_into_memory(tmp_path):
    """What reads a ledger it may not write (status, a dry run; a monitoring account, a read-only
    file system) read it through a copy in memory, as large as the ledger: status took 1 GB for a
    ledger of 1,000,000 rows. It reads the file where it is."""
    from tests.tmpfs import small_tmpfs
    with small_tmpfs(tmp_path / "ro", "128m") as mounted:
        db = mounted / "kcing.db"
        Ledger.open(str(db)).close()
        ids = bytes(range(20)) * 50000  # a megabyte of document ids
        with sqlite3.connect(str(db)) as conn:
            conn.executemany("INSERT INTO upstream_file (id, source, kind, upstream_id, url, state, attempts, "
                             "first_seen, destination) VALUES (?, 'samples', 'lava', ?, '', 'delivered', 1, "
                             "'2019-05-01 00:00:00', 'ndjson /out')", [(n, "%024x" % n) for n in range(1, 49)])
            conn.executemany("INSERT INTO delivered_documents (upstream_file_id, index_name, ids) VALUES (?, ?, ?)",
                             [(n, "log-2019.05.01", ids) for n in range(1, 49)])
        conn.close()
        subprocess.run(["mount", "-o", "remount,ro", str(mounted)], check=True)
        before = _resident_bytes()
        ledger = Ledger.open(str(db), unchanged=True)
        try:
            grown = _resident_bytes() - before
            assert ledger.counts() == {("samples", "lava", "ndjson /out", "delivered"): 48}
            assert len(ledger.kept_documents([48])[48][0][1]) == len(ids)
        finally:
            ledger.close()
    assert grown < 16 * 1024 * 1024, grown  # the ledger is 48 MB


def as_a_user_file_modes_bind(args: List[str]) -> List[str]:
    """`args` run so that a file's mode binds them: root overrides a read-only mode, so as root
    the command runs without that capability (setpriv); as any other user, as it is."""
    import os
    import shutil
    if os.geteuid() != 0:
        return args
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file modes cannot be made to bind")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"] + args


def kcing_bound_by_modes(args: List[str], env: dict, cwd: Path):
    import subprocess
    import sys
    return subprocess.run(as_a_user_file_modes_bind([sys.executable, str(REPO / "kcing.py"), *args]), env=env,
                          cwd=str(cwd), capture_output=True, text=True, timeout=120)


def _beside(db: Path) -> List[str]:
    return sorted(path.name for path in db.parent.iterdir() if path.name.startswith(db.name + "-"))


def test_a_read_only_ledger_is_left_without_files_that_keep_it_read_only_once_made_writable(tmp_path):
    """SQLite makes a WAL ledger's -wal and -shm files with the ledger's own mode: a status or a
    refused run on a read-only ledger left them read-only, and once the ledger was made writable
    again every run still ended "read-only (the file, its directory or its file system)"."""
    from tests.feedrun import SAMPLES
    db = tmp_path / "kcing.db"
    env = clean_environ(KCING_DB=str(db))
    feed = ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")]
    assert kcing(feed, env, tmp_path).returncode == 0
    db.chmod(0o444)
    shown = kcing_bound_by_modes(["status", "--json"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["objects"]["samples"]["build"]["delivered"] == 6
    assert _beside(db) == []
    refused = kcing_bound_by_modes(feed, env, tmp_path)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert _beside(db) == []
    assert refused.stderr.splitlines() == ["kcing feed_es: cannot write the ledger %s: the file is read-only; "
                                           "nothing was changed" % db]
    db.chmod(0o644)
    again = kcing_bound_by_modes(feed, env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_read_only_shm_file_beside_a_writable_ledger_is_named_in_the_error(tmp_path):
    """Left so by an earlier reader (another SQLite program): the line says which file is
    read-only, and what to do with it, rather than blaming the ledger or its directory."""
    import subprocess
    import sys
    db = tmp_path / "kcing.db"
    Ledger.open(str(db)).close()
    db.chmod(0o444)
    read = "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM run').fetchall()"
    subprocess.run(as_a_user_file_modes_bind([sys.executable, "-c", read, str(db)]), check=True, capture_output=True)
    db.chmod(0o644)
    assert "kcing.db-shm" in _beside(db)
    refused = kcing_bound_by_modes(["feed_es", "--source", "samples", "--output", str(tmp_path / "out")],
                                   clean_environ(KCING_DB=str(db), KCI_SAMPLES_DIR=str(REPO / "samples")), tmp_path)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    line = refused.stderr.splitlines()[-1]
    assert line.startswith("kcing feed_es: cannot write the ledger %s: its -shm file %s-shm is read-only (make it "
                           "writable, or remove it while nothing uses the ledger)" % (db, db)), line


def test_a_ledger_in_a_directory_this_user_may_not_search_is_a_one_line_error(tmp_path):
    """pathlib's exists() raises PermissionError there (it answers False only for a path that is
    not found): status, drp, reconcile and a dry run ended with an internal error."""
    from tests.feedrun import SAMPLES
    locked = tmp_path / "locked"
    locked.mkdir()
    db = locked / "kcing.db"
    env = clean_environ(KCING_DB=str(db), ES_HOST="http://127.0.0.1:9", DRP_DAYS="36500")
    feed = ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")]
    assert kcing(feed, env, tmp_path).returncode == 0
    locked.chmod(0)
    try:
        for args in (["status"], ["status", "--json"], ["drp", "--dry-run"], ["reconcile"], feed + ["--dry-run"]):
            done = kcing_bound_by_modes(args, env, tmp_path)
            assert (done.returncode, done.stderr) == (2, "kcing %s: KCING_DB %s cannot be looked up: Permission denied\n"
                                                      % (args[0], db)), args
    finally:
        locked.chmod(0o755)


def test_output_metrics_and_kibana_dir_paths_in_a_directory_this_user_may_not_search_are_one_line_errors(tmp_path):
    from tests.feedrun import SAMPLES
    locked = tmp_path / "locked"
    (locked / "sub").mkdir(parents=True)
    env = clean_environ(KCING_DB=str(tmp_path / "kcing.db"), KCI_SAMPLES_DIR=str(SAMPLES), KB_URL="http://127.0.0.1:9")
    feed = ["feed_es", "--source", "samples"]
    cases = [
        (feed + ["--output", str(locked / "sub" / "out")], "--output", locked / "sub" / "out"),
        (feed + ["--output", str(locked / "sub" / "out"), "--dry-run"], "--output", locked / "sub" / "out"),
        (feed + ["--output", str(tmp_path / "out"), "--metrics", str(locked / "sub" / "m.prom")], "--metrics",
         locked / "sub"),
        (["backup_kbn", "--kibana-dir", str(locked / "sub"), "--dry-run", "--wait", "1"], "--kibana-dir", locked / "sub"),
    ]
    locked.chmod(0)
    try:
        for args, named, path in cases:
            done = kcing_bound_by_modes(args, env, tmp_path)
            assert (done.returncode, done.stderr) == (2, "kcing %s: %s: cannot look up %s: Permission denied\n"
                                                      % (args[0], named, path)), (args, done.stderr)
    finally:
        locked.chmod(0o755)


def test_a_ledger_this_user_may_not_read_is_said_so_not_called_read_only(tmp_path):
    """A ledger of mode 000 (or another user's, mode 600) was "cannot write the ledger ...: the
    file is read-only", exit 5, for status as for a feed: SQLite says only that it cannot open it."""
    from tests.feedrun import SAMPLES
    db = tmp_path / "kcing.db"
    env = clean_environ(KCING_DB=str(db))
    feed = ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")]
    assert kcing(feed, env, tmp_path).returncode == 0
    db.chmod(0)
    try:
        for args in (["status"], feed, ["drp", "--dry-run"]):
            refused = kcing_bound_by_modes(args, env, tmp_path)
            assert (refused.returncode, refused.stderr.strip()) == (
                2, "kcing %s: KCING_DB %s cannot be read by this user (its mode or owner): let this user read it (and "
                   "write it, to feed), or run kcing as its owner" % (args[0], db)), refused.stderr
    finally:
        db.chmod(0o644)
    assert kcing(feed, env, tmp_path).returncode == 0


def test_a_lock_file_this_user_may_not_write_is_said_so_not_said_uncreatable(tmp_path):
    """A lock file left read-only (another account's, mode 444) was "cannot create the lock file
    ...: Permission denied", which sent the user to the directory's permissions: it exists, and
    it is the file that refuses."""
    from tests.feedrun import SAMPLES
    db = tmp_path / "kcing.db"
    env = clean_environ(KCING_DB=str(db))
    feed = ["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")]
    assert kcing(feed, env, tmp_path).returncode == 0
    lock = Path(str(db) + ".lock")
    lock.chmod(0o444)
    for args in (feed, ["drp"], ["reconcile"]):
        refused = kcing_bound_by_modes(args, env, tmp_path)
        assert (refused.returncode, refused.stderr.strip()) == (
            2, "kcing %s: cannot open the lock file %s for writing: Permission denied (its mode or owner: let the "
               "user running kcing write it, or remove it while no run is going)" % (args[0], lock)), refused.stderr
    shown = kcing_bound_by_modes(["status"], env, tmp_path)
    assert shown.returncode == 0, shown.stderr


@pytest.mark.parametrize("command", sorted(DOCUMENTED) + ["test", None])
def test_each_exit_status_paragraph_is_wrapped_to_the_width_of_the_help(command):
    """A line of the paragraph longer than the rest reads as a paragraph edited in place and not
    reflowed; 96 columns is the width of every help's prose."""
    from kcing import cli
    text = cli.global_help() if command is None else commands.load(command).USAGE
    paragraph = "Exit status:" + text.split("\nExit status:", 1)[1].split("\n\n", 1)[0]
    assert max(len(line) for line in paragraph.splitlines()) <= 96, paragraph


@pytest.mark.parametrize("command", ["drp", "reconcile", "setup_es", "setup_kbn", "backup_kbn"])
def test_help_gives_a_redirect_exit_2_and_an_answer_too_large_exit_3(command):
    """These commands end with 2 for an ES_HOST or KB_URL that redirects and with 3 for an answer
    beyond the size kcing reads: their help, which the log's closing line quotes, says so."""
    from kcing import cli
    assert "redirect" in cli.exit_meaning(command, 2)
    assert "too large" in cli.exit_meaning(command, 3)


def test_a_listing_stopped_by_an_upstream_that_answers_nothing_ends_with_1_as_the_help_says(tmp_path):
    """A frontend refusing connections stops the listing, with nothing failed nor rejected: the run
    ends with 1, which the helps gave only for objects that failed or were rejected."""
    from kcing import cli
    with refusing_port() as port:
        env = clean_environ(KCI_HOST="127.0.0.1:%d" % port, KCI_SCHEME="http", KCI_MAX_RETRIES="1",
                            KCI_RETRY_BACKOFF="0.05", KCI_STORAGE_URL="http://127.0.0.1:%d/" % port,
                            KCING_DB=str(tmp_path / "kcing.db"))
        stopped = kcing(["feed_es", "--days", "1", "--output", str(tmp_path / "out")], env, tmp_path)
    assert stopped.returncode == 1, stopped.stderr
    assert "rejected 0, failed 0" in stopped.stdout
    assert "listing stopped part-way" in cli.exit_meaning("feed_es", 1)
    paragraph = " ".join(cli.global_help().split("Exit status:", 1)[1].split())
    assert "listing stopped part-way" in paragraph.split("; 1 ", 1)[1].split("; 2 ", 1)[0]


def test_feed_es_help_gives_what_its_verify_ends_with_2_and_3_for():
    """`feed_es --verify` asks Elasticsearch as reconcile does: an ES_HOST that redirects ends it
    with 2, an answer too large or unreadable (a proxy's HTML page) with 3. Its help, which the
    log's closing line quotes, named only Logstash's redirect and a document too large for it."""
    from kcing import cli
    assert "ES_HOST" in cli.exit_meaning("feed_es", 2)
    assert "answer of Elasticsearch too large or unreadable" in cli.exit_meaning("feed_es", 3)


def test_reconcile_help_gives_exit_2_for_an_index_the_user_may_not_read():
    from kcing import cli
    assert "may not read" in cli.exit_meaning("reconcile", 2)


def test_reconcile_help_gives_exit_3_for_a_logstash_its_resend_cannot_post_to():
    """`reconcile --resend` ends with 3 when Logstash is down or refuses: its help, which the
    log's closing line quotes, must not send the reader to Elasticsearch alone."""
    from kcing import cli
    assert "Logstash" in cli.exit_meaning("reconcile", 3)


def test_kcing_help_gives_3_for_an_answer_too_large():
    from kcing import cli
    paragraph = " ".join(cli.global_help().split("Exit status:", 1)[1].split())
    assert "too large or unreadable" in paragraph.split("; 3 ", 1)[1].split("; 4 ", 1)[0]


def test_a_broken_pipe_ends_quietly_with_141_only_when_stdouts_reader_is_gone(monkeypatch):
    # A pipe broken elsewhere (a socket, a file on a FIFO) is an error to report, not the quiet
    # end of `kcing status | head -1`.
    import os
    import sys

    from kcing import errors

    monkeypatch.setattr(errors, "_found_gone", False)
    read, write = os.pipe()
    with os.fdopen(read, "rb") as reader, os.fdopen(write, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert errors.exit_status(BrokenPipeError(32, "Broken pipe")) == errors.INTERNAL_ERROR
        reader.close()
        assert errors.exit_status(BrokenPipeError(32, "Broken pipe")) == errors.STDOUT_CLOSED
