#!/usr/bin/env python3
"""The wire yardstick: POST pre-serialised batches to Logstash inputs, nothing else.

    python bench/wire_post.py BATCHES_FILE URLS_JSON CONCURRENCY [REPEATS]

BATCHES_FILE holds the batches the feed would send, as written by `write_batches`: for each, a
header line `<route> <documents> <bytes>` and then the body. URLS_JSON maps route -> URL.
CONCURRENCY threads post in turn from one shared queue, in order, each over its own kept-alive
connection per route, as the feed keeps ES_PARALLEL_POSTS posts in flight over a pooled session.
With REPEATS, the whole loop runs that many times and the fastest counts: a limit is the best
the wire does, and on a shared machine a slower pass measures the neighbours.
Prints one JSON line: seconds, documents, batches, bytes.

It runs as its own process on purpose. In the process that hosts the emulators it would share
their interpreter lock: every byte the emulator's server threads parse would stall the loop and
every POST the loop builds would stall the server, so the limit it measured was the two taking
turns on one core, not what the wire and the emulator can carry.
"""
from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from typing import Dict, Iterable, List, Tuple
from urllib.parse import urlsplit

Batch = Tuple[str, int, bytes]  # route, documents, body


def write_batches(path, batches: Iterable[Batch]) -> None:
    with open(path, "wb") as out:
        for route, documents, body in batches:
            out.write(b"%s %d %d\n" % (route.encode(), documents, len(body)))
            out.write(body)


def read_batches(path) -> List[Batch]:
    batches = []
    with open(path, "rb") as source:
        while True:
            header = source.readline()
            if not header:
                return batches
            route, documents, size = header.split()
            batches.append((route.decode(), int(documents), source.read(int(size))))


class Poster(threading.Thread):
    """Takes batches off the shared list in order and POSTs each; stops at the first error."""

    def __init__(self, batches: List[Batch], next_index, urls: Dict[str, str]):
        super().__init__(daemon=True)
        self.batches, self.next_index, self.urls = batches, next_index, urls
        self.connections: Dict[str, http.client.HTTPConnection] = {}
        self.error = None

    def run(self) -> None:
        try:
            while True:
                index = self.next_index()
                if index is None:
                    return
                route, _, body = self.batches[index]
                self._post(route, body)
        except Exception as error:  # reported by the main thread
            self.error = error

    def _post(self, route: str, body: bytes) -> None:
        url = urlsplit(self.urls[route])
        connection = self.connections.get(route)
        if connection is None:
            connection = self.connections[route] = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        connection.request("POST", url.path or "/", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError("%s answered %d" % (self.urls[route], response.status))


def post_all(batches: List[Batch], urls: Dict[str, str], concurrency: int) -> float:
    lock = threading.Lock()
    position = iter(range(len(batches)))

    def next_index():
        with lock:
            return next(position, None)

    posters = [Poster(batches, next_index, urls) for _ in range(concurrency)]
    started = time.perf_counter()
    for poster in posters:
        poster.start()
    for poster in posters:
        poster.join()
    elapsed = time.perf_counter() - started
    errors = [poster.error for poster in posters if poster.error is not None]
    if errors:
        raise SystemExit("wire loop failed: %s" % errors[0])
    return elapsed


def main() -> None:
    if len(sys.argv) not in (4, 5):
        raise SystemExit(__doc__)
    batches = read_batches(sys.argv[1])
    urls = json.loads(sys.argv[2])
    repeats = int(sys.argv[4]) if len(sys.argv) == 5 else 1
    seconds = min(post_all(batches, urls, int(sys.argv[3])) for _ in range(max(1, repeats)))
    print(json.dumps({"seconds": seconds, "documents": sum(count for _, count, _ in batches),
                      "batches": len(batches), "bytes": sum(len(body) for _, _, body in batches)}))


if __name__ == "__main__":
    main()
