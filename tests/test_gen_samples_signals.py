"""gen_samples stopped by SIGTERM (systemd, `docker stop`, a cron timeout) right after it renamed a
file into place: the manifest written as the run ends names that file, with that file's hash, so
the replay neither leaves it out nor calls it changed since it was saved."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap

from tests.feedrun import REPO, feed_environ, kcing
from tests.test_feed_api import api_replica, db, env  # noqa: F401 (fixtures)

# kcing as kcing.py runs it, but for a SIGTERM sent to itself as soon as the N-th sample file (not
# the manifest) is in place: the handler's KeyboardInterrupt lands at the next bytecode.
SIGNALLED_AFTER_SAVING = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r})
    import kcing.samples as samples
    real = samples.write_atomically
    saved = []

    def write_then_signal(path, content, *args, **kwargs):
        real(path, content, *args, **kwargs)
        if path.name != "manifest.json":
            saved.append(path)
            if len(saved) == {nth}:
                os.kill(os.getpid(), signal.SIGTERM)

    samples.write_atomically = write_then_signal
    from kcing.launch import cli_main
    sys.exit(cli_main())
""")


def gen_samples_signalled(env, cwd, nth: int, *args: str) -> subprocess.CompletedProcess:
    script = cwd / "signalled_kcing.py"
    script.write_text(SIGNALLED_AFTER_SAVING.format(repo=str(REPO), nth=nth))
    return subprocess.run([sys.executable, str(script), "gen_samples", *args], env=env, cwd=str(cwd),
                          capture_output=True, text=True, timeout=120)


def files_and_entries(samples):
    manifest = json.loads((samples / "manifest.json").read_text())
    on_disk = {path.relative_to(samples).as_posix() for path in samples.rglob("*.json") if path.name != "manifest.json"}
    return on_disk, manifest["objects"]


def test_a_file_saved_as_the_signal_came_is_named_by_the_manifest(legacy_replica, logstash, tmp_path):
    samples = tmp_path / "saved"
    env = feed_environ(legacy_replica, logstash, tmp_path / "kcing.db", KCI_SAMPLES_DIR=str(samples),
                       KCI_THREADS="1")
    stopped = gen_samples_signalled(env, tmp_path, 3)
    assert stopped.returncode == 130, stopped.stdout + stopped.stderr
    on_disk, entries = files_and_entries(samples)
    assert len(on_disk) >= 3 and on_disk == {entry["path"] for entry in entries}
    for entry in entries:
        assert hashlib.sha256((samples / entry["path"]).read_bytes()).hexdigest() == entry["sha256"]


def test_a_node_saved_again_with_its_log_as_the_signal_came_is_replayed_as_saved(env, tmp_path, api_replica):
    samples = tmp_path / "saved"
    saving = dict(env, KCI_SAMPLES_DIR=str(samples), KCI_THREADS="1")
    assert kcing(["gen_samples"], saving, tmp_path).returncode == 0
    stopped = gen_samples_signalled(saving, tmp_path, 1, "--with-logs")
    assert stopped.returncode == 130, stopped.stdout + stopped.stderr
    _, entries = files_and_entries(samples)
    for entry in entries:
        assert hashlib.sha256((samples / entry["path"]).read_bytes()).hexdigest() == entry["sha256"], entry["path"]
    replay = kcing(["feed_es", "--source", "samples", "--samples-dir", str(samples), "--output", str(tmp_path / "out")],
                   dict(env, KCING_DB=str(tmp_path / "replay.db")), tmp_path)
    assert replay.returncode == 0, replay.stdout + replay.stderr
