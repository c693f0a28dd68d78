#!/usr/bin/env python3
"""Benchmark `kcing feed_es --source api`, with the figures bench/feed_throughput.py gives for legacy.

Builds a KernelCI API replica corpus of about N node objects, in trees of 13: one kbuild with
four LAVA jobs, each job with a callback of --log-lines log lines and two test nodes. It serves
them and Logstash emulators on 127.0.0.1, then measures:

1. the feed (`--with-logs`, so LAVA log lines become documents as in the legacy benchmark):
   objects/s, documents/s, MB/s posted, kcing's CPU time and peak RSS;
2. the wire limit: the very same batches, pre-built, POSTed from a separate process with as
   many in flight as the feed keeps (see bench/feed_throughput.py for why a separate process);
3. the ratio of the two;
4. a second run from the watermark (it lists only the overlap), and a run that lists the whole
   delivered corpus again (`--since`), which every node then skips;
5. a run listing --ledger-rows node versions that the ledger already holds as delivered, and a
   routine run from the watermark over that ledger (it lists only the overlap).

Figures are ratios measured in one run: absolute numbers move with the load on a shared machine.
The replica runs in this process and competes with kcing for the CPU, as the legacy one does.

    python bench/feed_api_throughput.py                 # N = 5,005 (385 trees)
    python bench/feed_api_throughput.py --objects 50000 --skip-wire --ledger-rows 0
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from feed_throughput import BATCH_SIZE, MAX_BYTES, POSTS_IN_FLIGHT, run_feed  # noqa: E402  (this directory)
from harness import CountingLogstash, fastest_run, wire_yardstick  # noqa: E402  (this directory)
from kcing import settings as settings_module  # noqa: E402
from kcing.documents import documents_for  # noqa: E402
from kcing.http import RetryPolicy, new_session  # noqa: E402
from kcing.ledger.ledger import Ledger, Outcome  # noqa: E402
from kcing.ledger.models import DELIVERED  # noqa: E402
from kcing.records import CHECKOUT, JOB, KBUILD, TEST, UpstreamObject  # noqa: E402
from kcing.sinks.batching import Batcher  # noqa: E402
from kcing.sinks.logstash import LogstashSink  # noqa: E402
from kcing.sources.api import KernelCIApi, version_id  # noqa: E402
from kcing.sources.requester import Requester  # noqa: E402
from kcing.sinks import logstash_destination_of  # noqa: E402
from tests.fakes.api_corpus import parse_api_time  # noqa: E402
from tests.fakes.api_data import bench_tree  # noqa: E402
from tests.fakes.api_replica import ApiReplica  # noqa: E402
from tests.feedrun import api_feed_environ  # noqa: E402

BASE = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
SINCE = (BASE - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S")
# The Logstash input each node kind goes to (as kcing.sinks.logstash_routes routes them).
ROUTES = {CHECKOUT: "build", KBUILD: "build", JOB: "lava", TEST: "lava"}


def corpus_of(replica: ApiReplica, objects: int, log_lines: int) -> int:
    """Fill the replica with trees until about `objects` node objects; return how many."""
    made = 0
    for number in range(max(1, round(objects / 13))):
        made += bench_tree(replica.corpus, replica.files_url, BASE + timedelta(seconds=10 * number), number,
                           log_lines, time_ordered_ids=True)
    return made


def prebuilt_batches(replica: ApiReplica, with_logs: bool) -> list:
    """The batches the feed sends: the source's own content, documents and limits, per route."""
    requester = Requester(new_session(), RetryPolicy(), 60)
    source = KernelCIApi(requester, replica.api_url, replica.files_url, since=BASE - timedelta(hours=1),
                         with_logs=with_logs)
    batchers = {kind: Batcher(ROUTES[kind], BATCH_SIZE, MAX_BYTES) for kind in ROUTES}
    batches = []
    for obj in source.list_objects():
        for document in documents_for(obj.kind, source.fetch(obj), obj.created):
            full = batchers[obj.kind].add(LogstashSink.encode(document), obj.key)
            if full is not None:
                batches.append((full.route, len(full), full.body()))
    for batcher in batchers.values():
        last = batcher.flush()
        if last is not None:
            batches.append((last.route, len(last), last.body()))
    return batches


def run_over_delivered(rows: int, profile: bool = False, from_watermark: bool = False) -> tuple:
    """(run, rows listed): a feed listing about `rows` node versions, all delivered per the ledger.

    With `from_watermark`, the routine cron run instead: a first run sets the watermark, and the
    timed one lists only the overlap (`KCI_API_OVERLAP_MINUTES`) over the same ledger.
    """
    with ApiReplica() as replica, CountingLogstash() as logstash, tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        listed = corpus_of(replica, rows, log_lines=0)
        env = api_feed_environ(replica, logstash, work / "kcing.db", KCI_API_PAGE_SIZE="1000")
        ledger = Ledger.open(str(work / "kcing.db"))
        # Delivered to the Logstash inputs the run posts to: only those are skipped.
        ledger.record([Outcome(UpstreamObject("api", node["kind"], version_id(node["id"], parse_api_time(
            node["updated"])), ""), DELIVERED) for node in replica.corpus.nodes()],
            logstash_destination_of(settings_module.load(environ=env, local_file=work / "none.py")))
        ledger.close()
        # As in the legacy bench: the replica filters a listing on its first request for it, as a
        # real server's indices are already built, and keeps the bodies of its pages, so that
        # serialising them in this process is not timed as kcing's wait; that first, untimed
        # run pays for it (and, from the watermark, sets it).
        args = ("feed_es",) if from_watermark else ("feed_es", "--since", SINCE)
        run_feed(env, work, args)
        if from_watermark:
            run_feed(env, work, args)  # the replica filters from the watermark now set, untimed
        run = fastest_run(env, work, args, profile=profile)
        if from_watermark:
            listed = int(run.stdout.split("listed ", 1)[1].split(",", 1)[0])
        if "skipped %d" % listed not in run.stdout or logstash.accepted:
            sys.exit("the run over delivered nodes did not skip everything:\n" + run.stdout)
        return run, listed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=5000, help="corpus size (13 node objects a tree)")
    parser.add_argument("--log-lines", type=int, default=1000, help="log lines per LAVA callback")
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--without-logs", action="store_true", help="feed without --with-logs")
    parser.add_argument("--skip-wire", action="store_true", help="measure only the feed (large N)")
    parser.add_argument("--ledger-rows", type=int, default=100_000,
                        help="node versions in the fully delivered listing (0 skips that figure)")
    args = parser.parse_args()
    with_logs = not args.without_logs
    feed_args = ("feed_es", "--with-logs") if with_logs else ("feed_es",)

    if args.ledger_rows:
        run, listed = run_over_delivered(args.ledger_rows)
        print("run over %d delivered node versions: %.2f s wall, %.2f s CPU in kcing (%.2f s wall per 100k)"
              % (listed, run.seconds, run.cpu_seconds, run.seconds * 100_000 / listed))
        routine, overlap = run_over_delivered(args.ledger_rows, from_watermark=True)
        print("run from the watermark over the same ledger rows (it lists the %d versions of the overlap): "
              "%.2f s wall, %.2f s CPU in kcing" % (overlap, routine.seconds, routine.cpu_seconds))

    with ApiReplica() as replica, CountingLogstash() as logstash, tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        objects = corpus_of(replica, args.objects, args.log_lines)
        replica.corpus.materialise()
        env = api_feed_environ(replica, logstash, work / "kcing.db", KCI_THREADS=str(args.threads),
                               LS_PIPELINE_BATCH_SIZE=str(BATCH_SIZE), LS_BATCH_MAX_BYTES=str(MAX_BYTES))
        feed = run_feed(env, work, feed_args)
        documents = logstash.accepted
        posted_bytes = logstash.posted_bytes
        print("corpus: %d node objects (%d kbuilds, %d LAVA jobs with %d log lines, %d tests)%s"
              % (objects, objects // 13, objects * 4 // 13, args.log_lines, objects * 8 // 13,
                 "" if with_logs else ", fed without logs"))
        print("feed:   %.1f s (%.1f s CPU), %.0f objects/s, %.0f documents/s, %.1f MB/s posted, peak RSS %.0f MB"
              % (feed.seconds, feed.cpu_seconds, objects / feed.seconds, documents / feed.seconds,
                 posted_bytes / 1e6 / feed.seconds, feed.peak_rss_mb))

        again = run_feed(env, work, feed_args)
        print("second run, from the watermark: %.2f s" % again.seconds)
        relist = run_feed(env, work, ("feed_es", "--since", SINCE))
        print("run listing all %d delivered objects again (--since): %.2f s" % (objects, relist.seconds))

        if args.skip_wire:
            return
        batches = prebuilt_batches(replica, with_logs)
        logstash.reset()
        wire = wire_yardstick(batches, logstash.urls, POSTS_IN_FLIGHT)
        print("wire (separate process, %d in flight): %.1f s, %.0f documents/s (%d pre-built batches)"
              % (POSTS_IN_FLIGHT, wire.seconds, wire.documents_per_second, len(batches)))
        print("ratio:  feed reaches %.0f%% of the wire limit (documents/s)"
              % (100.0 * (documents / feed.seconds) / wire.documents_per_second))


if __name__ == "__main__":
    main()
