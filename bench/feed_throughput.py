#!/usr/bin/env python3
"""Benchmark `kcing feed_es` against the wire limit, on one corpus and one sink, in one run.

Builds a replica corpus of N legacy objects in the real formats (one build for four LAVA boots;
a LAVA file holds 23 test cases as block YAML and a log of one flow mapping per line, with the
Decimal tags real logs carry), serves it and counting Logstash emulators on 127.0.0.1, then
measures:

1. the feed: `kcing feed_es` in its own process tree (objects/s, documents/s, MB/s, peak RSS);
2. the wire limit: a bare loop, in a separate process, that POSTs the very same batches,
   pre-serialised, to the same emulators with the same number in flight as the feed;
3. the ratio of the two;
4. a second run over the fully delivered corpus.

The wire loop used to run inside this process, which also hosts the emulators' server threads.
Both then shared one interpreter lock: the loop waited for the server threads to parse each
batch and they waited for it, so that yardstick measured the two taking turns on one core. It
understated what the wire and the emulator can carry, and so overstated how close the feed
came to the limit. The former figure is still printed beside the new one for comparison.

Figures are ratios measured in one run: absolute numbers move with the load on a shared machine.
`bench/targets.py` (`make bench`) runs this with the other yardsticks and checks every target.

    python bench/feed_throughput.py                 # N = 1,000 (200 builds + 800 LAVA boots)
    python bench/feed_throughput.py --objects 5000 --skip-wire --ledger-rows 0
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kcing.documents import documents_for  # noqa: E402
from kcing import settings as settings_module  # noqa: E402
from kcing.ledger.ledger import Ledger, Outcome  # noqa: E402
from kcing.ledger.models import DELIVERED  # noqa: E402
from kcing.records import BOOT, BUILD, LAVA, UpstreamObject  # noqa: E402
from kcing.sinks.batching import Batcher  # noqa: E402
from kcing.sinks.logstash import LogstashSink  # noqa: E402
from kcing.sinks import logstash_destination_of  # noqa: E402
from tests.fakes.legacy_data import NON_LAVA_LAB, at, build_item, object_id_at, synthetic_corpus  # noqa: E402
from tests.fakes.legacy_corpus import storage_path  # noqa: E402
from tests.fakes.legacy_replica import LegacyCorpus, LegacyReplica  # noqa: E402
from tests.feedrun import feed_environ  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from harness import (  # noqa: E402  (this directory)
    CountingLogstash, KcingRun, Wire, fastest_run, in_process_wire, parsing_floor, run_kcing, wire_yardstick,
)
from floor import fastest_of as fastest_floor  # noqa: E402  (this directory)

TODAY = date(2020, 11, 19)
FLOOR_PASSES = 2  # each time the floor is timed between feed runs
BATCH_SIZE = 500
MAX_BYTES = 5_000_000
# kcing's default ES_PARALLEL_POSTS: the batches it keeps in flight, which the wire loop matches.
POSTS_IN_FLIGHT = 2


def run_feed(env: dict, cwd: Path, args=("feed_es",), profile: bool = False) -> KcingRun:
    """Run `kcing ARGS` once in its own process tree (wall time includes process start)."""
    return run_kcing(env, cwd, args, profile=profile)


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
                    batches.append((kind, len(full), full.body()))
    for batcher in batchers.values():
        last = batcher.flush()
        if last is not None:
            batches.append((last.route, len(last), last.body()))
    return batches


def _kind_and_path(collection: str, item) -> tuple:
    fsr = item.doc["file_server_resource"]
    if collection == "build":
        return BUILD, "%s/build.json" % fsr
    lab, board = item.doc["lab_name"], item.doc["board"]
    if lab == NON_LAVA_LAB:
        return BOOT, "%s/%s/boot-%s.json" % (fsr, lab, board)
    return LAVA, "%s/%s/lava-json-%s.json" % (fsr, lab, board)


def second_run_over_delivered(rows: int, profile: bool = False) -> KcingRun:
    """Time a feed whose listing holds `rows` objects, all already delivered per the ledger."""
    corpus = LegacyCorpus()
    objects = []
    for n in range(rows):
        created = at(TODAY, n % 3, (n // 60) % 24, n % 60)
        # As upstream: each tree/kernel revision is built for a few hundred configurations.
        item = build_item("tree%d" % (n % 7), "v5.%d-%d" % (n % 20, n // 300), "arm64", "defconfig-%d" % (n % 300),
                          created)
        # Upstream's ids are MongoDB ObjectIds, which begin with their creation time: a listing in
        # date order asks the ledger about neighbouring ids, not about ids scattered at random.
        item["_id"] = {"$oid": object_id_at(created, item["_id"]["$oid"])}
        corpus.add_item("build", item)
        objects.append(UpstreamObject("legacy", BUILD, item["_id"]["$oid"], "", created))
    with LegacyReplica(corpus, today=TODAY) as replica, CountingLogstash() as logstash, \
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
        run = fastest_run(env, work, profile=profile)
        if "skipped %d" % rows not in run.stdout or logstash.accepted:
            sys.exit("the second run did not skip everything:\n" + run.stdout)
        return run


def materialise(corpus, directory: Path) -> Dict[str, Path]:
    """Write every generated file to disk once, so serving it costs a read, not a rebuild.

    Otherwise the replica would spend CPU re-creating each LAVA file on this machine's two
    cores while the feed runs, which the wire loop never pays. Returns storage path -> file.
    """
    files = {}
    for number, path in enumerate(corpus.paths()):
        target = directory / ("%d.json" % number)
        target.write_bytes(corpus.read(path))
        files[corpus.add_file(path, target)] = target
    return files


def corpus_manifest(corpus, files: Dict[str, Path]) -> List[dict]:
    """The corpus as bench/floor.py reads it: kind, local file and listing date of each object."""
    manifest = []
    for collection in ("build", "boot"):
        for item in corpus.items(collection):
            kind, path = _kind_and_path(collection, item)
            created = datetime.fromtimestamp(item.created_ms / 1000.0, tz=timezone.utc)
            manifest.append({"kind": kind, "path": str(files[storage_path(path)]), "created": created.isoformat()})
    return manifest


def legacy_corpus(objects: int, log_lines: int):
    """`objects` legacy objects: one build for four LAVA boots, logs of `log_lines` lines."""
    builds = max(1, objects // 5)
    return synthetic_corpus(TODAY, builds=builds, lava_boots=max(0, objects - builds), lava_log_lines=log_lines)


@dataclass
class LegacyFeed:
    """One feed over a fresh legacy corpus, and what the yardsticks need from the same corpus."""

    objects: int
    documents: int
    posted_bytes: int
    run: KcingRun
    again: Optional[KcingRun] = None
    wire: Optional[Wire] = None
    wire_in_process: Optional[Wire] = None
    floor: Optional[dict] = None  # bench/floor.py's figures for this corpus
    runs: List[KcingRun] = field(default_factory=list)  # every feed run to the emulators (none to NDJSON files)

    @property
    def documents_per_second(self) -> float:
        return self.documents / self.run.seconds


def measure_legacy(objects: int, log_lines: int, threads: int, extra_env: Optional[dict] = None,
                   wire: bool = True, in_process_wire_too: bool = False, again: bool = True,
                   floor: bool = False, to_files: bool = False, feed_runs: int = 1) -> LegacyFeed:
    """Feed a fresh corpus of `objects`; then optionally the yardsticks on the very same files and batches.

    With `to_files`, the feed writes NDJSON files (`--output`) instead of posting to the Logstash
    emulators, whose parsing would otherwise take one of the machine's cores from kcing. With
    `feed_runs` > 1, the feed to the emulators runs that many times, each from an empty ledger,
    and the fastest run counts, as the fastest pass of the wire loop does.
    """
    corpus = legacy_corpus(objects, log_lines)
    with LegacyReplica(corpus, today=TODAY) as replica, CountingLogstash() as logstash, \
            tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        (work / "files").mkdir()
        files = materialise(corpus, work / "files")
        env = feed_environ(replica, logstash, work / "kcing.db", KCI_THREADS=str(threads),
                           LS_PIPELINE_BATCH_SIZE=str(BATCH_SIZE), LS_BATCH_MAX_BYTES=str(MAX_BYTES),
                           ES_PARALLEL_POSTS=str(POSTS_IN_FLIGHT), **(extra_env or {}))
        if to_files:
            # In memory where the machine has it: the sink syncs every batch, and a disk's sync
            # time is not kcing's.
            with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as out:
                run = run_feed(env, work, ("feed_es", "--output", out))
                written = [path.read_bytes() for path in Path(out).glob("*.ndjson")]
            return LegacyFeed(objects, sum(data.count(b"\n") for data in written) // 2,
                              sum(len(data) for data in written), run)
        # With `floor`, floor passes before each feed run and after the last: the machine's
        # speed drifts over minutes, and the fastest of each over the same minutes compare;
        # three passes in a row after the feed compared the feed with another moment. Two
        # passes each time, as the first pass of a process is the slowest (it grows the heap).
        manifest = corpus_manifest(corpus, files) if floor else None
        fed, floors = [], []  # (run, documents accepted, bytes posted); bench/floor.py's figures
        for attempt in range(feed_runs):
            if attempt:  # from an empty ledger again: everything is delivered anew
                logstash.reset()
                for ledger_file in work.glob("kcing.db*"):
                    ledger_file.unlink()
            if floor:
                floors.append(parsing_floor(manifest, passes=FLOOR_PASSES))
            run = run_feed(env, work)
            if logstash.unroutable:
                sys.exit("the emulator could not route %d documents" % logstash.unroutable)
            fed.append((run, logstash.accepted, logstash.posted_bytes))
        run, accepted, posted = min(fed, key=lambda each: each[0].seconds)
        figures = LegacyFeed(objects, accepted, posted, run, runs=[each[0] for each in fed])
        if floor:
            floors.append(parsing_floor(manifest, passes=FLOOR_PASSES))
            figures.floor = fastest_floor(floors)
        if again:
            figures.again = run_feed(env, work)
        if wire:
            batches = prebuilt_batches(corpus)
            if sum(count for _, count, _ in batches) != figures.documents:
                sys.exit("the pre-built batches do not hold what the feed delivered")
            logstash.reset()
            figures.wire = wire_yardstick(batches, logstash.urls, POSTS_IN_FLIGHT)
            if in_process_wire_too:
                logstash.reset()
                figures.wire_in_process = in_process_wire(batches, logstash.urls)
        return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=1000, help="corpus size (1 build for 4 LAVA boots)")
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
              "(%.2f s wall per 100k ledger rows)"
              % (args.ledger_rows, run.seconds, run.cpu_seconds, run.seconds * per))

    feed = measure_legacy(args.objects, args.log_lines, args.threads, wire=not args.skip_wire,
                          in_process_wire_too=not args.skip_wire)
    run = feed.run
    print("corpus: %d objects (one build for four LAVA boots, %d log lines each), %.1f documents per object"
          % (args.objects, args.log_lines, feed.documents / args.objects))
    print("feed:   %.1f s (%.1f s CPU), %.0f objects/s, %.0f documents/s, %.1f MB/s posted, peak RSS %.0f MB"
          % (run.seconds, run.cpu_seconds, args.objects / run.seconds, feed.documents_per_second,
             feed.posted_bytes / 1e6 / run.seconds, run.peak_rss_mb))
    print("second run over the %d delivered objects: %.2f s" % (args.objects, feed.again.seconds))
    if feed.wire is None:
        return
    for name, wire in (("wire, separate process", feed.wire), ("wire, in-process (former)", feed.wire_in_process)):
        print("%s: %.1f s, %.0f documents/s (%d pre-built batches, %d in flight)"
              % (name, wire.seconds, wire.documents_per_second, wire.batches, POSTS_IN_FLIGHT))
    print("ratio:  feed reaches %.0f%% of the wire limit (documents/s)"
          % (100.0 * feed.documents_per_second / feed.wire.documents_per_second))


if __name__ == "__main__":
    main()
