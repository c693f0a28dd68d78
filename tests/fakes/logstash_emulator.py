"""A strict local Logstash `http` input (json codec) plus the effect of kcing's elasticsearch output.

It answers exactly like logstash-input-http (elk.md §1.2-1.9): any method and path, optional
basic auth, `max_content_length`, codec chosen by MIME type, `200 ok` text/plain on success.
Accepted events are then written to an `IndexStore` the way the kcing pipeline would write them.

Faults are consumable and thread-safe, so a test can say "the next 2 requests get 429" and then
compare `trace` with what it expects.
"""
from __future__ import annotations

import base64
import contextlib
import gzip
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from tests.fakes.elastic_store import IndexStore
from tests.fakes.logstash_events import Event, decode_body
from tests.fakes.serving import (
    CLIENT_GONE, BackgroundServer, BodyTooLarge, FaultQueue, LockedList, QuietHandler, ServedByBackgroundServer,
    StartedByWith, wait_until,
)

DEFAULT_MAX_CONTENT_LENGTH = 100 * 1024 * 1024
# logstash/pipeline/kcing.conf removes these from every event (filter `kcing_strip_input_fields`).
PIPELINE_STRIPPED_FIELDS = ("host", "headers", "event.original")
AUTH_REALM = 'Basic realm="Logstash HTTP Input"'
OK_HEADERS = (("Content-Type", "text/plain"),)


@dataclass(frozen=True)
class RequestRecord:
    """One request as the emulator saw it. `status` is None when the connection was dropped."""

    method: str
    path: str
    headers: Dict[str, str]  # lower-cased names
    body_bytes: int
    events: int
    status: Optional[int]


@dataclass(frozen=True)
class _Fail:
    status: int
    retry_after: Optional[str]
    body: bytes


@dataclass(frozen=True)
class _Reset:
    pass


@dataclass(frozen=True)
class _AcceptThenFail:
    pass


@dataclass(frozen=True)
class _Slow:
    seconds: float


class _Answer(Exception):
    """Stop processing a request and answer with this status (and optionally close)."""

    def __init__(self, status: int, headers: Sequence[Tuple[str, str]] = (), body: bytes = b"",
                 close: bool = False):
        super().__init__(status)
        self.status, self.headers, self.body, self.close = status, tuple(headers), body, close


class LogstashEmulator(ServedByBackgroundServer):
    """One Logstash http input on 127.0.0.1 feeding an `IndexStore`.

    Pass the same `store` to several emulators to model several pipelines writing into one
    Elasticsearch cluster. `now` gives the ingest time for events without `@timestamp`.
    `reject_when_blocked_after` is the plugin's "429 when an in-flight request has been blocked
    pushing into the pipeline for 10 s" rule (logstash-input-http 3.10.0 and 4.1.0 on); None is
    an earlier plugin, which holds every request until the queue has room. Only
    `block_pipeline()` blocks requests that way.

    Like the kcing pipeline, each accepted event gets `[@metadata][origin]` = `name` and loses
    the `strip_fields` (dotted paths); what was removed is listed in `stripped` as
    (field, event) so a test can notice a document field that would vanish.
    """

    def __init__(self, port: int = 0, user: Optional[str] = None, password: Optional[str] = None,
                 max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH, response_code: int = 200,
                 store: Optional[IndexStore] = None, now: Optional[Callable[[], datetime]] = None,
                 reject_when_blocked_after: Optional[float] = 10.0, name: str = "logstash",
                 strip_fields: Sequence[str] = PIPELINE_STRIPPED_FIELDS):
        if response_code not in (200, 201, 202, 204):
            raise ValueError("the http input only allows 200, 201, 202 or 204")
        self.name = name
        self.user, self.password = user, password
        self.max_content_length = max_content_length
        self.response_code = response_code
        self.index_store = store if store is not None else IndexStore()
        self.now = now or (lambda: datetime.now(timezone.utc))
        self.reject_when_blocked_after = reject_when_blocked_after
        self.strip_fields = tuple(strip_fields)
        self.stripped: LockedList = LockedList()
        self.events_received: LockedList = LockedList()
        self.requests: LockedList = LockedList()
        self.trace: LockedList = LockedList()
        self._faults = FaultQueue()
        self._lock = threading.Lock()
        self._inflight = 0
        self.peak_inflight = 0  # the most requests in flight at once so far
        self._request_count = 0
        self._max_inflight: Optional[int] = None
        self._close_after_answer = False
        self._pipeline_open = threading.Event()
        self._pipeline_open.set()
        self._blocked_since: Dict[int, float] = {}
        self._queued: Optional[List[Event]] = None  # acknowledged events not indexed yet (hold_queue)
        self._server = BackgroundServer(_LogstashHandler, self, port)

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._pipeline_open.set()
        self._server.stop()

    def down(self) -> None:
        """Stop listening (connections are refused) and cut open connections; `up()` reopens.

        Requests held by `block_pipeline()` stay held until `unblock_pipeline()` or `stop()`.
        """
        self._server.down()

    def up(self) -> str:
        return self._server.start()

    base_url = ServedByBackgroundServer.url

    @property
    def port(self) -> int:
        return self._server.port

    # -- what Elasticsearch holds ----------------------------------------------------------

    @property
    def store(self) -> Dict[Tuple[str, str], dict]:
        return self.index_store.documents

    @property
    def writes(self):
        return self.index_store.writes

    @property
    def unrouted(self) -> LockedList:
        return self.index_store.unrouted

    def clear(self) -> None:
        """Forget requests, events, trace, faults and stored documents."""
        for recorded in (self.events_received, self.requests, self.trace, self.stripped):
            recorded.clear()
        self._faults.clear()
        self.index_store.clear()

    # -- fault injection -------------------------------------------------------------------

    def fail_next(self, status: int, count: Optional[int] = 1, retry_after=None, body: bytes = b"") -> None:
        """Answer the next `count` requests with `status` (body read, events dropped)."""
        retry = None if retry_after is None else str(retry_after)
        self._faults.add("", _Fail(status, retry, body), count)

    def reset_next(self, count: Optional[int] = 1) -> None:
        """Read the next requests' bodies, then close the socket without any response."""
        self._faults.add("", _Reset(), count)

    def accept_then_fail_next(self, count: Optional[int] = 1) -> None:
        """Store the next requests' events, then answer 500: a partial failure after acceptance."""
        self._faults.add("", _AcceptThenFail(), count)

    def slow_next(self, seconds: float, count: Optional[int] = 1) -> None:
        """Sleep before answering; the events are still stored afterwards, like the real input."""
        self._faults.add("", _Slow(seconds), count)

    def clear_faults(self) -> None:
        self._faults.clear()

    def saturate(self, max_inflight: Optional[int]) -> None:
        """Answer 429 at once while more than `max_inflight` requests are in flight (None: off)."""
        self._max_inflight = max_inflight

    def close_after_answers(self, enabled: bool = True) -> None:
        """Close each connection right after its answer, without `Connection: close`: what an
        input behind a proxy with a keep-alive timeout of 0, or one restarting, does. A client
        that wrote its next request on the connection meanwhile gets no answer to it."""
        self._close_after_answer = enabled

    def block_pipeline(self) -> None:
        """Hold accepted requests without answering, as when Elasticsearch stalls."""
        self._pipeline_open.clear()

    def unblock_pipeline(self) -> None:
        self._pipeline_open.set()

    def hold_queue(self) -> None:
        """Acknowledge requests (200) but index their events only at `release_queue`: a
        Logstash whose persisted queue is backlogged, as when its Elasticsearch is slow."""
        with self._lock:
            if self._queued is None:
                self._queued = []

    def release_queue(self) -> None:
        """Index the events `hold_queue` kept, in the order they came, and stop holding them."""
        with self._lock:
            queued, self._queued = self._queued or [], None
        self.index_store.write(queued)

    @property
    def inflight(self) -> int:
        with self._lock:
            return self._inflight

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being processed (e.g. after a client timed out on slow_next)."""
        return wait_until(lambda: self.inflight == 0, timeout)

    # -- request processing (called from handler threads) -----------------------------------

    @contextlib.contextmanager
    def _counted(self) -> Iterator[Tuple[int, int]]:
        """Count the request as in flight; yield (request number, requests now in flight)."""
        with self._lock:
            self._inflight += 1
            self.peak_inflight = max(self.peak_inflight, self._inflight)
            self._request_count += 1
            current = (self._request_count, self._inflight)
        try:
            yield current
        finally:
            with self._lock:
                self._inflight -= 1

    def _refuse_if_blocked_too_long(self) -> None:
        if self.reject_when_blocked_after is None:
            return
        with self._lock:
            starts = list(self._blocked_since.values())
        if starts and time.monotonic() - min(starts) >= self.reject_when_blocked_after:
            raise _Answer(429, close=True)

    def _refuse_if_saturated(self, inflight: int) -> None:
        limit = self._max_inflight
        if limit is not None and inflight > limit:
            raise _Answer(429)

    def _check_auth(self, authorization: Optional[str]) -> None:
        # Auth is on when both options are set, empty strings included (a real-world trap).
        if self.user is None or self.password is None:
            return
        if authorization is None:
            raise _Answer(401, headers=[("WWW-Authenticate", AUTH_REALM)])
        expected = "Basic " + base64.b64encode(("%s:%s" % (self.user, self.password)).encode()).decode()
        if authorization != expected:
            raise _Answer(401)

    def _wait_for_pipeline(self, request_id: int) -> None:
        if self._pipeline_open.is_set():
            return
        with self._lock:
            self._blocked_since[request_id] = time.monotonic()
        try:
            self._pipeline_open.wait()
        finally:
            with self._lock:
                self._blocked_since.pop(request_id, None)

    def _accept(self, events: List[Event]) -> None:
        for event in events:
            event.metadata.setdefault("origin", self.name)
            for path in self.strip_fields:
                if _remove_path(event.fields, path):
                    self.stripped.append((path, event))
        self.events_received.extend(events)
        with self._lock:
            if self._queued is not None:
                self._queued.extend(events)
                return
        self.index_store.write(events)


def _remove_path(fields: dict, dotted: str) -> bool:
    """Remove `a.b.c` (the field reference [a][b][c]) from nested dicts; say if it was there."""
    *parents, last = dotted.split(".")
    for name in parents:
        fields = fields.get(name)
        if not isinstance(fields, dict):
            return False
    return fields.pop(last, _MISSING) is not _MISSING


_MISSING = object()


def _decompress(body: bytes, encoding: Optional[str]) -> bytes:
    """Undo Content-Encoding like Netty's HttpContentDecompressor; bad data -> 400 with the message."""
    encoding = (encoding or "").strip().lower()
    try:
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding in ("deflate", "x-deflate"):
            return zlib.decompress(body)
    except (OSError, EOFError, zlib.error) as error:
        raise _Answer(400, [("Content-Type", "text/plain")], str(error).encode()) from error
    return body


class _Dropped(Exception):
    """The connection was closed without an answer."""


class _LogstashHandler(QuietHandler):
    """Processing order of the real input: blocked check, decompression and size, executor, auth,
    decode, push."""

    def handle_request(self) -> None:
        emulator: LogstashEmulator = self.app
        self._body_size = 0
        self._events: List[Event] = []
        with emulator._counted() as (request_id, inflight):
            try:
                answer = self._process(emulator, request_id, inflight)
            except _Answer as refusal:
                answer = refusal
            except _Dropped:
                # Recorded before acting, so a test that sees the client fail also sees the trace.
                self._record(emulator, None)
                self.drop_connection()
                return
            self._record(emulator, answer.status)
            self._send_or_ignore(answer)
            if emulator._close_after_answer:
                self.close_connection = True

    def _process(self, emulator: LogstashEmulator, request_id: int, inflight: int) -> _Answer:
        emulator._refuse_if_blocked_too_long()
        body = self._read_limited(emulator)
        # Netty's decompressor and aggregator come before the executor that checks credentials:
        # a body that does not inflate (400) or inflates past the limit (413) is refused as such
        # without credentials too.
        body = _decompress(body, self.headers.get("Content-Encoding"))
        self._body_size = len(body)
        if len(body) > emulator.max_content_length:
            raise _Answer(413, close=True)
        emulator._refuse_if_saturated(inflight)
        fault = emulator._faults.take("")
        self._apply_early_fault(fault)
        emulator._check_auth(self.headers.get("Authorization"))
        self._events = decode_body(body, self.headers.get("Content-Type"), emulator.now())
        emulator._wait_for_pipeline(request_id)
        if isinstance(fault, _Slow):
            time.sleep(fault.seconds)
        emulator._accept(self._events)
        if isinstance(fault, _AcceptThenFail):
            return _Answer(500)
        code = emulator.response_code
        return _Answer(code, OK_HEADERS, b"" if code == 204 else b"ok")

    def _read_limited(self, emulator: LogstashEmulator) -> bytes:
        try:
            body = self.read_body(emulator.max_content_length)
        except BodyTooLarge:
            raise _Answer(413, close=True) from None
        self._body_size = len(body)
        return body

    def _apply_early_fault(self, fault) -> None:
        if isinstance(fault, _Fail):
            headers = [("Retry-After", fault.retry_after)] if fault.retry_after else []
            raise _Answer(fault.status, headers, fault.body)
        if isinstance(fault, _Reset):
            raise _Dropped()

    def _send_or_ignore(self, answer: _Answer) -> None:
        # A client that timed out has gone; the real input also just fails the write.
        try:
            self.send_whole(answer.status, answer.headers, answer.body, close=answer.close,
                            head_only=self.command == "HEAD")
        except CLIENT_GONE:
            self.close_connection = True

    def _record(self, emulator: LogstashEmulator, status: Optional[int]) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        count = len(self._events)
        emulator.requests.append(RequestRecord(self.command, self.path, headers, self._body_size, count, status))
        emulator.trace.append((self.command.lower(), count, status))


for _method in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
    # The http input has no routing: every method on every path goes through the same processing.
    setattr(_LogstashHandler, "do_" + _method, _LogstashHandler.handle_request)


ROUTES = ("build", "lava", "boot", "regression")


class LogstashCluster(StartedByWith):
    """One emulator per kcing route (ES_BUILD, ES_LAVA, ES_BOOT, ES_REGRESSION inputs), each on its own port.

    All routes write into one shared `IndexStore`, as the inputs of a real stack write
    into one Elasticsearch. Reach an emulator as `cluster.build` or `cluster.emulators["build"]`.
    With `forward_to=URL` what they accept also goes on, with the pipeline's routing, to the
    `_bulk` API of the Elasticsearch (emulator or real node) at URL.
    """

    def __init__(self, routes: Sequence[str] = ROUTES, forward_to: Optional[str] = None, **emulator_options):
        store = emulator_options.pop("store", None)
        if store is None and forward_to:
            from tests.fakes.elastic_forward import ForwardingStore
            store = ForwardingStore(forward_to)
        self.index_store: IndexStore = store or IndexStore()
        self.emulators: Dict[str, LogstashEmulator] = {
            route: LogstashEmulator(store=self.index_store, name=route, **emulator_options)
            for route in routes
        }

    def __getattr__(self, name: str) -> LogstashEmulator:
        emulators = self.__dict__.get("emulators", {})
        if name in emulators:
            return emulators[name]
        raise AttributeError(name)

    @property
    def urls(self) -> Dict[str, str]:
        return {route: emulator.url for route, emulator in self.emulators.items()}

    @property
    def store(self) -> Dict[Tuple[str, str], dict]:
        return self.index_store.documents

    def start(self) -> Dict[str, str]:
        for emulator in self.emulators.values():
            emulator.start()
        return self.urls

    def stop(self) -> None:
        for emulator in self.emulators.values():
            emulator.stop()

    def clear(self) -> None:
        for emulator in self.emulators.values():
            emulator.clear()

