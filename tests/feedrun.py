"""Run the real `kcing` program against local servers, and compute what it should deliver."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

from kcing.documents import documents_for
from kcing.errors import RejectedInput
from kcing.ledger import docids

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
# A JSON value nested deeper than any JSON decoder here reads one (about 1,000 levels on Python
# 3.11, 1,500 on 3.12, 10,000 on 3.13): a listing page holding it is no JSON kcing can read.
DEEPER_THAN_DECODERS_GO = b"[" * 100_000 + b"]" * 100_000

# Settings a developer's shell might carry; a test must never inherit them.
SETTING_PREFIXES = ("KCI_", "ES_", "LS_", "KB_", "KCING_", "DRP_")


def clean_environ(**settings: str) -> Dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(SETTING_PREFIXES)}
    env.update({name: str(value) for name, value in settings.items()})
    return env


# The proxy variables a shell may hold (requests reads either case).
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def proxy_free_environ(**settings: str) -> Dict[str, str]:
    """clean_environ without any proxy variable of the developer's shell, in either case; proxy
    variables given in `settings` are set."""
    env = {name: value for name, value in clean_environ().items() if name.lower() not in PROXY_VARIABLES}
    env.update({name: str(value) for name, value in settings.items()})
    return env


def feed_environ(replica, logstash, db: Path, **extra) -> Dict[str, str]:
    """Point kcing at the replica and the Logstash emulators, with quick retries for tests; a crawl
    window (KCI_DAYS) of 30 days for the corpora's dates, and a retention (DRP_DAYS) that exceeds it."""
    frontend = replica.frontend_url.split("://", 1)[1].rstrip("/")
    settings = dict(
        KCI_HOST=frontend, KCI_SCHEME="http", KCI_STORAGE_URL=replica.storage_url,
        ES_BUILD=logstash.urls["build"], ES_LAVA=logstash.urls["lava"], ES_BOOT=logstash.urls["boot"],
        KCING_DB=str(db), KCI_DAYS="30", DRP_DAYS="31", KCI_RETRY_BACKOFF="0.05", ES_RETRY_BACKOFF="0.05",
        ES_TIMEOUT="10", KCI_TIMEOUT="10",
    )
    settings.update(extra)
    return clean_environ(**settings)


def kcing(args: List[str], env: Dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python kcing.py ARGS` as a user would, in `cwd` (so no stray local_settings.py applies)."""
    return subprocess.run([sys.executable, str(REPO / "kcing.py"), *args], env=env, cwd=str(cwd),
                          capture_output=True, text=True, timeout=timeout)


def kcing_process(args: List[str], env: Dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "kcing.py"), *args], env=env, cwd=str(cwd),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@contextmanager
def reaped(process: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """`process`, killed if it is still running when the block ends (a failed wait, a timeout),
    so that a test never leaves it behind."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def stopped_by_signal(process: subprocess.Popen, settle: float = 1.0, timeout: float = 60) -> Tuple[str, str, float]:
    """Send `process` SIGTERM `settle` seconds from now, once it is busy, and wait for it to end:
    (stdout, stderr, the seconds it took after the signal). Killed if it is still running after
    `timeout`."""
    with reaped(process):
        time.sleep(settle)
        process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        stdout, stderr = process.communicate(timeout=timeout)
        return stdout, stderr, time.monotonic() - signalled


@dataclass(frozen=True)
class SampleObject:
    kind: str
    upstream_id: str
    path: Path
    date: datetime
    url: str


def sample_objects(samples_dir: Path = SAMPLES) -> List[SampleObject]:
    manifest = json.loads((samples_dir / "manifest.json").read_text())
    objects = []
    for entry in manifest["objects"]:
        date = datetime.fromisoformat(entry["date"].replace("Z", "+00:00"))
        objects.append(SampleObject(entry["kind"], entry["upstream_id"], samples_dir / entry["path"], date,
                                    entry["url"]))
    return objects


def expected_documents(objects) -> Dict[Tuple[str, str], dict]:
    """(index, id) -> the document body each object should produce, computed independently of the feed."""
    expected = {}
    for obj in objects:
        try:
            documents = documents_for(obj.kind, obj.path.read_bytes(), obj.date)
        except RejectedInput:
            continue
        for document in documents:
            expected[(document.index, document.doc_id)] = dict(document.body)
    return expected


def ledger_states(db: Path) -> Dict[Tuple[str, str], str]:
    with sqlite3.connect(str(db)) as conn:
        return {(kind, upstream_id): state
                for kind, upstream_id, state in conn.execute("SELECT kind, upstream_id, state FROM upstream_file")}


def ledger_rows(db: Path) -> List[dict]:
    with sqlite3.connect(str(db)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM upstream_file")]


def integrity(db: Path) -> str:
    with sqlite3.connect(str(db)) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def stored_keys(logstash) -> Set[Tuple[str, str]]:
    return set(logstash.store.keys())


def api_feed_environ(replica, logstash, db: Path, **extra) -> Dict[str, str]:
    """Point `kcing --source api` at the KernelCI API replica and the Logstash emulators."""
    settings = dict(
        KCI_SOURCE="api", KCI_API_URL=replica.api_url, KCI_API_STORAGE_URL=replica.files_url,
        ES_BUILD=logstash.urls["build"], ES_LAVA=logstash.urls["lava"], ES_BOOT=logstash.urls["boot"],
        ES_REGRESSION=logstash.urls["regression"],
        KCING_DB=str(db), KCI_RETRY_BACKOFF="0.05", ES_RETRY_BACKOFF="0.05", ES_TIMEOUT="10", KCI_TIMEOUT="10",
    )
    settings.update(extra)
    return clean_environ(**settings)


def kept_ids(db: Path) -> Dict[Tuple[str, str], Set[Tuple[str, str]]]:
    """(kind, upstream id) -> the (index, id) keys the ledger keeps for it."""
    kept: Dict[Tuple[str, str], Set[Tuple[str, str]]] = {}
    with sqlite3.connect(str(db)) as conn:
        for kind, upstream_id, index, blob in conn.execute(
                "SELECT f.kind, f.upstream_id, d.index_name, d.ids FROM delivered_documents d "
                "JOIN upstream_file f ON f.id = d.upstream_file_id"):
            kept.setdefault((kind, upstream_id), set()).update((index, doc_id) for doc_id in docids.unpack(blob))
    return kept
