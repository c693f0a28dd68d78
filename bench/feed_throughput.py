#!/usr/bin/env python3
"""Benchmark `kcing feed_es` against the wire limit, on one corpus and one sink, in one run.

Builds a replica corpus of N legacy objects (builds + LAVA boots with realistic log sizes),
serves it and a Logstash emulator on 127.0.0.1, then measures:

1. the feed: `kcing feed_es` in its own process (objects/s, documents/s, MB/s, peak RSS);
2. the wire limit: a bare loop that POSTs the very same batches, pre-built, to the same emulator;
3. the ratio of the two (target: the feed reaches at least 60% of the wire limit);
4. a second run over the fully delivered corpus (target: under 2 s per 100k ledger rows).

Figures are ratios measured in one run: absolute numbers move with the load on a shared machine.

    python bench/feed_throughput.py                 # N = 5,000 (1,000 builds + 4,000 LAVA boots)
    python bench/feed_throughput.py --objects 50000 --skip-wire   # the peak-RSS target
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kcing.documents import documents_for  # noqa: E402
from kcing import settings as settings_module  # noqa: E402
from kcing.ledger.ledger import Ledger, Outcome  # noqa: E402
from kcing.ledger.models import DELIVERED  # noqa: E402
from kcing.records import BOOT, BUILD, LAVA, UpstreamObject  # noqa: E402
from kcing.sinks.batching import Batcher  # noqa: E402
from kcing.sinks.logstash import LogstashSink  # noqa: E402
from kcing.wiring import logstash_destination_of  # noqa: E402
from tests.fakes.legacy_data import NON_LAVA_LAB, at, build_item, synthetic_corpus  # noqa: E402
from tests.fakes.legacy_replica import LegacyCorpus, LegacyReplica  # noqa: E402
from tests.fakes.logstash_emulator import LogstashCluster  # noqa: E402
from tests.feedrun import feed_environ  # noqa: E402

TODAY = date(2020, 11, 19)
BATCH_SIZE = 500
MAX_BYTES = 5_000_000


@dataclass
class FeedRun:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    stdout: str


def run_feed(env: dict, cwd: Path, args=("feed_es",)) -> FeedRun:
    """Run `kcing ARGS` (feed_es) once, through bench/peak_rss.py so the peak RSS is kcing's own.

    (A child forked straight from this process would start with this process's pages counted in
    its peak RSS, and this process holds the whole replica corpus.)
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.run([sys.executable, str(REPO / "bench" / "peak_rss.py"), sys.executable,
                                  str(REPO / "kcing.py"), *args], env=env, cwd=str(cwd), stdout=out, stderr=err)
        elapsed = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stderr = err.read()
        if process.returncode != 0:
            sys.exit("feed_es failed (%d):\n%s" % (process.returncode, stderr[-2000:]))
        figures = json.loads(stderr.strip().splitlines()[-1])
        return FeedRun(elapsed, figures["cpu_seconds"], figures["peak_rss_mb"], out.read())


def prebuilt_batches(corpus) -> list:
    """The same batches the feed sends: same documents, same encoding, same limits, per route."""
    batches = []
    batchers = {route: Batcher(route, BATCH_SIZE, MAX_BYTES) for route in (BUILD, LAVA, BOOT)}
    for collection in ("build", "boot"):
        for item in corpus.items(collection):
            kind, path = _kind_and_path(collection, item)
            created = datetime.fromtimestamp(item.created_ms / 1000.0, tz=timezone.utc)
            for document in documents_for(kind, corpus.read(path), created):
                full = batchers[kind].add(LogstashSink.encode(document), (kind,))
                if full is not None:
                    batches.append((kind, full.body(), len(full)))
    for batcher in batchers.values():
        last = batcher.flush()
        if last is not None:
            batches.append((last.route, last.body(), len(last)))
    return batches


def _kind_and_path(collection: str, item) -> tuple:
    fsr = item.doc["file_server_resource"]
    if collection == "build":
        return BUILD, "%s/build.json" % fsr
    lab, board = item.doc["lab_name"], item.doc["board"]
    if lab == NON_LAVA_LAB:
        return BOOT, "%s/%s/boot-%s.json" % (fsr, lab, board)
    return LAVA, "%s/%s/lava-json-%s.json" % (fsr, lab, board)


def wire_loop(batches: list, urls: dict) -> float:
    """POST pre-built batches one after another over one session; return the seconds taken."""
    session = requests.Session()
    started = time.perf_counter()
    for route, body, _ in batches:
        response = session.post(urls[route], data=body, headers={"Content-Type": "application/json"},
                                timeout=(10, 60))
        response.raise_for_status()
    return time.perf_counter() - started


def second_run_over_delivered(rows: int) -> float:
    """Time a feed whose listing holds `rows` objects, all already delivered per the ledger."""
    corpus = LegacyCorpus()
    objects = []
    for n in range(rows):
        created = at(TODAY, n % 3, (n // 60) % 24, n % 60)
        # As upstream: each tree/kernel revision is built for a few hundred configurations.
        item = build_item("tree%d" % (n % 7), "v5.%d-%d" % (n % 20, n // 300), "arm64", "defconfig-%d" % (n % 300),
                          created)
        corpus.add_item("build", item)
        objects.append(UpstreamObject("legacy", BUILD, item["_id"]["$oid"], "", created))
    with LegacyReplica(corpus, today=TODAY) as replica, LogstashCluster() as logstash, \
            tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        env = feed_environ(replica, logstash, work / "kcing.db")
        ledger = Ledger.open(str(work / "kcing.db"))
        # Delivered to the Logstash inputs the run posts to: only those are skipped.
        ledger.record([Outcome(obj, DELIVERED, sha256="0" * 64) for obj in objects],
                      logstash_destination_of(settings_module.load(environ=env, local_file=work / "none.py")))
        ledger.close()
        # The replica sorts and projects a listing on its first request for it, as a real
        # server's indices are already built; that first, untimed run pays for it.
        run_feed(env, work)
        run = run_feed(env, work)
        if "skipped %d" % rows not in run.stdout or logstash.store:
            sys.exit("the second run did not skip everything:\n" + run.stdout)
        return run


def materialise(corpus, directory: Path) -> None:
    """Write every generated file to disk once, so serving it costs a read, not a rebuild.

    Otherwise the replica would spend CPU re-creating each LAVA file on this machine's two
    cores while the feed runs, which the wire loop never pays.
    """
    for number, path in enumerate(corpus.paths()):
        target = directory / ("%d.json" % number)
        target.write_bytes(corpus.read(path))
        corpus.add_file(path, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=5000, help="corpus size (1 build for 4 LAVA boots)")
    parser.add_argument("--log-lines", type=int, default=1000, help="log lines per LAVA file")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--skip-wire", action="store_true", help="measure only the feed (large N)")
    parser.add_argument("--ledger-rows", type=int, default=100_000,
                        help="size of the fully delivered listing for the second-run figure (0 skips it)")
    args = parser.parse_args()

    if args.ledger_rows:
        run = second_run_over_delivered(args.ledger_rows)
        per = 100_000 / args.ledger_rows
        print("second run, %d objects listed and all delivered: %.2f s wall, %.2f s CPU in kcing "
              "(%.2f s wall per 100k ledger rows)" % (args.ledger_rows, run.seconds, run.cpu_seconds, run.seconds * per))

    builds = max(1, args.objects // 5)
    corpus = synthetic_corpus(TODAY, builds=builds, lava_boots=args.objects - builds, lava_log_lines=args.log_lines)
    with LegacyReplica(corpus, today=TODAY) as replica, LogstashCluster() as logstash, \
            tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if not args.skip_wire:
            (work / "files").mkdir()
            materialise(corpus, work / "files")
        env = feed_environ(replica, logstash, work / "kcing.db", KCI_THREADS=str(args.threads),
                           LS_PIPELINE_BATCH_SIZE=str(BATCH_SIZE), LS_BATCH_MAX_BYTES=str(MAX_BYTES))
        feed = run_feed(env, work)
        seconds = feed.seconds
        documents = len(logstash.store)
        posted_bytes = sum(request.body_bytes for emulator in logstash.emulators.values()
                           for request in emulator.requests)
        print("corpus: %d objects (%d builds, %d LAVA boots, %d log lines each)"
              % (args.objects, builds, args.objects - builds, args.log_lines))
        print("feed:   %.1f s (%.1f s CPU), %.0f objects/s, %.0f documents/s, %.1f MB/s posted, peak RSS %.0f MB"
              % (seconds, feed.cpu_seconds, args.objects / seconds, documents / seconds,
                 posted_bytes / 1e6 / seconds, feed.peak_rss_mb))

        again = run_feed(env, work)
        print("second run over the %d delivered objects: %.2f s" % (args.objects, again.seconds))

        if args.skip_wire:
            return
        batches = prebuilt_batches(corpus)
        logstash.clear()
        wire = wire_loop(batches, logstash.urls)
        wire_docs = sum(count for _, _, count in batches)
        print("wire:   %.1f s, %.0f documents/s (%d pre-built batches)" % (wire, wire_docs / wire, len(batches)))
        print("ratio:  feed reaches %.0f%% of the wire limit (documents/s)"
              % (100.0 * (documents / seconds) / (wire_docs / wire)))


if __name__ == "__main__":
    main()
