"""Local files kcing writes: lock files never followed through a symlink, and replaced files
keeping permissions that let other programs (Logstash, a node exporter) read them.

Each test runs the real `kcing` program on real files, as an operator would meet the problem.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from kcing.runlock import RunLock
from kcing.errors import ConfigError
from tests.fakes.kibana_server import KibanaEmulator
from tests.feedrun import REPO, SAMPLES, clean_environ, feed_environ, ledger_states

VICTIM_TEXT = "precious content that a lock must never overwrite\n"


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int):
    """The umask the kcing child process inherits."""
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


def run(args, env, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "kcing.py"), *args], env=env, cwd=str(cwd),
                          capture_output=True, text=True, timeout=120)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


# -- lock files: a symlink planted at the lock path ----------------------------------------------

@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "elsewhere" / "victim.txt"
    path.parent.mkdir()
    path.write_text(VICTIM_TEXT)
    return path


def test_a_symlink_at_the_ledger_lock_is_refused_and_its_target_kept(tmp_path, victim):
    db = tmp_path / "kcing.db"
    Path(str(db) + ".lock").symlink_to(victim)
    env = clean_environ(KCING_DB=str(db))
    result = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")],
                 env, tmp_path)
    assert result.returncode == 2
    message = one_line_error(result)
    assert "kcing.db.lock is a symbolic link" in message and "remove it" in message
    assert victim.read_text() == VICTIM_TEXT
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_dangling_symlink_at_the_lock_creates_nothing_at_its_target(tmp_path):
    db = tmp_path / "kcing.db"
    target = tmp_path / "would-be-created"
    Path(str(db) + ".lock").symlink_to(target)
    feed = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")],
               clean_environ(KCING_DB=str(db)), tmp_path)
    assert feed.returncode == 2 and "symbolic link" in one_line_error(feed)
    assert not target.exists() and not target.is_symlink()


def test_a_symlink_at_the_samples_manifest_lock_is_refused(legacy_replica, logstash, tmp_path, victim):
    samples = tmp_path / "saved"
    samples.mkdir()
    (samples / "manifest.json.lock").symlink_to(victim)
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    result = run(["gen_samples"], env, tmp_path)
    assert result.returncode == 2
    assert "manifest.json.lock is a symbolic link" in one_line_error(result)
    assert victim.read_text() == VICTIM_TEXT
    assert not (samples / "manifest.json").exists()


def test_a_hard_link_at_the_lock_is_refused_and_left_alone(tmp_path, victim):
    db = tmp_path / "elsewhere" / "kcing.db"
    os.link(victim, str(db) + ".lock")
    with pytest.raises(ConfigError, match="hard link"):
        with RunLock(str(db)):
            pass
    assert victim.read_text() == VICTIM_TEXT


def test_the_lock_file_holds_the_pid_of_its_holder(tmp_path):
    db = tmp_path / "kcing.db"
    Path(str(db) + ".lock").write_text("123456789 left by an older run")
    with RunLock(str(db)):
        assert Path(str(db) + ".lock").read_text() == str(os.getpid())


def test_a_run_starting_while_a_status_looks_at_the_lock_takes_it(tmp_path):
    """`kcing status` holds the lock shared for an instant when the kernel's list of locks cannot
    tell (a run in another pid namespace is not listed): a run starting at that very moment must
    not take it for another run's and exit 4."""
    import fcntl
    import threading
    db = tmp_path / "kcing.db"
    lock = Path(str(db) + ".lock")
    lock.write_text("")
    looking = os.open(str(lock), os.O_RDONLY)
    fcntl.flock(looking, fcntl.LOCK_SH | fcntl.LOCK_NB)
    done = threading.Timer(0.05, lambda: os.close(looking))
    done.start()
    try:
        with RunLock(str(db)):
            assert lock.read_text() == str(os.getpid())
    finally:
        done.join()


def test_a_run_finding_the_lock_held_is_refused_at_once(tmp_path):
    """Taking the lock tries again only for the instant a `kcing status` may hold it: a run
    beside another is refused (exit 4) without waiting for it."""
    import time
    from kcing.errors import LockHeld
    db = tmp_path / "kcing.db"
    with RunLock(str(db)):
        started = time.monotonic()
        with pytest.raises(LockHeld, match="another kcing run \\(pid %d\\)" % os.getpid()):
            with RunLock(str(db)):
                pass
        assert time.monotonic() - started < 2


# -- lock files on a file system that takes no file locks ---------------------------------------

# Put first on the path of the kcing process: its fcntl.flock fails as it does on a file system
# without lock support (NFS without its lock service: ENOLCK; some FUSE and SMB mounts: EOPNOTSUPP).
FLOCK_REFUSED = """\
import errno, fcntl, os
def _refused(fd, operation):
    code = int(os.environ["KCING_TEST_FLOCK_ERRNO"])
    raise OSError(code, os.strerror(code))
fcntl.flock = _refused
"""


@pytest.mark.parametrize("code", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_lock_file_system_that_takes_no_locks_is_one_line_and_exit_2(tmp_path, code):
    """Was an internal error (OSError, exit 70), as if kcing had a bug: the operator must learn
    that the ledger sits on a file system without file locks, and where to put it instead."""
    (tmp_path / "patch").mkdir()
    (tmp_path / "patch" / "sitecustomize.py").write_text(FLOCK_REFUSED)
    db = tmp_path / "kcing.db"
    env = clean_environ(KCING_DB=str(db), PYTHONPATH=str(tmp_path / "patch"), KCING_TEST_FLOCK_ERRNO=str(code))
    result = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(tmp_path / "out")],
                 env, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert one_line_error(result) == (
        "kcing feed_es: cannot lock %s.lock: %s; its file system takes no file locks (a network file system "
        "without its lock service?): keep %s on a local file system" % (db, os.strerror(code), tmp_path))
    assert not db.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_status_on_a_file_system_that_takes_no_locks_shows_the_ledger(tmp_path):
    """Looking whether a run holds the lock takes a shared lock for an instant where the kernel
    lists none: a file system refusing it (ENOLCK) means no run can hold one, not an error."""
    from kcing.ledger.ledger import Ledger
    (tmp_path / "patch").mkdir()
    (tmp_path / "patch" / "sitecustomize.py").write_text(FLOCK_REFUSED)
    db = tmp_path / "kcing.db"
    Ledger.open(str(db)).close()
    Path(str(db) + ".lock").write_text("")  # left by an earlier run
    env = clean_environ(KCING_DB=str(db), PYTHONPATH=str(tmp_path / "patch"),
                        KCING_TEST_FLOCK_ERRNO=str(errno.ENOLCK))
    result = run(["status"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ledger: %s" % db), result.stdout


def test_a_lock_refused_by_the_file_system_closes_its_file(tmp_path, monkeypatch):
    def refused(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr("kcing.runlock.fcntl.flock", refused)
    opened = set(os.listdir("/proc/self/fd"))
    with pytest.raises(ConfigError, match="takes no file locks"):
        with RunLock(str(tmp_path / "kcing.db")):
            pass
    assert set(os.listdir("/proc/self/fd")) <= opened


# -- replaced files keep readable modes ----------------------------------------------------------

def setup_ls_env(ls_home: Path) -> dict:
    return clean_environ(LS_HOME=str(ls_home))


@pytest.fixture
def ls_home(tmp_path) -> Path:
    home = tmp_path / "logstash"
    (home / "config").mkdir(parents=True)
    return home


@pytest.mark.parametrize("existing_mode", [0o644, 0o640, 0o664])
def test_setup_ls_keeps_the_mode_of_pipelines_yml_and_gives_it_to_the_backup(ls_home, tmp_path, existing_mode):
    path = ls_home / "config" / "pipelines.yml"
    path.write_text("- pipeline.id: main\n  path.config: /etc/logstash/conf.d/main.conf\n")
    os.chmod(path, existing_mode)
    with umask(0o077):  # a strict umask must not make Logstash's file unreadable to Logstash
        result = run(["setup_ls"], setup_ls_env(ls_home), tmp_path)
    assert result.returncode == 0, result.stderr
    backups = list((ls_home / "config").glob("pipelines.yml.*.bak"))
    assert len(backups) == 1
    assert "pipeline.id: kcing" in path.read_text()
    assert mode_of(path) == existing_mode
    assert mode_of(backups[0]) == existing_mode


def test_setup_ls_keeps_the_group_that_lets_logstash_read_the_file(ls_home, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("giving a file another group needs root")
    path = ls_home / "config" / "pipelines.yml"
    path.write_text("- pipeline.id: main\n  path.config: /etc/logstash/conf.d/main.conf\n")
    os.chown(path, 0, 4321)
    os.chmod(path, 0o640)
    result = run(["setup_ls"], setup_ls_env(ls_home), tmp_path)
    assert result.returncode == 0, result.stderr
    assert path.stat().st_gid == 4321 and mode_of(path) == 0o640


@pytest.mark.parametrize("mask, wanted", [(0o022, 0o644), (0o027, 0o640)])
def test_a_new_pipelines_yml_is_0644_less_the_umask(ls_home, tmp_path, mask, wanted):
    with umask(mask):
        result = run(["setup_ls"], setup_ls_env(ls_home), tmp_path)
    assert result.returncode == 0, result.stderr
    assert mode_of(ls_home / "config" / "pipelines.yml") == wanted


@pytest.mark.parametrize("mask, wanted", [(0o000, 0o644), (0o002, 0o644), (0o027, 0o640)])
def test_new_output_and_log_files_are_0644_less_the_umask(tmp_path, mask, wanted):
    """They were 0666 less the umask: under a umask of 0 (a container's, a service's) any local
    user could write documents into the NDJSON files, which are then replayed into Elasticsearch,
    or lines into the run's log."""
    out, log = tmp_path / "out", tmp_path / "feed.log"
    with umask(mask):
        result = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(out),
                      "-l", str(log)], clean_environ(KCING_DB=str(tmp_path / "kcing.db")), tmp_path)
    assert result.returncode == 0, result.stderr
    written = sorted(out.glob("*.ndjson")) + [log]
    assert len(written) > 1
    assert {path.name: mode_of(path) for path in written} == {path.name: wanted for path in written}


@pytest.mark.parametrize("mask, wanted", [(0o000, 0o755), (0o027, 0o750)])
def test_new_directories_are_0755_less_the_umask(legacy_replica, logstash, tmp_path, mask, wanted):
    """They were 0777 less the umask: under a umask of 0 any local user could remove an NDJSON
    file of an `--output` directory kcing made and put one of their own in its place, which the
    next run appends to and an operator replays into Elasticsearch; or replace a saved sample or
    Kibana export. The parents kcing makes on the way too."""
    out, samples, kibana_dir = tmp_path / "new" / "out", tmp_path / "saved" / "2024", tmp_path / "kibana"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    with umask(mask), KibanaEmulator() as kibana:
        fed = run(["feed_es", "--output", str(out)], env, tmp_path)
        saved = run(["gen_samples", "--sample-size", "1"], env, tmp_path)
        exported = run(["backup_kbn", "--kibana-dir", str(kibana_dir), "--wait", "5"], clean_environ(KB_URL=kibana.url),
                       tmp_path)
    assert (fed.returncode, saved.returncode, exported.returncode) == (0, 0, 0), fed.stderr + saved.stderr + exported.stderr
    made = [out, out.parent, samples, samples.parent, kibana_dir] + [path for path in samples.iterdir() if path.is_dir()]
    assert len(made) > 5
    assert {str(path): oct(mode_of(path)) for path in made} == {str(path): oct(wanted) for path in made}


def test_a_directory_to_make_where_a_file_or_a_dangling_link_is_is_refused(tmp_path):
    # Not taken as made: the run would go on to write into a directory that is not there.
    from kcing.files import make_directories

    (tmp_path / "file").write_text("")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for path in (tmp_path / "file", tmp_path / "dangling", tmp_path / "file" / "below"):
        with pytest.raises(OSError):
            make_directories(path)
    assert not (tmp_path / "nowhere").exists()
    make_directories(tmp_path / "new" / "deeper")
    make_directories(tmp_path / "new" / "deeper")  # made already: nothing to do
    assert (tmp_path / "new" / "deeper").is_dir()


def test_backup_kbn_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    kibana_dir = tmp_path / "kibana"
    kibana_dir.mkdir()
    replaced = kibana_dir / "saved_objects.ndjson"
    replaced.write_text("")
    os.chmod(replaced, 0o664)
    with KibanaEmulator() as kibana, umask(0o077):
        result = run(["backup_kbn", "--kibana-dir", str(kibana_dir), "--wait", "5"],
                     clean_environ(KB_URL=kibana.url), tmp_path)
        fresh = run(["backup_kbn", "--kibana-dir", str(tmp_path / "fresh"), "--wait", "5"],
                    clean_environ(KB_URL=kibana.url), tmp_path)
    assert result.returncode == 0 and fresh.returncode == 0, result.stderr + fresh.stderr
    assert mode_of(replaced) == 0o664
    # A new file with a umask of 077: 0644 less the umask, as any file the user creates.
    assert mode_of(tmp_path / "fresh" / "saved_objects.ndjson") == 0o600


def test_gen_samples_writes_files_others_can_read(legacy_replica, logstash, tmp_path):
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    with umask(0o022):
        result = run(["gen_samples"], env, tmp_path)
    assert result.returncode == 0, result.stderr
    written = [path for path in samples.rglob("*") if path.is_file() and not path.name.endswith(".lock")]
    assert written and {mode_of(path) for path in written} == {0o644}


# -- names that are not UTF-8 ------------------------------------------------------------------

def test_samples_and_output_directories_named_in_bytes_that_are_not_utf8_are_fed_and_recorded(tmp_path):
    # As Python holds such names from argv: the byte 0xff as a lone surrogate, which the
    # ledger (SQLite text) cannot take as it is.
    samples = os.fsdecode(os.fsencode(str(tmp_path)) + b"/samples\xff")
    output = os.fsdecode(os.fsencode(str(tmp_path)) + b"/out\xff")
    shutil.copytree(str(SAMPLES), samples)
    db = tmp_path / "kcing.db"
    args = ["feed_es", "--source", "samples", "--samples-dir", samples, "--output", output, "--db", str(db)]
    first = run(args, clean_environ(), tmp_path)
    assert first.returncode == 0, first.stderr
    second = run(args, clean_environ(), tmp_path)
    assert second.returncode == 0, second.stderr
    assert "listed 11, skipped 11 (already delivered), downloaded 0" in second.stdout
    with sqlite3.connect(str(db)) as raw:
        assert {row[0] for row in raw.execute("SELECT destination FROM upstream_file")} == {
            "ndjson %s/out\\xff" % os.path.realpath(str(tmp_path))}


def test_a_missing_local_file_named_in_bytes_that_are_not_utf8_is_rejected_alone_not_an_internal_error(tmp_path):
    """A file name from a glob over an old archive, not UTF-8, that is not there (moved, a typo):
    the ledger row naming it could not be written (SQLite text), and the run ended with exit 70."""
    given = tmp_path / "lava-json-x.json"
    given.write_bytes((SAMPLES / "lava" / "5fb6196b59b5140d3b3a6259.json").read_bytes())
    missing = os.fsdecode(os.fsencode(str(tmp_path)) + b"/lava-json-gone\xff.json")
    db = tmp_path / "kcing.db"
    args = ["feed_es", "--lavas", str(given), missing, "--output", str(tmp_path / "out"), "--db", str(db)]
    for _ in range(2):  # and again, over the row the first run wrote
        # The name's bytes come back as they are on stdout, as a shell's would.
        result = subprocess.run([sys.executable, str(REPO / "kcing.py"), *args], env=clean_environ(), cwd=str(tmp_path),
                                capture_output=True, text=True, errors="surrogateescape", timeout=120)
        assert result.returncode == 1, result.stderr
        assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert "No such file or directory" in result.stdout
    with sqlite3.connect(str(db)) as raw:
        rows = sorted(raw.execute("SELECT state, upstream_id FROM upstream_file"))
    assert [state for state, _ in rows] == ["delivered", "rejected"]
    assert rows[1][1].endswith("lava-json-gone\\xff.json")


def test_a_local_file_that_could_not_be_read_is_named_as_given_never_called_missing(tmp_path):
    """A file too large for KCI_MAX_OBJECT_BYTES, or a directory, has no content hash to name it
    by: messages called it by its ledger id, `missing:<name>`, a file that is there."""
    large = tmp_path / "lava-json-x.json"
    large.write_bytes((SAMPLES / "lava" / "5fb6196b59b5140d3b3a6259.json").read_bytes())
    (tmp_path / "lava-dir").mkdir()
    env = clean_environ(KCI_MAX_OBJECT_BYTES=str(large.stat().st_size - 1))
    args = ["feed_es", "--lavas", "lava-json-x.json", "lava-dir", "gone.json", "--output", "out", "--db", "kcing.db"]
    result = subprocess.run([sys.executable, str(REPO / "kcing.py"), *args], env=env, cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "missing:" not in result.stdout + result.stderr
    problems = [line.strip() for line in result.stdout.splitlines() if line.startswith("  problem: ")]
    assert problems == [
        "problem: lava lava-json-x.json (not read): lava-json-x.json: %d bytes, more than the limit of %d: raise "
        "KCI_MAX_OBJECT_BYTES to take it" % (large.stat().st_size, large.stat().st_size - 1),
        "problem: lava lava-dir (not read): cannot read lava-dir: Is a directory",
        "problem: lava gone.json (not read): cannot read gone.json: No such file or directory"]
    assert "rejected lava gone.json (not read): cannot read gone.json" in result.stderr


def test_two_unreadable_files_whose_long_paths_end_alike_are_two_rejections(tmp_path):
    """The ledger id of a file that could not be read kept the last 100 characters of its path:
    the same file name in two deep directories made one id, and the second file was passed over
    as listed twice, never reported."""
    deep = "d" * 120
    paths = [tmp_path / top / deep / "lava-json-x.json" for top in ("one", "two")]
    args = ["feed_es", "--lavas", *map(str, paths), "--output", "out", "--db", "kcing.db"]
    result = subprocess.run([sys.executable, str(REPO / "kcing.py"), *args], env=clean_environ(), cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "rejected 2" in result.stdout, result.stdout
    assert sum(line.startswith("  problem: ") for line in result.stdout.splitlines()) == 2
    with sqlite3.connect(str(tmp_path / "kcing.db")) as raw:
        ids = [upstream_id for upstream_id, in raw.execute("SELECT upstream_id FROM upstream_file")]
    assert len(set(ids)) == 2 and all(len(upstream_id) == len("missing:") + 100 for upstream_id in ids), ids


# -- a samples replay reads only the files its manifest describes ---------------------------------

def test_a_samples_directory_that_does_not_exist_is_named_with_where_the_bundled_samples_are(tmp_path):
    """The help's `kcing feed_es --source samples --output out/` run outside the clone looked for
    `samples` in the working directory and said only "samples/manifest.json not found: is samples
    a samples directory?", naming neither the option nor the setting, nor where the samples are."""
    if not (SAMPLES / "manifest.json").is_file():
        pytest.skip("samples/ has no manifest")
    ledger = tmp_path / "kcing.db"
    for given in ([], ["--samples-dir", str(tmp_path / "gone")]):
        result = subprocess.run([sys.executable, str(REPO / "kcing.py"), "feed_es", "--source", "samples", "--output",
                                 str(tmp_path / "out"), "--db", str(ledger), *given], env=clean_environ(),
                                cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert result.returncode == 2, result.stdout + result.stderr
        named = "samples does not exist in the working directory %s" % tmp_path if not given else \
            "%s does not exist" % (tmp_path / "gone")
        assert result.stderr.splitlines() == [
            "kcing feed_es: samples directory %s: name one with --samples-dir or KCI_SAMPLES_DIR (kcing's bundled "
            "samples are %s)" % (named, SAMPLES.resolve())]
    assert sorted(os.listdir(str(tmp_path))) == []


def replay_into(samples: Path, output: Path, db: Path, cwd: Path) -> subprocess.CompletedProcess:
    return run(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(output),
                "--db", str(db)], clean_environ(), cwd)


def test_a_sample_edited_since_it_was_saved_is_reported_not_fed_and_fed_once_put_back(tmp_path):
    samples = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(samples))
    manifest = json.loads((samples / "manifest.json").read_text())
    entry = next(entry for entry in manifest["objects"] if entry["kind"] == "build")
    saved = (samples / entry["path"]).read_bytes()
    edited = json.loads(saved)
    edited["job"] = "edited-by-hand"
    (samples / entry["path"]).write_text(json.dumps(edited))
    output, db = tmp_path / "out", tmp_path / "kcing.db"

    first = replay_into(samples, output, db, tmp_path)
    assert first.returncode == 1, first.stderr
    assert "delivered 10, rejected 0, failed 1" in first.stdout
    assert "problem: build %s: %s is not the file its manifest entry describes (sha256 %s" % (
        entry["upstream_id"], samples / entry["path"], entry["sha256"][:12]) in first.stdout
    assert "edited-by-hand" not in (output / "build.ndjson").read_text()
    assert ledger_states(db)[("build", entry["upstream_id"])] == "failed"

    (samples / entry["path"]).write_bytes(saved)  # put back: the next replay delivers it
    second = replay_into(samples, output, db, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "skipped 10 (already delivered), downloaded 1, delivered 1" in second.stdout
    assert ledger_states(db)[("build", entry["upstream_id"])] == "delivered"


def test_a_sample_saved_again_by_a_gen_samples_beside_the_replay_is_fed_as_the_manifest_now_says(tmp_path):
    """A replay reads the manifest as it starts; a gen_samples beside it (`--with-logs`) saves
    some files again and records their new sha256. Those files failed as "changed since it was
    saved; put the saved file back", exit 1: they are what the manifest on disk describes, and
    are fed. A file changed without its entry still fails."""
    from kcing.errors import UpstreamError
    from kcing.files import write_atomically
    from kcing.sources.localfiles import SamplesDir
    samples = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(samples))
    replay = SamplesDir(str(samples), 100_000_000)
    listed = {(obj.kind, obj.upstream_id): obj for obj in replay.list_objects()}
    manifest = json.loads((samples / "manifest.json").read_text())
    saved_again, edited = [entry for entry in manifest["objects"] if entry["kind"] == "build"][:2]
    content = json.dumps(dict(json.loads((samples / saved_again["path"]).read_bytes()), saved="again")).encode()
    write_atomically(samples / saved_again["path"], content)  # as gen_samples saves: file, then manifest
    saved_again.update(sha256=hashlib.sha256(content).hexdigest(), size=len(content))
    write_atomically(samples / "manifest.json", json.dumps(manifest, indent=1).encode())
    (samples / edited["path"]).write_bytes(b'{"edited": "by hand"}')

    assert replay.fetch(listed[("build", saved_again["upstream_id"])]) == content
    with pytest.raises(UpstreamError, match="is not the file its manifest entry describes"):
        replay.fetch(listed[("build", edited["upstream_id"])])
    # Saved again later in the same replay: the manifest is read again once it changed.
    content = b'{"edited": "by hand", "saved": "again"}'
    write_atomically(samples / edited["path"], content)
    edited.update(sha256=hashlib.sha256(content).hexdigest(), size=len(content))
    write_atomically(samples / "manifest.json", json.dumps(manifest, indent=2).encode())
    assert replay.fetch(listed[("build", edited["upstream_id"])]) == content


def test_a_replay_of_a_directory_a_gen_samples_is_filling_before_its_first_manifest_is_told_so(tmp_path):
    """A samples directory a gen_samples is saving into has no manifest.json until that run first
    writes it: a replay then was a configuration error (exit 2) asking whether the directory is a
    samples directory. It is the other run's to finish: exit 4, naming it, as another run holding
    a lock is."""
    samples = tmp_path / "samples"
    (samples / "build").mkdir(parents=True)
    output, db = tmp_path / "out", tmp_path / "kcing.db"
    with RunLock(str(samples / "manifest.json")):  # what gen_samples holds while it saves
        replayed = replay_into(samples, output, db, tmp_path)
    assert replayed.returncode == 4, replayed.stderr
    assert replayed.stderr.strip().splitlines()[-1] == (
        "kcing feed_es: %s has no manifest.json yet: a gen_samples (pid %d) is saving samples into it; try again "
        "when it ends" % (samples, os.getpid()))
    assert replay_into(samples, output, db, tmp_path).returncode == 2  # no run there: not a samples directory


def test_a_manifest_entry_whose_sha256_is_not_one_is_rejected_and_the_others_fed(tmp_path):
    samples = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(samples))
    manifest = json.loads((samples / "manifest.json").read_text())
    manifest["objects"][0]["sha256"] = "not a hash"
    manifest["objects"][1]["sha256"] = manifest["objects"][1]["sha256"].upper()  # as some tools write it
    (samples / "manifest.json").write_text(json.dumps(manifest))
    result = replay_into(samples, tmp_path / "out", tmp_path / "kcing.db", tmp_path)
    assert result.returncode == 1, result.stderr
    assert "delivered 10, rejected 1, failed 0" in result.stdout
    assert 'sha256 "not a hash" is not 64 hex digits' in result.stdout


def test_a_manifest_entry_whose_path_is_too_long_for_the_system_fails_alone(tmp_path):
    samples = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(samples))
    manifest = json.loads((samples / "manifest.json").read_text())
    manifest["objects"][0]["path"] = "build/" + "a" * 300 + ".json"  # longer than a file name may be (255)
    (samples / "manifest.json").write_text(json.dumps(manifest))
    result = replay_into(samples, tmp_path / "out", tmp_path / "kcing.db", tmp_path)
    assert result.returncode == 1, result.stderr
    assert "delivered 10, rejected 0, failed 1" in result.stdout
    assert "File name too long" in result.stdout


# -- --output: NDJSON files ---------------------------------------------------------------------

def bulk_records(path: Path) -> list:
    """The (action, document) pairs of an NDJSON `_bulk` file, checking it is one: UTF-8, one JSON
    value a line, every line ended, an `index` action before each document."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    lines = [json.loads(line.decode("utf-8")) for line in data.split(b"\n")[:-1]]
    assert len(lines) % 2 == 0
    for action in lines[0::2]:
        assert list(action) == ["index"] and set(action["index"]) == {"_index", "_id"}
    return list(zip(lines[0::2], lines[1::2]))


def test_two_runs_over_the_same_samples_write_the_same_ndjson_files_byte_for_byte(tmp_path):
    # Small batches, several in flight by default (ES_PARALLEL_POSTS): the order the appends
    # reach a file must still be the order the feed made the batches.
    written = []
    for run_number in (1, 2):
        output = tmp_path / ("out-%d" % run_number)
        result = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(output),
                      "--db", str(tmp_path / ("kcing-%d.db" % run_number)), "--batch-size", "2"], clean_environ(), tmp_path)
        assert result.returncode == 0, result.stderr
        written.append({path.name: path.read_bytes() for path in output.glob("*.ndjson")})
    assert sorted(written[0]) == ["boot.ndjson", "build.ndjson", "lava.ndjson"]
    assert written[0] == written[1]
    records = bulk_records(tmp_path / "out-1" / "lava.ndjson")
    assert len({(action["index"]["_index"], action["index"]["_id"]) for action, _ in records}) == len(records)


def test_a_second_run_writing_into_the_same_output_directory_exits_4_and_touches_nothing(tmp_path):
    # Another ledger, so the ledger's lock does not stop it: its first append would have cut the
    # file back to the last whole record while the first run was still writing it.
    output = tmp_path / "out"
    first = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(output),
                 "--db", str(tmp_path / "first.db")], clean_environ(), tmp_path)
    assert first.returncode == 0, first.stderr
    before = {path.name: path.read_bytes() for path in output.glob("*.ndjson")}
    with RunLock(str(output / "ndjson")):  # held as a run writing into the directory holds it
        second = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(output),
                      "--db", str(tmp_path / "second.db")], clean_environ(), tmp_path)
    assert second.returncode == 4, second.stderr
    assert "another kcing run (pid %d) is using %s" % (os.getpid(), output / "ndjson.lock") in one_line_error(second)
    assert {path.name: path.read_bytes() for path in output.glob("*.ndjson")} == before
    again = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(output),
                 "--db", str(tmp_path / "second.db")], clean_environ(), tmp_path)
    assert again.returncode == 0, again.stderr  # released with its holder


def test_gen_samples_over_a_manifest_entry_naming_a_fifo_or_a_device_saves_the_object_again(legacy_replica, logstash,
                                                                                            tmp_path):
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    assert run(["gen_samples"], env, tmp_path).returncode == 0
    manifest = json.loads((samples / "manifest.json").read_text())
    saved_paths = [entry["path"] for entry in manifest["objects"]]
    os.mkfifo(str(samples / "build" / "fifo"))  # no writer: reading it would wait for ever
    manifest["objects"][0]["path"] = "build/fifo"
    manifest["objects"][1]["path"] = "/dev/zero"  # never ends
    (samples / "manifest.json").write_text(json.dumps(manifest))
    again = subprocess.run([sys.executable, str(REPO / "kcing.py"), "gen_samples"], env=env, cwd=str(tmp_path),
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 0, again.stderr
    assert "2 saved, %d already present" % (len(saved_paths) - 2) in again.stdout
    assert [entry["path"] for entry in json.loads((samples / "manifest.json").read_text())["objects"]] == saved_paths


@pytest.mark.parametrize("planted", ["symbolic link", "hard link"])
def test_a_link_planted_at_an_output_file_is_refused_and_its_target_kept(tmp_path, victim, planted):
    # The victim's last line has no newline: written through the link, kcing would first have
    # cut it off as a torn record, then appended documents to the file.
    victim.write_text(VICTIM_TEXT + "its last line")
    output = tmp_path / "out"
    output.mkdir()
    if planted == "symbolic link":
        (output / "boot.ndjson").symlink_to(victim)
    else:
        os.link(str(victim), str(output / "boot.ndjson"))
    result = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(output),
                  "--db", str(tmp_path / "kcing.db")], clean_environ(), tmp_path)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("kcing feed_es: the output file %s is a %s" % (output / "boot.ndjson", planted)), last
    assert "Traceback" not in result.stderr
    assert victim.read_text() == VICTIM_TEXT + "its last line"
    # The other routes were written and recorded; the boots are sent once the link is gone.
    assert "delivered 8" in result.stdout
    (output / "boot.ndjson").unlink()
    again = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(output),
                 "--db", str(tmp_path / "kcing.db")], clean_environ(), tmp_path)
    assert again.returncode == 0, again.stderr
    assert "skipped 8 (already delivered), downloaded 3, delivered 3" in again.stdout
    assert len(bulk_records(output / "boot.ndjson")) == 3


def test_a_directory_at_an_output_file_name_is_a_path_to_fix_exit_2(tmp_path):
    output = tmp_path / "out"
    (output / "lava.ndjson").mkdir(parents=True)
    result = run(["feed_es", "--source", "samples", "--samples-dir", str(SAMPLES), "--output", str(output),
                  "--db", str(tmp_path / "kcing.db")], clean_environ(), tmp_path)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "kcing feed_es: cannot open the output file %s: Is a directory" % (output / "lava.ndjson")


def _edit_a_build_on_purpose(samples: Path, hash_case) -> dict:
    """Edit the first build sample and record the edit in the manifest, its sha256 written in
    `hash_case`, as samples/README.md says to: the manifest entry, as changed."""
    manifest = json.loads((samples / "manifest.json").read_text())
    entry = next(entry for entry in manifest["objects"] if entry["kind"] == "build")
    build = json.loads((samples / entry["path"]).read_bytes())
    build["compiler_version_full"] = "gcc, added by hand"
    content = json.dumps(build).encode()
    (samples / entry["path"]).write_bytes(content)
    entry.update(sha256=hash_case(hashlib.sha256(content).hexdigest()), size=len(content))
    (samples / "manifest.json").write_text(json.dumps(manifest))
    return entry


def _samples_replayed_once(tmp_path):
    """A copy of samples/ replayed once into NDJSON files: (its directory, the output directory,
    the ledger)."""
    samples = tmp_path / "samples"
    shutil.copytree(str(SAMPLES), str(samples))
    output, db = tmp_path / "out", tmp_path / "kcing.db"
    assert replay_into(samples, output, db, tmp_path).returncode == 0
    return samples, output, db


def test_a_sample_changed_on_purpose_since_it_was_delivered_is_delivered_again_and_only_it(tmp_path):
    samples, output, db = _samples_replayed_once(tmp_path)
    # Edited, and its manifest entry given the new sha256 and size (as samples/README.md says):
    # what the destination holds is no longer this sample.
    entry = _edit_a_build_on_purpose(samples, str.lower)

    again = replay_into(samples, output, db, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "skipped 10 (already delivered), downloaded 1, delivered 1" in again.stdout
    assert "build %s changed since it was delivered" % entry["upstream_id"] in again.stderr
    assert "added by hand" in (output / "build.ndjson").read_text()
    third = replay_into(samples, output, db, tmp_path)
    assert "skipped 11 (already delivered), downloaded 0" in third.stdout


def test_a_delivered_sample_whose_manifest_date_was_edited_is_said_to_stay_in_its_day_s_index(tmp_path):
    samples, output, db = _samples_replayed_once(tmp_path)
    manifest = json.loads((samples / "manifest.json").read_text())
    entry = next(entry for entry in manifest["objects"] if entry["kind"] == "build")
    delivered_day = entry["date"][:10]
    entry["date"] = "2019-01-02T03:04:05Z"
    (samples / "manifest.json").write_text(json.dumps(manifest))

    again = replay_into(samples, output, db, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "skipped 11 (already delivered)" in again.stdout
    assert ("build %s was delivered dated %s, not 2019-01-02: skipped as delivered, its documents stay in the "
            "indices of %s" % (entry["upstream_id"], delivered_day, delivered_day)) in again.stderr


def test_a_sample_changed_on_purpose_and_dated_anew_is_delivered_again_with_no_word_of_being_skipped(tmp_path):
    # Delivered again, under its new date: "skipped as delivered, its documents stay in the
    # indices of <the old day>" would say the opposite of what the run does.
    samples, output, db = _samples_replayed_once(tmp_path)
    entry = _edit_a_build_on_purpose(samples, str.lower)
    manifest = json.loads((samples / "manifest.json").read_text())
    next(edited for edited in manifest["objects"] if edited["upstream_id"] == entry["upstream_id"])["date"] = (
        "2019-01-02T03:04:05Z")
    (samples / "manifest.json").write_text(json.dumps(manifest))

    again = replay_into(samples, output, db, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "downloaded 1, delivered 1" in again.stdout
    assert "build %s changed since it was delivered" % entry["upstream_id"] in again.stderr
    assert "was delivered dated" not in again.stderr


def test_a_delivered_sample_whose_manifest_date_was_removed_is_skipped_as_delivered(tmp_path):
    # No date now: nothing to set against the day it was delivered with, and nothing to warn of.
    samples, output, db = _samples_replayed_once(tmp_path)
    manifest = json.loads((samples / "manifest.json").read_text())
    entry = next(entry for entry in manifest["objects"] if entry["kind"] == "build")
    del entry["date"]
    (samples / "manifest.json").write_text(json.dumps(manifest))

    again = replay_into(samples, output, db, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "skipped 11 (already delivered)" in again.stdout
    assert "was delivered dated" not in again.stderr and "Traceback" not in again.stderr


def test_gen_samples_keeps_a_sample_edited_on_purpose_whose_sha256_is_recorded_in_capitals(legacy_replica, logstash,
                                                                                          tmp_path):
    """A sha256 written in capitals (as PowerShell's Get-FileHash prints it) is the same hash: the
    replay takes the file, and gen_samples must not download it again over the edit."""
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    first = run(["gen_samples"], env, tmp_path)
    assert first.returncode == 0, first.stderr
    entry = _edit_a_build_on_purpose(samples, str.upper)
    content = (samples / entry["path"]).read_bytes()
    saved = len(json.loads((samples / "manifest.json").read_text())["objects"])

    again = run(["gen_samples"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0 saved, %d already present" % saved in again.stdout
    assert (samples / entry["path"]).read_bytes() == content
    replay = run(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                 env, tmp_path)
    assert replay.returncode == 0, replay.stderr
    assert "added by hand" in (tmp_path / "out" / "build.ndjson").read_text()


def test_gen_samples_says_so_when_it_replaces_a_sample_edited_without_its_manifest_entry(legacy_replica, logstash,
                                                                                        tmp_path):
    # An edit whose new sha256 was not recorded is taken for a corrupted file and replaced by
    # upstream's: the run said only "1 saved", and the edit was gone unawares.
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples))
    assert run(["gen_samples"], env, tmp_path).returncode == 0
    entry = _edit_a_build_on_purpose(samples, str.lower)
    manifest = json.loads((samples / "manifest.json").read_text())
    edited = next(listed for listed in manifest["objects"] if listed["upstream_id"] == entry["upstream_id"])
    saved_sha256 = hashlib.sha256(b"").hexdigest()  # the entry left describing another file
    edited["sha256"] = saved_sha256
    (samples / "manifest.json").write_text(json.dumps(manifest))

    again = run(["gen_samples", "-q"], env, tmp_path)
    assert again.returncode == 0, again.stderr
    assert ("WARNING kcing.samples: build %s: %s is not the file its manifest entry describes (sha256 %s, the file's "
            "%s); it is replaced by upstream's (to keep an edit, record its sha256 and size in the manifest first)"
            % (entry["upstream_id"], samples.resolve() / entry["path"], saved_sha256[:12], entry["sha256"][:12])
            ) in again.stderr
    assert "added by hand" not in (samples / entry["path"]).read_text()


# -- a sample's read limit: KCI_MAX_OBJECT_BYTES, or the size its manifest entry vouches for ----------

def test_a_sample_s_recorded_size_raises_its_read_limit_only_with_its_sha256_and_within_bounds():
    from kcing.sources.localfiles import SAMPLE_MAX_BYTES, sample_read_limit

    sha256 = "0" * 64
    assert sample_read_limit(2048, {"content_sha256": sha256, "content_size": 5000}) == 5000
    # Without a sha256 nothing checks the file is the one the size was recorded for.
    assert sample_read_limit(2048, {"content_size": 5000}) == 2048
    # A size no saved node reaches (a manifest edited by hand) would have a file of any size read whole.
    assert sample_read_limit(2048, {"content_sha256": sha256, "content_size": SAMPLE_MAX_BYTES + 1}) == 2048
    assert sample_read_limit(2048, {"content_sha256": sha256, "content_size": SAMPLE_MAX_BYTES}) == SAMPLE_MAX_BYTES
    assert sample_read_limit(2048, {"content_sha256": sha256, "content_size": 1000}) == 2048
    assert sample_read_limit(2048, {"content_sha256": sha256, "content_size": "5000"}) == 2048


def test_a_sample_reconcile_resends_is_read_up_to_the_size_its_manifest_entry_records(tmp_path):
    """reconcile --resend reads a sample the ledger names as the replay does: a node saved with
    its log may be larger than KCI_MAX_OBJECT_BYTES, and was refused as too large."""
    from kcing.errors import ObjectTooLarge
    from kcing.records import UpstreamObject
    from kcing.sources.localfiles import SavedSamples

    path = tmp_path / "kbuild" / "n1.json"
    path.parent.mkdir()
    content = b'{"log": "%s"}' % (b"x" * 4000)
    path.write_bytes(content)
    sha256 = hashlib.sha256(content).hexdigest()
    vouched = UpstreamObject("samples", "kbuild", "n1", str(path),
                             facts={"content_sha256": sha256, "content_size": len(content)})
    assert SavedSamples(2048).fetch(vouched) == content
    with pytest.raises(ObjectTooLarge):
        SavedSamples(2048).fetch(UpstreamObject("samples", "kbuild", "n1", str(path), facts={"content_sha256": sha256}))
