#!/usr/bin/env python3
"""CPU of document building alone: upstream file bytes -> encoded documents and the kept ids.

    python bench/build_cpu.py [--objects 250] [--log-lines 1000] [--passes 5] [--profile]

Builds every object of the legacy bench corpus (`feed_throughput.legacy_corpus`: one build for
four LAVA boots) with `kcing.building.encoded_documents` and the Logstash sink's encoder, what a
worker does per object, in this one process with every file already in memory. Prints the CPU
time (`time.process_time`, so other work on the machine does not count) of the fastest pass per
object and per document. `--profile` adds one pass under cProfile, by own time.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import feed_throughput  # noqa: E402
from kcing.building import encoded_documents  # noqa: E402
from kcing.sinks.logstash import LogstashSink  # noqa: E402


def corpus_files(objects: int, log_lines: int) -> list:
    corpus = feed_throughput.legacy_corpus(objects, log_lines)
    with tempfile.TemporaryDirectory() as scratch:
        files = feed_throughput.materialise(corpus, Path(scratch))
        return [(entry["kind"], Path(entry["path"]).read_bytes(), datetime.fromisoformat(entry["created"]))
                for entry in feed_throughput.corpus_manifest(corpus, files)]


def build_all(files: list) -> int:
    documents = 0
    for kind, content, created in files:
        # len(encoded), not len(items): items copies out every document's bytes, which a
        # worker never does.
        documents += len(encoded_documents(kind, content, created, None, LogstashSink.encode).encoded)
    return documents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=250)
    parser.add_argument("--log-lines", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    files = corpus_files(args.objects, args.log_lines)
    best, documents = float("inf"), 0
    for _ in range(args.passes):
        started = time.process_time()
        documents = build_all(files)
        best = min(best, time.process_time() - started)
    print("document building: %.2f ms CPU per object, %.1f us per document (fastest of %d passes over %d objects, "
          "%.0f documents per object)" % (1000 * best / len(files), 1e6 * best / documents, args.passes,
                                          len(files), documents / len(files)))
    if args.profile:
        profile = cProfile.Profile(time.process_time)
        profile.runcall(build_all, files)
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
