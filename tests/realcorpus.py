"""A corpus of every document kind kcing makes, for the real-engine tests.

The documents come from where real ones come from: the bundled samples, the real upstream
payloads in ../shared/data/upstream, and the `kcing feed_es --output` files of runs against the
legacy replica (the small corpus with its odd shapes plus a generated one) and the KernelCI API
replica (its real nodes plus a generated checkout tree, with logs), plus hand-made odd shapes:
null results, numbers as strings, very long test paths, non-ASCII and very long log lines.
"""
from __future__ import annotations

import json
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

from kcing.documents import documents_for
from kcing.errors import RejectedInput
from tests.fakes.api_data import checkout_tree, real_files_present, real_nodes
from tests.fakes.api_replica import ApiReplica
from tests.fakes.legacy_data import (
    at, boot_item, boot_json, build_item, build_json, lava_json, small_corpus, synthetic_corpus,
)
from tests.fakes.legacy_replica import LegacyReplica
from tests.feedrun import REPO, api_feed_environ, feed_environ, kcing, sample_objects

SHARED_UPSTREAM = REPO.parent / "shared" / "data" / "upstream"
Key = Tuple[str, str]  # (index, id)

CORPUS_DAY = date(2019, 5, 31)
API_BASE = datetime(2024, 10, 16, 8, 0, tzinfo=timezone.utc)
LONG_TEST_NAME = "very-long-case-" + "x" * 9000  # longer than a keyword's ignore_above
NON_ASCII_LINE = "Überprüfung: résumé ✓ 日本語のログ行 — ΔT=3µs"
LONG_LOG_LINE = "long line " + "0123456789" * 4000


class _NoLogstash:
    """feed_environ wants Logstash URLs; with --output none is contacted."""

    urls = {route: "http://127.0.0.1:9" for route in ("build", "lava", "boot", "regression")}


def read_bulk_files(directory: Path) -> Dict[Key, dict]:
    """(index, id) -> document of every `*.ndjson` _bulk file kcing wrote into `directory`."""
    documents: Dict[Key, dict] = {}
    for path in sorted(directory.glob("*.ndjson")):
        for action, source in split_records(path.read_text(encoding="utf-8")):
            documents[(action["index"]["_index"], action["index"]["_id"])] = source
    return documents


def split_records(text: str) -> List[Tuple[dict, dict]]:
    """The (action, document) records of a `_bulk` file. Split at "\\n" alone, as the node does:
    str.splitlines also breaks at U+2028, U+0085 and \\x1c, which documents hold as they are."""
    lines = text.split("\n")
    assert lines[-1] == "", "a _bulk file ends with a newline"
    return [(json.loads(action), json.loads(source)) for action, source in zip(lines[0:-1:2], lines[1:-1:2])]


def documents_of(kind: str, content: bytes, created: datetime) -> Dict[Key, dict]:
    """The documents made of one upstream file, as Elasticsearch stores them: `@timestamp` too,
    as kcing sends it and `feed_es --output` writes it."""
    try:
        return {(doc.index, doc.doc_id): json.loads(doc.source_json()) for doc in documents_for(kind, content, created)}
    except RejectedInput:
        return {}


def sample_documents() -> Dict[Key, dict]:
    found: Dict[Key, dict] = {}
    for obj in sample_objects():
        found.update(documents_of(obj.kind, obj.path.read_bytes(), obj.date))
    return found


def shared_upstream_documents() -> Dict[Key, dict]:
    """The real LAVA files kcing reads (the raw callback and the KernelCI API nodes go through
    the API replica; the obsolete kcidb file is a format kcing does not read)."""
    found: Dict[Key, dict] = {}
    created = datetime(2020, 11, 19, 7, 0, tzinfo=timezone.utc)
    for path in sorted((SHARED_UPSTREAM / "legacy").glob("lava-json-*.json")):
        found.update(documents_of("lava", path.read_bytes(), created))
    return found


def odd_shape_documents() -> Dict[Key, dict]:
    """Null results, numbers as strings, very long test paths, non-ASCII and huge log lines."""
    created = at(CORPUS_DAY, 0, 6)
    build = build_item("odd", "v5.2-odd", "riscv", "defconfig", created)
    loose = json.loads(build_json(build))
    loose.update(build_time="511.84", vmlinux_file_size="152362184", build_threads="10", build_result=None,
                 compiler_version=8)
    boot = boot_item(build, "lab-odd", "odd-board", created)
    lava = json.loads(lava_json(boot, 990001, log_lines=5))
    lava["results"]["odd.suite"] = (
        "- id: '9900011'\n  job: '990001'\n  level: ''\n  logged: '2020-11-19 07:06:12+00:00'\n"
        "  measurement: '12.5'\n  metadata: {case: %s, definition: odd.suite, result: pass}\n"
        "  name: %s\n  result: null\n  suite: odd.suite\n  unit: seconds\n  url: /results/testcase/9900011\n"
        % (LONG_TEST_NAME, LONG_TEST_NAME))
    lava["log"] += ('- {"dt": "2020-11-19T07:06:13.000001", "lvl": "target", "msg": %s}\n'
                    '- {"dt": "2020-11-19T07:06:13.000002", "lvl": "target", "msg": %s}\n'
                    % (json.dumps(NON_ASCII_LINE), json.dumps(LONG_LOG_LINE)))
    lava["id"] = "990001"  # the job id as a string
    non_lava = json.loads(boot_json(boot_item(build, "lab-baylibre-seattle", "odd-board-2", created)))
    non_lava.update(boot_time="NaN-ish", boot_warnings="3", boot_result=None)
    found: Dict[Key, dict] = {}
    found.update(documents_of("build", json.dumps(loose).encode(), created))
    found.update(documents_of("lava", json.dumps(lava).encode(), created))
    found.update(documents_of("boot", json.dumps(non_lava).encode(), created))
    return found


def legacy_replica_documents(workdir: Path) -> Dict[Key, dict]:
    """What `kcing feed_es --output` makes of the small corpus plus a generated one."""
    corpus = small_corpus(CORPUS_DAY)
    synthetic_corpus(CORPUS_DAY, builds=12, lava_boots=12, other_boots=4, days=1, lava_log_lines=40, corpus=corpus)
    replica = LegacyReplica(corpus, today=CORPUS_DAY)
    replica.start()
    try:
        return _feed_to_files(workdir / "legacy", feed_environ(replica, _NoLogstash, workdir / "legacy.db"), [])
    finally:
        replica.stop()


def api_replica_documents(workdir: Path) -> Dict[Key, dict]:
    """What `kcing feed_es --source api --with-logs --output` makes of the API replica."""
    replica = ApiReplica()
    replica.start()
    try:
        if real_files_present():
            real_nodes(replica.corpus, replica.files_url)
        checkout_tree(replica.corpus, replica.files_url, API_BASE)
        environ = api_feed_environ(replica, _NoLogstash, workdir / "api.db", KCI_DAYS="36500")
        return _feed_to_files(workdir / "api", environ, ["--with-logs", "--since", "2000-01-01"])
    finally:
        replica.stop()


def _feed_to_files(out: Path, environ: dict, extra: List[str]) -> Dict[Key, dict]:
    done = kcing(["feed_es", "--output", str(out), *extra], environ, out.parent, timeout=300)
    if done.returncode not in (0, 1):  # 1: some upstream files are rejected on purpose
        raise AssertionError("kcing feed_es --output failed (%d): %s" % (done.returncode, done.stderr[-2000:]))
    return read_bulk_files(out)


def build_corpus(workdir: Path) -> Dict[str, Dict[Key, dict]]:
    """{origin: {(index, id): document}} for every origin above."""
    return {
        "samples": sample_documents(),
        "shared upstream": shared_upstream_documents(),
        "odd shapes": odd_shape_documents(),
        "legacy replica": legacy_replica_documents(workdir),
        "api replica": api_replica_documents(workdir),
    }


def bulk_operations(documents: Dict[Key, dict], chunk: int = 1000) -> Iterator[List[dict]]:
    """_bulk `index` operations, `chunk` documents at a time."""
    operations: List[dict] = []
    for (index, doc_id), body in documents.items():
        operations += [{"index": {"_index": index, "_id": doc_id}}, body]
        if len(operations) >= 2 * chunk:
            yield operations
            operations = []
    if operations:
        yield operations
