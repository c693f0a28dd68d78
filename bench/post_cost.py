#!/usr/bin/env python3
"""CPU of one POST to Logstash: the sink's transport against a requests.Session and bare http.client.

Posts the batches the feed would send for a legacy corpus (same documents, encoding and
limits), pre-built, one at a time to a counting Logstash emulator on 127.0.0.1, and measures
the CPU of the posting thread only (the emulator's threads are not counted) for:

1. `LogstashSink._post`: the sink's transport (urllib3 pools) plus reading the answer under
   the BodyReader's limits, as a run does;
2. the same POST through a `requests.Session` read by the same BodyReader (the sink's path
   before kcing/transport.py);
3. `http.client` alone, one keep-alive connection per input: the floor for any Python client.

Each is the fastest of `--rounds` rounds; figures move with the load on a shared machine, the
ratios much less.

    python bench/post_cost.py                 # 100 objects, logs of 1,000 lines: ~165 POSTs of ~350 KB
    python bench/post_cost.py --profile       # and where the sink's time goes
"""
from __future__ import annotations

import argparse
import cProfile
import http.client
import pstats
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from feed_throughput import legacy_corpus, prebuilt_batches  # noqa: E402  (this directory)
from harness import CountingLogstash  # noqa: E402

from kcing.http import BodyReader, RetryPolicy, new_session  # noqa: E402
from kcing.sinks.logstash import MAX_ANSWER_BYTES, LogstashSink  # noqa: E402
from kcing.transport import Transport  # noqa: E402


def cpu_per_post(ways, posts, rounds: int) -> dict:
    """{name: the fastest round's CPU per POST in ms, of this thread}. The ways take turns round
    after round, so a change in the machine's load weighs on all of them alike."""
    best = {}
    for _ in range(rounds):
        for name, post in ways:
            started = time.thread_time()
            for item in posts:
                post(*item)
            spent = time.thread_time() - started
            best[name] = min(best.get(name, spent), spent)
    return {name: 1000 * spent / len(posts) for name, spent in best.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100)
    parser.add_argument("--log-lines", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)

    batches = prebuilt_batches(legacy_corpus(args.objects, args.log_lines))
    size = sum(len(body) for _, _, body in batches) / len(batches)
    print("%d POSTs of %.0f KB on average, fastest of %d rounds" % (len(batches), size / 1024, args.rounds))
    with CountingLogstash() as logstash:
        posts = [(logstash.urls[route], body, count, route) for route, count, body in batches]
        sink = LogstashSink({route: [url] for route, url in logstash.urls.items()}, Transport(pool_size=4),
                            RetryPolicy(attempts=1), 30)

        def through_sink(url, body, count, route):
            assert sink._post(url, body, count, route) == (None, None)

        session, reader = new_session(pool_size=4), BodyReader(60, MAX_ANSWER_BYTES)

        def through_requests(url, body, count, route):
            response = session.post(url, data=body, headers={"Content-Type": "application/json"},
                                    timeout=(10, 30), allow_redirects=False, stream=True)
            reader.read(response)
            assert response.status_code == 200

        connections = {}

        def through_http_client(url, body, count, route):
            parts = urlsplit(url)
            connection = connections.get(url) or connections.setdefault(
                url, http.client.HTTPConnection(parts.hostname, parts.port))
            connection.request("POST", parts.path or "/", body=body, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200

        figures = cpu_per_post((("sink (urllib3 transport)", through_sink), ("requests.Session", through_requests),
                                ("http.client", through_http_client)), posts, args.rounds)
        for name, cost in figures.items():
            print("%-26s %.3f ms of CPU per POST" % (name, cost))
        sink_cost = figures["sink (urllib3 transport)"]
        print("sink / requests.Session: %.2f   sink / http.client: %.2f"
              % (sink_cost / figures["requests.Session"], sink_cost / figures["http.client"]))
        if args.profile:
            profile = cProfile.Profile(time.thread_time)
            profile.enable()
            for item in posts:
                through_sink(*item)
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
