"""A local replica of legacy KernelCI: the kernelci.org frontend (`/_ajax`, CSRF) and storage.

upstream.md §1.3, §1.6 and §1.10 describe what is reproduced. Both servers read one
`LegacyCorpus` (tests/fakes/legacy_corpus.py): listing items for the `build` and `boot`
collections, and storage files.
"""
from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import mimetypes
import random
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from email.utils import formatdate
from http.cookies import CookieError, SimpleCookie
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, quote, urlsplit

from tests.fakes import legacy_listing as listing
from tests.fakes.legacy_corpus import COLLECTIONS, LegacyCorpus, storage_path
from tests.fakes.legacy_listing import BackendFailure, ListingItem
from tests.fakes.serving import (
    CLIENT_GONE, BackgroundServer, FaultQueue, LockedList, QuietHandler, ServedByBackgroundServer,
    StartedByWith,
)

SESSION_COOKIE = "kernelci.org"


class CsrfSessions:
    """Flask-WTF 0.11 style tokens: `<expiry>##<HMAC-SHA1(session seed + expiry)>`.

    A token is valid only with the session cookie it was issued for, and only until its expiry,
    measured with the injected `clock`.
    """

    def __init__(self, clock: Callable[[], float], lifetime: Tuple[int, int], rng: random.Random):
        self._clock, self._lifetime, self._rng = clock, lifetime, rng
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(20)
        self._seeds: Dict[str, str] = {}

    def issue(self, session: Optional[str]) -> Tuple[str, str]:
        """Return (session id, new token); an unknown or absent session gets a new one."""
        with self._lock:
            if session not in self._seeds:
                session = secrets.token_urlsafe(24)
                self._seeds[session] = secrets.token_hex(20)
            expires = int(self._clock()) + self._rng.randint(*self._lifetime)
            return session, "%d##%s" % (expires, self._sign(self._seeds[session], expires))

    def valid(self, token: Optional[str], session: Optional[str]) -> bool:
        if not token or session is None:
            return False
        expires, _, signature = token.partition("##")
        with self._lock:
            seed = self._seeds.get(session)
            if seed is None or not expires.isdigit():
                return False
            expected = self._sign(seed, int(expires))
        return hmac.compare_digest(signature, expected) and self._clock() <= int(expires)

    def expire_all(self) -> None:
        """Invalidate every issued token (sessions survive, as after a secret-key rotation)."""
        with self._lock:
            self._secret = secrets.token_bytes(20)

    def _sign(self, seed: str, expires: int) -> str:
        return hmac.new(self._secret, ("%s%d" % (seed, expires)).encode(), hashlib.sha1).hexdigest()


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # decoded path, without the query
    query: Tuple[Tuple[str, str], ...]  # in order, repeated keys kept
    headers: Dict[str, str]  # lower-cased names
    status: Optional[int]

    def params(self, key: str) -> List[str]:
        return [value for name, value in self.query if name == key]


@dataclass(frozen=True)
class _Failure:
    status: int
    body: bytes
    headers: Tuple[Tuple[str, str], ...] = ()


_FORBIDDEN_HTML = (b"<!doctype html>\n<html lang=en>\n<title>403 Forbidden</title>\n<h1>Forbidden</h1>\n"
                   b"<p>You don&#39;t have the permission to access the requested resource. It is either "
                   b"read-protected or not readable by the server.</p>\n")
_NOT_FOUND_HTML = (b"<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n"
                   b"<p>The requested URL was not found on the server.</p>\n")
_METHOD_NOT_ALLOWED_HTML = (b"<!doctype html>\n<html lang=en>\n<title>405 Method Not Allowed</title>\n"
                            b"<h1>Method Not Allowed</h1>\n")
_BACKEND_500_HTML = b"<html><title>500: Internal Server Error</title><body>500: Internal Server Error</body></html>"
# What the backend (Tornado) answered for /boot once its handler was removed on 2020-07-27; the
# frontend passes the backend's status and body through.
_BACKEND_404_HTML = b"<html><title>404: Not Found</title><body>404: Not Found</body></html>"
_HTML = ("Content-Type", "text/html; charset=utf-8")
_JSON = ("Content-Type", "application/json; charset=UTF-8")
# The backend (Tornado, `compress_response`) gzips JSON answers of 1024 bytes or more for a client
# that accepts gzip, and the frontend's proxy is such a client (requests asks for gzip and deflate
# by default): it passes the compressed bytes through with the backend's `Content-Encoding`
# (kernelci-frontend `utils/backend.py`, `ajax_get`: `r.raw.data`, `r.headers`), whatever the
# crawler asked for.
_GZIP_MIN_LENGTH = 1024
_GZIP_LEVEL = 6  # Tornado's GZipContentEncoding.GZIP_LEVEL

PageCallback = Callable[[LegacyCorpus, str, Tuple[Tuple[str, str], ...]], None]


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </static/css/kernelci.css>; rel=preload; as=style\r\n\r\n"


class _RecordingServer(ServedByBackgroundServer):
    """Shared lifecycle, fault queues and request log of the two legacy servers."""

    def __init__(self, handler_class, port: int):
        self.requests: LockedList = LockedList()
        self._failures = FaultQueue()
        self._delays = FaultQueue()
        self._idle_closes = FaultQueue()
        # Each answer after a `103 Early Hints` interim answer, as a CDN in front of the site may send.
        self.early_hints = False
        self._server = BackgroundServer(handler_class, self, port)

    base_url = ServedByBackgroundServer.url

    def fail_next(self, path_prefix: str, status: int, count: Optional[int] = 1, body: bytes = b"",
                  headers: Tuple[Tuple[str, str], ...] = ()) -> None:
        """Answer the next `count` requests under `path_prefix` with `status`, `body` and `headers`."""
        self._failures.add(self._key(path_prefix), _Failure(status, body, headers), count)

    def redirect(self, path_prefix: str, location: str, status: int = 302, count: Optional[int] = 1) -> None:
        """Answer the next `count` requests under `path_prefix` with a redirect to `location`."""
        self._failures.add(self._key(path_prefix), _Failure(status, b"", (("Location", location),)), count)

    def delay(self, path_prefix: str, seconds: float, count: Optional[int] = 1) -> None:
        """Sleep `seconds` before handling the next `count` requests under `path_prefix`."""
        self._delays.add(self._key(path_prefix), seconds, count)

    def close_kept_alive(self, path_prefix: str = "/", count: Optional[int] = 1) -> None:
        """Close, without an answer, the connection the next `count` requests under `path_prefix`
        arrive on when it carried an answer before: what a server (or a proxy) closing an idle
        kept-alive connection as the next request is written looks like to the client. A request
        on a new connection is answered as ever."""
        self._idle_closes.add(self._key(path_prefix), True, count)

    def clear_faults(self) -> None:
        self._failures.clear()
        self._delays.clear()
        self._idle_closes.clear()

    @staticmethod
    def _key(path: str) -> str:
        return "/" + path.lstrip("/")


class _LegacyHandler(QuietHandler):
    """Parses the URL, applies delay and failure faults, records the request."""

    def do_GET(self) -> None:
        self._serve(head_only=False)

    def do_HEAD(self) -> None:
        self._serve(head_only=True)

    def do_POST(self) -> None:
        self.read_body()
        self._finish(405, [_HTML], _METHOD_NOT_ALLOWED_HTML)

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _serve(self, head_only: bool) -> None:
        self.head_only = head_only
        url = urlsplit(self.path)
        self.decoded_path = "/" + storage_path(url.path) if url.path.startswith("/") else url.path
        self.query = tuple(parse_qsl(url.query, keep_blank_values=True))
        server: _RecordingServer = self.app
        if getattr(self, "answers_sent", 0) and server._idle_closes.take(self.decoded_path):
            self.drop_connection()
            return
        seconds = server._delays.take(self.decoded_path)
        if seconds:
            time.sleep(seconds)
        failure = server._failures.take(self.decoded_path)
        if failure is not None:
            self._finish(failure.status, ([_HTML] if failure.body else []) + list(failure.headers), failure.body)
            return
        self.route()

    def route(self) -> None:
        raise NotImplementedError

    def _finish(self, status: int, headers, body: bytes = b"", close: bool = False) -> None:
        self._record(status)
        self.answers_sent = getattr(self, "answers_sent", 0) + 1  # on this connection (one handler each)
        try:
            if self.app.early_hints:
                self.wfile.write(EARLY_HINTS)
            self.send_whole(status, headers, body, close=close, head_only=getattr(self, "head_only", False))
        except CLIENT_GONE:
            self.close_connection = True

    def _record(self, status: Optional[int]) -> None:
        path = getattr(self, "decoded_path", self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.app.requests.append(RecordedRequest(self.command, path, getattr(self, "query", ()), headers, status))


class LegacyFrontend(_RecordingServer):
    """The kernelci.org host: `GET /` hands out a CSRF token and cookie; `/_ajax/build|boot` list.

    `today` (a date, or None to follow `clock`) anchors `date_range`; `clock` (epoch seconds)
    decides token expiry; `token_lifetime` is the random lifetime range in seconds.
    `boot_removed` serves the backend as it was from 2020-07-27: `/_ajax/boot` answers 404.
    """

    def __init__(self, corpus: LegacyCorpus, port: int = 0, today: Optional[date] = None,
                 clock: Callable[[], float] = time.time, token_lifetime: Tuple[int, int] = (600, 1200),
                 rng: Optional[random.Random] = None, boot_removed: bool = False):
        super().__init__(_FrontendHandler, port)
        self.corpus = corpus
        self.clock = clock
        self._today = today
        self.boot_removed = boot_removed
        self.csrf = CsrfSessions(clock, token_lifetime, rng or random.Random())
        self._page_callback: Optional[PageCallback] = None

    @property
    def today(self) -> date:
        if self._today is not None:
            return self._today
        return datetime.fromtimestamp(self.clock(), tz=timezone.utc).date()

    @today.setter
    def today(self, value: Optional[date]) -> None:
        self._today = value

    def expire_all_tokens(self) -> None:
        self.csrf.expire_all()

    def on_page(self, callback: Optional[PageCallback]) -> None:
        """Call `callback(corpus, collection, query)` before each listing page is computed.

        It may add items to the corpus, which makes later pages shift as they did upstream.
        `None` removes it.
        """
        self._page_callback = callback

    def ajax_requests(self, collection: Optional[str] = None) -> List[RecordedRequest]:
        prefix = "/_ajax/" + (collection or "")
        return [request for request in self.requests if request.path.startswith(prefix)]


class _FrontendHandler(_LegacyHandler):
    def _finish(self, status: int, headers, body: bytes = b"", close: bool = False) -> None:
        # Flask behind its web server dates every answer; here by the frontend's clock, the one
        # `date_range` follows when `today` is not fixed.
        super()._finish(status, list(headers) + [("Date", formatdate(self.app.clock(), usegmt=True))], body, close)

    def route(self) -> None:
        path = self.decoded_path
        if path == "/":
            self._home()
        elif path.startswith("/_ajax/"):
            self._ajax(path[len("/_ajax/"):])
        else:
            self._finish(404, [_HTML], _NOT_FOUND_HTML)

    def _session_cookie(self) -> Optional[str]:
        try:
            cookie = SimpleCookie(self.headers.get("Cookie", ""))
        except CookieError:
            return None
        morsel = cookie.get(SESSION_COOKIE)
        return morsel.value if morsel else None

    def _home(self) -> None:
        session, token = self.app.csrf.issue(self._session_cookie())
        # The head of kernelci-frontend's base.html: other metas with a `content` come before the
        # token's (its page templates add it in their `meta` block).
        page = ('<!doctype html>\n<html lang="en">\n<head>\n    <meta charset="utf-8">\n'
                '    <meta http-equiv="X-UA-Compatible" content="IE=edge">\n'
                '    <meta name="viewport" content="width=device-width, initial-scale=1">\n'
                '    <meta name="description" content="Kernel CI - Builds and boots reporting dashboard">\n'
                '    <meta name="robots" content="index,follow,nosnippet">\n'
                '    <meta name="csrf-token" content="%s">\n    <title>Kernel CI Dashboard</title>\n</head>\n'
                '<body><h1>Kernel CI</h1></body>\n</html>\n' % token).encode()
        cookie = ("Set-Cookie", "%s=%s; HttpOnly; Path=/" % (SESSION_COOKIE, session))
        self._finish(200, [_HTML, cookie], page)

    def _ajax(self, resource: str) -> None:
        frontend: LegacyFrontend = self.app
        # Header names are case-insensitive: the old tool sent `x-csrftoken`, the site's JS `X-CSRFToken`.
        if not frontend.csrf.valid(self.headers.get("X-CSRFToken"), self._session_cookie()):
            self._finish(403, [_HTML], _FORBIDDEN_HTML)
            return
        if resource == "boot" and frontend.boot_removed:
            self._finish(404, [_HTML], _BACKEND_404_HTML)
            return
        if resource not in COLLECTIONS:
            body = json.dumps({"code": 404, "reason": "Resource '/%s' not found" % resource}).encode()
            self._finish(404, [_JSON], body)
            return
        if frontend._page_callback is not None:
            frontend._page_callback(frontend.corpus, resource, self.query)
        self._listing(frontend, resource)

    def _listing(self, frontend: LegacyFrontend, collection: str) -> None:
        try:
            query = listing.parse_query(self.query, collection, frontend.today)
        except BackendFailure:
            self._finish(500, [_HTML], _BACKEND_500_HTML)
            return
        items = frontend.corpus.items(collection)
        wanted = listing.values_of(self.query, "id")
        if wanted:
            self._single(items, query, wanted[-1])
            return
        total, texts = listing.page(items, query)
        self._backend_json(200, listing.envelope(total, query, texts))

    def _single(self, items: List[ListingItem], query, oid: str) -> None:
        found = [item for item in items if item.oid == oid]
        if not found:
            body = json.dumps({"code": 404, "reason": "Resource '%s' not found" % oid}).encode()
            self._finish(404, [_JSON], body)
            return
        text = json.dumps(listing.project(found[0].doc, query), separators=(",", ":"), ensure_ascii=False)
        self._backend_json(200, ('{"code":200,"count":1,"result":[%s]}' % text).encode("utf-8"))

    def _backend_json(self, status: int, body: bytes) -> None:
        """A backend JSON answer as the frontend passed it through: gzip-compressed from 1024 bytes."""
        if len(body) < _GZIP_MIN_LENGTH:
            self._finish(status, [_JSON], body)
            return
        self._finish(status, [_JSON, ("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")],
                     gzip.compress(body, compresslevel=_GZIP_LEVEL, mtime=0))


@dataclass(frozen=True)
class _Truncate:
    nbytes: int


@dataclass(frozen=True)
class _Reset:
    after_bytes: Optional[int]


class LegacyStorage(_RecordingServer):
    """The storage.kernelci.org host: static files of the corpus, directory indexes, 404s.

    Paths are percent-decoded (`+` stays literal). `gets[path]` counts GETs per decoded path
    (without the leading slash).
    """

    def __init__(self, corpus: LegacyCorpus, port: int = 0):
        super().__init__(_StorageHandler, port)
        self.corpus = corpus
        self._body_faults = FaultQueue()
        self._counter_lock = threading.Lock()
        self.gets: Counter = Counter()

    def truncate(self, path: str, nbytes: int, count: Optional[int] = 1) -> None:
        """Serve only the first `nbytes` bytes, with a Content-Length that matches them."""
        self._body_faults.add(self._key(path), _Truncate(nbytes), count)

    def reset(self, path: str, count: Optional[int] = 1, after_bytes: Optional[int] = None) -> None:
        """Announce the full Content-Length, send part of the body (default half), then close."""
        self._body_faults.add(self._key(path), _Reset(after_bytes), count)

    def clear_faults(self) -> None:
        super().clear_faults()
        self._body_faults.clear()

    def get_count(self, path: str) -> int:
        with self._counter_lock:
            return self.gets[storage_path(path)]

    def url_for(self, path: str) -> str:
        """The URL a crawler would build: each segment percent-encoded, `+` included."""
        return self.url + "/" + "/".join(quote(part, safe="") for part in storage_path(path).split("/"))

    def _count_get(self, path: str) -> None:
        with self._counter_lock:
            self.gets[path] += 1


_NGINX_404 = (b"<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
              b"<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


class _StorageHandler(_LegacyHandler):
    def route(self) -> None:
        storage: LegacyStorage = self.app
        relative = self.decoded_path.lstrip("/")
        if not self.head_only:
            storage._count_get(relative)
        content = storage.corpus.read(relative)
        if content is not None:
            self._file(storage, relative, content)
            return
        children = storage.corpus.directory(relative)
        if children is None:
            self._finish(404, [("Content-Type", "text/html")], _NGINX_404)
        elif relative and not self.decoded_path.endswith("/"):
            location = quote(self.decoded_path + "/", safe="/+")
            self._finish(301, [("Location", location), ("Content-Type", "text/html")], b"")
        else:
            self._finish(200, [("Content-Type", "text/html")], _index_page(self.decoded_path, children))

    def _file(self, storage: LegacyStorage, relative: str, content: bytes) -> None:
        headers = [("Content-Type", _content_type(relative))]
        fault = storage._body_faults.take(self.decoded_path)
        if isinstance(fault, _Truncate):
            self._finish(200, headers, content[:fault.nbytes])
        elif isinstance(fault, _Reset):
            self._send_then_cut(headers, content, fault.after_bytes)
        else:
            self._finish(200, headers, content)

    def _send_then_cut(self, headers, content: bytes, after_bytes: Optional[int]) -> None:
        self._record(200)
        sent = len(content) // 2 if after_bytes is None else min(after_bytes, len(content))
        lines = ["HTTP/1.1 200 OK"] + ["%s: %s" % header for header in headers]
        lines.append("Content-Length: %d" % len(content))
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + content[:sent])
        except CLIENT_GONE:
            pass
        self.drop_connection()


def _content_type(path: str) -> str:
    # Like a static server: by extension. Clients must parse the body whatever this says.
    guessed, _ = mimetypes.guess_type(path)
    if path.endswith((".log", ".config", ".map")):
        return "text/plain"
    return guessed or "application/octet-stream"


def _index_page(path: str, children: List[Tuple[str, bool]]) -> bytes:
    title = "Index of %s" % path
    links = ['<a href="../">../</a>'] + [
        '<a href="%s">%s</a>' % (quote(name, safe="+") + ("/" if is_dir else ""), name + ("/" if is_dir else ""))
        for name, is_dir in children
    ]
    return ("<html>\r\n<head><title>%s</title></head>\r\n<body>\r\n<h1>%s</h1><hr><pre>%s\r\n</pre><hr></body>\r\n"
            "</html>\r\n" % (title, title, "\r\n".join(links))).encode("utf-8")


class LegacyReplica(StartedByWith):
    """Frontend plus storage over one corpus: what a crawler of legacy KernelCI talks to."""

    def __init__(self, corpus: LegacyCorpus, today: Optional[date] = None,
                 clock: Callable[[], float] = time.time, **frontend_options):
        self.corpus = corpus
        self.clock = clock
        self.frontend = LegacyFrontend(corpus, today=today, clock=clock, **frontend_options)
        self.storage = LegacyStorage(corpus)

    def start(self) -> str:
        """Start both servers; return the frontend URL (`storage_url` has the other)."""
        self.storage.start()
        return self.frontend.start()

    def stop(self) -> None:
        self.frontend.stop()
        self.storage.stop()

    @property
    def frontend_url(self) -> str:
        return self.frontend.url

    @property
    def storage_url(self) -> str:
        return self.storage.url



__all__ = ["LegacyCorpus", "LegacyFrontend", "LegacyStorage", "LegacyReplica", "CsrfSessions",
           "RecordedRequest", "storage_path"]
