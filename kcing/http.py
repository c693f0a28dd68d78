"""HTTP plumbing shared by sources and sinks: the sources' pooled session, pure retry decisions, bounded
reading of answers (the Logstash sink posts through kcing/transport.py)."""
from __future__ import annotations

import email.utils
import functools
import http.client
import json
import logging
import random
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Dict, Iterable, Iterator, List, Mapping, Optional, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH, get_auth_from_url
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from kcing import __version__
from kcing.digits import ascii_digits
from kcing.errors import ConfigError
from kcing.secrecy import mask_credentials_too
from kcing.settingvalues import mask_credentials

log = logging.getLogger(__name__)

USER_AGENT = "kcing/%s" % __version__

# Statuses worth another try: the server is overloaded or briefly broken, not refusing the request.
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class _Session(requests.Session):
    """A session that reads the environment's proxy settings (HTTPS_PROXY, NO_PROXY, ...) once
    per origin instead of for every request: a run's environment does not change, and a crawl
    makes hundreds of thousands of requests to a handful of hosts."""

    def __init__(self, netrc: bool = True, pool_size: int = 10):
        super().__init__()
        self._environment_settings: dict = {}
        self.netrc = netrc
        self.pool_size = pool_size  # connections kept alive per origin at most

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        # requests adds ~/.netrc's credentials for the URL's host to any request without auth of
        # its own: its `default` entry to every host, an entry for the host in place of the
        # request's own Authorization header.
        if not self.netrc and not request.auth and not self.auth:
            request.auth = _no_credentials
        return super().prepare_request(request)

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        if self.netrc:
            return super().rebuild_auth(prepared_request, response)
        # What requests does on a redirect, less adding ~/.netrc's credentials for the new host.
        if "Authorization" in prepared_request.headers and self.should_strip_auth(response.request.url,
                                                                                  prepared_request.url):
            del prepared_request.headers["Authorization"]

    def merge_environment_settings(self, url, proxies, stream, verify, cert):
        if proxies:  # per-request proxies: rare, not worth a cache key
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        settings = self._environment_settings.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment_settings[key] = settings
        return dict(settings, proxies=dict(settings["proxies"]))


def _no_credentials(request: requests.PreparedRequest) -> requests.PreparedRequest:
    """An auth that adds nothing: a request given it gets no credentials from ~/.netrc."""
    return request


def new_session(pool_size: int = 10, verify: str = "", netrc: bool = True) -> requests.Session:
    """Return a session with a connection pool sized for `pool_size` threads.

    `verify` is a CA bundle path; empty means certifi's bundle, named as a path: requests would
    let REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE from the environment replace a session's `True`
    (verification is never switched off). Without `netrc`, no request takes credentials from
    ~/.netrc (`NETRC`): upstream is public, and must never be sent a password kept for another
    host, which a netrc's `default` entry gives every host.
    """
    session = _Session(netrc=netrc, pool_size=pool_size)
    adapter = _WatchedAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = USER_AGENT
    session.verify = verify or DEFAULT_CA_BUNDLE_PATH
    return session


def certificate_refused(error: Exception) -> bool:
    """True when TLS failed because the server's certificate is not trusted: retrying cannot help,
    the CA bundle setting can. For requests' errors and for urllib3's (the Logstash transport)."""
    return (isinstance(error, (requests.exceptions.SSLError, urllib3.exceptions.SSLError))
            and "certificate verify failed" in str(error).lower())


def json_value(data):
    """`json.loads(data)`, with ValueError too for a text nested deeper than the standard
    library's decoder goes (it recurses once per level: RecursionError): as unreadable as any
    other text that is not JSON."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def client_certificate_required(error: Exception) -> bool:
    """True when the server ended TLS asking for a client certificate, which kcing never sends
    (OpenSSL's `tlsv13 alert certificate required`): retrying cannot help, the server's setting can."""
    return (isinstance(error, (requests.exceptions.SSLError, urllib3.exceptions.SSLError))
            and "alert certificate required" in str(error).lower())


def socks_unsupported(error: Exception, url: str) -> Optional[ConfigError]:
    """The configuration error for `error` when it says that the proxy the environment names for
    `url` is a SOCKS proxy, which requests and urllib3 can only use with PySocks, not installed
    (retrying cannot help); None for any other error."""
    if not (isinstance(error, requests.exceptions.InvalidSchema) and "socks" in str(error).lower()):
        return None
    proxy = requests.utils.select_proxy(url, requests.utils.get_environ_proxies(url))
    # Its credentials masked up to their last "@", as a proxy reads them: a password may hold one.
    return ConfigError("the proxy %s (ALL_PROXY, HTTPS_PROXY or HTTP_PROXY) is a SOCKS proxy, which needs PySocks: "
                       "install it (pip install PySocks) where kcing runs, or name this host in NO_PROXY"
                       % (mask_credentials(proxy) if proxy else "set"))


# Beyond this a duration in a message is only "very long": a Retry-After of hundreds of digits
# reads as infinity ("infs"), and its exact size tells nobody anything.
LONGEST_SHOWN = 100 * 86400.0


def seconds_text(seconds: float) -> str:
    """`60s`, `0.5s`: durations in messages, without rounding sub-second timeouts to 0."""
    if not seconds <= LONGEST_SHOWN:
        return "over 100 days"
    return "%gs" % seconds


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Return the wait before retry number `attempt` (1-based): capped exponential, equal jitter.

    Half of the exponential step is fixed and half random, so clients that failed together do not
    retry together, yet every wait keeps growing.
    """
    step = min(cap, base * (2 ** max(0, attempt - 1)))
    return step / 2 + rand() * step / 2


def http_date(value: Optional[str]) -> Optional[datetime]:
    """An HTTP date (a `Date` header, `Retry-After`'s date form) as an aware datetime, UTC when
    it names no zone; None when it is absent or no date."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a year or hour no datetime holds
        return None
    if when is None:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None,
                      sent_at: Optional[str] = None) -> Optional[float]:
    """Return the seconds a `Retry-After` header asks to wait, or None if absent or unreadable.

    A date is measured from the answer's own `Date` (`sent_at`) when it has a readable one: the
    server wrote both by its clock, which may be minutes or hours off this host's (RFC 9110 reads
    the date form so). Without one, from this host's clock (`now`)."""
    if not value:
        return None
    text = value.strip()
    if ascii_digits(text):
        return float(text)
    when = http_date(text)
    if when is None:
        return None
    now = http_date(sent_at) or now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets and how long to wait between them (no I/O here)."""

    attempts: int = 3
    base: float = 1.0
    cap: float = 30.0
    # A server may ask for a long pause; honour it, but never stall a cron run for longer.
    max_retry_after: float = 120.0

    def is_retryable(self, status: int) -> bool:
        return status in RETRYABLE_STATUSES

    def delay(self, attempt: int, retry_after: Optional[float] = None,
              rand: Callable[[], float] = random.random) -> float:
        """Return the wait after failed attempt number `attempt`, honouring Retry-After. The cap
        bounds the growth of the waits, never the first: a base above it (ES_RETRY_BACKOFF=120,
        to give Logstash two minutes) is the cap, where every wait was cut to 30 s."""
        wait = backoff_delay(attempt, self.base, max(self.cap, self.base), rand)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_retry_after))
        return wait


# Reading response bodies ----------------------------------------------------------------------

def announced_length(declared: str) -> Optional[int]:
    """The length a Content-Length header value announces: digits, or a list of the same digits
    (`5, 5`, which a proxy joining two headers makes); None for anything else."""
    values = {value.strip() for value in declared.split(",")}
    if len(values) != 1:
        return None
    value = values.pop()
    return int(value) if ascii_digits(value) else None


# Content codings that compress (IANA's HTTP Content Coding Registry). A server may answer with one
# kcing did not ask for; unless urllib3 decodes it, the bytes would be taken for the file.
COMPRESSIONS = frozenset({"br", "compress", "x-compress", "deflate", "gzip", "x-gzip", "zstd", "exi", "pack200-gzip",
                          "aes128gcm", "dcb", "dcz"})


def compression_not_decoded(content_encoding: str) -> str:
    """The first coding of a Content-Encoding value that compresses the body and that urllib3
    does not decode (`br` without brotli installed), or "". Other tokens (`identity`, a server's
    odd `utf-8`) leave the bytes as they are, and are read so."""
    decoded = set(urllib3.response.HTTPResponse.CONTENT_DECODERS)
    for coding in content_encoding.lower().split(","):
        coding = coding.strip()
        if coding in COMPRESSIONS and coding not in decoded:
            return coding
    return ""


class BodyError(Exception):
    """A response body could not be read whole; the subclass says why."""


class BodyTooLarge(BodyError):
    """The body is larger than the reader's limit (declared, or found while streaming)."""


def joined_within(chunks: Iterable[bytes], max_bytes: int, declared: str = "") -> bytes:
    """The chunks of a body joined, held to `max_bytes`: BodyTooLarge when the Content-Length
    value `declared` announces more, or as soon as the chunks pass it. For answers read whole into
    memory at once (the admin commands'), whose deadline bounds their time but not their size: a
    server streaming without end on loopback fills gigabytes within a minute."""
    announced = announced_length(declared) if declared else None
    if announced is not None and announced > max_bytes:
        raise BodyTooLarge("announced %d bytes, more than the limit of %d bytes" % (announced, max_bytes))
    parts: List[bytes] = []
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge("more than the limit of %d bytes" % max_bytes)
        parts.append(chunk)
    return b"".join(parts)


class BodyTooSlow(BodyError):
    """The body did not arrive whole within the reader's overall deadline."""


class BodyAbandoned(BodyError):
    """The run is stopping: the transfer was cut short on purpose."""


class BodyBroken(BodyError):
    """The connection failed mid-body (reset, or fewer bytes than Content-Length announced)."""


class BodyUndecodable(BodyError):
    """The body does not decode as its Content-Encoding says (a `.gz` file labelled gzip by its
    server, but broken): the same bytes come again however often they are asked for."""


CHUNK = 64 * 1024


@dataclass(eq=False)
class _Transfer:
    """One request, from sending it to the last byte of its answer, and what to cut to end it
    now: the socket while the status line and headers are awaited, then the answer's body."""
    deadline: float
    raw: object = None  # the urllib3 response whose body is being read
    sock: object = None  # the socket awaiting the answer's status line and headers
    cut: Optional[str] = None  # "deadline" or "abandoned" once the watchdog cut it
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cut_now(self, why: str) -> None:
        with self.lock:
            if self.cut is None:
                self.cut = why
            if self.raw is not None:
                _cut(self.raw)
            elif self.sock is not None:
                _shutdown(self.sock)


# The exchange each thread is making (BodyReader.exchange), for its connection to say which
# socket awaits the answer: requests and urllib3 hand the caller nothing before the headers.
_exchanges = threading.local()


class BodyReader:
    """Reads response bodies within a size limit and an overall deadline, and can cut them short.

    Socket timeouts bound each read, not a whole body: a server sending a byte a second never
    times out, and one streaming forever never ends. A watchdog thread shuts down the socket of
    a body past its deadline, or of every body once `abandon()` turns true (the run is stopping),
    which wakes the blocked read at once. Within `exchange()`, the deadline and the stop cover
    the whole request, the wait for the status line and headers included. Sources and sinks use
    the same reader class, each with its own limits.
    """

    POLL = 0.1  # seconds between the watchdog's looks: the precision of deadlines and stops

    def __init__(self, deadline: float, max_bytes: int, abandon: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.monotonic):
        self.deadline = deadline
        self.max_bytes = max_bytes
        self.abandon = abandon
        self.clock = clock
        self._active: Dict[int, _Transfer] = {}
        self._lock = threading.Lock()
        self._watchdog: Optional[threading.Thread] = None

    @contextmanager
    def exchange(self) -> Iterator[_Transfer]:
        """One request and its answer under this reader's deadline and stop, from the moment it
        is sent: a server that trickles its status line or headers is cut like one trickling its
        body. Requests sent on this thread meanwhile through a watched pool (`watch_pools`)
        belong to it, redirects included; `read` reads their bodies on the same clock.
        The transfer's `cut` says, after any failure, whether the reader caused it."""
        transfer = _Transfer(self.clock() + self.deadline)
        self._watch(transfer)
        outer, _exchanges.current = getattr(_exchanges, "current", None), (self, transfer)
        try:
            yield transfer
        finally:
            _exchanges.current = outer
            self._unwatch(transfer)

    def read(self, response) -> bytes:
        """Return the whole (decoded) body of a `stream=True` response, or raise a BodyError.

        The connection goes back to the pool after a whole body and is closed otherwise."""
        declared = response.headers.get("Content-Length", "").strip()
        announced = announced_length(declared)
        if declared and announced is None:
            # Its framing is unknown: where the body ends cannot be told (RFC 9112 §6.3).
            response.close()
            raise BodyBroken("framed by a Content-Length that is not a number (%r)" % declared[:40])
        undecoded = compression_not_decoded(response.headers.get("Content-Encoding", ""))
        if undecoded:
            response.close()
            raise BodyUndecodable("is compressed with %s, which kcing cannot decode (it asks for gzip or deflate)"
                                  % undecoded)
        if announced is not None and announced > self.max_bytes:
            response.close()
            raise BodyTooLarge("announced %s bytes, more than the limit of %d" % (declared, self.max_bytes))
        current = getattr(_exchanges, "current", None)
        own = current is None or current[0] is not self
        transfer = _Transfer(self.clock() + self.deadline) if own else current[1]
        if own:
            self._watch(transfer)
        with transfer.lock:
            transfer.raw = response.raw
        chunks: List[bytes] = []
        size = 0
        whole = False
        try:
            if transfer.cut is not None:  # cut before this body began: nothing of it is read
                raise _AlreadyCut()
            read = getattr(response.raw, "read1", None) or response.raw.read
            if announced is not None and not response.headers.get("Content-Encoding"):
                # A plain body of announced length (within the limit, checked above) in one call,
                # whose socket reads loop in C without the interpreter lock: a listing page is a
                # megabyte, twenty reads of the loop below, each through urllib3's Python layers.
                # A trickle or a stop is still cut by the watchdog, which wakes this read.
                chunks.append(response.raw.read(announced, decode_content=True))
                size = len(chunks[0])
            while True:
                # read1 returns what one socket read brings, so a trickle still comes back to this
                # loop (and its checks) instead of waiting for a full chunk.
                chunk = read(CHUNK, decode_content=True)
                if not chunk:
                    break
                size += len(chunk)
                if size > self.max_bytes:
                    raise BodyTooLarge("more than the limit of %d bytes" % self.max_bytes)
                chunks.append(chunk)
                if transfer.cut is None and self.clock() > transfer.deadline:
                    transfer.cut = "deadline"
                if transfer.cut is not None:
                    break
            if transfer.cut is None and _compressed_stream_unfinished(response.raw):
                encoding = response.headers.get("Content-Encoding")
                if read_until_closed(response):
                    # Read until the connection closed: it closed early, another try may do better.
                    raise BodyBroken("connection closed before the end of its %s stream" % encoding)
                # Framed whole: the server holds a compressed file cut short.
                raise BodyUndecodable("does not decode as its Content-Encoding %s says (the compressed data ends "
                                      "before its stream does)" % encoding)
            whole = True
        except BodyError:
            raise
        except urllib3.exceptions.DecodeError as error:
            if transfer.cut is None:  # urllib3 gives its message and the decoder's error
                cause = next((arg for arg in error.args if isinstance(arg, BaseException)), error)
                raise BodyUndecodable("does not decode as its Content-Encoding %s says (%s)"
                                      % (response.headers.get("Content-Encoding"), cause)) from None
        except Exception as error:  # urllib3 ProtocolError/IncompleteRead, socket errors
            if transfer.cut is None:
                raise BodyBroken("connection broken mid-body (%s)" % _error_name(error)) from None
        finally:
            with transfer.lock:
                transfer.raw = None
            cut = self._unwatch(transfer) if own else transfer.cut
            if not whole or cut is not None:
                response.close()
        if cut == "deadline":
            raise BodyTooSlow("not complete within %s" % seconds_text(self.deadline))
        if cut == "abandoned":
            raise BodyAbandoned("cut short: the run is stopping")
        return b"".join(chunks)

    def _watch(self, transfer: _Transfer) -> None:
        with self._lock:
            self._active[id(transfer)] = transfer
            if self._watchdog is None or not self._watchdog.is_alive():
                self._watchdog = threading.Thread(target=self._watch_loop, name="body-watchdog", daemon=True)
                self._watchdog.start()

    def _unwatch(self, transfer: _Transfer) -> Optional[str]:
        """Stop watching `transfer`; return why it was cut, if it was."""
        with self._lock:
            self._active.pop(id(transfer), None)
            return transfer.cut

    def _watch_loop(self) -> None:
        """Cut what is overdue or abandoned; end when nothing is left to watch (restarted on need)."""
        while True:
            time.sleep(self.POLL)
            now, abandon = self.clock(), self.abandon()
            with self._lock:
                if not self._active:
                    self._watchdog = None
                    return
                due = [transfer for transfer in self._active.values()
                       if transfer.cut is None and (abandon or now > transfer.deadline)]
            for transfer in due:
                transfer.cut_now("abandoned" if abandon else "deadline")


def read_until_closed(response) -> bool:
    """Whether an answer's body ends where its connection closed: neither a Content-Length nor
    chunks frame it, so a connection dropped half-way looks like its end (a body whose
    Content-Length is no number is refused before it is read: `BodyReader.read`)."""
    return not response.headers.get("Content-Length", "").strip() and not getattr(response.raw, "chunked", False)


def _compressed_stream_unfinished(raw) -> bool:
    """Whether the gzip or deflate body urllib3 decoded stopped short of its stream's end (no
    gzip trailer, no last deflate block). urllib3's decoders hand out what they inflated and say
    nothing of a stream cut short, which would pass for the whole file: a log missing its end,
    recorded as delivered. Read from urllib3's decoders (the version kcing pins); a body of no
    bytes, other codings and a decoder of another shape count as finished."""
    if raw.tell() == 0:
        return False
    decoder = getattr(raw, "_decoder", None)
    for part in getattr(decoder, "_decoders", None) or [decoder]:
        if getattr(part, "_state", None) == _GZIP_SWALLOWING:
            continue  # trailing data after a whole member, which urllib3 (as gzip) leaves aside
        stream = getattr(part, "_obj", None)
        if isinstance(getattr(stream, "eof", None), bool) and not stream.eof:
            return True
    return False


# urllib3's GzipDecoderState.SWALLOW_DATA: a gzip body went on past a whole member with data that
# is not gzip, which urllib3 ignores (as gzip -d does with a warning).
_GZIP_SWALLOWING = getattr(getattr(urllib3.response, "GzipDecoderState", None), "SWALLOW_DATA", object())


class _AlreadyCut(Exception):
    """The exchange was cut before its body was read."""


def _cut(raw) -> None:
    """Wake a read blocked on this urllib3 response with end-of-file (urllib3 shuts down the
    socket's reading side for this purpose). Nothing to do once the connection went back to the
    pool: the body was whole."""
    try:
        raw.shutdown()
    except (ValueError, RuntimeError, OSError):
        pass


def _shutdown(sock) -> None:
    """Wake a wait to send the request's body (with an error) or for the answer's status line or
    headers (with end-of-file)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (ValueError, RuntimeError, OSError):
        pass


class _ConnectionUse(threading.local):
    """Whether the last request this thread wrote went out on a kept-alive connection, one that
    had already carried an answer (see `sent_on_kept_alive_connection`); how long each wait to
    send more of the request may take (`sending_starts`)."""

    kept_alive = False
    send_wait: Optional[float] = None


_connection_use = _ConnectionUse()


def sending_starts(send_wait: Optional[float] = None) -> None:
    """Forget what the thread's previous request went out on (call before each request).

    `send_wait` bounds each wait for the server to take more of the request, block by block,
    instead of urllib3's connect timeout, which Python applies to a whole sendall(): a body that
    takes longer than that to cross a slow link would fail however steadily it moved."""
    _connection_use.kept_alive = False
    _connection_use.send_wait = send_wait


def sending_ends() -> None:
    """The thread's next requests wait to send as urllib3 sets it (see `sending_starts`)."""
    _connection_use.send_wait = None


def sent_on_kept_alive_connection() -> bool:
    """Whether the thread's last request went out on a connection that had carried an answer
    before: one a server may have closed while it was idle, as the request was written."""
    return _connection_use.kept_alive


_Answer = TypeVar("_Answer")


def resent_if_idle_closed(send: Callable[[], _Answer], resends: int, described: str, closer: str,
                          may_resend: Callable[[], bool] = lambda: True) -> _Answer:
    """What `send()` (one request of a requests session) returns. A request that got no answer on
    a kept-alive connection, one that carried an answer before, is sent again at once, at most
    `resends` times, while `may_resend()`: `closer` (or a proxy before it) closed the idle
    connection as the request was written, which says nothing of the request. urllib3 drops each
    such connection, so after at most as many as the pool keeps (`resends`) the request goes out
    on a new one, where a failure is the request's. `described` names it in the debug line."""
    for resend in range(resends + 1):
        sending_starts()
        try:
            return send()
        except requests.ConnectionError as error:
            if (resend < resends and not isinstance(error, requests.Timeout) and sent_on_kept_alive_connection()
                    and may_resend()):
                log.debug("%s: no answer on a kept-alive connection, which %s had closed; asking again on another",
                          described, closer)
                continue
            raise
    raise AssertionError("unreachable: the last send returns or raises")


class _WatchedAnswer:
    """The part of a watched connection: while it awaits an answer, the thread's exchange
    (BodyReader.exchange) may cut its socket. It also counts the answers its socket carried."""

    _answers = 0  # status lines received on the current socket

    def connect(self):
        # A request that needs a new connection is on none the server could have closed while
        # idle, whatever the thread's request before it went out on (the redirect it follows).
        _connection_use.kept_alive = False
        self._answers = 0
        try:
            super().connect()
        finally:
            current = getattr(_exchanges, "current", None)
            if current is not None:
                with current[1].lock:
                    current[1].sock = None

    def _new_conn(self):
        """The new socket, which the thread's exchange may cut while the connection is made: the
        answer of an HTTP proxy to CONNECT (the tunnel to an https server) is read line by line
        before the request is sent, each line within the timeout, and a proxy may never end it."""
        sock = super()._new_conn()
        current = getattr(_exchanges, "current", None)
        if current is not None:
            transfer = current[1]
            with transfer.lock:
                cut = transfer.cut
                if cut is None:
                    transfer.sock = sock
            if cut is not None:
                sock.close()
                raise urllib3.exceptions.ProtocolError("the exchange was cut while its connection was made")
        return sock

    def close(self):
        self._answers = 0
        super().close()

    def request(self, *args, **kwargs):
        _connection_use.kept_alive = self._answers > 0
        return super().request(*args, **kwargs)

    def send(self, data):
        """Send one piece of the request (its head, a block of its body). While it waits for the
        server to take it, the thread's exchange may cut the socket: an input that stops
        reading a batch is cut at the exchange's deadline like one that never answers."""
        if self.sock is None:  # http.client connects on the first send
            self.connect()
        if _connection_use.send_wait is not None:
            self.sock.settimeout(_connection_use.send_wait)
        current = getattr(_exchanges, "current", None)
        if current is None:
            return super().send(data)
        transfer = current[1]
        with transfer.lock:
            if transfer.cut is not None:
                raise urllib3.exceptions.ProtocolError("the exchange was cut while its request was sent")
            # A CONNECT to a proxy is sent while the connection is made: its socket stays watched
            # for the proxy's answer (`_new_conn`).
            before, transfer.sock = transfer.sock, self.sock
        try:
            return super().send(data)
        finally:
            with transfer.lock:
                transfer.sock = before

    def getresponse(self):
        response = self._awaited_answer()
        self._answers += 1
        return response

    def _awaited_answer(self):
        current = getattr(_exchanges, "current", None)
        if current is None:
            return super().getresponse()
        transfer = current[1]
        with transfer.lock:
            if transfer.cut is not None:  # cut before the answer was awaited: it never will be
                raise urllib3.exceptions.ProtocolError("the exchange was cut before its answer")
            transfer.sock = self.sock
        try:
            return super().getresponse()
        finally:
            with transfer.lock:
                transfer.sock = None


class FinalAnswer(http.client.HTTPResponse):
    """http.client's response, read past every interim (1xx) answer to the final one.

    A server, or a proxy or CDN before it, may send interim answers before the final one (103
    Early Hints, 102 Processing), which a client must read and pass over (RFC 9110 §15.2).
    http.client passes over 100 Continue alone, and took any other for the answer: the request
    failed with "HTTP 103", and the final answer, left unread on the connection, was then read
    as the answer to the next request sent on it (one file's content taken for another's)."""

    def _read_status(self):
        while True:
            version, status, reason = super()._read_status()
            # 100 is passed over by begin(); 101 ends HTTP on the connection, never asked for.
            if not 102 <= status < 200:
                return version, status, reason
            http.client.parse_headers(self.fp)  # the interim answer's header fields, of no use here


def final_answers_only(pool: HTTPConnectionPool) -> HTTPConnectionPool:
    """Make the connections `pool` opens from now on read past interim answers (FinalAnswer):
    for a pool kcing does not make itself (the Elasticsearch client's). Its connection class,
    whichever it is, is kept beneath: the client's own for https, which checks a certificate
    chain, is none of urllib3's."""
    pool.ConnectionCls = _reading_final_answers(pool.ConnectionCls)
    return pool


@functools.lru_cache(maxsize=None)
def _reading_final_answers(connection_class: type) -> type:
    """`connection_class`, its answers read as FinalAnswer (one class made per class given)."""
    if issubclass(connection_class.response_class, FinalAnswer):
        return connection_class
    return type("FinalAnswer" + connection_class.__name__, (connection_class,), {"response_class": FinalAnswer})


class _WatchedHTTPConnection(_WatchedAnswer, HTTPConnection):
    response_class = FinalAnswer


class _WatchedHTTPSConnection(_WatchedAnswer, HTTPSConnection):
    response_class = FinalAnswer


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def watch_pools(manager: urllib3.PoolManager) -> urllib3.PoolManager:
    """Make `manager`'s connections report their wait for an answer to the thread's exchange
    (BodyReader.exchange). A SOCKS proxy's manager keeps its own connections, unwatched: there
    only the timeout bounds that wait."""
    if manager.pool_classes_by_scheme.get("http") is HTTPConnectionPool:
        manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
    return manager


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, its pools watched (`watch_pools`)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        if proxy not in self.proxy_manager:  # asked for every request; made once per proxy
            user, password = get_auth_from_url(proxy)
            if user or password:
                mask_credentials_too(user, password)  # a proxy's error page may quote what it was sent
        return watch_pools(super().proxy_manager_for(proxy, **proxy_kwargs))


def _error_name(error: BaseException) -> str:
    """The most telling class name: urllib3 wraps the IncompleteRead that says what happened."""
    for cause in (error, *error.args):
        if isinstance(cause, BaseException) and type(cause).__name__ in ("IncompleteRead", "InvalidChunkLength"):
            return type(cause).__name__
    return type(error).__name__


# Credentials in clear text ---------------------------------------------------------------------

_warned_cleartext: set = set()


def cleartext_warning(credentials: str, urls_by_setting: Mapping[str, Iterable[str]]) -> Optional[str]:
    """The warning due when `credentials` would go to plain http:// URLs, naming their settings."""
    plain = {setting: [url for url in urls if urlsplit(url).scheme == "http"]
             for setting, urls in urls_by_setting.items()}
    named = [setting for setting, urls in plain.items() if urls]
    if not named:
        return None
    return "%s is sent in clear text: %s %s http://, not https://" % (
        credentials, " and ".join(named), "is" if len(named) == 1 else "are")


def warn_cleartext_credentials(credentials: str, urls_by_setting: Mapping[str, Iterable[str]]) -> bool:
    """Log the clear-text warning once per process (a run may build its clients more than once)."""
    warning = cleartext_warning(credentials, urls_by_setting)
    if warning is None or warning in _warned_cleartext:
        return False
    _warned_cleartext.add(warning)
    log.warning("%s", warning)
    return True
