"""A local replica of the KernelCI API ("Maestro", upstream.md §2.11) and its artifact storage.

One server on 127.0.0.1 serves:

- `GET /latest/nodes?<filters>&limit=&offset=` -> `{"items", "total", "limit", "offset"}`:
  filters as tests/fakes/api_filters.py reads them (400 on a bad time), `limit` 50 by default
  and at least 1, insertion order, no sort;
- `GET /latest/count?<filters>` -> a bare integer;
- `GET /latest/node/<id>` -> the node, `null` for an unknown id, 400 for a malformed one;
- the same under `/v0/` and without a prefix; another version is a 400 in plain text;
- `GET /files/<path>` -> artifact files as raw bytes (gzip files stay gzip: no Content-Encoding),
  except those named in `content_encoded`, whose bytes are sent as they are with
  `Content-Encoding: gzip`, as a storage host that labels its `.gz` files so.

Every answer carries a `Date` header, as uvicorn sends, read from the replica's clock: the
real clock moved by `clock_offset` (a server whose clock is behind or ahead of the client's).

Test hooks: a token the API paths require (`token`, 401 `{"detail": ...}` without it) or a
blanket 403 (`forbid`); failures queued by path prefix (`fail_next`, with Retry-After) and
redirects (`redirect`); a
listing page answered with a broken body (`malformed_page`); pages of a kind empty from an
offset on (`empty_from`); every page answered as the first (`ignores_offset`); a callback run before each
listing page is computed (`on_page`), which may change the corpus between two pages.
"""
from __future__ import annotations

import email.utils
import json
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, List, Optional, Set, Tuple
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakes import api_filters
from tests.fakes.api_corpus import ApiCorpus
from tests.fakes.legacy_replica import RecordedRequest
from tests.fakes.serving import (
    CLIENT_GONE, BackgroundServer, FaultQueue, LockedList, QuietHandler, ServedByBackgroundServer,
)

_JSON = ("Content-Type", "application/json")
_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_VERSIONED = re.compile(r"^/(v[0-9]+|latest)(/.*)?$")
_OBJECT_ID = re.compile(r"^[0-9a-fA-F]{24}$")
DEFAULT_LIMIT = 50
# Cached page bodies are dropped beyond this (a 100k-node benchmark listing is about 130 MB).
PAGE_BODY_CACHE_BYTES = 256 << 20

PageCallback = Callable[["ApiReplica", Tuple[Tuple[str, str], ...], int], None]


@dataclass(frozen=True)
class _Failure:
    status: int
    body: bytes
    retry_after: Optional[int]
    location: Optional[str] = None


class ApiReplica(ServedByBackgroundServer):
    """The API and its file storage over one `ApiCorpus`; `requests` records every request."""

    def __init__(self, corpus: Optional[ApiCorpus] = None, port: int = 0, token: Optional[str] = None):
        self.corpus = corpus if corpus is not None else ApiCorpus()
        self.token = token
        self.forbid = False
        self.clock_offset = timedelta(0)  # the server's clock less the real one (its `Date` headers)
        self.max_limit: Optional[int] = None  # a server that caps `limit` below what was asked
        self.echo_asked_limit = False  # ... and answers with the `limit` asked, not the one it used
        # kind -> offset from which listing pages of that kind come back empty, `total` still
        # counting every node: a server whose pages run dry short of what it counts.
        self.empty_from: Dict[str, int] = {}
        # A cache before the server that keys pages without their offset: every page is the first.
        self.ignores_offset = False
        # The most `limit` may ask for, or None for no maximum (the API's own parameters); beyond
        # it, 422 as FastAPI refuses a query parameter (fastapi-pagination's default is 100).
        self.limit_maximum: Optional[int] = None
        self.content_encoded: Set[str] = set()  # file paths served with `Content-Encoding: gzip`
        # How listing pages are written: `\u` escapes beyond ASCII, labelled `application/json`.
        # FastAPI sends raw UTF-8 (`page_ascii` False); a proxy or a mirror before the API may label
        # pages otherwise (`text/plain`, a charset, none) or start them with a byte order mark.
        self.page_ascii = True
        self.page_content_type = "application/json"
        self.page_byte_order_mark = False
        # Ids of nodes the API cannot answer: stored in a form its response model refuses, they
        # fail every page (and the /node answer) that holds them with FastAPI's plain 500.
        self.unanswerable: Set[str] = set()
        self.requests: LockedList = LockedList()
        self._failures = FaultQueue()
        self._malformed: Dict[int, bytes] = {}
        self._page_callback: Optional[PageCallback] = None
        self._pages = 0
        self._lock = threading.Lock()
        # Filtered listings by (corpus version, filters): paging a big corpus filters it once.
        self._listings: Dict[tuple, list] = {}
        # Page bodies as sent, per listing, limit and offset: a real API's answer time is not the
        # client's, and serialising a page of a thousand nodes in the benchmarks' process would
        # make kcing wait for the replica.
        self._page_bodies: Dict[tuple, bytes] = {}
        self._server = BackgroundServer(_ApiHandler, self, port)

    @property
    def api_url(self) -> str:
        return self.url + "/latest"

    @property
    def files_url(self) -> str:
        return self.url + "/files"

    # Hooks -------------------------------------------------------------------------------------

    def fail_next(self, path_prefix: str, status: int, count: Optional[int] = 1, retry_after: Optional[int] = None,
                  body: Optional[bytes] = None) -> None:
        """Answer the next `count` requests whose path starts with `path_prefix` with `status`."""
        detail = body if body is not None else json.dumps({"detail": "replica fault %d" % status}).encode()
        self._failures.add(path_prefix, _Failure(status, detail, retry_after), count)

    def redirect(self, path_prefix: str, location: str, status: int = 302, count: Optional[int] = 1) -> None:
        """Answer the next `count` requests whose path starts with `path_prefix` with a redirect."""
        self._failures.add(path_prefix, _Failure(status, b"", None, location), count)

    def malformed_page(self, number: int, body: bytes = b'{"items": [{"id": "670f0c27493b6b8') -> None:
        """Answer listing request number `number` (1-based, all kinds counted) with 200 and `body`."""
        self._malformed[number] = body

    def on_page(self, callback: Optional[PageCallback]) -> None:
        """Call `callback(replica, query, page number)` before each listing page is computed."""
        self._page_callback = callback

    def clear_faults(self) -> None:
        self._failures.clear()
        self._malformed.clear()
        self._page_callback = None

    def listing_requests(self) -> List[RecordedRequest]:
        return [request for request in self.requests if request.path.endswith("/nodes")]

    def file_requests(self) -> List[RecordedRequest]:
        return [request for request in self.requests if request.path.startswith("/files/")]

    def now(self) -> datetime:
        """The server's clock: what its `Date` headers say, and when a node it changes is `updated`."""
        return datetime.now(timezone.utc) + self.clock_offset

    def _next_page_number(self) -> int:
        with self._lock:
            self._pages += 1
            return self._pages


class _ApiHandler(QuietHandler):
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.decoded_path = unquote(url.path)
        self.query = tuple(parse_qsl(url.query, keep_blank_values=True))
        replica: ApiReplica = self.app
        failure = replica._failures.take(self.decoded_path)
        if failure is not None:
            headers = [_JSON] + ([("Retry-After", str(failure.retry_after))] if failure.retry_after is not None else [])
            headers += [("Location", failure.location)] if failure.location is not None else []
            self._finish(failure.status, headers, failure.body)
            return
        if self.decoded_path.startswith("/files/"):
            self._file(self.decoded_path[len("/files/"):])
            return
        match = _VERSIONED.match(self.decoded_path)
        if match and match.group(1) not in ("latest", "v0"):
            self._finish(400, [_TEXT], ("Unsupported API version: %s" % match.group(1)).encode())
            return
        if not self._authorised(replica):
            return
        self._route(replica, (match.group(2) or "/") if match else self.decoded_path)

    def do_POST(self) -> None:
        self.read_body()
        self._finish(405, [_JSON], b'{"detail":"Method Not Allowed"}')

    def _authorised(self, replica: ApiReplica) -> bool:
        if replica.forbid:
            self._finish(403, [_JSON], b'{"detail":"Forbidden"}')
            return False
        if replica.token is not None and self.headers.get("Authorization") != "Bearer %s" % replica.token:
            self._finish(401, [_JSON, ("WWW-Authenticate", "Bearer")], b'{"detail":"Could not validate credentials"}')
            return False
        return True

    def _route(self, replica: ApiReplica, path: str) -> None:
        if path == "/nodes":
            self._nodes(replica)
        elif path == "/count":
            self._count(replica)
        elif path.startswith("/node/"):
            self._node(replica, path[len("/node/"):])
        else:
            self._finish(404, [_JSON], b'{"detail":"Not Found"}')

    def _matching(self, replica: ApiReplica) -> Optional[Tuple[tuple, list]]:
        try:
            filters = api_filters.parse(self.query)
        except api_filters.BadFilter as error:
            self._finish(400, [_JSON], json.dumps({"detail": str(error)}).encode())
            return None
        wanted = tuple((item.field, item.op, repr(item.value)) for item in filters)
        # The corpus is copied only when this listing was not cached for its current version:
        # a copy per page would cost the replica more than a real server's indexed query.
        key = (replica.corpus.version, wanted)
        with replica._lock:
            cached = replica._listings.get(key)
        if cached is None:
            version, nodes = replica.corpus.versioned_nodes()
            key = (version, wanted)
            cached = [node for node in nodes if api_filters.matches(node, filters)]
            with replica._lock:
                if len(replica._listings) > 32:
                    replica._listings.clear()
                replica._listings[key] = cached
        return key, cached

    def _nodes(self, replica: ApiReplica) -> None:
        number = replica._next_page_number()
        if replica._page_callback is not None:
            replica._page_callback(replica, self.query, number)
        if number in replica._malformed:
            self._finish(200, [_JSON], replica._malformed[number])
            return
        paging = self._paging()
        if paging is None:
            return
        found = self._matching(replica)
        if found is None:
            return
        key, matching = found
        asked, offset = paging
        offset = 0 if replica.ignores_offset else offset
        limit = min(asked, replica.max_limit or asked)
        answered = asked if replica.echo_asked_limit else limit
        dry_from = replica.empty_from.get(dict(self.query).get("kind", ""))
        if dry_from is not None and offset >= dry_from:
            self._finish(200, [_JSON], json.dumps({"items": [], "total": len(matching), "limit": answered,
                                                   "offset": offset}).encode())
            return
        if replica.unanswerable and any(node.get("id") in replica.unanswerable
                                        for node in matching[offset:offset + limit]):
            self._finish(500, [("Content-Type", "text/plain; charset=utf-8")], b"Internal Server Error")
            return
        cached = (key, limit, answered, offset, replica.page_ascii)
        with replica._lock:
            body = replica._page_bodies.get(cached)
        if body is None:
            body = json.dumps({"items": matching[offset:offset + limit], "total": len(matching), "limit": answered,
                               "offset": offset}, separators=(",", ":"), ensure_ascii=replica.page_ascii).encode()
            with replica._lock:
                if sum(map(len, replica._page_bodies.values())) > PAGE_BODY_CACHE_BYTES:
                    replica._page_bodies.clear()
                replica._page_bodies[cached] = body
        labelled = [("Content-Type", replica.page_content_type)] if replica.page_content_type else []
        self._finish(200, labelled, b"\xef\xbb\xbf" + body if replica.page_byte_order_mark else body)

    def _paging(self) -> Optional[Tuple[int, int]]:
        values = dict(self.query)
        problems = []  # FastAPI validates each query parameter and names every one it refuses
        numbers = {}
        for name, default, least in (("limit", DEFAULT_LIMIT, 1), ("offset", 0, 0)):
            text = values.get(name, str(default))
            try:
                numbers[name] = int(text)
            except ValueError:
                problems.append({"type": "int_parsing", "loc": ["query", name], "input": text,
                                 "msg": "Input should be a valid integer, unable to parse string as an integer"})
                continue
            if numbers[name] < least:
                problems.append({"type": "greater_than_equal", "loc": ["query", name], "input": text,
                                 "msg": "Input should be greater than or equal to %d" % least, "ctx": {"ge": least}})
        if problems:
            self._finish(422, [_JSON], json.dumps({"detail": problems}).encode())
            return None
        limit, offset = numbers["limit"], numbers["offset"]
        maximum = self.app.limit_maximum
        if maximum is not None and limit > maximum:
            detail = [{"type": "less_than_equal", "loc": ["query", "limit"], "input": values["limit"],
                       "msg": "Input should be less than or equal to %d" % maximum, "ctx": {"le": maximum}}]
            self._finish(422, [_JSON], json.dumps({"detail": detail}).encode())
            return None
        return limit, offset

    def _count(self, replica: ApiReplica) -> None:
        matching = self._matching(replica)
        if matching is not None:
            self._finish(200, [_JSON], str(len(matching)).encode())

    def _node(self, replica: ApiReplica, node_id: str) -> None:
        if not _OBJECT_ID.match(node_id):
            detail = "'%s' is not a valid ObjectId, it must be a 12-byte input or a 24-character hex string" % node_id
            self._finish(400, [_JSON], json.dumps({"detail": detail}).encode())
            return
        node = replica.corpus.get(node_id.lower())
        if node is not None and node.get("id") in replica.unanswerable:
            self._finish(500, [("Content-Type", "text/plain; charset=utf-8")], b"Internal Server Error")
            return
        self._finish(200, [_JSON], json.dumps(node).encode())

    def _file(self, path: str) -> None:
        content = self.app.corpus.read(path)
        if content is None:
            self._finish(404, [_TEXT], b"404 Not Found\n")
        elif path.lstrip("/") in self.app.content_encoded:
            self._finish(200, [("Content-Type", "application/octet-stream"), ("Content-Encoding", "gzip")], content)
        else:
            self._finish(200, [("Content-Type", "application/octet-stream")], content)

    def _finish(self, status: int, headers, body: bytes = b"") -> None:
        recorded = {name.lower(): value for name, value in self.headers.items()}
        self.app.requests.append(RecordedRequest("GET", self.decoded_path, self.query, recorded, status))
        stamp = time.time() + self.app.clock_offset.total_seconds()
        headers = list(headers) + [("Date", email.utils.formatdate(stamp, usegmt=True))]
        try:
            self.send_whole(status, headers, body)
        except CLIENT_GONE:
            self.close_connection = True


__all__ = ["ApiReplica", "ApiCorpus"]
