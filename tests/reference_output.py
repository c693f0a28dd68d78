"""Digests of the exact bytes kcing sends, over the samples and the real payloads.

Faster document code must not change one byte of what reaches Logstash or an `--output`
directory. `tests/data/reference_output.json` holds, for every origin below and every index,
the number of documents and the SHA-256 of their encoded lines (as `kcing feed_es --output`
writes them, sorted, so that the order documents arrive in does not matter). It was written by
the code before the performance work; `tests/test_reference_output.py` checks today's output
against it.

Origins:
- `samples`: `kcing feed_es --output` over the bundled samples (the embedded default source);
- `legacy replica`: the same over the legacy replica's small corpus (odd shapes included) and a
  generated one in the real formats (block YAML results, flow-mapping log lines, Decimal tags);
- `api replica`: `--source api --with-logs` over the real nodes and a generated checkout tree;
- `shared upstream`: the real LAVA files of ../shared/data/upstream through `documents_for` and
  the Logstash sink's encoder (the bytes of a POST body).

When a change of the documents is intended, rewrite the file and say why in the commit:

    python -m tests.reference_output --write
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

from kcing.documents import documents_for
from kcing.errors import RejectedInput
from kcing.sinks.logstash import LogstashSink
from tests.fakes.api_data import checkout_tree, real_files_present, real_nodes
from tests.fakes.api_replica import ApiReplica
from tests.fakes.legacy_data import small_corpus, synthetic_corpus
from tests.fakes.legacy_replica import LegacyReplica
from tests.feedrun import REPO, api_feed_environ, clean_environ, feed_environ, kcing
from tests.realcorpus import API_BASE, CORPUS_DAY, SHARED_UPSTREAM

REFERENCE = REPO / "tests" / "data" / "reference_output.json"
LOOPBACK_PORT = re.compile(rb"127\.0\.0\.1:[0-9]+")
Digests = Dict[str, Dict[str, dict]]  # origin -> index -> {"documents": n, "sha256": hex}


class _NoLogstash:
    """feed_environ wants Logstash URLs; with --output none is contacted."""

    urls = {route: "http://127.0.0.1:9" for route in ("build", "lava", "boot", "regression")}


def digest_lines(pairs: Iterable[Tuple[str, bytes]]) -> Dict[str, dict]:
    """index -> {"documents", "sha256"} of (index, encoded document) pairs, in sorted order."""
    by_index: Dict[str, List[bytes]] = {}
    for index, encoded in pairs:
        by_index.setdefault(index, []).append(encoded)
    digests = {}
    for index, encoded in sorted(by_index.items()):
        hasher = hashlib.sha256()
        for line in sorted(encoded):
            hasher.update(line)
        digests[index] = {"documents": len(encoded), "sha256": hasher.hexdigest()}
    return digests


def output_pairs(directory: Path) -> Iterable[Tuple[str, bytes]]:
    """(index, action line + source line) of every `*.ndjson` file kcing wrote into `directory`,
    with the replicas' ports (a new one each run) replaced by a fixed word."""
    for path in sorted(directory.glob("*.ndjson")):
        lines = path.read_bytes().splitlines(keepends=True)
        for action, source in zip(lines[0::2], lines[1::2]):
            yield json.loads(action)["index"]["_index"], LOOPBACK_PORT.sub(b"127.0.0.1:PORT", action + source)


def fed_to_files(out: Path, environ: dict, extra: List[str]) -> Dict[str, dict]:
    done = kcing(["feed_es", "--output", str(out), *extra], environ, out.parent, timeout=300)
    if done.returncode not in (0, 1) or not list(out.glob("*.ndjson")):  # 1: some files are rejected on purpose
        raise AssertionError("kcing feed_es --output failed (%d): %s" % (done.returncode, done.stderr[-2000:]))
    return digest_lines(output_pairs(out))


def samples_digests(workdir: Path) -> Dict[str, dict]:
    environ = clean_environ()
    environ["KCING_DB"] = str(workdir / "samples.db")
    return fed_to_files(workdir / "samples", environ, ["--source", "samples", "--samples-dir", str(REPO / "samples")])


def legacy_replica_digests(workdir: Path) -> Dict[str, dict]:
    corpus = small_corpus(CORPUS_DAY)
    synthetic_corpus(CORPUS_DAY, builds=6, lava_boots=12, other_boots=4, days=1, lava_log_lines=300, corpus=corpus)
    with LegacyReplica(corpus, today=CORPUS_DAY) as replica:
        return fed_to_files(workdir / "legacy", feed_environ(replica, _NoLogstash, workdir / "legacy.db"), [])


def api_replica_digests(workdir: Path) -> Dict[str, dict]:
    with ApiReplica() as replica:
        if real_files_present():
            real_nodes(replica.corpus, replica.files_url)
        checkout_tree(replica.corpus, replica.files_url, API_BASE)
        environ = api_feed_environ(replica, _NoLogstash, workdir / "api.db", KCI_DAYS="36500")
        return fed_to_files(workdir / "api", environ, ["--with-logs", "--since", "2000-01-01"])


def shared_upstream_digests() -> Dict[str, dict]:
    created = datetime(2020, 11, 19, 7, 0, tzinfo=timezone.utc)
    pairs = []
    for path in sorted((SHARED_UPSTREAM / "legacy").glob("lava-json-*.json")):
        try:
            documents = documents_for("lava", path.read_bytes(), created)
        except RejectedInput:
            continue
        pairs += [(document.index, LogstashSink.encode(document)) for document in documents]
    return digest_lines(pairs)


def current_digests() -> Digests:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        digests = {
            "samples": samples_digests(workdir),
            "legacy replica": legacy_replica_digests(workdir),
            "api replica": api_replica_digests(workdir),
        }
    if SHARED_UPSTREAM.is_dir():
        digests["shared upstream"] = shared_upstream_digests()
    return digests


def differences(expected: Digests, actual: Digests) -> List[str]:
    """One line per origin and index whose documents differ from the reference."""
    found = []
    for origin in sorted(set(expected) | set(actual)):
        if origin not in actual:
            continue  # ../shared is not here: nothing to compare
        want, have = expected.get(origin, {}), actual[origin]
        for index in sorted(set(want) | set(have)):
            if want.get(index) != have.get(index):
                found.append("%s, %s: reference %s, now %s" % (origin, index, want.get(index), have.get(index)))
    return found


def main() -> None:
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps(current_digests(), indent=1, sort_keys=True) + "\n")
    print("wrote %s" % REFERENCE)


if __name__ == "__main__":
    main()
